/*-------------------------------------------------------------------------
 *
 * access.h
 *	  What access.c exports.
 *
 * Who may act on what: admins, own runs, resolving a workflow.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_ACCESS_H
#define CF_ACCESS_H

#include "chrono_forge.h"

typedef struct CfRunRef
{
	int64		id;
	char	   *state;
} CfRunRef;

extern char *cf_resolve_workflow(const char *workflow, bool must_own);
extern char *cf_canonical_workflow(const char *workflow);

extern CfRunRef cf_find_own_run(Oid caller, const char *workflow, const char *key,
								bool for_update);
extern int64 cf_find_visible_run(Oid caller, const char *workflow, const char *key);
extern void cf_unknown_run(const char *workflow, const char *key) pg_attribute_noreturn();

extern bool cf_is_admin(Oid role);
extern void cf_not_your_runs(const char *what, const char *workflow, const char *key);

#endif							/* CF_ACCESS_H */
