/*-------------------------------------------------------------------------
 *
 * control.c
 *	  The control API any client calls: start, configure, wake, retry,
 *	  reap_stalled, and the launcher notice at CREATE EXTENSION.
 *
 * Owns validation of client input (rejected before anything is written)
 * and the rule that a role acts only on runs it owns (or is a member of
 * the owner).  It writes through the journal's internal identity and must
 * never run user code.
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
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/regproc.h"
#include "utils/timestamp.h"

#include "chrono_forge.h"

PG_FUNCTION_INFO_V1(cf_start);
PG_FUNCTION_INFO_V1(cf_configure);
PG_FUNCTION_INFO_V1(cf_wake);
PG_FUNCTION_INFO_V1(cf_retry);
PG_FUNCTION_INFO_V1(cf_reap_stalled);
PG_FUNCTION_INFO_V1(cf_notify_launcher);

static bool notify_launcher(const char *db);

static void
invalid_argument(const char *msg, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_CF_INVALID_ARGUMENT),
			 errmsg("%s", msg),
			 hint ? errhint("%s", hint) : 0));
}

char *
cf_required_text(FunctionCallInfo fcinfo, int n, const char *what)
{
	char	   *s;

	if (PG_ARGISNULL(n))
		invalid_argument(psprintf("%s must not be NULL", what), NULL);
	s = text_to_cstring(PG_GETARG_TEXT_PP(n));
	if (s[0] == '\0')
		invalid_argument(psprintf("%s must not be empty", what), NULL);
	cf_check_length(what, s, strcmp(what, "key") == 0 ? CF_KEY_MAX_BYTES : CF_NAME_MAX_BYTES);
	return s;
}

/*
 * Resolve a workflow procedure: it takes one jsonb, and (since its steps
 * commit) has no SET clause and is not SECURITY DEFINER.  Returns the
 * schema-qualified name the executor CALLs.
 */
char *
cf_resolve_workflow(const char *workflow, bool must_own)
{
	ObjectWithArgs *owa = makeNode(ObjectWithArgs);
	Oid			proc;
	HeapTuple	tup;
	Form_pg_proc form;
	bool		has_config;
	char	   *qualified;

	cf_validate_workflow_name(workflow);
	owa->objname = stringToQualifiedNameList(workflow);
	owa->objargs = list_make1(SystemTypeName("jsonb"));
	proc = LookupFuncWithArgs(OBJECT_ROUTINE, owa, true);
	if (!OidIsValid(proc) || get_func_prokind(proc) != PROKIND_PROCEDURE)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("workflow procedure %s(jsonb) does not exist", workflow),
				 errhint("A workflow is a procedure taking one jsonb argument (its args).")));

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
	qualified = quote_qualified_identifier(get_namespace_name(form->pronamespace),
										   NameStr(form->proname));
	ReleaseSysCache(tup);

	if (pg_proc_aclcheck(proc, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for procedure %s", workflow)));
	/* Defaults apply to everyone's runs: only the procedure's owner sets them. */
	if (must_own && !pg_proc_ownercheck(proc, GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only the owner of procedure %s may configure it", workflow)));
	return qualified;
}

Datum
cf_start(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr find_plan = NULL;
	char	   *workflow = cf_required_text(fcinfo, 0, "workflow");
	char	   *key = cf_required_text(fcinfo, 1, "key");
	Jsonb	   *args;
	Jsonb	   *options;
	char	   *procedure;
	CfInternal	st;
	Datum		values[7];
	bool		isnull;
	int64		id;
	TimestampTz now = cf_clock_now();

	if (PG_ARGISNULL(2) || !JB_ROOT_IS_OBJECT(PG_GETARG_JSONB_P(2)))
		invalid_argument("args must be a JSON object", NULL);
	if (PG_ARGISNULL(3) || !JB_ROOT_IS_OBJECT(PG_GETARG_JSONB_P(3)))
		invalid_argument("options must be a JSON object", NULL);
	args = PG_GETARG_JSONB_P(2);
	options = PG_GETARG_JSONB_P(3);
	procedure = cf_resolve_workflow(workflow, false);
	cf_replan_if_stale();		/* many starts in one session */

	values[0] = CStringGetTextDatum(workflow);
	values[1] = CStringGetTextDatum(key);
	values[2] = CStringGetTextDatum(procedure);
	values[3] = JsonbPGetDatum(args);
	values[4] = JsonbPGetDatum(options);
	values[5] = ObjectIdGetDatum(GetUserId());
	values[6] = TimestampTzGetDatum(now);

	SPI_connect();
	cf_internal_begin(&st);
	cf_exec(&insert_plan,
			"WITH ins AS ("
			"  INSERT INTO chrono_forge.workflows"
			"   (workflow, key, procedure, args, options, owner, created_at, updated_at)"
			"  VALUES ($1, $2, $3, $4, $5, $6::regrole, $7, $7)"
			"  ON CONFLICT (workflow, key) DO NOTHING RETURNING id),"
			" wk AS (INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason)"
			"  SELECT id, $7, 'start' FROM ins)"
			" SELECT id FROM ins",
			7, (Oid[]) {TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, OIDOID, TIMESTAMPTZOID},
			values, NULL, false, 0);
	if (SPI_processed == 1)
		cf_queue_wakeup(now);
	else
	{
		/* It exists (maybe committed after our snapshot: look again). */
		cf_exec(&find_plan,
				"SELECT id FROM chrono_forge.workflows WHERE workflow = $1 AND key = $2",
				2, (Oid[]) {TEXTOID, TEXTOID}, values, NULL, false, 1);
		if (SPI_processed != 1)
			elog(ERROR, "workflow run (%s, %s) vanished during start()", workflow, key);
	}
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_INT64(id);
}

Datum
cf_configure(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *workflow = cf_required_text(fcinfo, 0, "workflow");
	Oid			caller = GetUserId();
	Jsonb	   *policy;
	CfInternal	st;

	if (PG_ARGISNULL(1))
		invalid_argument("retry_policy must not be NULL", "Build one with chrono_forge.retry_policy().");
	policy = cf_policy_validate(PG_GETARG_JSONB_P(1));
	(void) cf_resolve_workflow(workflow, true);

	SPI_connect();
	cf_internal_begin(&st);
	cf_exec(&plan,
			"INSERT INTO chrono_forge.workflow_defaults AS d (workflow, retry_policy, owner, updated_at)"
			" VALUES ($1, $2, $3::regrole, chrono_forge.now())"
			" ON CONFLICT (workflow) DO UPDATE SET retry_policy = EXCLUDED.retry_policy,"
			"  updated_at = EXCLUDED.updated_at"
			" WHERE pg_has_role($3, d.owner, 'MEMBER')",
			3, (Oid[]) {TEXTOID, JSONBOID, OIDOID},
			(Datum[]) {CStringGetTextDatum(workflow), JsonbPGetDatum(policy), ObjectIdGetDatum(caller)},
			NULL, false, 0);
	cf_internal_end(&st);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("workflow %s is configured by another role", workflow)));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * Find a run by (workflow, key); only its owner (or a member of the owner
 * role) may act on it.  The caller's identity is taken before entering the
 * engine's own.  for_update serializes with passes (a state change);
 * otherwise a key-share lock only keeps the run from vanishing, and never
 * waits for a pass in progress.
 */
CfRunRef
cf_find_own_run(Oid caller, const char *workflow, const char *key, bool for_update)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr share_plan = NULL;
	CfRunRef		run;
	bool		isnull;
	Oid			owner;

	cf_exec(for_update ? &plan : &share_plan,
			for_update
			? "SELECT id, state::text, owner::oid FROM chrono_forge.workflows"
			" WHERE workflow = $1 AND key = $2 FOR NO KEY UPDATE"
			: "SELECT id, state::text, owner::oid FROM chrono_forge.workflows"
			" WHERE workflow = $1 AND key = $2 FOR KEY SHARE",
			2, (Oid[]) {TEXTOID, TEXTOID},
			(Datum[]) {CStringGetTextDatum(workflow), CStringGetTextDatum(key)},
			NULL, false, 1);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_CF_UNKNOWN_RUN),
				 errmsg("workflow run (%s, %s) does not exist", workflow, key)));
	run.id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	run.state = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	if (!has_privs_of_role(caller, owner) && !cf_is_admin(caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for workflow run (%s, %s)", workflow, key),
				 errdetail("Only its owner or a member of chrono_forge_admin may act on a run.")));
	return run;
}

static void
insert_wakeup(int64 id, TimestampTz due, const char *reason)
{
	static SPIPlanPtr plan = NULL;

	cf_exec(&plan,
			"INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason) VALUES ($1, $2, $3)",
			3, (Oid[]) {INT8OID, TIMESTAMPTZOID, TEXTOID},
			(Datum[]) {Int64GetDatum(id), TimestampTzGetDatum(due), CStringGetTextDatum(reason)},
			NULL, false, 0);
	cf_queue_wakeup(due);
}

Datum
cf_wake(PG_FUNCTION_ARGS)
{
	char	   *workflow = cf_required_text(fcinfo, 0, "workflow");
	char	   *key = cf_required_text(fcinfo, 1, "key");
	Oid			caller = GetUserId();
	CfInternal	st;
	CfRunRef		run;
	bool		woken = false;

	SPI_connect();
	cf_internal_begin(&st);
	run = cf_find_own_run(caller, workflow, key, false);
	if (strcmp(run.state, "idle") == 0 || strcmp(run.state, "running") == 0)
	{
		insert_wakeup(run.id, cf_clock_now(), "wake");
		woken = true;
	}
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_BOOL(woken);
}

Datum
cf_retry(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *workflow = cf_required_text(fcinfo, 0, "workflow");
	char	   *key = cf_required_text(fcinfo, 1, "key");
	Oid			caller = GetUserId();
	CfInternal	st;
	CfRunRef		run;
	TimestampTz now = cf_clock_now();

	SPI_connect();
	cf_internal_begin(&st);
	run = cf_find_own_run(caller, workflow, key, true);
	if (strcmp(run.state, "stalled") != 0 && strcmp(run.state, "failed") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_RETRYABLE),
				 errmsg("workflow run (%s, %s) is not retryable", workflow, key),
				 errdetail("Its state is %s; only stalled and failed runs can be retried.", run.state)));

	cf_exec(&plan,
			"WITH w AS (UPDATE chrono_forge.workflows SET state = 'idle', locked_by = NULL,"
			"  locked_at = NULL, attempt = 0, retry_counts = '{}', recoveries = 0, updated_at = $2"
			"  WHERE id = $1)"
			" INSERT INTO chrono_forge.execution_logs"
			"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, metadata)"
			" VALUES ($1, '$workflow_retry$' || (extract(epoch FROM $2)::bigint)::text, 'completed', 1, $2, $2, $2,"
			"  jsonb_build_object('previous_state', $3::text, 'requested_at', $2))"
			" ON CONFLICT (workflow_id, step_name) DO UPDATE SET attempts = chrono_forge.execution_logs.attempts + 1,"
			"  last_executed_at = EXCLUDED.last_executed_at, metadata = EXCLUDED.metadata",
			3, (Oid[]) {INT8OID, TIMESTAMPTZOID, TEXTOID},
			(Datum[]) {Int64GetDatum(run.id), TimestampTzGetDatum(now), CStringGetTextDatum(run.state)},
			NULL, false, 0);
	insert_wakeup(run.id, now, "retry");
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * Re-drive running runs whose lock is older than stale_after: clear the
 * lock and schedule a pass.  A pass still running under that lock finds
 * it gone at its next commit and stops.
 */
Datum
cf_reap_stalled(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Interval   *stale;
	CfInternal	st;
	int			n;
	TimestampTz now = cf_clock_now();

	if (PG_ARGISNULL(0))
	{
		stale = palloc0(sizeof(Interval));
		stale->time = (int64) cf_reap_stale_after_effective() * USECS_PER_SEC;
	}
	else
		stale = PG_GETARG_INTERVAL_P(0);

	SPI_connect();
	cf_internal_begin(&st);
	cf_exec(&plan,
			"WITH r AS (UPDATE chrono_forge.workflows SET state = 'idle', locked_by = NULL,"
			"  locked_at = NULL, updated_at = $1"
			"  WHERE state = 'running' AND locked_at < $1 - $2 RETURNING id)"
			" INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason)"
			" SELECT id, $1, 'reaped' FROM r",
			2, (Oid[]) {TIMESTAMPTZOID, INTERVALOID},
			(Datum[]) {TimestampTzGetDatum(now), IntervalPGetDatum(stale)},
			NULL, false, 0);
	n = (int) SPI_processed;
	cf_internal_end(&st);
	SPI_finish();
	if (n > 0)
	{
		cf_queue_wakeup(now);
		ereport(LOG, (errmsg("chrono_forge reaped %d stalled workflow run(s)", n)));
	}
	PG_RETURN_INT32(n);
}

/* Called by the install script: tell the DBA whether workers serve here. */
Datum
cf_notify_launcher(PG_FUNCTION_ARGS)
{
	char	   *db = get_database_name(MyDatabaseId);
	int			save_min_messages = client_min_messages;
	bool		served;

	/*
	 * CREATE EXTENSION raises client_min_messages to WARNING while its
	 * script runs; this notice is meant for the DBA who runs it.
	 */
	client_min_messages = Min(client_min_messages, NOTICE);
	PG_TRY();
	{
		served = notify_launcher(db);
	}
	PG_FINALLY();
	{
		client_min_messages = save_min_messages;
	}
	PG_END_TRY();
	PG_RETURN_BOOL(served);
}

static bool
notify_launcher(const char *db)
{
	if (!cf_shmem_ready())
	{
		ereport(NOTICE,
				(errmsg("chrono_forge is not in shared_preload_libraries: no workers will run workflows"),
				 errhint("Add chrono_forge to shared_preload_libraries and restart, or drive runs with CALL chrono_forge.run_pending().")));
		return false;
	}
	if (cf_database == NULL || strcmp(db, cf_database) != 0)
	{
		ereport(NOTICE,
				(errmsg("no chrono_forge workers serve database \"%s\"", db),
				 errdetail("chrono_forge.database is \"%s\".", cf_database ? cf_database : ""),
				 errhint("Set chrono_forge.database to this database and restart, or drive runs with CALL chrono_forge.run_pending().")));
		return false;
	}
	cf_queue_launcher_wake();
	return true;
}
