/*-------------------------------------------------------------------------
 *
 * access.c
 *	  Who may act on what: admins, own runs, resolving a workflow.
 *
 * Owns every access check of the client API: whether a role is an admin,
 * which run a (workflow, key) names for the caller, which procedure a
 * workflow name resolves to and whether the caller may run it.  Another
 * role's run, branch or procedure must answer exactly as a missing one:
 * this file must never tell the caller that something it may not see
 * exists.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"
#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/guc_tables.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/regproc.h"
#include "utils/timestamp.h"
#include "access.h"
#include "internal.h"
#include "util.h"

/*
 * A workflow procedure that does not exist, or (configure()) one the
 * caller does not own: one answer for both, so that configure() tells
 * nobody whose procedure is whose.
 */
static void
no_such_workflow(const char *workflow)
{
	ereport(ERROR,
			(errcode(ERRCODE_CF_INVALID_ARGUMENT),
			 errmsg("workflow procedure %s(jsonb) does not exist", workflow),
			 errhint("A workflow is a procedure taking one jsonb argument (its args).")));
}

/* The procedure a workflow name resolves to (caller's search_path), if any. */
static Oid
lookup_workflow(const char *workflow)
{
	ObjectWithArgs *owa = makeNode(ObjectWithArgs);
	Oid			proc;

	cf_validate_workflow_name(workflow);
	owa->objname = stringToQualifiedNameList(workflow);
	owa->objargs = list_make1(SystemTypeName("jsonb"));
	proc = LookupFuncWithArgs(OBJECT_ROUTINE, owa, true);
	if (!OidIsValid(proc) || get_func_prokind(proc) != PROKIND_PROCEDURE)
		return InvalidOid;
	return proc;
}

/*
 * The canonical spelling of a procedure, which is a run's identity (with
 * its owner and key) since 0.5.0: schema-qualified, each part quoted only
 * if it must be (quote_qualified_identifier), so "tenant_a".wf,
 * tenant_a.wf and TENANT_A.WF all give tenant_a.wf.
 */
static char *
canonical_name(Oid proc)
{
	HeapTuple	tup;
	Form_pg_proc form;
	char	   *qualified;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(proc));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for procedure %u", proc);
	form = (Form_pg_proc) GETSTRUCT(tup);
	qualified = quote_qualified_identifier(get_namespace_name(form->pronamespace),
										   NameStr(form->proname));
	ReleaseSysCache(tup);
	return qualified;
}

/*
 * Resolve a workflow procedure: it takes one jsonb, and (since its steps
 * commit) has no SET clause and is not SECURITY DEFINER.  Returns its
 * canonical name, which the executor CALLs and runs are stored under.
 * must_own (configure()): a procedure the caller does not own answers as
 * a missing one.
 */
char *
cf_resolve_workflow(const char *workflow, bool must_own)
{
	Oid			proc = lookup_workflow(workflow);
	HeapTuple	tup;
	Form_pg_proc form;
	bool		has_config;

	if (!OidIsValid(proc))
		no_such_workflow(workflow);
	/* Defaults apply to everyone's runs: only the procedure's owner sets them. */
	if (must_own && !pg_proc_ownercheck(proc, GetUserId()))
		no_such_workflow(workflow);

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(proc));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for procedure %u", proc);
	form = (Form_pg_proc) GETSTRUCT(tup);
	has_config = !heap_attisnull(tup, Anum_pg_proc_proconfig, NULL);
	if (has_config || form->prosecdef)
	{
		ReleaseSysCache(tup);
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("workflow procedure %s must not have SET clauses or be SECURITY DEFINER", workflow),
				 errdetail("PostgreSQL runs such procedures atomically, and workflow steps commit.")));
	}
	ReleaseSysCache(tup);

	if (pg_proc_aclcheck(proc, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for procedure %s", workflow)));
	return canonical_name(proc);
}

/*
 * The canonical name a run lookup by (workflow, key) uses: the procedure
 * the name resolves to now, else (a dropped procedure, a schema not on the
 * path) the name itself in canonical form, so that an old run stays
 * reachable by its stored, qualified name.
 */
char *
cf_canonical_workflow(const char *workflow)
{
	List	   *names;
	Oid			proc;

	cf_validate_workflow_name(workflow);
	names = stringToQualifiedNameList(workflow);
	if (list_length(names) == 2 && strcmp(strVal(linitial(names)), "pg_temp") != 0)
	{
		/*
		 * A qualified name is canonical as written (pg_temp aside, an
		 * alias).  Looking it up would refuse a caller without USAGE on
		 * its schema (an admin, or a member of the owner, reading a run),
		 * and it adds nothing.
		 */
		return quote_qualified_identifier(strVal(linitial(names)), strVal(lsecond(names)));
	}
	proc = lookup_workflow(workflow);
	if (OidIsValid(proc))
		return canonical_name(proc);
	return pstrdup(quote_identifier(strVal(llast(names))));
}

/*
 * The caller's run by (workflow, key), as cf_find_own_run() chooses it,
 * without locking it: its id.  Raises CF014 (missing, or not the
 * caller's) and CF012 (ambiguous) as cf_find_own_run() does.
 */
int64
cf_find_visible_run(Oid caller, const char *workflow, const char *key)
{
	static SPIPlanPtr find_plan = NULL;
	bool		isnull;
	bool		admin = cf_is_admin(caller);
	int64		chosen = 0;
	int			candidates = 0;
	char	   *canonical;
	Oid			engine;
	int			sec_context;

	/*
	 * Callers are inside cf_internal_begin(): the name is the caller's, so
	 * resolve it as the caller, on the caller's search_path, then go back
	 * to the engine's identity and pinned path.  (An error in between
	 * aborts the transaction, which restores both.)
	 */
	GetUserIdAndSecContext(&engine, &sec_context);
	SetUserIdAndSecContext(caller, sec_context);
	PopOverrideSearchPath();
	canonical = cf_canonical_workflow(workflow);
	cf_push_catalog_path();
	SetUserIdAndSecContext(engine, sec_context);

	cf_exec(&find_plan,
			"SELECT id, owner::oid FROM chrono_forge.workflows WHERE workflow = $1 AND key = $2",
			2, (Oid[]) {TEXTOID, TEXTOID},
			(Datum[]) {CStringGetTextDatum(canonical), CStringGetTextDatum(key)},
			NULL, false, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		int64		id = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		Oid			owner = DatumGetObjectId(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));

		if (owner == caller)
		{
			chosen = id;
			candidates = 1;
			break;
		}
		if (admin || has_privs_of_role(caller, owner))
		{
			chosen = id;
			candidates++;
		}
	}
	SPI_freetuptable(SPI_tuptable);
	if (candidates > 1)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("workflow run (%s, %s) is ambiguous", workflow, key),
				 errdetail("Several roles own a run of this workflow with this key, none of them you."),
				 errhint("SET ROLE to the run's owner to act on its run.")));
	if (candidates == 0)
		cf_unknown_run(workflow, key);
	return chosen;
}

void
cf_unknown_run(const char *workflow, const char *key)
{
	ereport(ERROR,
			(errcode(ERRCODE_CF_UNKNOWN_RUN),
			 errmsg("workflow run (%s, %s) does not exist", workflow, key)));
}

/*
 * Find the caller's run by (workflow, key).  The name is canonicalized as
 * start() stores it; the run is the caller's own (owner = caller), else
 * one whose owner the caller is a member of, or, for a member of
 * chrono_forge_admin, anyone's.  A run the caller may not act on answers
 * exactly as a missing one (CF014): nobody learns another role's runs
 * exist.  Several candidates and none the caller's own (an admin, or a
 * member of several owners) is ambiguous: CF012, nothing done.  The
 * caller's identity is taken before entering the engine's own.
 * for_update serializes with passes (a state change); otherwise a
 * key-share lock only keeps the run from vanishing, and never waits for a
 * pass in progress.
 */
CfRunRef
cf_find_own_run(Oid caller, const char *workflow, const char *key, bool for_update)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr share_plan = NULL;
	CfRunRef	run;
	bool		isnull;
	int64		chosen = cf_find_visible_run(caller, workflow, key);

	cf_exec(for_update ? &plan : &share_plan,
			for_update
			? "SELECT id, state::text FROM chrono_forge.workflows WHERE id = $1 FOR NO KEY UPDATE"
			: "SELECT id, state::text FROM chrono_forge.workflows WHERE id = $1 FOR KEY SHARE",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(chosen)}, NULL, false, 1);
	if (SPI_processed != 1)
		cf_unknown_run(workflow, key);
	run.id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	run.state = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return run;
}

/* Members of chrono_forge_admin (and superusers) act on every run. */
bool
cf_is_admin(Oid role)
{
	Oid			admin = get_role_oid("chrono_forge_admin", true);

	if (superuser_arg(role))
		return true;
	return OidIsValid(admin) && has_privs_of_role(role, admin);
}

void
cf_not_your_runs(const char *what, const char *workflow, const char *key)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for %s of workflow run (%s, %s)", what, workflow, key),
			 errdetail("Some of them belong to another role; only their owner or a member of chrono_forge_admin may act on them.")));
}
