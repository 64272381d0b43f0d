/*-------------------------------------------------------------------------
 *
 * probes.h
 *	  What probes.c exports.
 *
 * How far a branch's children are: branch_sealed, branch_pending,
 * branch_done, and the counts the merge poller reads.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_PROBES_H
#define CF_PROBES_H

#include "chrono_forge.h"

extern int64 cf_branch_children_pending(int64 log_id, int64 cap, int64 *never_started,
										int64 *running, int64 *blocked);

extern int64 cf_branch_children_live(int64 log_id, int64 cap);
extern int64 cf_branch_children_blocked(int64 log_id);
extern bool cf_branch_is_sealed(int64 log_id);
extern char *cf_probe_check(int64 log_id);

#endif							/* CF_PROBES_H */
