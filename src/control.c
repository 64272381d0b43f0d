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
#include "utils/guc_tables.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/syscache.h"
#include "utils/regproc.h"
#include "utils/timestamp.h"

#include "access.h"
#include "citus.h"
#include "clock.h"
#include "concurrency.h"
#include "deadlines.h"
#include "guc.h"
#include "internal.h"
#include "pass.h"
#include "retry.h"
#include "shmem.h"
#include "util.h"
#include "wakeups.h"

PG_FUNCTION_INFO_V1(cf_start);
PG_FUNCTION_INFO_V1(cf_configure);
PG_FUNCTION_INFO_V1(cf_wake);
PG_FUNCTION_INFO_V1(cf_retry);
PG_FUNCTION_INFO_V1(cf_reap_stalled);
PG_FUNCTION_INFO_V1(cf_notify_launcher);
PG_FUNCTION_INFO_V1(cf_canonical_workflow_sql);

static bool notify_launcher(const char *db);

static void
invalid_argument(const char *msg, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_CF_INVALID_ARGUMENT),
			 errmsg("%s", msg),
			 hint ? errhint("%s", hint) : 0));
}

/*
 * The search_path in effect before the outermost function with a SET
 * search_path clause was entered: the views and their helpers pin their
 * path, but the workflow name a client passes them is the client's.
 * NULL if no such function is active.
 */
static const char *
client_search_path(void)
{
	struct config_generic **vars = get_guc_variables();
	int			n = GetNumConfigOptions();

	for (int i = 0; i < n; i++)
	{
		GucStack   *outer = NULL;

		if (strcmp(vars[i]->name, "search_path") != 0)
			continue;
		for (GucStack *s = vars[i]->stack; s != NULL; s = s->prev)
			if (s->state == GUC_SAVE)
				outer = s;
		return outer ? outer->prior.val.stringval : NULL;
	}
	return NULL;
}

/*
 * chrono_forge.canonical_workflow(text): cf_canonical_workflow() for the
 * SQL views (visible_run), with the client's search_path.
 */
Datum
cf_canonical_workflow_sql(PG_FUNCTION_ARGS)
{
	char	   *workflow = cf_required_text(fcinfo, 0, "workflow");
	const char *path = client_search_path();
	char	   *canonical;
	int			level;

	if (path == NULL)
		PG_RETURN_TEXT_P(cstring_to_text(cf_canonical_workflow(workflow)));
	/* As a function's SET clause does; an error unwinds it the same way. */
	level = NewGUCNestLevel();
	(void) set_config_option("search_path", path, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	canonical = cf_canonical_workflow(workflow);
	AtEOXact_GUC(true, level);
	PG_RETURN_TEXT_P(cstring_to_text(canonical));
}

/* What start()'s options ask of a new run (0.11.0). */
typedef struct StartOptions
{
	bool		has_deadline;
	TimestampTz deadline;
	char	   *concurrency_key;	/* NULL: none */
	int32		priority;		/* 0.13.0; 0: none (the lowest) */
} StartOptions;

/*
 * start()'s option "priority" (0.13.0): an integer from 0 (the default,
 * the lowest) to PG_INT32_MAX.  Claims take due runs of a higher priority
 * first (claim.c).
 */
static int32
priority_option(Jsonb *options)
{
	JsonbValue	v;
	Datum		n;

	if (!getKeyJsonValueFromContainer(&options->root, "priority", strlen("priority"), &v) ||
		v.type == jbvNull)
		return 0;
	n = v.type == jbvNumeric ? NumericGetDatum(v.val.numeric) : (Datum) 0;
	if (n == (Datum) 0 || numeric_is_nan(v.val.numeric) || numeric_is_inf(v.val.numeric) ||
		!DatumGetBool(DirectFunctionCall2(numeric_eq, n,
										  DirectFunctionCall2(numeric_trunc, n, Int32GetDatum(0)))) ||
		DatumGetBool(DirectFunctionCall2(numeric_lt, n, NumericGetDatum(int64_to_numeric(0)))) ||
		DatumGetBool(DirectFunctionCall2(numeric_gt, n, NumericGetDatum(int64_to_numeric(PG_INT32_MAX)))))
		invalid_argument("option \"priority\" must be an integer from 0 to 2147483647",
						 "Due runs of a higher priority are claimed first; 0, the default, is the lowest.");
	return DatumGetInt32(DirectFunctionCall1(numeric_int4, n));
}

static void
schema_too_old(const char *what, const char *version)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("a run's %s needs chrono_forge %s", what, version),
			 errhint("Run ALTER EXTENSION chrono_forge UPDATE.")));
}

#define INSERT_RUN_SQL(priority_col, priority) \
	"INSERT INTO chrono_forge.workflows" \
	" (workflow, key, procedure, args, options, owner, created_at, updated_at, deadline," \
	"  concurrency_key, gate_id" priority_col ")" \
	" VALUES ($1, $2, $3, $4, $5, $6::regrole, $7, $7, $8, $9, $10" priority ")" \
	" ON CONFLICT DO NOTHING RETURNING id"

/*
 * INSERT ... ON CONFLICT DO NOTHING of the run whose first seven columns
 * are `values` (as insert_or_find_run() lays them out), with what its
 * options ask on a 0.11.0 schema (its priority from 0.13.0).  Returns the
 * run's gate (0: none); the
 * statement's result is SPI's.  On an older schema the run's options may
 * ask nothing new: 0A000.
 */
static int64
insert_run(Datum *values, const StartOptions *opts)
{
	static SPIPlanPtr plan_0_10 = NULL;
	static SPIPlanPtr plans[2];
	char		nulls[11] = "          ";
	bool		with_priority = cf_schema_at_least(CF_SCHEMA(0, 13, 0));
	int64		gate;

	if (opts->priority > 0 && !with_priority)
		schema_too_old("priority", "0.13.0");
	if (!cf_schema_at_least(CF_SCHEMA(0, 11, 0)))
	{
		if (opts->has_deadline || opts->concurrency_key != NULL)
			schema_too_old(opts->has_deadline ? "deadline" : "concurrency key", "0.11.0");
		cf_exec(&plan_0_10,
				"INSERT INTO chrono_forge.workflows"
				" (workflow, key, procedure, args, options, owner, created_at, updated_at)"
				" VALUES ($1, $2, $3, $4, $5, $6::regrole, $7, $7)"
				" ON CONFLICT DO NOTHING RETURNING id",
				7, (Oid[]) {TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, OIDOID, TIMESTAMPTZOID},
				values, NULL, false, 0);
		return 0;
	}
	gate = cf_gate_for(DatumGetObjectId(values[5]), TextDatumGetCString(values[2]),
					   opts->concurrency_key);
	values[7] = TimestampTzGetDatum(opts->deadline);
	nulls[7] = opts->has_deadline ? ' ' : 'n';
	values[8] = opts->concurrency_key ? CStringGetTextDatum(opts->concurrency_key) : (Datum) 0;
	nulls[8] = opts->concurrency_key ? ' ' : 'n';
	values[9] = Int64GetDatum(gate);
	nulls[9] = gate ? ' ' : 'n';
	values[10] = Int32GetDatum(opts->priority);
	nulls[10] = opts->priority > 0 ? ' ' : 'n';
	cf_exec(&plans[with_priority],
			with_priority ? INSERT_RUN_SQL(", priority", ", $11") : INSERT_RUN_SQL("", ""),
			with_priority ? 11 : 10,
			(Oid[]) {TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, OIDOID, TIMESTAMPTZOID,
				TIMESTAMPTZOID, TEXTOID, INT8OID, INT4OID},
			values, nulls, false, 0);
	return gate;
}

/*
 * Insert the caller's run (procedure, key) with its start wake-up (unless
 * its concurrency gate makes it wait), or find it if it exists.  Returns
 * its id.  Caller is connected to SPI.
 */
static int64
insert_or_find_run(const char *workflow, const char *procedure, const char *key,
				   Jsonb *args, Jsonb *options, TimestampTz now, const StartOptions *opts)
{
	static SPIPlanPtr find_plan = NULL;
	CfInternal	st;
	Datum		values[11];
	bool		isnull;
	int64		id;
	int64		gate;

	/* A run is (owner, procedure, key): every spelling names the same run. */
	values[0] = CStringGetTextDatum(procedure);
	values[1] = CStringGetTextDatum(key);
	values[2] = CStringGetTextDatum(procedure);
	values[3] = JsonbPGetDatum(args);
	values[4] = JsonbPGetDatum(options);
	values[5] = ObjectIdGetDatum(GetUserId());
	values[6] = TimestampTzGetDatum(now);

	/*
	 * ON CONFLICT without a target: the run's identity is the unique
	 * constraint (workflow, key, owner) since 0.5.0, and on a database not
	 * updated yet the old (workflow, key) still applies.
	 */
	cf_internal_begin(&st);
	gate = insert_run(values, opts);
	if (SPI_processed == 1)
	{
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		/* Over its gate's limit, the run waits for a place: no wake-up. */
		if (gate == 0 || cf_gate_admit(id, gate, now))
			cf_wakeup_add(id, now, "start", CF_WAKEUP_ALWAYS);
	}
	else
	{
		/*
		 * The caller's own run exists (maybe committed after our snapshot:
		 * look again).  Another role's run of the same key is another run.
		 */
		cf_exec(&find_plan,
				"SELECT id FROM chrono_forge.workflows"
				" WHERE workflow = $1 AND key = $2 AND owner = $6::regrole",
				6, (Oid[]) {TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, OIDOID},
				values, NULL, false, 1);
		if (SPI_processed != 1)
			elog(ERROR, "workflow run (%s, %s) vanished during start()", workflow, key);
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	cf_internal_end(&st);
	return id;
}

Datum
cf_start(PG_FUNCTION_ARGS)
{
	char	   *workflow = cf_required_text(fcinfo, 0, "workflow");
	char	   *key = cf_required_text(fcinfo, 1, "key");
	Jsonb	   *args;
	Jsonb	   *options;
	char	   *procedure;
	int64		id;
	TimestampTz now = cf_clock_now();
	StartOptions opts = {0};

	cf_citus_check_key(key);
	if (PG_ARGISNULL(2) || !JB_ROOT_IS_OBJECT(PG_GETARG_JSONB_P(2)))
		invalid_argument("args must be a JSON object", NULL);
	if (PG_ARGISNULL(3) || !JB_ROOT_IS_OBJECT(PG_GETARG_JSONB_P(3)))
		invalid_argument("options must be a JSON object", NULL);
	args = PG_GETARG_JSONB_P(2);
	options = PG_GETARG_JSONB_P(3);
	cf_check_json_size("args", args);
	cf_check_json_size("options", options);
	/*
	 * Keys beginning with '$' are the engine's: children are keyed
	 * "$<parent run id>$...", so that nothing outside their parent can
	 * take a child's key (see spawn in branch.c).
	 */
	if (key[0] == '$')
		invalid_argument("key must not begin with \"$\"",
						 "Keys beginning with \"$\" are reserved for the children of branches.");
	opts.has_deadline = cf_deadline_from_options(options, now, &opts.deadline);
	opts.concurrency_key = cf_concurrency_key_option(options);
	opts.priority = priority_option(options);
	procedure = cf_resolve_workflow(workflow, false);
	cf_replan_if_stale();		/* many starts in one session */

	SPI_connect();
	id = insert_or_find_run(workflow, procedure, key, args, options, now, &opts);
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
	/* Stored under the procedure's canonical name: its runs read it there. */
	workflow = cf_resolve_workflow(workflow, true);

	SPI_connect();
	cf_internal_begin(&st);
	cf_exec(&plan,
			"INSERT INTO chrono_forge.workflow_defaults AS d (workflow, retry_policy, owner, updated_at)"
			" VALUES ($1, $2, $3::regrole, chrono_forge.now())"
			" ON CONFLICT (workflow) DO UPDATE SET retry_policy = EXCLUDED.retry_policy,"
			"  owner = EXCLUDED.owner, updated_at = EXCLUDED.updated_at",
			3, (Oid[]) {TEXTOID, JSONBOID, OIDOID},
			(Datum[]) {CStringGetTextDatum(workflow), JsonbPGetDatum(policy), ObjectIdGetDatum(caller)},
			NULL, false, 0);
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_VOID();
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

	cf_citus_check_key(key);
	SPI_connect();
	cf_internal_begin(&st);
	run = cf_find_own_run(caller, workflow, key, false);
	if ((strcmp(run.state, "idle") == 0 || strcmp(run.state, "running") == 0) &&
		!cf_gate_waiting(run.id))	/* only its admission makes it due */
	{
		cf_wakeup_add(run.id, cf_clock_now(), "wake", CF_WAKEUP_ALWAYS);
		woken = true;
	}
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_BOOL(woken);
}

/*
 * A cancelled child whose parent is not cancelled may be retried (a merge
 * counts it blocked, as a failed one): true if run is one.  Its cancel
 * marker is renamed after its id, so that a later cancel() writes its own.
 */
static bool
retryable_cancelled_child(int64 run)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	Datum		ok;

	cf_exec(&plan,
			"SELECT p.state <> 'cancelled' FROM chrono_forge.workflows c"
			" JOIN chrono_forge.execution_logs l ON l.id = c.parent_execution_log_id"
			" JOIN chrono_forge.workflows p ON p.id = l.workflow_id WHERE c.id = $1",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(run)}, NULL, false, 1);
	if (SPI_processed != 1)
		return false;
	ok = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return !isnull && DatumGetBool(ok);
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
	int64		gate;

	cf_citus_check_key(key);
	SPI_connect();
	cf_internal_begin(&st);
	run = cf_find_own_run(caller, workflow, key, true);
	if (strcmp(run.state, "stalled") != 0 && strcmp(run.state, "failed") != 0 &&
		!(strcmp(run.state, "cancelled") == 0 && retryable_cancelled_child(run.id)))
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_RETRYABLE),
				 errmsg("workflow run (%s, %s) is not retryable", workflow, key),
				 errdetail("Its state is %s; only stalled and failed runs, and cancelled children "
						   "of a run not cancelled, can be retried.", run.state)));
	cf_deadline_check_retry(run.id, workflow, key, now);

	cf_exec(&plan,
			"WITH w AS (UPDATE chrono_forge.workflows SET state = 'idle', locked_by = NULL,"
			"  locked_at = NULL, attempt = 0, retry_counts = '{}', recoveries = 0, updated_at = $2"
			"  WHERE id = $1),"
			" c AS (UPDATE chrono_forge.execution_logs SET step_name = '$workflow_cancelled$' || id"
			"  WHERE workflow_id = $1 AND step_name = '$workflow_cancelled$')"
			" INSERT INTO chrono_forge.execution_logs"
			"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, metadata)"
			" VALUES ($1, '$workflow_retry$' || (extract(epoch FROM $2)::bigint)::text, 'completed', 1, $2, $2, $2,"
			"  jsonb_build_object('previous_state', $3::text, 'requested_at', $2))"
			" ON CONFLICT (workflow_id, step_name) DO UPDATE SET attempts = chrono_forge.execution_logs.attempts + 1,"
			"  last_executed_at = EXCLUDED.last_executed_at, metadata = EXCLUDED.metadata",
			3, (Oid[]) {INT8OID, TIMESTAMPTZOID, TEXTOID},
			(Datum[]) {Int64GetDatum(run.id), TimestampTzGetDatum(now), CStringGetTextDatum(run.state)},
			NULL, false, 0);
	gate = cf_gate_of_run(run.id);

	/*
	 * An ended run comes back in flight through its gate again, waiting if
	 * it is full; a stalled one never left its place.
	 */
	if (gate == 0 || strcmp(run.state, "stalled") == 0 || cf_gate_admit(run.id, gate, now))
		cf_wakeup_add(run.id, now, "retry", CF_WAKEUP_ALWAYS);
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
			"UPDATE chrono_forge.workflows SET state = 'idle', locked_by = NULL,"
			" locked_at = NULL, updated_at = $1"
			" WHERE state = 'running' AND locked_at < $1 - $2 RETURNING id",
			2, (Oid[]) {TIMESTAMPTZOID, INTERVALOID},
			(Datum[]) {TimestampTzGetDatum(now), IntervalPGetDatum(stale)},
			NULL, false, 0);
	n = (int) SPI_processed;
	if (n > 0)
		cf_wakeups_add(cf_spi_ids(1), now, "reaped", CF_WAKEUP_ALWAYS);
	cf_internal_end(&st);
	SPI_finish();
	if (n > 0)
	{
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
