/*-------------------------------------------------------------------------
 *
 * journal.c
 *	  The engine's own SQL: run as the extension owner on a pinned path.
 *
 * Owns how internal statements run (cached plans, identity, search path),
 * name validation and the error log.  Internal statements must never run
 * user code: the identity switch here is only for the engine's tables, and
 * the search path is pinned so that no user object can stand in for a
 * catalog one.
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

#include "chrono_forge.h"

static Oid	cf_owner_cache = InvalidOid;
static Oid	cf_owner_ext = InvalidOid;
static LocalTransactionId cf_owner_lxid = InvalidLocalTransactionId;

/*
 * The role that owns the extension (a superuser: see the control file).
 * Looked up once per transaction: every internal statement needs it, and
 * the lookup is two catalog index scans.
 */
static Oid
cf_extension_owner(void)
{
	Oid			ext;
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	if (cf_owner_lxid == MyProc->lxid && OidIsValid(cf_owner_cache))
		return cf_owner_cache;
	ext = get_extension_oid("chrono_forge", false);
	cf_owner_lxid = MyProc->lxid;
	if (ext == cf_owner_ext && OidIsValid(cf_owner_cache))
		return cf_owner_cache;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(ext));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "extension chrono_forge has no catalog row");
	cf_owner_cache = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
	cf_owner_ext = ext;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return cf_owner_cache;
}

/* For the background workers, outside any transaction. */
bool
cf_extension_installed(void)
{
	bool		installed;

	StartTransactionCommand();
	installed = OidIsValid(get_extension_oid("chrono_forge", true));
	CommitTransactionCommand();
	return installed;
}

/*
 * Enter the engine's own identity.  Must be paired with cf_internal_end in
 * the same transaction; an error in between is undone by the abort.
 */
void
cf_internal_begin(CfInternal *st)
{
	Oid			owner = cf_extension_owner();

	GetUserIdAndSecContext(&st->save_userid, &st->save_sec_context);
	SetUserIdAndSecContext(owner,
						   st->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	cf_push_catalog_path();
}

/*
 * Resolve names in pg_catalog only until PopOverrideSearchPath(): for
 * statements that name every object by schema, so that no user object
 * can stand in for a catalog one.
 */
void
cf_push_catalog_path(void)
{
	OverrideSearchPath path;

	path.schemas = NIL;
	path.addCatalog = true;
	path.addTemp = false;
	path.generation = 0;
	PushOverrideSearchPath(&path);
}

void
cf_internal_end(CfInternal *st)
{
	PopOverrideSearchPath();
	SetUserIdAndSecContext(st->save_userid, st->save_sec_context);
}

/* An engine relation (table or index) by name; InvalidOid if missing. */
Oid
cf_relation_oid(const char *name)
{
	return get_relname_relid(name, get_namespace_oid("chrono_forge", false));
}

/*
 * Drop this session's cached plans if a second has passed since it last
 * did: a generic plan keeps the table sizes it was made with, so one made
 * while a queue table was small, or analyzed empty (VACUUM ANALYZE of an
 * idle database, autoanalyze after a cleanup), reads that table whole on
 * every use once it has grown, until an autoanalyze replaces the
 * statistics; foreign-key checks included.  A replan reads the tables'
 * current sizes.  Called between passes, by start() and by the launcher.
 */
void
cf_replan_if_stale(void)
{
	static TimestampTz plans_made_at = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (TimestampDifferenceExceeds(plans_made_at, now, 1000))
	{
		ResetPlanCache();
		plans_made_at = now;
	}
}

/* Connect to SPI in non-atomic mode: what commits inside a pass need. */
void
cf_spi_connect(void)
{
	if (SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

static SPIPlanPtr
cf_prepare_cached(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan;

	if (*slot != NULL)
		return *slot;
	plan = SPI_prepare(sql, nargs, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for chrono_forge statement: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	*slot = plan;
	return plan;
}

/* Run an internal statement from a plan cached in *slot.  Caller is in
 * cf_internal_begin and connected to SPI. */
int
cf_exec(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes,
		Datum *values, const char *nulls, bool read_only, long count)
{
	SPIPlanPtr	plan = cf_prepare_cached(slot, sql, nargs, argtypes);
	int			rc;

	rc = SPI_execute_plan(plan, values, nulls, read_only, count);
	if (rc < 0)
		elog(ERROR, "chrono_forge statement failed: %s", SPI_result_code_string(rc));
	return rc;
}

/*
 * A user-supplied name segment: no NULL, nothing empty, no '$' (it splits
 * step names).
 */
void
cf_validate_name_segment(const char *what, const char *segment)
{
	if (segment == NULL || segment[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_STEP_NAME),
				 errmsg("%s must not be NULL or empty", what)));
	if (strchr(segment, CF_STEP_DELIMITER) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_STEP_NAME),
				 errmsg("invalid step name: %s \"%s\" contains \"$\"", what, segment),
				 errhint("\"$\" separates the parts of step names; choose another name.")));
	cf_check_length(what, segment, CF_NAME_MAX_BYTES);
}

/*
 * Names and keys are index keys: past a third of a page PostgreSQL
 * refuses the entry (54000) when it is written, which inside a pass is
 * long after the call that supplied it.  Refuse them at the door.
 */
void
cf_check_length(const char *what, const char *s, int max_bytes)
{
	if (s != NULL && strlen(s) > (size_t) max_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("%s is too long", what),
				 errdetail("It has %zu bytes; at most %d are allowed.", strlen(s), max_bytes)));
}

/*
 * The same for a JSON value a run keeps (start's args, an event payload).
 * Inside a pass (spawn's args, a start() in a body), a programming error:
 * the run fails at once.
 */
void
cf_check_json_size(const char *what, Jsonb *value)
{
	if (value == NULL || VARSIZE(value) <= CF_JSON_MAX_BYTES)
		return;
	cf_fail_now();
	ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("%s is too large", what),
				 errdetail("It has %zu bytes as jsonb; at most %d are allowed.",
						   (size_t) VARSIZE(value), CF_JSON_MAX_BYTES)));
}

/*
 * A workflow name as the caller typed it: one to three dot-separated
 * identifiers, the first of three being this database (as PostgreSQL
 * reads qualified names).  Checked here so that a malformed name is bad
 * input (CF012) like an unknown one, not a syntax error (42601, 42602) or
 * a cross-database reference (0A000) from the name parser.
 */
void
cf_validate_workflow_name(const char *workflow)
{
	cf_validate_routine_name(workflow, "workflow");
}

/*
 * The same check for any routine name the caller gives (what: "workflow",
 * "step", "condition"): a malformed name is CF012 like a missing routine.
 */
void
cf_validate_routine_name(const char *name, const char *what)
{
	char	   *copy;
	List	   *parts;
	bool		ok;

	cf_check_length(what, name, CF_NAME_MAX_BYTES);
	copy = pstrdup(name);
	ok = SplitIdentifierString(copy, '.', &parts);
	if (ok && list_length(parts) == 3)
		ok = strcmp((char *) linitial(parts), get_database_name(MyDatabaseId)) == 0;
	if (!ok || list_length(parts) < 1 || list_length(parts) > 3)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("invalid %s name: %s", what, name),
				 errhint("A %s names a routine: name, schema.name or database.schema.name, "
						 "identifiers double-quoted as in SQL.", what)));
	list_free(parts);
	pfree(copy);
}

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
cf_log_error(int64 workflow_id, const char *step_name, int attempt,
			 ErrorData *edata, Jsonb *context)
{
	static SPIPlanPtr plans[2];
	Oid			types[9] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, JSONBOID,
	TEXTOID, TEXTOID};
	Datum		values[9];
	char		nulls[9] = "         ";
	bool		isnull;
	CfInternal	st;
	bool		v06 = get_attnum(cf_relation_oid("error_logs"), "error_context") != InvalidAttrNumber;

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

	/* (error_logs' foreign key is checked at once: write the run first) */
	if (workflow_id == cf_pass.workflow_id)
		cf_write_taken_run();
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

Jsonb *
cf_jsonb_parse(const char *text)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

/* object->key as a jsonb value of its own, or NULL. */
Jsonb *
cf_jsonb_get(Jsonb *object, const char *key)
{
	JsonbValue	v;

	if (object == NULL || !JB_ROOT_IS_OBJECT(object) ||
		!getKeyJsonValueFromContainer(&object->root, key, strlen(key), &v) ||
		v.type == jbvNull)
		return NULL;
	return JsonbValueToJsonb(&v);
}

/* The run's log row for step_name, if any.  Caller is connected to SPI. */
CfStepLog
cf_step_log_read(const char *step_name)
{
	static SPIPlanPtr plan = NULL;
	CfStepLog	log = {false, 0, NULL, 0, NULL};
	CfInternal	st;
	bool		isnull;
	MemoryContext cxt = CurrentMemoryContext;

	if (cf_step_log_cached(step_name, &log))
		return log;
	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT state::text, attempts, coalesce(metadata, '{}'), id FROM chrono_forge.execution_logs"
			" WHERE workflow_id = $1 AND step_name = $2",
			2, (Oid[]) {INT8OID, TEXTOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(step_name)},
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
 * Create or update the run's log row for step_name: state, attempts,
 * metadata merged with metadata_patch, result, and the error (class and
 * message) if any.  With prove_lock, the same statement also takes the
 * run's row lock and writes nothing unless this pass still holds the run
 * (what cf_save_context_and_check_lock() does in a statement of its own).
 * Returns the row's id, or 0 if the lock was not ours.  Caller is
 * connected to SPI; the caller commits.
 */
static int64
step_log_upsert(const char *step_name, const char *state, int attempts,
				Jsonb *metadata_patch, Jsonb *result, ErrorData *edata, bool prove_lock)
{
	/* [prove_lock][known to be new]: a new row needs no ON CONFLICT. */
	static SPIPlanPtr plans[2][2];
	CfInternal	st;
	Datum		values[9];
	char		nulls[10] = "         ";
	bool		isnull;
	CfStepLog	known;
	bool		is_new = cf_step_log_cached(step_name, &known) && !known.exists;

	cf_step_log_forget(step_name);
	values[0] = Int64GetDatum(cf_pass.workflow_id);
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
	values[8] = CStringGetTextDatum(cf_pass.lock_token ? cf_pass.lock_token : "");

	cf_internal_begin(&st);
	if (prove_lock)
		cf_exec(&plans[1][is_new],
				is_new ? STEP_LOG_LOCKED_INSERT("") : STEP_LOG_LOCKED_INSERT(STEP_LOG_UPSERT),
				9, (Oid[]) {INT8OID, TEXTOID, TEXTOID, INT4OID, JSONBOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID},
				values, nulls, false, 0);
	else
		cf_exec(&plans[0][is_new],
				is_new ? STEP_LOG_INSERT("") : STEP_LOG_INSERT(STEP_LOG_UPSERT),
				8, (Oid[]) {INT8OID, TEXTOID, TEXTOID, INT4OID, JSONBOID, JSONBOID, TEXTOID, TEXTOID},
				values, nulls, false, 0);
	cf_internal_end(&st);
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

int64
cf_step_log_write(const char *step_name, const char *state, int attempts,
				  Jsonb *metadata_patch, Jsonb *result, ErrorData *edata)
{
	return step_log_upsert(step_name, state, attempts, metadata_patch, result, edata, false);
}

/*
 * cf_step_log_write(), then cf_save_context_and_check_lock(): in one
 * statement when the context has not changed (the common case: a step's
 * commit costs one statement less), in none when the pass still holds the
 * claim's row lock (see stamp_claim()).
 */
int64
cf_step_log_write_owned(const char *step_name, const char *state, int attempts,
						Jsonb *metadata_patch, Jsonb *result, ErrorData *edata)
{
	int64		id;

	if (cf_pass.context_dirty || !cf_pass.stamped)
	{
		id = cf_step_log_write(step_name, state, attempts, metadata_patch, result, edata);
		cf_save_context_and_check_lock();
		return id;
	}
	id = step_log_upsert(step_name, state, attempts, metadata_patch, result, edata, true);
	if (id == 0)
		cf_lock_lost();
	return id;
}
