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
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/rel.h"

#include "chrono_forge.h"

static Oid	cf_owner_cache = InvalidOid;
static Oid	cf_owner_ext = InvalidOid;

/* The role that owns the extension (a superuser: see the control file). */
Oid
cf_extension_owner(void)
{
	Oid			ext = get_extension_oid("chrono_forge", false);
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

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
	OverrideSearchPath path;
	Oid			owner = cf_extension_owner();

	GetUserIdAndSecContext(&st->save_userid, &st->save_sec_context);
	SetUserIdAndSecContext(owner,
						   st->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
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

SPIPlanPtr
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
}

char *
cf_sqlstate_text(int sqlerrcode)
{
	return pstrdup(unpack_sql_state(sqlerrcode));
}

/* Insert an error_logs row; returns its id.  Caller is internal. */
int64
cf_log_error(int64 workflow_id, const char *step_name, int attempt,
			 ErrorData *edata, Jsonb *context)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[7] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, JSONBOID};
	Datum		values[7];
	char		nulls[7] = "       ";
	bool		isnull;

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
	if (context)
		values[6] = JsonbPGetDatum(context);
	else
		nulls[6] = 'n';

	cf_exec(&plan,
			"INSERT INTO chrono_forge.error_logs"
			" (workflow_id, step_name, attempt, error_class, error_message, error_detail, context, created_at)"
			" VALUES ($1, $2, $3, $4, $5, $6, $7, chrono_forge.now()) RETURNING id",
			7, types, values, nulls, false, 1);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}
