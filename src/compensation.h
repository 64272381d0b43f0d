/*-------------------------------------------------------------------------
 *
 * compensation.h
 *	  What compensation.c exports.
 *
 * A run's way into compensation: which runs compensate, and the rows
 * that start it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_COMPENSATION_H
#define CF_COMPENSATION_H

#include "chrono_forge.h"

/* SQL: is the run (an SQL expression) compensating (has its marker)? */
#define CF_COMPENSATING_SQL(run) \
	"EXISTS (SELECT 1 FROM chrono_forge.execution_logs c WHERE c.workflow_id = " run \
	" AND c.step_name = '" CF_COMPENSATING_MARKER "')"

extern bool cf_compensation_due(int64 run);
extern Jsonb *cf_compensation_why(const char *kind, const char *reason, Oid requested_by,
								  int64 cancelled_run);
extern void cf_compensation_mark(Datum ids, Jsonb *why);
extern Datum cf_compensation_begin(Datum ids, Jsonb *why, int *n, Datum *running);

#endif							/* CF_COMPENSATION_H */
