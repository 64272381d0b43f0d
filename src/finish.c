/*-------------------------------------------------------------------------
 *
 * finish.c
 *	  Finishing a pass: complete, release with one continuation, retry,
 *	  stall or fail the run, in the transaction that ends the pass.
 *
 * Owns the statements that end a pass and the check that the pass still
 * held the run's lock when it ended.  This file must never publish a
 * continuation while the run's lock is held (it is written in the
 * transaction that releases it), and never write for a pass that lost
 * its lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "compensation.h"
#include "finish.h"
#include "internal.h"
#include "pass.h"
#include "shmem.h"
#include "steplog.h"
#include "wakeups.h"

/*
 * Each finish statement ends with one row (owned?, next due) or none (not
 * owned): true if the pass still owned the run; the launcher is told of
 * the run's next wake-up, if any.
 */
static bool
finish_row_owned(void)
{
	bool		isnull;
	Datum		next;

	if (SPI_processed == 0 ||
		DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) == 0)
		return false;
	next = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
		cf_queue_wakeup(DatumGetTimestampTz(next));
	return true;
}

/*
 * Release the run idle and publish its continuation (or retry), in the
 * transaction that releases it: the continuation cannot become claimable
 * while the lock is held.  values[0..5] and nulls are cf_finish_pass()'s.
 * True if the pass still owned the run.
 */
static bool
finish_release(CfFinishKind kind, Datum *values, char *nulls, TimestampTz retry_at, int attempt)
{
	static SPIPlanPtr plan = NULL;
	bool		cont = (kind == CF_FINISH_RETRY) || cf_pass.has_continuation;

	values[6] = Int32GetDatum(kind == CF_FINISH_RETRY ? attempt : 0);
	cf_exec_generic(&plan,
			"WITH w AS ("
			"  UPDATE chrono_forge.workflows SET state = 'idle', locked_by = NULL, locked_at = NULL,"
			"   context = CASE WHEN $4 THEN $5 ELSE context END, attempt = $7,"
			"   retry_counts = CASE WHEN $7 = 0 THEN '{}' ELSE retry_counts END,"
			"   started_at = coalesce(started_at, $9), updated_at = $3"
			"  WHERE id = $1 AND (locked_by = $2 OR $8) RETURNING id),"
			" d AS (DELETE FROM chrono_forge.wakeups k USING w"
			"  WHERE k.workflow_id = w.id AND k.id = ANY ($6))"
			" SELECT (SELECT count(*) FROM w), (SELECT min(k.due_at) FROM chrono_forge.wakeups k"
			"  WHERE k.workflow_id = $1 AND NOT k.id = ANY (coalesce($6, '{}')))",
			9, (Oid[]) {INT8OID, TEXTOID, TIMESTAMPTZOID, BOOLOID, JSONBOID, INT8ARRAYOID, INT4OID,
			BOOLOID, TIMESTAMPTZOID},
			values, nulls, false, 0);
	if (!finish_row_owned())
		return false;
	if (cont)
		cf_wakeup_add(cf_pass.workflow_id,
					  kind == CF_FINISH_RETRY ? retry_at : cf_pass.continuation_at,
					  kind == CF_FINISH_RETRY ? "retry" :
					  cf_pass.continuation_reason ? cf_pass.continuation_reason : "continue",
					  CF_WAKEUP_UNLESS_SAME);
	return true;
}

/*
 * End the run completed or stalled; values[0..5] and nulls are
 * cf_finish_pass()'s.  True if the pass still owned the run.
 */
static bool
finish_terminal(CfFinishKind kind, Datum *values, char *nulls)
{
	static SPIPlanPtr plan = NULL;

	values[6] = CStringGetTextDatum(kind == CF_FINISH_COMPLETE ? "completed" : "stalled");
	/* The run's result (set_result()) is kept with its completion. */
	values[9] = cf_pass.result ? JsonbPGetDatum(cf_pass.result) : (Datum) 0;
	nulls[9] = cf_pass.result ? ' ' : 'n';
	cf_exec_generic(&plan,
			"WITH w AS ("
			"  UPDATE chrono_forge.workflows SET state = $7::chrono_forge.workflow_state,"
			"   completed_at = CASE WHEN $7 = 'completed' THEN $3 ELSE completed_at END,"
			"   started_at = coalesce(started_at, $9),"
			"   locked_by = NULL, locked_at = NULL, attempt = 0, retry_counts = '{}',"
			"   context = CASE WHEN $4 THEN $5 ELSE context END, updated_at = $3"
			"  WHERE id = $1 AND (locked_by = $2 OR $8) RETURNING id),"
			" l AS (INSERT INTO chrono_forge.execution_logs"
			"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, result)"
			"  SELECT id, '$workflow_completion$', 'completed', 1, $3, $3, $3, $10 FROM w"
			"  WHERE $7 = 'completed' ON CONFLICT (workflow_id, step_name) DO NOTHING),"
			" d AS (DELETE FROM chrono_forge.wakeups k USING w WHERE k.workflow_id = w.id)"
			" SELECT (SELECT count(*) FROM w), NULL::timestamptz",
			10, (Oid[]) {INT8OID, TEXTOID, TIMESTAMPTZOID, BOOLOID, JSONBOID, INT8ARRAYOID, TEXTOID,
			BOOLOID, TIMESTAMPTZOID, JSONBOID},
			values, nulls, false, 0);
	return finish_row_owned();
}

/*
 * End a compensation pass (0.12.0): the run is compensated, with a
 * $workflow_compensated$ marker counting the undo steps that ran.
 * values[0..5], [7], [8] and nulls are cf_finish_pass()'s.  True if the
 * pass still owned the run.
 */
static bool
finish_compensated(Datum *values, char *nulls)
{
	static SPIPlanPtr plan = NULL;

	cf_exec_generic(&plan,
			"WITH w AS ("
			"  UPDATE chrono_forge.workflows SET state = 'compensated',"
			"   started_at = coalesce(started_at, $9), locked_by = NULL, locked_at = NULL,"
			"   attempt = 0, retry_counts = '{}',"
			"   context = CASE WHEN $4 THEN $5 ELSE context END, updated_at = $3"
			"  WHERE id = $1 AND (locked_by = $2 OR $8) RETURNING id),"
			" l AS (INSERT INTO chrono_forge.execution_logs"
			"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, metadata)"
			"  SELECT id, '$workflow_compensated$', 'completed', 1, $3, $3, $3,"
			"   jsonb_build_object('undone', (SELECT count(*) FROM chrono_forge.execution_logs u"
			"    WHERE u.workflow_id = $1 AND u.state = 'completed' AND u.step_name LIKE 'compensate$%'))"
			"  FROM w ON CONFLICT (workflow_id, step_name) DO NOTHING),"
			" d AS (DELETE FROM chrono_forge.wakeups k USING w WHERE k.workflow_id = w.id)"
			" SELECT (SELECT count(*) FROM w), NULL::timestamptz",
			9, (Oid[]) {INT8OID, TEXTOID, TIMESTAMPTZOID, BOOLOID, JSONBOID, INT8ARRAYOID, INT4OID,
			BOOLOID, TIMESTAMPTZOID},
			values, nulls, false, 0);
	return finish_row_owned();
}

/*
 * End the run failed: check the lock before writing the failure, then log
 * the error and mark the run with it.  A run with undo steps registered
 * (0.12.0) compensates instead: idle, its workflow-level budget new, due
 * now for its compensation.  values[0..5] and nulls are
 * cf_finish_pass()'s.  True if the pass still owned the run.
 */
static bool
finish_failed(Datum *values, char *nulls, int attempt, ErrorData *edata, TimestampTz now)
{
	static SPIPlanPtr failure_plan = NULL;
	static SPIPlanPtr marker_plan = NULL;
	int64		error_id;
	Datum		mvalues[3];
	bool		compensate = !cf_pass.compensating && cf_compensation_due(cf_pass.workflow_id);

	values[6] = Int32GetDatum(attempt);
	values[7] = BoolGetDatum(compensate);
	cf_exec_generic(&failure_plan,
			"UPDATE chrono_forge.workflows"
			" SET state = CASE WHEN $8 THEN 'idle' ELSE 'failed' END::chrono_forge.workflow_state,"
			" locked_by = NULL, locked_at = NULL, attempt = CASE WHEN $8 THEN 0 ELSE $7 END,"
			" retry_counts = CASE WHEN $8 THEN '{}' ELSE retry_counts END,"
			" context = CASE WHEN $4 THEN $5 ELSE context END, updated_at = $3"
			" WHERE id = $1 AND locked_by = $2"
			" RETURNING id, NULL::timestamptz",
			8, (Oid[]) {INT8OID, TEXTOID, TIMESTAMPTZOID, BOOLOID, JSONBOID, INT8ARRAYOID, INT4OID,
			BOOLOID},
			values, nulls, false, 0);
	if (SPI_processed != 1)
		return false;
	error_id = cf_log_error(cf_pass.workflow_id, NULL, attempt, edata, cf_pass.context);
	mvalues[0] = Int64GetDatum(cf_pass.workflow_id);
	mvalues[1] = Int64GetDatum(error_id);
	mvalues[2] = TimestampTzGetDatum(now);
	cf_exec_generic(&marker_plan,
			"WITH l AS (INSERT INTO chrono_forge.execution_logs"
			"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, metadata)"
			"  VALUES ($1, '$workflow_failure$' || $2, 'completed', 1, $3, $3, $3,"
			"   jsonb_build_object('error_log_id', $2))),"
			" d AS (DELETE FROM chrono_forge.wakeups WHERE workflow_id = $1)"
			" SELECT 1::bigint, NULL::timestamptz",
			3, (Oid[]) {INT8OID, INT8OID, TIMESTAMPTZOID}, mvalues, NULL, false, 0);
	if (!finish_row_owned())
		return false;
	if (compensate)
	{
		Jsonb	   *why = cf_compensation_why("failure", edata->message, InvalidOid, 0);

		cf_compensation_mark(PointerGetDatum(construct_array(&mvalues[0], 1, INT8OID, sizeof(int64),
															 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
							 why);
	}
	return true;
}

/* A retry: remember the workflow-level failure itself, and the counts. */
static void
record_retried_failure(ErrorData *edata, int attempt, Jsonb *counts)
{
	static SPIPlanPtr plan = NULL;

	cf_log_error(cf_pass.workflow_id, NULL, attempt, edata, cf_pass.context);
	cf_exec_generic(&plan,
			"UPDATE chrono_forge.workflows SET retry_counts = $2 WHERE id = $1",
			2, (Oid[]) {INT8OID, JSONBOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), JsonbPGetDatum(counts)},
			NULL, false, 0);
}

/*
 * End the pass in the current transaction (the caller commits).  Every
 * branch first proves the lock is still ours; if it is not, the pass ends
 * quietly and leaves the new owner alone, and this returns false.
 */
bool
cf_finish_pass(CfFinishKind kind, ErrorData *edata, TimestampTz retry_at,
			int attempt, Jsonb *retry_counts)
{
	Datum		values[10];
	char		nulls[11] = "          ";
	CfInternal	st;
	TimestampTz now = cf_clock_now();
	Jsonb	   *counts = retry_counts ? retry_counts : cf_pass.retry_counts;
	bool		owned;

	/* A child completed in its first pass: its run is written once. */
	if (cf_pass.run_unwritten)
	{
		cf_write_taken_run_as(kind == CF_FINISH_COMPLETE);
		if (kind == CF_FINISH_COMPLETE)
			return true;
	}

	/* $1..$6 of every branch's statement. */
	values[0] = Int64GetDatum(cf_pass.workflow_id);
	values[1] = CStringGetTextDatum(cf_pass.lock_token);
	values[2] = TimestampTzGetDatum(now);
	values[3] = BoolGetDatum(cf_pass.context_dirty);
	values[4] = JsonbPGetDatum(cf_pass.context);
	values[5] = cf_pass.claimed_wakeups;
	if (cf_pass.claimed_wakeups == (Datum) 0)
		nulls[5] = 'n';
	/* $8, $9 of release and terminal: a pass that never committed (or
	 * parks in its first transaction) ends holding the claim's row lock. */
	values[7] = BoolGetDatum(!cf_pass.stamped);
	values[8] = TimestampTzGetDatum(cf_pass.claimed_at);

	cf_internal_begin(&st);
	if (kind == CF_FINISH_RELEASE || kind == CF_FINISH_RETRY)
		owned = finish_release(kind, values, nulls, retry_at, attempt);
	else if (kind == CF_FINISH_COMPLETE || kind == CF_FINISH_STALL)
		owned = finish_terminal(kind, values, nulls);
	else if (kind == CF_FINISH_COMPENSATED)
		owned = finish_compensated(values, nulls);
	else
		owned = finish_failed(values, nulls, attempt, edata, now);

	if (!owned)
	{
		cf_internal_end(&st);
		ereport(LOG,
				(errmsg("chrono_forge: pass of workflow run %lld lost its lock; it ends without writing",
						(long long) cf_pass.workflow_id)));
		return false;
	}
	if (kind == CF_FINISH_RETRY)
		record_retried_failure(edata, attempt, counts);
	cf_internal_end(&st);
	return true;
}

/* cf_park()'s release: in the transaction of the primitive that parks. */
static bool
release_parked_pass(void)
{
	return cf_finish_pass(CF_FINISH_RELEASE, NULL, 0, 0, NULL);
}

void
cf_finish_register(void)
{
	cf_release_parked_pass = release_parked_pass;
}
