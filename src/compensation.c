/*-------------------------------------------------------------------------
 *
 * compensation.c
 *	  A run's way into compensation (0.12.0): the rows that turn a run
 *	  that failed, was cancelled or asked for it into one whose next
 *	  passes run its undo steps.
 *
 * Owns which runs compensate (those with an undo step registered, not
 * compensating already) and the writes that start it: the run idle and
 * unlocked, its deadline gone, its wake-ups replaced by one due now, and
 * a $workflow_compensating$ marker saying why (the marker is what the
 * next pass reads to run the undo steps instead of the body).  The undo
 * steps themselves run in compensate.c.  This file must never start the
 * compensation of a run a pass holds (callers hold its row or its lock)
 * and never start it twice.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "access/htup_details.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "compensation.h"
#include "internal.h"
#include "wakeups.h"

/* A completed step of the run registered an undo step. */
#define HAS_UNDO_SQL(run) \
	" EXISTS (SELECT 1 FROM chrono_forge.execution_logs l WHERE l.workflow_id = " run \
	"  AND l.state = 'completed' AND l.metadata ? 'compensate')" \
	" AND NOT " CF_COMPENSATING_SQL(run)

/*
 * Does the run have undo steps to run, and is it not compensating yet?
 * False on a schema before 0.12.0, where no step registers one.
 */
bool
cf_compensation_due(int64 run)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	bool		due;

	if (!cf_schema_at_least(CF_SCHEMA(0, 12, 0)))
		return false;
	cf_internal_begin(&st);
	cf_exec(&plan, "SELECT 1 WHERE" HAS_UNDO_SQL("$1"),
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(run)}, NULL, false, 1);
	due = SPI_processed > 0;
	cf_internal_end(&st);
	return due;
}

/*
 * The runs `ids` (an int8[], already idle and unlocked, their rows held
 * by the caller's transaction) begin their compensation: no deadline, a
 * $workflow_compensating$ marker with `why`, and one wake-up due now in
 * place of any they had.  The caller is connected to SPI and commits.
 */
void
cf_compensation_mark(Datum ids, Jsonb *why)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	TimestampTz now = cf_clock_now();

	cf_internal_begin(&st);
	cf_exec(&plan,
			"WITH u AS (UPDATE chrono_forge.workflows SET deadline = NULL"
			"  WHERE id = ANY ($1) RETURNING id),"
			" k AS (DELETE FROM chrono_forge.wakeups k WHERE k.workflow_id = ANY ($1))"
			" INSERT INTO chrono_forge.execution_logs"
			"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, metadata)"
			" SELECT id, '" CF_COMPENSATING_MARKER "', 'completed', 1, $2, $2, $2, $3 FROM u",
			3, (Oid[]) {INT8ARRAYOID, TIMESTAMPTZOID, JSONBOID},
			(Datum[]) {ids, TimestampTzGetDatum(now), JsonbPGetDatum(why)}, NULL, false, 0);
	cf_internal_end(&st);
	(void) cf_wakeups_add(ids, now, "compensate", CF_WAKEUP_ALWAYS);
}

/*
 * Of the runs `ids` (an int8[]) that have not ended, those no pass holds
 * (SKIP LOCKED) with undo steps and not compensating yet begin their
 * compensation, with `why` in their marker: idle and unlocked, then
 * cf_compensation_mark().  Returns the other runs of `ids` (an int8[]),
 * for the caller to end; *n how many began, *running those of them a
 * pass was running between two steps (its lock is gone: it stops at its
 * next commit), or 0.  The decision is made after the lock, by a
 * statement of its own, so it sees every step committed before.  The
 * caller is connected to SPI and commits.
 */
Datum
cf_compensation_begin(Datum ids, Jsonb *why, int *n, Datum *running)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	bool		isnull;
	Datum		locked;
	HeapTuple	row;
	TupleDesc	desc;

	*n = 0;
	*running = (Datum) 0;
	if (!cf_schema_at_least(CF_SCHEMA(0, 12, 0)))
		return ids;
	cf_internal_begin(&st);
	cf_exec(&lock_plan,
			"SELECT array_agg(id) FROM (SELECT w.id FROM chrono_forge.workflows w"
			" WHERE w.id = ANY ($1) AND w.state::text IN ('idle', 'running', 'stalled')"
			" FOR NO KEY UPDATE SKIP LOCKED) x",
			1, (Oid[]) {INT8ARRAYOID}, (Datum[]) {ids}, NULL, false, 0);
	locked = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
	{
		cf_internal_end(&st);
		return ids;
	}
	cf_exec(&plan,
			"WITH x AS (SELECT w.id, w.state AS was FROM chrono_forge.workflows w"
			"  WHERE w.id = ANY ($1) AND" HAS_UNDO_SQL("w.id") "),"
			" u AS (UPDATE chrono_forge.workflows w SET state = 'idle', locked_by = NULL,"
			"  locked_at = NULL, updated_at = $2 FROM x WHERE w.id = x.id RETURNING w.id, x.was)"
			" SELECT (SELECT count(*) FROM u)::int4, (SELECT array_agg(id) FROM u),"
			"  (SELECT array_agg(id) FROM u WHERE was = 'running'),"
			"  ARRAY(SELECT unnest($3::int8[]) EXCEPT ALL SELECT id FROM u)",
			3, (Oid[]) {INT8ARRAYOID, TIMESTAMPTZOID, INT8ARRAYOID},
			(Datum[]) {locked, TimestampTzGetDatum(cf_clock_now()), ids}, NULL, false, 0);
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	*n = DatumGetInt32(SPI_getbinval(row, desc, 1, &isnull));
	if (*n > 0)
	{
		Datum		r = SPI_getbinval(row, desc, 3, &isnull);
		Datum		began;

		if (!isnull)
			*running = PointerGetDatum(PG_DETOAST_DATUM_COPY(r));
		began = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(row, desc, 2, &isnull)));

		ids = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(row, desc, 4, &isnull)));
		cf_compensation_mark(began, why);
	}
	cf_internal_end(&st);
	return ids;
}

/*
 * Why a run compensates, as its $workflow_compensating$ marker's
 * metadata: `kind` ("failure", "cancel", "deadline", "requested"), a
 * reason (NULL: none), who asked (InvalidOid: nobody) and the run a
 * cancel() named (0: none).
 */
Jsonb *
cf_compensation_why(const char *kind, const char *reason, Oid requested_by, int64 cancelled_run)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"reason\": ");
	escape_json(&buf, kind);
	if (reason != NULL)
	{
		appendStringInfoString(&buf, ", \"detail\": ");
		escape_json(&buf, reason);
	}
	if (OidIsValid(requested_by))
	{
		char	   *name = GetUserNameFromId(requested_by, true);

		appendStringInfoString(&buf, ", \"requested_by\": ");
		escape_json(&buf, name ? quote_identifier(name) : "-");
	}
	if (cancelled_run != 0)
		appendStringInfo(&buf, ", \"cancelled_run\": " INT64_FORMAT, cancelled_run);
	appendStringInfoChar(&buf, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
