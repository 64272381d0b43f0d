/*-------------------------------------------------------------------------
 *
 * finish.h
 *	  What finish.c exports.
 *
 * Finishing a pass: complete, release with one continuation, retry,
 * stall or fail the run, in the transaction that ends the pass.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_FINISH_H
#define CF_FINISH_H

#include "chrono_forge.h"

typedef enum CfFinishKind
{
	CF_FINISH_COMPLETE,
	CF_FINISH_RELEASE,
	CF_FINISH_STALL,
	CF_FINISH_FAIL,
	CF_FINISH_RETRY,
	CF_FINISH_COMPENSATED		/* 0.12.0: a compensation pass ended */
} CfFinishKind;

extern bool cf_finish_pass(CfFinishKind kind, ErrorData *edata, TimestampTz retry_at,
						   int attempt, Jsonb *retry_counts);
extern void cf_finish_register(void);

#endif							/* CF_FINISH_H */
