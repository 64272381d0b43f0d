/*-------------------------------------------------------------------------
 *
 * waiter_slots.h
 *	  What waiter_slots.c exports.
 *
 * Sessions blocked in wait_for_run(), and their wake-up after commit.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_WAITER_SLOTS_H
#define CF_WAITER_SLOTS_H

#include "chrono_forge.h"

/* Did this transaction end runs (shmem.c's transaction callback asks)? */
extern bool cf_runs_ended_pending;

extern Size cf_waiter_slots_size(void);
extern void cf_waiter_slots_init(void);
extern bool cf_waiter_slots_ready(void);
extern int	cf_waiter_slots_active(void);
extern void cf_waiter_slot_set(int64 run);
extern void cf_waiter_slot_clear(void);
extern void cf_note_run_ended(int64 run);
extern void cf_waiter_slots_xact_end(int event);

#endif							/* CF_WAITER_SLOTS_H */
