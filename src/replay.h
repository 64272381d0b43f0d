/*-------------------------------------------------------------------------
 *
 * replay.h
 *	  What replay.c exports.
 *
 * The replay cache: the run's step logs, read once per pass.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_REPLAY_H
#define CF_REPLAY_H

#include "chrono_forge.h"
#include "journal.h"

extern bool cf_step_completed(const char *step_name, Jsonb **result);
extern bool cf_step_log_cached(const char *step_name, CfStepLog *log);
extern void cf_step_log_forget(const char *step_name);
extern void cf_step_remember(const char *step_name, Jsonb *result);
extern bool cf_replay_went_past(void);
extern void cf_replay_reset(void);
extern void cf_replay_load(void);

#endif							/* CF_REPLAY_H */
