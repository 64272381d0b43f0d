/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  What shmem.c exports.
 *
 * Shared state of the runtime, and the wake-up after commit.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_SHMEM_H
#define CF_SHMEM_H

#include "chrono_forge.h"

#define CF_MAX_WORKERS 32

extern int	cf_worker_slot;

/* this executor worker's slot, or -1 */
extern void cf_shmem_register(void);

extern void cf_register_xact_callback(void);
extern void cf_queue_wakeup(TimestampTz due_at);
extern void cf_queue_launcher_timer(TimestampTz at);
extern void cf_queue_launcher_wake(void);
extern void cf_queue_spawned(TimestampTz due_at);
extern bool cf_spawn_generation(uint64 *generation);
extern void cf_queue_prioritized(void);
extern bool cf_priority_generation(uint64 *generation);
extern int	cf_launcher_connect_delay_ms(int *failed_starts);
extern void cf_launcher_connected(void);
extern void cf_launcher_retry_next(void);
extern void cf_launcher_attach(void);
extern void cf_launcher_detach(void);
extern void cf_launcher_begin_round(void);
extern TimestampTz cf_launcher_plan_wake(TimestampTz planned);
extern void cf_worker_detach(int slot);
extern void cf_worker_set_draining(int slot, bool draining);
extern bool cf_workers_all_draining(void);
extern pid_t cf_worker_pid(int slot);
/* Most runs one worker's open transaction lists as held (a hint). */
#define CF_HELD_RUNS_MAX 32

extern void cf_worker_set_current_run(int slot, int64 run);
extern void cf_worker_hold_run(int slot, int64 run);
extern int	cf_runs_held_by_others(int slot, int64 *runs, int max);
extern int64 cf_worker_take_current_run(int slot);
extern uint64 cf_shmem_epoch(void);
extern void cf_wake_workers(void);
extern void cf_wake_launcher(void);
extern bool cf_shmem_ready(void);
extern bool cf_worker_publish_owner(int slot, Oid owner, int limit);
extern void cf_worker_clear_owner(int slot);
extern int	cf_owners_at_share(int slot, int limit, Oid *owners);
extern void cf_pass_slot_set(int64 run);
extern bool cf_pass_slot_cancel_asked(int64 run);
extern bool cf_pass_slot_preempt_asked(int64 run);
extern void cf_preempt_pass(int64 run);
extern Oid	cf_share_overrun(int limit, long min_age_ms, int64 *victim);
extern bool cf_share_watch(bool watch);
extern void cf_signal_pass_holders(const int64 *runs, int n);
extern void cf_queue_cancel_signal(int64 run);
extern void cf_queue_cancel_signals(Datum runs);
extern bool cf_cancels_pending(void);
extern bool cf_timers_changed_take(void);
extern void cf_queue_gate_release(void);
extern bool cf_gates_released_take(void);
extern void cf_cancels_set_pending(bool pending);
extern void cf_worker_attach(int slot);

#endif							/* CF_SHMEM_H */
