/*-------------------------------------------------------------------------
 *
 * chrono_forge.h
 *	  Declarations shared by the chrono_forge subsystems.
 *
 * Each .c file owns one subsystem; this header is the only place where
 * their interfaces meet.  Nothing here allocates or runs anything.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CHRONO_FORGE_H
#define CHRONO_FORGE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "utils/jsonb.h"

/* SQLSTATEs of class CF: errcodes.h, the one list. */
#include "errcodes.h"

#define CF_STEP_DELIMITER '$'
#define CF_CONTEXT_VALUE_MAX 16384
/* An error log's copy of the run's context, as JSON; where it was raised. */
#define CF_ERROR_CONTEXT_MAX 65536
#define CF_ERROR_WHERE_MAX 16384

/*
 * Documented maxima of inputs (doc/reference.md, "Maxima"), refused with CF012
 * before anything is written.  Names and keys end up in btree indexes
 * whose entries may not exceed a third of a page (~2.7 KB): a run's key
 * with its workflow, a step name built from a primitive's prefix and up
 * to two names.  Policy numbers bound every backoff to a year, so that
 * no delay overflows a timestamp.
 */
#define CF_NAME_MAX_BYTES 512
#define CF_KEY_MAX_BYTES 1024
#define CF_CHILD_KEY_MAX_BYTES 2048
#define CF_STEP_NAME_MAX_BYTES 2000
#define CF_JSON_MAX_BYTES (1024 * 1024)	/* start args and options, event payloads */
#define CF_POLICY_MAX_SECONDS 31536000	/* 365 days */
#define CF_POLICY_MAX_ENTRIES 100	/* retry_on entries; policies of a composite */
#define CF_SPAWN_BATCH_MAX 100000
#define CF_TASK_CLAIM_MAX 1000		/* claim_tasks' max_tasks */

/* The channel run_task's queues are notified on (payload: the queue). */
#define CF_TASKS_CHANNEL "chrono_forge_tasks"

/* guc.c */
extern char *cf_database;
extern int	cf_workers;
extern int	cf_max_duration_s;
extern int	cf_max_workers_per_owner;
extern int	cf_reap_stale_after_s;
extern bool cf_enabled;
extern int	cf_max_recoveries;
extern int	cf_worker_batch;
extern int	cf_commit_batch;
extern int	cf_commit_batch_window_ms;
extern int	cf_max_catch_up_runs;
extern bool cf_fake_now_set;
extern TimestampTz cf_fake_now_value;
extern void cf_define_gucs(void);
extern int	cf_reap_stale_after_effective(void);
extern int	cf_worker_share_effective(void);

/* clock.c */
extern TimestampTz cf_clock_now(void);

/* shmem.c: shared state, worker slots, wake-ups after commit */
#define CF_MAX_WORKERS 32
extern int	cf_worker_slot;		/* this executor worker's slot, or -1 */
extern void cf_shmem_register(void);
extern void cf_register_xact_callback(void);
extern void cf_queue_wakeup(TimestampTz due_at);
extern void cf_queue_launcher_wake(void);
extern void cf_queue_spawned(TimestampTz due_at);
extern bool cf_spawn_generation(uint64 *generation);
extern void cf_launcher_attach(void);
extern void cf_launcher_detach(void);
extern void cf_launcher_set_wake_at(TimestampTz at);
extern void cf_worker_detach(int slot);
extern pid_t cf_worker_pid(int slot);
extern void cf_worker_set_current_run(int slot, int64 run);
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
extern bool cf_cancels_pending(void);
extern void cf_cancels_set_pending(bool pending);

/* waiter_slots.c: sessions in wait_for_run(), woken after commit */
extern bool cf_runs_ended_pending;
extern Size cf_waiter_slots_size(void);
extern void cf_waiter_slots_init(void);
extern bool cf_waiter_slots_ready(void);
extern int	cf_waiter_slots_active(void);
extern void cf_waiter_slot_set(int64 run);
extern void cf_waiter_slot_clear(void);
extern void cf_note_run_ended(int64 run);
extern void cf_waiter_slots_xact_end(int event);

/* pass_timer.c: max_duration of a pass, cancel of a pass in flight */
extern void cf_pass_timer_arm(int64 run);
extern void cf_pass_timer_resume(void);
extern void cf_pass_timer_disarm(void);
extern bool cf_pass_timer_fired(void);
extern bool cf_pass_cancel_fired(void);
extern bool cf_pass_preempt_fired(void);
extern void cf_pass_interrupts_end(void);
extern void cf_pass_cancel_signal_init(void);
extern bool cf_cancel_requested(int64 run);
extern int	cf_apply_cancel_requests(int64 run, bool signal_held);
extern ErrorData *cf_pass_timeout_error(ErrorData *edata, int64 run);

/* launcher.c, worker.c */
extern void cf_register_launcher(void);
PGDLLEXPORT void cf_launcher_main(Datum arg);
PGDLLEXPORT void cf_worker_main(Datum arg);
extern void cf_worker_attach(int slot);

/* executor.c, for worker.c */
extern int	cf_last_drain_passes;

/* internal.c: internal SQL, run as the extension owner on a pinned path;
 * util.c: validation (cf_check_json_size: pass.c, it fails the pass) */
typedef struct CfInternal
{
	Oid			save_userid;
	int			save_sec_context;
} CfInternal;
extern void cf_internal_begin(CfInternal *st);
extern void cf_internal_end(CfInternal *st);
extern void cf_push_catalog_path(void);
extern void cf_spi_connect(void);
extern void cf_replan_if_stale(void);
extern Oid	cf_relation_oid(const char *name);
extern int	cf_exec(SPIPlanPtr *slot, const char *sql, int nargs,
					Oid *argtypes, Datum *values, const char *nulls,
					bool read_only, long count);
extern bool cf_extension_installed(void);
extern void cf_validate_name_segment(const char *what, const char *segment);
extern void cf_check_length(const char *what, const char *s, int max_bytes);
extern void cf_check_json_size(const char *what, Jsonb *value);
extern void cf_validate_workflow_name(const char *workflow);
extern void cf_validate_routine_name(const char *name, const char *what);
extern int64 cf_log_error(int64 workflow_id, const char *step_name,
						  int attempt, ErrorData *edata, Jsonb *context);

/* util.c (cf_required_text), access.c: for the client entry points */
typedef struct CfRunRef
{
	int64		id;
	char	   *state;
} CfRunRef;
extern char *cf_required_text(FunctionCallInfo fcinfo, int n, const char *what);
extern char *cf_resolve_workflow(const char *workflow, bool must_own);
extern char *cf_canonical_workflow(const char *workflow);
extern CfRunRef cf_find_own_run(Oid caller, const char *workflow, const char *key,
								bool for_update);
extern int64 cf_find_visible_run(Oid caller, const char *workflow, const char *key);
extern void cf_unknown_run(const char *workflow, const char *key) pg_attribute_noreturn();

/* access.c */
extern bool cf_is_admin(Oid role);
extern void cf_not_your_runs(const char *what, const char *workflow, const char *key);

/* call.c: the user's functions */
typedef struct CfFunction
{
	Oid			fn;				/* hash key */
	SPIPlanPtr	plan;
	Oid			argtype;		/* JSONBOID, TIMESTAMPTZOID or none */
	Oid			rettype;
} CfFunction;
extern CfFunction *cf_function_lookup(const char *name, const char *what,
									  bool takes_time);
extern Jsonb *cf_function_call(CfFunction *f, Jsonb *args, TimestampTz at);
extern ErrorData *cf_run_guarded(void (*fn) (void *), void *arg);
extern bool cf_error_is_fatal_to_pass(ErrorData *edata);

/* steplog.c: the pass's step log and error log; util.c: JSON */
typedef struct CfStepLog
{
	bool		exists;
	int64		id;
	char	   *state;
	int			attempts;
	Jsonb	   *metadata;		/* never NULL: '{}' if none */
} CfStepLog;
extern CfStepLog cf_step_log_read(const char *step_name);
extern int64 cf_step_log_write_owned(const char *step_name, const char *state, int attempts,
									 Jsonb *metadata_patch, Jsonb *result,
									 ErrorData *edata);
extern int64 cf_step_log_write(const char *step_name, const char *state, int attempts,
							  Jsonb *metadata_patch, Jsonb *result,
							  ErrorData *edata);
extern Jsonb *cf_jsonb_parse(const char *text);

/* journal.c: the step log and error log rows, of any run */
extern CfStepLog cf_journal_read_step(int64 workflow_id, const char *step_name);
extern int64 cf_journal_write_step(int64 workflow_id, const char *step_name, const char *state,
								   int attempts, Jsonb *metadata_patch, Jsonb *result,
								   ErrorData *edata, const char *lock_token, bool is_new);
extern int64 cf_journal_log_error(int64 workflow_id, const char *step_name, int attempt,
								  ErrorData *edata, Jsonb *context);
extern Jsonb *cf_jsonb_get(Jsonb *object, const char *key);
extern void cf_journal_cancel_tasks(Datum run_ids);

/* util.c: JSON, intervals, timestamps; step.c: shared by the primitives */
extern TimestampTz cf_timestamp_plus(TimestampTz t, Interval *i);
extern char *cf_json_string(const char *s);
extern char *cf_json_timestamp(TimestampTz t);
extern double cf_interval_seconds(Interval *i);
extern bool cf_interval_is_negative(Interval *i);
extern bool cf_metadata_timestamp(Jsonb *metadata, const char *key, TimestampTz *t);
extern void cf_primitive_invalid_argument(const char *msg) pg_attribute_noreturn();
extern CfFunction *cf_condition_lookup(const char *condition, const char *what);
extern bool cf_jsonb_is_true(Jsonb *v);
extern void cf_timeout_step(const char *step_name, int attempts, Jsonb *metadata_patch,
							const char *message) pg_attribute_noreturn();

/* cron.c: cron expressions, ticks in UTC minutes */
typedef struct CfCron
{
	uint64		minutes;		/* bit n: minute n */
	uint32		hours;
	uint32		days;			/* bits 1-31 */
	uint32		months;			/* bits 1-12 */
	uint8		weekdays;		/* bit 0: Sunday */
	bool		days_star;		/* day-of-month field began with '*' */
	bool		weekdays_star;
} CfCron;
extern void cf_cron_parse(const char *expr, CfCron *cron);
extern void cf_cron_parse_firing(const char *expr, CfCron *cron);
extern bool cf_cron_prev(const CfCron *cron, TimestampTz t, TimestampTz *tick);
extern bool cf_cron_next(const CfCron *cron, TimestampTz t, TimestampTz *tick);

/* retry.c */
typedef struct CfRetryDecision
{
	bool		retry;			/* schedule another attempt? */
	double		delay_s;		/* backoff, seconds */
	char	   *budget_key;		/* composite budget used (NULL if simple) */
	int			budget_count;	/* that budget's count after this failure */
} CfRetryDecision;
extern Jsonb *cf_policy_validate(Jsonb *policy);
extern Jsonb *cf_policy_builtin(const char *which);
extern CfRetryDecision cf_policy_decide(Jsonb *policy, int sqlerrcode,
										int attempts, Jsonb *retry_counts);
extern Jsonb *cf_policy_for_workflow(const char *workflow);
extern Jsonb *cf_step_policy(Jsonb *per_call);

/* pass.c: the pass state; replay.c: its cache; step.c: failed steps, results */
typedef enum CfOutcome
{
	CF_OUTCOME_NONE = 0,		/* error escaped the body: workflow-level retry */
	CF_OUTCOME_HALT,			/* a primitive deferred */
	CF_OUTCOME_STALL,			/* a step exhausted its policy */
	CF_OUTCOME_FAIL_NOW			/* programming error: fail without retries */
} CfOutcome;

typedef struct CfPass
{
	bool		active;
	MemoryContext cxt;			/* lives for the pass */
	int64		workflow_id;
	char	   *workflow;
	char	   *key;
	char	   *procedure;
	Jsonb	   *args;
	Jsonb	   *context;
	bool		context_dirty;
	Oid			owner;
	int64		parent_log_id;	/* a child's branch log; 0 for other runs */
	int64		spawn_batch_id; /* a child taken from spawn_batches: where, */
	int32		spawn_position;
	TimestampTz spawn_due_at;	/* when dispatched, */
	bool		run_unwritten;	/* and its run's row not written yet */
	char	   *lock_token;
	TimestampTz claimed_at;
	struct HTAB *completed;		/* step name -> recorded result */
	bool		has_continuation;
	TimestampTz continuation_at;
	const char *continuation_reason;
	CfOutcome	outcome;
	bool		committed;		/* has the claim committed yet? */
	bool		stamped;		/* is the claim written on the run's row? */
	bool		commit_pending; /* a step completed; its commit is deferred */
	bool		eager;			/* commit each step at once (see step_lost) */
	Oid			outer_userid;	/* the identity that runs the pass */
	int			outer_sec_context;
} CfPass;

extern CfPass cf_pass;
extern void cf_require_pass(FunctionCallInfo fcinfo, const char *primitive);
extern void cf_fail_now(void);
extern bool cf_step_completed(const char *step_name, Jsonb **result);
extern bool cf_step_log_cached(const char *step_name, CfStepLog *log);
extern void cf_step_log_forget(const char *step_name);
extern void cf_step_remember(const char *step_name, Jsonb *result);
extern void cf_set_continuation(TimestampTz at, const char *reason);
extern void cf_halt(const char *step_name) pg_attribute_noreturn();
extern void cf_stall(const char *step_name, int attempts, ErrorData *edata) pg_attribute_noreturn();
extern Datum cf_return_result(FunctionCallInfo fcinfo, bool has_result, Jsonb *result);
extern CfRetryDecision cf_step_failure_record(const char *step_name, int attempts,
											  Jsonb *log_metadata, Jsonb *metadata_patch,
											  Jsonb *policy, ErrorData *edata);
extern void cf_commit_and_retry_after(const char *step_name, double delay_s) pg_attribute_noreturn();
extern void cf_step_failed(const char *step_name, int attempts, Jsonb *log_metadata,
						   Jsonb *metadata_patch, Jsonb *policy, ErrorData *edata) pg_attribute_noreturn();
extern void cf_save_context_and_check_lock(void);
extern void cf_lock_lost(void) pg_attribute_noreturn();
extern void cf_commit(void);
extern void cf_write_taken_run(void);

/* pass.c, replay.c: for the pass driver (executor.c) */
typedef struct CfBatch
{
	int			passes;			/* passes in the open shared commit */
	Oid			owner;			/* whose they are */
	TimestampTz started;		/* when the first began */
	int			suspended;		/* passes to commit alone after a failed batch */
	int64		nudges[1000];	/* parents to nudge (commit_batch's maximum) */
	int			n_nudges;
	int			nudges_committed;	/* the first n have committed */
} CfBatch;
extern CfBatch cf_batch;
extern bool cf_pass_stop_cancel;
extern bool cf_pass_stop_preempt;
extern char *cf_pass_poison;
extern void cf_batch_committed(void);
extern void cf_check_pass_stop(void);
extern void cf_poison_pass(char *message);
extern ErrorData *cf_poison_error(void);
extern void cf_write_taken_run_as(bool completed);
extern void cf_stamp_claim(void);
extern void cf_enter_owner_identity(void);
extern void cf_fire_deferred_as_owner(void);
extern void cf_replay_reset(void);
extern void cf_replay_load(void);

/* branch.c (hooks of the pass), probes.c, merge.c (the merge poller): fan-out */
extern void cf_branch_before_complete(void);
extern void cf_branch_after_pass(bool completed);
extern int64 cf_branch_take_nudge(void);
extern void cf_branch_nudge(int64 log_id);
extern int64 cf_branch_children_pending(int64 log_id, int64 cap, int64 *never_started,
										int64 *running, int64 *blocked);
extern int64 cf_branch_children_live(int64 log_id, int64 cap);
extern int64 cf_branch_children_blocked(int64 log_id);
extern bool cf_branch_is_sealed(int64 log_id);

/*
 * What a merge makes of a child that failed, stalled or was cancelled
 * (merge_branches' on_child_failure): WAIT keeps the merge waiting until
 * the child is retried (the default, as before 0.6.0); FAIL fails the
 * parent at once (CF025) naming the children; IGNORE counts them ended.
 */
typedef enum CfChildFailure
{
	CF_CHILD_FAILURE_WAIT,
	CF_CHILD_FAILURE_FAIL,
	CF_CHILD_FAILURE_IGNORE
} CfChildFailure;

extern bool cf_merge_poll_due_now(int64 branch_log_id);
extern int	cf_merge_run_due_polls(Oid only_owner);
extern TimestampTz cf_merge_launcher_polls(void);

#endif							/* CHRONO_FORGE_H */
