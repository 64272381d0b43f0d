/*-------------------------------------------------------------------------
 *
 * merge.h
 *	  What merge.c exports.
 *
 * The merge poller: visits parked merges (chrono_forge.merge_polls), wakes
 * the parent once every child of its branches completed, paces itself by
 * the measured drain rate, re-dispatches children that were never picked
 * up, and stamps its state on the branch logs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_MERGE_H
#define CF_MERGE_H

#include "chrono_forge.h"

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

/*
 * What a merge waits for beyond its children's policy (0.10.0), kept on
 * its step's log where the poller reads it: QUORUM completed children
 * are enough (0: every child); past DEADLINE (DT_NOEND: none) the parent
 * stalls, or fails if FAIL_ON_TIMEOUT.
 */
typedef struct CfMergeRules
{
	CfChildFailure policy;
	int64		quorum;
	Interval   *timeout;		/* NULL: none (the primitive's argument) */
	TimestampTz deadline;
	bool		fail_on_timeout;
} CfMergeRules;

extern bool cf_merge_poll_due_now(int64 branch_log_id);
extern int	cf_merge_run_due_polls(Oid only_owner);
extern TimestampTz cf_merge_launcher_polls(void);

#endif							/* CF_MERGE_H */
