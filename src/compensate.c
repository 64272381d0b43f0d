/*-------------------------------------------------------------------------
 *
 * compensate.c
 *	  Compensation inside a pass (0.12.0): compensate(), and the body of
 *	  a compensating run's passes, which runs its undo steps.
 *
 * Owns the order and the protocol of undo steps: the undo steps that
 * completed steps registered (durably_execute(..., compensate => f)) run
 * newest first, each as a durable step "compensate$<step>" with its own
 * retry policy, committed like any step, skipped on replay once
 * completed.  The pass that runs the last of them ends the run
 * compensated (finish.c).  This file must never run the workflow's body
 * in a compensating run, nor an undo step twice, nor run the body of
 * compensation for a run that is not compensating.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "nodes/pg_list.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "call.h"
#include "compensation.h"
#include "internal.h"
#include "pass.h"
#include "replay.h"
#include "step.h"

PG_FUNCTION_INFO_V1(cf_compensate);
PG_FUNCTION_INFO_V1(cf_run_compensation);

/* An undo step to run, as its step's log registered it. */
typedef struct Undo
{
	char	   *step_name;		/* compensate$<the step's name> */
	char	   *function;
	Jsonb	   *policy;
	Jsonb	   *arg;			/* {"step", "args", "result"} */
} Undo;

/*
 * compensate(reason): from here on the run undoes what it did.  The
 * step before commits, the run is marked (compensation.c) and the pass
 * parks; the next pass, due at once, runs the undo steps.
 */
Datum
cf_compensate(PG_FUNCTION_ARGS)
{
	char	   *reason = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Datum		run = Int64GetDatum(cf_pass.workflow_id);

	cf_require_pass(fcinfo, "compensate");
	if (reason != NULL && strlen(reason) > CF_JSON_MAX_BYTES)
		cf_primitive_invalid_argument(psprintf("compensate reason is too long (at most %d bytes)",
											   CF_JSON_MAX_BYTES));
	cf_spi_connect();
	cf_write_taken_run();		/* a child in its first pass: the marker needs its row */
	cf_compensation_mark(PointerGetDatum(construct_array(&run, 1, INT8OID, sizeof(int64),
														 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
						 cf_compensation_why("requested", reason, InvalidOid, 0));
	cf_park("compensate", false);
	PG_RETURN_VOID();			/* not reached */
}

/*
 * The undo steps the run's completed steps registered, newest first (a
 * step's log is written by its first attempt and the body runs steps one
 * at a time, so log order is completion order), in the pass's memory.
 * Each undo function gets {"step", "args" (the step's, else the
 * workflow's), "result"}.
 */
static List *
registered_undos(void)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	List	   *undos = NIL;
	MemoryContext old;

	cf_spi_connect();
	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT 'compensate$' || l.step_name, l.metadata->>'compensate',"
			"  l.metadata->'compensate_policy',"
			"  jsonb_build_object('step', l.step_name,"
			"   'args', coalesce(l.metadata->'compensate_args', $2), 'result', l.result)"
			" FROM chrono_forge.execution_logs l"
			" WHERE l.workflow_id = $1 AND l.state = 'completed' AND l.metadata ? 'compensate'"
			" ORDER BY l.id DESC",
			2, (Oid[]) {INT8OID, JSONBOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), JsonbPGetDatum(cf_pass.args)},
			NULL, true, 0);
	cf_internal_end(&st);
	old = MemoryContextSwitchTo(cf_pass.cxt);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Undo	   *u = palloc(sizeof(Undo));
		bool		isnull;
		Datum		policy;

		u->step_name = TextDatumGetCString(SPI_getbinval(row, desc, 1, &isnull));
		u->function = TextDatumGetCString(SPI_getbinval(row, desc, 2, &isnull));
		policy = SPI_getbinval(row, desc, 3, &isnull);
		u->policy = isnull ? NULL : DatumGetJsonbPCopy(policy);
		u->arg = DatumGetJsonbPCopy(SPI_getbinval(row, desc, 4, &isnull));
		undos = lappend(undos, u);
	}
	MemoryContextSwitchTo(old);
	SPI_finish();
	return undos;
}

/*
 * run_compensation(args): the body of a compensating run's pass (the
 * executor CALLs it in place of the workflow procedure, as the owner).
 * Runs each undo step not completed yet; returning ends the run
 * compensated.  An undo step that fails is retried per its policy (the
 * step's compensate_policy, else configure()'s, else 3 attempts); when
 * the policy is exhausted the run stalls (CF009) and retry() resumes the
 * compensation at that undo step.
 */
Datum
cf_run_compensation(PG_FUNCTION_ARGS)
{
	ListCell   *lc;

	cf_require_pass(fcinfo, "run_compensation");
	if (!cf_pass.compensating)
		cf_fail_run(ERRCODE_CF_NOT_IN_PASS,
					"chrono_forge.run_compensation runs only the undo steps of a compensating run",
					"A workflow calls chrono_forge.compensate(); the engine runs the undo steps.");
	foreach(lc, registered_undos())
	{
		Undo	   *u = (Undo *) lfirst(lc);
		Jsonb	   *done;
		CfFunction *function;

		if (cf_step_completed(u->step_name, &done))
			continue;
		cf_check_pass_stop();
		cf_commit_pending_step();
		cf_pass.outcome = CF_OUTCOME_NONE;
		cf_spi_connect();
		function = cf_function_lookup(u->function, "compensation", false);
		(void) cf_run_step(u->step_name, function, u->arg, u->policy, NULL);
	}
	PG_RETURN_VOID();
}
