/*-------------------------------------------------------------------------
 *
 * pass_timer.h
 *	  What pass_timer.c exports.
 *
 * Stopping a pass in flight: when it outlives max_duration, and when
 * cancel() asks for its run.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_PASS_TIMER_H
#define CF_PASS_TIMER_H

#include "chrono_forge.h"

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

#endif							/* CF_PASS_TIMER_H */
