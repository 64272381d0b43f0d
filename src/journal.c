/*-------------------------------------------------------------------------
 *
 * journal.c
 *	  The journal: step log and error log rows, of any run.
 *
 * Owns the statements that read and write execution_logs and error_logs
 * rows by run id (the pass's cache and lock proof around them are
 * steplog.c's).  Knows nothing of the current pass: every run id and lock
 * token is the caller's.  Must never run user code.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/table.h"
#include "access/genam.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "internal.h"
#include "journal.h"
#include "util.h"

/*
 * The run's context as kept with an error: whole up to
 * CF_ERROR_CONTEXT_MAX bytes of JSON, else its keys in order while they
 * fit, and "$truncated": {bytes, keys, kept} (the whole snapshot's size
 * and key count, the keys kept).  A run may hold far more context than
 * one error row should copy, once per failed attempt.
 */
static Jsonb *
capped_context(Jsonb *context)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	bool		isnull;
	Datum		d;
	size_t		bytes;

	if (context == NULL)
		return NULL;
	bytes = strlen(JsonbToCString(NULL, &context->root, VARSIZE(context)));
	if (bytes <= CF_ERROR_CONTEXT_MAX)
		return context;
	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT coalesce(pg_catalog.jsonb_object_agg(k, v) FILTER (WHERE used <= $2), '{}')"
			" || pg_catalog.jsonb_build_object('$truncated', pg_catalog.jsonb_build_object("
			"  'bytes', $3, 'keys', pg_catalog.count(k), 'kept', pg_catalog.count(k) FILTER (WHERE used <= $2)))"
			" FROM (SELECT e.k, e.v, pg_catalog.sum(pg_catalog.octet_length(e.k)"
			"   + pg_catalog.octet_length(e.v::text) + 6) OVER (ORDER BY e.k) AS used"
			"  FROM pg_catalog.jsonb_each(CASE WHEN pg_catalog.jsonb_typeof($1) = 'object'"
			"   THEN $1 ELSE '{}' END) AS e(k, v)) s",
			3, (Oid[]) {JSONBOID, INT8OID, INT8OID},
			(Datum[]) {JsonbPGetDatum(context), Int64GetDatum(CF_ERROR_CONTEXT_MAX - 256),
				Int64GetDatum((int64) bytes)},
			NULL, true, 1);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	cf_internal_end(&st);
	return DatumGetJsonbPCopy(d);
}

/* At most CF_ERROR_WHERE_MAX bytes of s (its start: the innermost frames). */
static Datum
clipped_text(const char *s)
{
	int			len = strlen(s);

	if (len > CF_ERROR_WHERE_MAX)
		return PointerGetDatum(cstring_to_text(psprintf("%.*s...",
														pg_mbcliplen(s, len, CF_ERROR_WHERE_MAX), s)));
	return CStringGetTextDatum(s);
}

/*
 * Insert an error_logs row; returns its id.  Caller is connected to SPI.
 * The error's hint and context (where it was raised) have columns of
 * their own since 0.6.0: a schema not updated yet gets the row without
 * them.
 */
int64
cf_journal_log_error(int64 workflow_id, const char *step_name, int attempt,
					 ErrorData *edata, Jsonb *context)
{
	static SPIPlanPtr plans[2];
	Oid			types[9] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, JSONBOID,
	TEXTOID, TEXTOID};
	Datum		values[9];
	char		nulls[9] = "         ";
	bool		isnull;
	CfInternal	st;
	bool		v06 = cf_schema_at_least(CF_SCHEMA(0, 6, 0));

	values[0] = Int64GetDatum(workflow_id);
	if (step_name)
		values[1] = CStringGetTextDatum(step_name);
	else
		nulls[1] = 'n';
	values[2] = Int32GetDatum(attempt);
	values[3] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
	if (edata->message)
		values[4] = CStringGetTextDatum(edata->message);
	else
		nulls[4] = 'n';
	if (edata->detail)
		values[5] = CStringGetTextDatum(edata->detail);
	else
		nulls[5] = 'n';
	context = capped_context(context);
	if (context)
		values[6] = JsonbPGetDatum(context);
	else
		nulls[6] = 'n';
	if (edata->hint)
		values[7] = CStringGetTextDatum(edata->hint);
	else
		nulls[7] = 'n';
	if (edata->context)
		values[8] = clipped_text(edata->context);
	else
		nulls[8] = 'n';

	cf_internal_begin(&st);
	cf_exec(&plans[v06],
			v06 ? "INSERT INTO chrono_forge.error_logs"
			" (workflow_id, step_name, attempt, error_class, error_message, error_detail, context,"
			"  error_hint, error_context, created_at)"
			" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, chrono_forge.now()) RETURNING id"
			: "INSERT INTO chrono_forge.error_logs"
			" (workflow_id, step_name, attempt, error_class, error_message, error_detail, context, created_at)"
			" VALUES ($1, $2, $3, $4, $5, $6, $7, chrono_forge.now()) RETURNING id",
			v06 ? 9 : 7, types, values, nulls, false, 1);
	cf_internal_end(&st);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Run workflow_id's log row for step_name, if any.  Caller is connected to SPI. */
CfStepLog
cf_journal_read_step(int64 workflow_id, const char *step_name)
{
	static SPIPlanPtr plan = NULL;
	CfStepLog	log = {false, 0, NULL, 0, NULL};
	CfInternal	st;
	bool		isnull;
	MemoryContext cxt = CurrentMemoryContext;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT state::text, attempts, coalesce(metadata, '{}'), id FROM chrono_forge.execution_logs"
			" WHERE workflow_id = $1 AND step_name = $2",
			2, (Oid[]) {INT8OID, TEXTOID},
			(Datum[]) {Int64GetDatum(workflow_id), CStringGetTextDatum(step_name)},
			NULL, true, 1);
	cf_internal_end(&st);
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(cxt);

		log.exists = true;
		log.state = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		log.attempts = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		log.metadata = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 3, &isnull));
		log.id = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		MemoryContextSwitchTo(old);
	}
	else
		log.metadata = cf_jsonb_parse("{}");
	return log;
}

#define STEP_LOG_COLUMNS \
	" (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at," \
	"  metadata, result, error_class, error_message)"

#define STEP_LOG_VALUES \
	" $1, $2, $3::chrono_forge.step_state, $4, chrono_forge.now(), chrono_forge.now()," \
	"  CASE WHEN $3 = 'completed' THEN chrono_forge.now() END, $5, $6, $7, $8"

#define STEP_LOG_UPSERT \
	" ON CONFLICT (workflow_id, step_name) DO UPDATE SET state = EXCLUDED.state," \
	"  attempts = EXCLUDED.attempts, last_executed_at = EXCLUDED.last_executed_at," \
	"  completed_at = EXCLUDED.completed_at," \
	"  metadata = CASE WHEN EXCLUDED.metadata IS NULL THEN l.metadata" \
	"   ELSE coalesce(l.metadata, '{}') || EXCLUDED.metadata END," \
	"  result = EXCLUDED.result, error_class = EXCLUDED.error_class," \
	"  error_message = EXCLUDED.error_message, updated_at = EXCLUDED.last_executed_at"

#define STEP_LOG_INSERT(on_conflict) \
	"INSERT INTO chrono_forge.execution_logs AS l" STEP_LOG_COLUMNS \
	" VALUES (" STEP_LOG_VALUES ")" on_conflict " RETURNING id"

/* Writes only if this pass still holds the run (takes its row lock). */
#define STEP_LOG_LOCKED_INSERT(on_conflict) \
	"WITH lk AS (SELECT 1 FROM chrono_forge.workflows WHERE id = $1 AND locked_by = $9" \
	"  FOR NO KEY UPDATE)" \
	" INSERT INTO chrono_forge.execution_logs AS l" STEP_LOG_COLUMNS \
	" SELECT" STEP_LOG_VALUES " FROM lk" on_conflict " RETURNING id"

/*
 * A row known to exist ($9: its id) is updated in place: an upsert would
 * first lock the row it conflicts with (a WAL record more), then update it.
 */
#define STEP_LOG_UPDATE_BY_ID \
	"UPDATE chrono_forge.execution_logs AS l SET state = $3::chrono_forge.step_state," \
	"  attempts = $4, last_executed_at = chrono_forge.now()," \
	"  completed_at = CASE WHEN $3 = 'completed' THEN chrono_forge.now() END," \
	"  metadata = CASE WHEN $5::jsonb IS NULL THEN l.metadata" \
	"   ELSE coalesce(l.metadata, '{}') || $5 END," \
	"  result = $6, error_class = $7, error_message = $8, updated_at = chrono_forge.now()" \
	" WHERE l.id = $9 AND l.workflow_id = $1 AND l.step_name = $2 RETURNING id"

static bool
update_step_by_id(Datum *values, char *nulls, int64 known_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		by_id[9];

	memcpy(by_id, values, sizeof(Datum) * 8);
	by_id[8] = Int64GetDatum(known_id);
	cf_exec(&plan, STEP_LOG_UPDATE_BY_ID,
			9, (Oid[]) {INT8OID, TEXTOID, TEXTOID, INT4OID, JSONBOID, JSONBOID, TEXTOID, TEXTOID, INT8OID},
			by_id, nulls, false, 0);
	return SPI_processed == 1;
}

/*
 * Create or update run workflow_id's log row for step_name: state,
 * attempts, metadata merged with metadata_patch, result, and the error
 * (class and message) if any; is_new: known to have no row yet; known_id:
 * the id of its row, if known to exist (0: not known).  With a
 * lock_token, the same statement also takes the run's row lock and writes
 * nothing unless the run is still locked by that token.
 * Returns the row's id, or 0 if the lock was not ours.  Caller is
 * connected to SPI; the caller commits.
 */
int64
cf_journal_write_step(int64 workflow_id, const char *step_name, const char *state, int attempts,
					  Jsonb *metadata_patch, Jsonb *result, ErrorData *edata,
					  const char *lock_token, bool is_new, int64 known_id)
{
	bool		prove_lock = lock_token != NULL;
	/* [prove_lock][known to be new]: a new row needs no ON CONFLICT. */
	static SPIPlanPtr plans[2][2];
	CfInternal	st;
	Datum		values[9];
	char		nulls[10] = "         ";
	bool		isnull;

	values[0] = Int64GetDatum(workflow_id);
	values[1] = CStringGetTextDatum(step_name);
	values[2] = CStringGetTextDatum(state);
	values[3] = Int32GetDatum(attempts);
	if (metadata_patch)
		values[4] = JsonbPGetDatum(metadata_patch);
	else
		nulls[4] = 'n';
	if (result)
		values[5] = JsonbPGetDatum(result);
	else
		nulls[5] = 'n';
	if (edata)
	{
		values[6] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
		values[7] = CStringGetTextDatum(edata->message ? edata->message : "");
	}
	else
		nulls[6] = nulls[7] = 'n';
	values[8] = CStringGetTextDatum(lock_token ? lock_token : "");

	cf_internal_begin(&st);
	if (prove_lock)
		cf_exec(&plans[1][is_new],
				is_new ? STEP_LOG_LOCKED_INSERT("") : STEP_LOG_LOCKED_INSERT(STEP_LOG_UPSERT),
				9, (Oid[]) {INT8OID, TEXTOID, TEXTOID, INT4OID, JSONBOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID},
				values, nulls, false, 0);
	else if (known_id <= 0 || !update_step_by_id(values, nulls, known_id))
		cf_exec(&plans[0][is_new],
				is_new ? STEP_LOG_INSERT("") : STEP_LOG_INSERT(STEP_LOG_UPSERT),
				8, (Oid[]) {INT8OID, TEXTOID, TEXTOID, INT4OID, JSONBOID, JSONBOID, TEXTOID, TEXTOID},
				values, nulls, false, 0);
	cf_internal_end(&st);
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The open tasks (pending, claimed) of runs just cancelled become
 * cancelled: a worker's heartbeat then answers 'cancelled', its
 * completion changes nothing.  run_ids: an int8[].  Caller is connected
 * to SPI; a schema older than 0.7.0 has no tasks.
 */
void
cf_journal_cancel_tasks(Datum run_ids)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;

	if (!cf_schema_at_least(CF_SCHEMA(0, 7, 0)))	/* no tasks yet */
		return;
	cf_internal_begin(&st);
	cf_exec(&plan,
			"UPDATE chrono_forge.tasks SET state = 'cancelled', updated_at = chrono_forge.now()"
			" WHERE workflow_id = ANY ($1) AND state IN ('pending', 'claimed')",
			1, (Oid[]) {INT8ARRAYOID}, &run_ids, NULL, false, 0);
	cf_internal_end(&st);
}
