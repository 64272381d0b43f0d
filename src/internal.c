/*-------------------------------------------------------------------------
 *
 * internal.c
 *	  The engine's own SQL: run as the extension owner on a pinned path.
 *
 * Owns how internal statements run: cached plans, the identity switch to
 * the extension's owner, the pinned search path, SPI connections, and
 * which objects of the installed schema exist.  Internal statements must
 * never run user code: the identity switch here is only for the engine's
 * tables, and the search path is pinned so that no user object can stand
 * in for a catalog one.  Knows nothing of passes or runs.
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

/*
 * Whether the installed schema is at least `version` (CF_SCHEMA(0, 5, 0)):
 * the one answer to "is that table or column there yet", asked where a
 * database may still run an older schema under this library (between a
 * library upgrade and its ALTER EXTENSION UPDATE).  A yes holds for the
 * rest of the transaction (a pass asks several times): an update only
 * raises the version, and a drop waits for this transaction's locks.  A
 * no is read again every time: an UPDATE may run earlier in the same
 * transaction.
 */
bool
cf_schema_at_least(int version)
{
	static LocalTransactionId known_in = InvalidLocalTransactionId;
	static int	known_installed = 0;
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	int			installed = 0;

	if (known_in == MyProc->lxid && known_installed >= version)
		return true;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("chrono_forge"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);
		int			major = 0,
					minor = 0,
					patch = 0;

		if (!isnull &&
			sscanf(TextDatumGetCString(d), "%d.%d.%d", &major, &minor, &patch) == 3)
			installed = CF_SCHEMA(major, minor, patch);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	known_in = MyProc->lxid;
	known_installed = installed;
	return installed >= version;
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
cf_prepare_cached(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes,
				  int cursor_options)
{
	SPIPlanPtr	plan;

	if (*slot != NULL)
		return *slot;
	plan = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);
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
static int
exec_cached(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes, int cursor_options,
			Datum *values, const char *nulls, bool read_only, long count)
{
	SPIPlanPtr	plan = cf_prepare_cached(slot, sql, nargs, argtypes, cursor_options);
	int			rc;

	rc = SPI_execute_plan(plan, values, nulls, read_only, count);
	if (rc < 0)
		elog(ERROR, "chrono_forge statement failed: %s", SPI_result_code_string(rc));
	return rc;
}

int
cf_exec(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes,
		Datum *values, const char *nulls, bool read_only, long count)
{
	return exec_cached(slot, sql, nargs, argtypes, 0, values, nulls, read_only, count);
}

/*
 * cf_exec() with the plan cache held to one generic plan.  For the
 * statements of every pass whose custom plans the cache judges cheaper
 * forever (a parameter that folds a CTE away, e.g. a NULL array): left to
 * itself it plans them again on every call, a fifth of a pass's time.
 */
int
cf_exec_generic(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes,
				Datum *values, const char *nulls, bool read_only, long count)
{
	return exec_cached(slot, sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN,
					   values, nulls, read_only, count);
}
