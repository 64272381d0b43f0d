/*-------------------------------------------------------------------------
 *
 * branch.h
 *	  What branch.c exports.
 *
 * Fan-out: branch, seal_branch, merge_branches, the unmerged-branch gate
 * and the child-to-parent nudge at completion (spawning is spawn.c's, the
 * branch probes probes.c's, the merge poller merge.c's).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_BRANCH_H
#define CF_BRANCH_H

#include "chrono_forge.h"

extern void cf_branch_before_complete(void);
extern void cf_branch_after_pass(bool completed);
extern int64 cf_branch_take_nudge(void);
extern void cf_branch_nudge(int64 log_id);

typedef struct CfBranchRef
{
	const char *name;
	int64		log_id;
	bool		sealed;
} CfBranchRef;

extern CfBranchRef cf_branch_current(const char *primitive);

#endif							/* CF_BRANCH_H */
