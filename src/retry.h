/*-------------------------------------------------------------------------
 *
 * retry.h
 *	  What retry.c exports.
 *
 * Retry policies: validation, matching errors, budgets and backoff.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_RETRY_H
#define CF_RETRY_H

#include "chrono_forge.h"

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

#endif							/* CF_RETRY_H */
