/*-------------------------------------------------------------------------
 *
 * call.h
 *	  What call.c exports.
 *
 * Calling the user's functions: steps, conditions.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_CALL_H
#define CF_CALL_H

#include "chrono_forge.h"

typedef struct CfFunction
{
	Oid			fn;				/* hash key */
	SPIPlanPtr	plan;
	Oid			argtype;		/* JSONBOID, TIMESTAMPTZOID or none */
	Oid			rettype;
} CfFunction;

extern CfFunction *cf_function_lookup(const char *name, const char *what,
									  bool takes_time);

extern Jsonb *cf_function_call(CfFunction *f, Jsonb *args, TimestampTz at);
extern ErrorData *cf_run_guarded(void (*fn) (void *), void *arg);
extern bool cf_error_is_fatal_to_pass(ErrorData *edata);

#endif							/* CF_CALL_H */
