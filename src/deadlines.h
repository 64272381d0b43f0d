/*-------------------------------------------------------------------------
 *
 * deadlines.h
 *	  What deadlines.c exports.
 *
 * Run deadlines: the start() options that set one, and the sweep that
 * ends the runs past theirs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_DEADLINES_H
#define CF_DEADLINES_H

#include "chrono_forge.h"

#include "utils/jsonb.h"

/* Runs ended by one sweep at most; a sweep that ended this many goes on. */
#define CF_DEADLINE_SWEEP_BATCH 1000

extern bool cf_deadline_from_options(Jsonb *options, TimestampTz now, TimestampTz *deadline);
extern int	cf_deadlines_enforce(Oid only_owner, TimestampTz *next);
extern void cf_deadline_check_retry(int64 run, const char *workflow, const char *key,
									TimestampTz now);

#endif							/* CF_DEADLINES_H */
