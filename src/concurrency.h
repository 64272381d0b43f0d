/*-------------------------------------------------------------------------
 *
 * concurrency.h
 *	  What concurrency.c exports.
 *
 * Concurrency limits: the gate a run is admitted through, the runs that
 * wait for a place.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_CONCURRENCY_H
#define CF_CONCURRENCY_H

#include "chrono_forge.h"

#include "utils/jsonb.h"

/* Places given back that one look takes at most. */
#define CF_GATE_RELEASE_BATCH 10000

extern char *cf_concurrency_key_option(Jsonb *options);
extern int64 cf_gate_for(Oid owner, const char *workflow, const char *key);
extern bool cf_gate_admit(int64 run, int64 gate, TimestampTz now);
extern void cf_gate_release(int64 gate, int64 run, bool started);
extern void cf_concurrency_register(void);
extern int	cf_gates_admit(Oid only_owner, bool *more, TimestampTz *next);
extern bool cf_gate_waiting(int64 run);
extern int64 cf_gate_of_run(int64 run);

#endif							/* CF_CONCURRENCY_H */
