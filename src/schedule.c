/*-------------------------------------------------------------------------
 *
 * schedule.c
 *	  Workflow schedules driven by pg_cron: schedule, unschedule, fire.
 *
 * Owns the schedules table and the two pg_cron jobs of each schedule: one
 * on the schedule's cron expression, one at pg_cron's start (@reboot) to
 * catch up ticks missed while the server was down, per the schedule's
 * catch_up policy.  Both call schedule_fire(), which starts one run per
 * tick keyed by the schedule's name and the tick's time, so a tick fired
 * twice starts one run.  pg_cron runs the jobs as the role that created
 * the schedule; runs are started as that role.  This file must never
 * start a run as anyone but the caller, nor write the schedules table
 * except through the engine's internal identity.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "access.h"
#include "clock.h"
#include "cron.h"
#include "guc.h"
#include "internal.h"
#include "pass.h"
#include "util.h"

PG_FUNCTION_INFO_V1(cf_schedule);
PG_FUNCTION_INFO_V1(cf_unschedule);
PG_FUNCTION_INFO_V1(cf_schedule_fire);

typedef enum CatchUp
{
	CATCH_UP_NONE,
	CATCH_UP_LATEST,
	CATCH_UP_ALL
} CatchUp;

static CatchUp
parse_catch_up(const char *s)
{
	if (strcmp(s, "none") == 0)
		return CATCH_UP_NONE;
	if (strcmp(s, "latest") == 0)
		return CATCH_UP_LATEST;
	if (strcmp(s, "all") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("catch_up must be 'none', 'latest' or 'all', not \"%s\"", s)));
	return CATCH_UP_ALL;
}

static void
require_pg_cron(void)
{
	if (!OidIsValid(get_extension_oid("pg_cron", true)))
		ereport(ERROR,
				(errcode(ERRCODE_CF_PG_CRON_MISSING),
				 errmsg("pg_cron is not installed in this database"),
				 errdetail("chrono_forge schedules are pg_cron jobs."),
				 errhint("Install the postgresql-15-cron package, add pg_cron to shared_preload_libraries, "
						 "set cron.database_name to this database, restart, and run CREATE EXTENSION pg_cron.")));
}

/* A schedule's runs are keyed "<name>@<tick, UTC, to the minute>". */
static char *
tick_key(const char *name, TimestampTz tick)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (timestamp2tm(tick, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("tick out of range")));
	return psprintf("%s@%04d-%02d-%02dT%02d:%02dZ", name, tm.tm_year, tm.tm_mon,
					tm.tm_mday, tm.tm_hour, tm.tm_min);
}

/* Run a statement as the caller, names resolved in pg_catalog only. */
static void
exec_as_caller(const char *sql, int nargs, Oid *types, Datum *values, int expected)
{
	int			rc;

	cf_push_catalog_path();
	rc = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0);
	PopOverrideSearchPath();
	if (rc != expected)
		elog(ERROR, "chrono_forge schedule statement failed: %s", SPI_result_code_string(rc));
}

static int64
first_int8(void)
{
	bool		isnull;

	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* The schedule's row, the caller's; a name in use is an error.  Returns its id. */
static int64
insert_schedule(const char *name, const char *expr, const char *workflow, Jsonb *args,
				const char *catch_up, TimestampTz last_tick)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	Datum		values[7];

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(expr);
	values[2] = CStringGetTextDatum(workflow);
	values[3] = JsonbPGetDatum(args);
	values[4] = CStringGetTextDatum(catch_up);
	values[5] = ObjectIdGetDatum(GetUserId());
	values[6] = TimestampTzGetDatum(last_tick);
	cf_internal_begin(&st);
	cf_exec(&plan,
			"INSERT INTO chrono_forge.schedules (name, cron, workflow, args, catch_up, owner, last_tick)"
			" VALUES ($1, $2, $3, $4, $5, $6::regrole, $7) ON CONFLICT DO NOTHING RETURNING id",
			7, (Oid[]) {TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, OIDOID, TIMESTAMPTZOID},
			values, NULL, false, 0);
	cf_internal_end(&st);
	/* Names are per owner: only the caller's own schedules can be in use. */
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("schedule \"%s\" already exists", name),
				 errhint("Call chrono_forge.unschedule() first to replace it.")));
	return first_int8();
}

/* A pg_cron job of the caller's (pg_cron runs it as this role); returns its id. */
static int64
cron_job_as_caller(const char *jobname, const char *expr, const char *command)
{
	Datum		values[3];

	values[0] = CStringGetTextDatum(jobname);
	values[1] = CStringGetTextDatum(expr);
	values[2] = CStringGetTextDatum(command);
	exec_as_caller("SELECT cron.schedule($1, $2, $3)", 3,
				   (Oid[]) {TEXTOID, TEXTOID, TEXTOID}, values, SPI_OK_SELECT);
	return first_int8();
}

/*
 * schedule(name, cron, workflow, args, catch_up): the schedule and its two
 * pg_cron jobs, all or nothing; returns the main job's id.  Ticks at or
 * before now are never started.
 */
Datum
cf_schedule(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr jobs_plan = NULL;
	char	   *name = cf_required_text(fcinfo, 0, "schedule name");
	char	   *expr = cf_required_text(fcinfo, 1, "cron");
	char	   *workflow = cf_required_text(fcinfo, 2, "workflow");
	char	   *catch_up = cf_required_text(fcinfo, 4, "catch_up");
	Jsonb	   *args;
	CfCron		cron;
	TimestampTz now = cf_clock_now();
	TimestampTz last_tick;
	CfInternal	st;
	int64		schedule_id;
	int64		jobid;
	int64		reboot_jobid;

	/* Its runs are keyed by the name, and keys beginning with '$' are children's. */
	if (name[0] == '$')
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("schedule name must not begin with \"$\"")));
	cf_cron_parse_firing(expr, &cron);
	if (PG_ARGISNULL(3) || !JB_ROOT_IS_OBJECT(PG_GETARG_JSONB_P(3)))
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("args must be a JSON object")));
	args = PG_GETARG_JSONB_P(3);
	cf_check_json_size("args", args);
	(void) parse_catch_up(catch_up);
	/* Its runs name the procedure by schema, whatever pg_cron's search_path. */
	workflow = cf_resolve_workflow(workflow, false);
	require_pg_cron();
	if (!cf_cron_prev(&cron, now, &last_tick))
		last_tick = now;

	SPI_connect();
	schedule_id = insert_schedule(name, expr, workflow, args, catch_up, last_tick);

	/*
	 * The jobs are named by the schedule's id, not its name: pg_cron
	 * truncates job names to 63 bytes (long names would share a job), and
	 * names are unique per owner only.
	 */
	jobid = cron_job_as_caller(psprintf("chrono_forge:" INT64_FORMAT, schedule_id), expr,
							   psprintf("SELECT chrono_forge.schedule_fire(%s)",
										quote_literal_cstr(name)));
	reboot_jobid = cron_job_as_caller(psprintf("chrono_forge:" INT64_FORMAT ":reboot", schedule_id),
									  "@reboot",
									  psprintf("SELECT chrono_forge.schedule_fire(%s, reboot => true)",
											   quote_literal_cstr(name)));

	cf_internal_begin(&st);
	cf_exec(&jobs_plan,
			"UPDATE chrono_forge.schedules SET jobid = $2, reboot_jobid = $3 WHERE id = $1",
			3, (Oid[]) {INT8OID, INT8OID, INT8OID},
			(Datum[]) {Int64GetDatum(schedule_id), Int64GetDatum(jobid), Int64GetDatum(reboot_jobid)},
			NULL, false, 0);
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_INT64(jobid);
}

/*
 * The caller's schedule of that name, locked.  Names are per owner: runs
 * are started as the caller, and pg_cron lets only a job's own role
 * remove it.  A superuser may also remove another role's schedule (not
 * fire it) if only one role has a schedule of that name.  Another role's
 * schedule answers as a missing one (42704).  Returns the row; its id in
 * *id.
 */
static HeapTuple
lock_schedule(const char *name, bool firing, TupleDesc *desc, int64 *id)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[3] = {CStringGetTextDatum(name), ObjectIdGetDatum(GetUserId()),
	BoolGetDatum(!firing && superuser())};
	CfInternal	st;
	bool		isnull;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT owner::oid, cron, workflow, args, catch_up, last_tick, jobid, reboot_jobid, id"
			" FROM chrono_forge.schedules WHERE name = $1 AND (owner = $2::regrole OR $3)"
			" ORDER BY owner = $2::regrole DESC LIMIT 2 FOR UPDATE",
			3, (Oid[]) {TEXTOID, OIDOID, BOOLOID}, values, NULL, false, 0);
	cf_internal_end(&st);
	if (SPI_processed == 0 ||
		(SPI_processed == 2 &&
		 DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) != GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("schedule \"%s\" does not exist", name),
				 SPI_processed == 2 ? errdetail("Several roles have a schedule of this name; SET ROLE to its owner.") : 0));
	*desc = SPI_tuptable->tupdesc;
	*id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], *desc, 9, &isnull));
	return SPI_tuptable->vals[0];
}

/* unschedule(name): the schedule and its pg_cron jobs. */
Datum
cf_unschedule(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr delete_plan = NULL;
	char	   *name = cf_required_text(fcinfo, 0, "schedule name");
	TupleDesc	desc;
	HeapTuple	row;
	Datum		values[2];
	bool		isnull[2];
	CfInternal	st;
	int64		id;

	SPI_connect();
	row = lock_schedule(name, false, &desc, &id);
	values[0] = SPI_getbinval(row, desc, 7, &isnull[0]);	/* int8: by value */
	values[1] = SPI_getbinval(row, desc, 8, &isnull[1]);
	/* Jobs already removed by hand (or pg_cron dropped) need no removal. */
	if (OidIsValid(get_extension_oid("pg_cron", true)))
		for (int i = 0; i < 2; i++)
			if (!isnull[i])
				exec_as_caller("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobid = $1", 1,
							   (Oid[]) {INT8OID}, &values[i], SPI_OK_SELECT);

	values[0] = Int64GetDatum(id);
	cf_internal_begin(&st);
	cf_exec(&delete_plan, "DELETE FROM chrono_forge.schedules WHERE id = $1",
			1, (Oid[]) {INT8OID}, values, NULL, false, 0);
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * schedule_fire(name, reboot): start the runs of the ticks due since the
 * last firing; returns how many were started (existing ones count: a
 * tick fired twice starts one run).  A regular firing starts the latest
 * tick, and with catch_up 'all' the missed ones before it too.  The
 * firing at pg_cron's start looks only at ticks before the current
 * minute (that one is the regular job's) and applies catch_up: none
 * skips them, latest starts the newest, all starts them all, up to
 * chrono_forge.max_catch_up_runs (the newest ones).
 */
Datum
cf_schedule_fire(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr update_plan = NULL;
	char	   *name = cf_required_text(fcinfo, 0, "schedule name");
	bool		reboot = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	TupleDesc	desc;
	HeapTuple	row;
	bool		isnull;
	CfCron		cron;
	Datum		start_args[4];
	CatchUp		catch_up;
	TimestampTz last_tick;
	TimestampTz now = cf_clock_now();
	TimestampTz horizon;
	TimestampTz latest;
	TimestampTz *ticks;
	int			limit;
	int			n = 0;
	CfInternal	st;
	Datum		values[3];
	int64		id;

	SPI_connect();
	row = lock_schedule(name, true, &desc, &id);
	cf_cron_parse(TextDatumGetCString(SPI_getbinval(row, desc, 2, &isnull)), &cron);
	start_args[0] = CStringGetTextDatum(TextDatumGetCString(SPI_getbinval(row, desc, 3, &isnull)));
	start_args[2] = JsonbPGetDatum(DatumGetJsonbPCopy(SPI_getbinval(row, desc, 4, &isnull)));
	catch_up = parse_catch_up(TextDatumGetCString(SPI_getbinval(row, desc, 5, &isnull)));
	last_tick = DatumGetTimestampTz(SPI_getbinval(row, desc, 6, &isnull));

	horizon = reboot ? now - (now % USECS_PER_MINUTE + USECS_PER_MINUTE) % USECS_PER_MINUTE - 1 : now;
	if (!cf_cron_prev(&cron, horizon, &latest) || latest <= last_tick)
	{
		SPI_finish();
		PG_RETURN_INT32(0);
	}

	if (catch_up == CATCH_UP_ALL)
		limit = cf_max_catch_up_runs;
	else
		limit = (reboot && catch_up == CATCH_UP_NONE) ? 0 : 1;
	ticks = palloc(sizeof(TimestampTz) * Max(limit, 1));
	for (TimestampTz t = latest; n < limit && t > last_tick;)
	{
		ticks[n++] = t;
		if (!cf_cron_prev(&cron, t - 1, &t))
			break;
	}

	/* Oldest first, as the caller: the run's owner is who fires. */
	for (int i = n - 1; i >= 0; i--)
	{
		start_args[1] = CStringGetTextDatum(tick_key(name, ticks[i]));
		start_args[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(
			psprintf("{\"schedule\": %s, \"scheduled_for\": %s}",
					 cf_json_string(name), cf_json_timestamp(ticks[i]))));
		exec_as_caller("SELECT chrono_forge.start($1, $2, $3, $4)", 4,
					   (Oid[]) {TEXTOID, TEXTOID, JSONBOID, JSONBOID}, start_args, SPI_OK_SELECT);
	}

	values[0] = Int64GetDatum(id);
	values[1] = TimestampTzGetDatum(latest);
	values[2] = Int32GetDatum(n);
	cf_internal_begin(&st);
	cf_exec(&update_plan,
			"UPDATE chrono_forge.schedules SET last_tick = $2, last_fired_at = chrono_forge.now(),"
			" runs_started = runs_started + $3 WHERE id = $1",
			3, (Oid[]) {INT8OID, TIMESTAMPTZOID, INT4OID}, values, NULL, false, 0);
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_INT32(n);
}
