/*-------------------------------------------------------------------------
 *
 * results.c
 *	  What a run hands back: set_result(), and its children's results as
 *	  its parent reads them (a merge's aggregate, child_results()'s branch).
 *
 * A run's result lives in the pass's memory and is written with the run's
 * completion, as the result of its $workflow_completion$ log (finish.c,
 * pass.c).  A pass replays the body from its top, so the pass that
 * completes the run has called set_result() again on its way: nothing
 * needs to be written before.  That is also why set_result() is called
 * from the body only, as every primitive, and never from a step: a step
 * does not run again on replay.
 *
 * Children's results are read from their completion logs: a completed
 * child's result never changes.  This file must never write a table, and
 * never read another run's children than the current pass's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "internal.h"
#include "pass.h"
#include "results.h"
#include "util.h"

PG_FUNCTION_INFO_V1(cf_set_result);
PG_FUNCTION_INFO_V1(cf_pass_branch);

/*
 * set_result(result jsonb): the run's result, kept with its completion
 * (NULL: none).  A value over CF_RESULT_MAX_BYTES as JSON fails the run
 * (CF028): it would fail on every replay.
 */
Datum
cf_set_result(PG_FUNCTION_ARGS)
{
	Jsonb	   *result;
	MemoryContext old;

	cf_require_pass(fcinfo, "set_result");
	cf_pass.outcome = CF_OUTCOME_NONE;
	if (PG_ARGISNULL(0))
	{
		cf_pass.result = NULL;
		PG_RETURN_VOID();
	}
	result = PG_GETARG_JSONB_P(0);
	if (strlen(JsonbToCString(NULL, &result->root, VARSIZE(result))) > CF_RESULT_MAX_BYTES)
		cf_fail_run(ERRCODE_CF_RESULT_TOO_LARGE,
					psprintf("a run's result may be at most %d bytes as JSON", CF_RESULT_MAX_BYTES),
					"Keep large data in a table of your own and return its key.");
	old = MemoryContextSwitchTo(cf_pass.cxt);
	cf_pass.result = DatumGetJsonbPCopy(JsonbPGetDatum(result));
	MemoryContextSwitchTo(old);
	PG_RETURN_VOID();
}

/*
 * The results of the completed children of branch logs log_ids (named
 * names), as {branch: {child name: result}}: a child's name is its key
 * after "$<run id>$<run key>$<branch>$" (the spawn's name, with "_<item
 * key>" for spawn_each).  More than CF_MERGE_RESULTS_MAX children fail the
 * run (CF028): child_results() pages through them.  Caller is connected
 * to SPI.
 */
Jsonb *
cf_merge_results(int64 *log_ids, char **names, int n)
{
	static SPIPlanPtr count_plan = NULL;
	static SPIPlanPtr plan = NULL;
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *branches = palloc(sizeof(Datum) * n);
	Datum	   *prefixes = palloc(sizeof(Datum) * n);
	Datum		values[3];
	CfInternal	st;
	bool		isnull;
	int64		children;
	Jsonb	   *results;

	for (int i = 0; i < n; i++)
	{
		ids[i] = Int64GetDatum(log_ids[i]);
		branches[i] = CStringGetTextDatum(names[i]);
		prefixes[i] = CStringGetTextDatum(cf_child_key(names[i], ""));
	}
	values[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(branches, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(prefixes, n, TEXTOID, -1, false, TYPALIGN_INT));

	cf_internal_begin(&st);
	/* Index-only on workflows_children_idx (3: completed). */
	cf_exec(&count_plan,
			"SELECT count(*) FROM chrono_forge.workflows"
			" WHERE parent_execution_log_id OPERATOR(pg_catalog.=) ANY ($1)"
			"  AND state_code OPERATOR(pg_catalog.=) 3",
			1, (Oid[]) {INT8ARRAYOID}, values, NULL, true, 1);
	children = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (children > CF_MERGE_RESULTS_MAX)
	{
		cf_internal_end(&st);
		cf_fail_run(ERRCODE_CF_RESULT_TOO_LARGE,
					psprintf("merge_branches hands back the results of at most %d children; "
							 "these branches have " INT64_FORMAT " completed children",
							 CF_MERGE_RESULTS_MAX, children),
					"Merge without results and page through them with chrono_forge.child_results().");
	}
	cf_exec(&plan,
			"SELECT pg_catalog.jsonb_object_agg(b.name, coalesce(("
			"  SELECT pg_catalog.jsonb_object_agg(CASE WHEN pg_catalog.starts_with(w.key, b.prefix)"
			"    THEN pg_catalog.substr(w.key, pg_catalog.length(b.prefix) OPERATOR(pg_catalog.+) 1)"
			"    ELSE w.key END, l.result)"
			"   FROM chrono_forge.workflows w"
			"   LEFT JOIN chrono_forge.execution_logs l ON l.workflow_id OPERATOR(pg_catalog.=) w.id"
			"    AND l.step_name OPERATOR(pg_catalog.=) '$workflow_completion$'"
			"   WHERE w.parent_execution_log_id OPERATOR(pg_catalog.=) b.log_id"
			"    AND w.state_code OPERATOR(pg_catalog.=) 3), '{}'))"
			" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3))"
			"  AS b(log_id, name, prefix)",
			3, (Oid[]) {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID}, values, NULL, true, 1);
	results = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	cf_internal_end(&st);
	return results;
}

/*
 * pass_branch(branch text, OUT log_id bigint, OUT key_prefix text): the
 * current pass's branch of that name, for child_results(): its log, and
 * the prefix of its children's keys.  CF013 outside a pass, CF008 for a
 * branch the run has not opened.
 */
Datum
cf_pass_branch(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *branch = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	CfInternal	st;
	bool		isnull;

	if (!cf_pass.active)
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_IN_PASS),
				 errmsg("chrono_forge.child_results() can only be called while chrono_forge runs a workflow"),
				 errhint("Call it from the parent's body or one of its steps.")));
	cf_validate_name_segment("branch name", branch);
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pass_branch: a composite result expected");

	SPI_connect();
	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT id FROM chrono_forge.execution_logs"
			" WHERE workflow_id OPERATOR(pg_catalog.=) $1 AND step_name OPERATOR(pg_catalog.=) $2",
			2, (Oid[]) {INT8OID, TEXTOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(psprintf("branch$%s", branch))},
			NULL, true, 1);
	cf_internal_end(&st);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_CF_UNKNOWN_BRANCH),
				 errmsg("unknown branch \"%s\"", branch),
				 errdetail("This run has not opened a branch of that name.")));
	values[0] = Int64GetDatum(DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 1, &isnull)));
	SPI_finish();
	values[1] = CStringGetTextDatum(cf_child_key(branch, ""));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
