/*-------------------------------------------------------------------------
 *
 * task_api.c
 *	  The task workers' protocol: claim_tasks, heartbeat_task, complete_task, fail_task.
 *
 * Owns the worker side of chrono_forge.tasks: a claim takes due pending
 * tasks (SKIP LOCKED, oldest first) under a new claim token and a lease,
 * and gives each run a wake-up at its lease's end, so that an expired
 * lease is noticed by the run's own pass, without polling; a heartbeat
 * moves the lease; a completion or failure with the current token is
 * recorded once and wakes the run at commit (the run's pass records it
 * on the step: task.c).  Each call is one statement, as the engine, for
 * a caller that is the task's owner or a member of it: any other task
 * looks like a stale one.  This file must never change a task whose
 * token is stale, nor let a role work another role's task.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "citus.h"
#include "clock.h"
#include "internal.h"
#include "pass.h"
#include "util.h"
#include "wakeups.h"

PG_FUNCTION_INFO_V1(cf_claim_tasks);
PG_FUNCTION_INFO_V1(cf_heartbeat_task);
PG_FUNCTION_INFO_V1(cf_complete_task);
PG_FUNCTION_INFO_V1(cf_fail_task);

#define CF_TASK_QUEUES_MAX 100	/* queues one claim may name */

static void
invalid_argument(const char *msg)
{
	ereport(ERROR,
			(errcode(ERRCODE_CF_INVALID_ARGUMENT),
			 errmsg("%s", msg)));
}

/* claim_tasks' queues: a non-empty array of valid queue names. */
static Datum
queues_argument(FunctionCallInfo fcinfo)
{
	ArrayType  *queues;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (PG_ARGISNULL(0))
		invalid_argument("queues must not be NULL");
	queues = PG_GETARG_ARRAYTYPE_P(0);
	deconstruct_array(queues, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n < 1 || n > CF_TASK_QUEUES_MAX)
		invalid_argument(psprintf("queues must name 1 to %d queues", CF_TASK_QUEUES_MAX));
	for (int i = 0; i < n; i++)
		cf_validate_name_segment("queue", nulls[i] ? NULL : TextDatumGetCString(elems[i]));
	return PointerGetDatum(queues);
}

/* Each claimed task, as claim_tasks returns it. */
#define CLAIM_SQL \
	"WITH c AS (" \
	"  SELECT x.id, x.available_at FROM pg_catalog.unnest($1::text[]) AS q(name)," \
	"   LATERAL (SELECT t.id, t.available_at FROM chrono_forge.tasks t" \
	"     WHERE t.queue = q.name AND t.state = 'pending' AND t.available_at <= $3" \
	"       AND t.owner::oid = ANY (ARRAY(SELECT r.oid FROM pg_catalog.pg_roles r" \
	"                                      WHERE pg_catalog.pg_has_role($5, r.oid, 'MEMBER')))" \
	"     ORDER BY t.available_at, t.id LIMIT $2 FOR UPDATE SKIP LOCKED) AS x" \
	"  ORDER BY x.available_at, x.id LIMIT $2)," \
	" u AS (UPDATE chrono_forge.tasks t SET state = 'claimed', claim_token = pg_catalog.gen_random_uuid()," \
	"   claimed_by = $4, claimed_at = $3, lease_until = $3 + t.lease, updated_at = $3" \
	"  WHERE t.id = ANY (ARRAY(SELECT c.id FROM c))" \
	"  RETURNING t.id, t.claim_token, t.queue, t.step, t.workflow_id, t.args, t.attempt," \
	"   t.lease_until, t.timeout_at, t.available_at)" \
	" SELECT u.id, u.claim_token, u.queue, u.step, w.workflow, w.key, u.args, u.attempt," \
	"  u.lease_until, u.timeout_at, u.workflow_id::text || ':' || u.step, u.workflow_id" \
	" FROM u JOIN chrono_forge.workflows w ON w.id = u.workflow_id" \
	" ORDER BY u.available_at, u.id"

/*
 * claim_tasks(queues, max_tasks, worker): up to max_tasks due tasks of
 * those queues whose run's owner the caller is or is a member of, oldest
 * due first, each under a new claim token and lease.  Tasks another
 * worker is claiming right now are skipped, never waited for.
 */
Datum
cf_claim_tasks(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Oid			caller = GetUserId();
	Datum		queues = queues_argument(fcinfo);
	int32		max_tasks = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CfInternal	st;

	if (max_tasks < 1 || max_tasks > CF_TASK_CLAIM_MAX)
		invalid_argument(psprintf("max_tasks must be between 1 and %d", CF_TASK_CLAIM_MAX));
	if (!PG_ARGISNULL(2))
		cf_check_length("worker", text_to_cstring(PG_GETARG_TEXT_PP(2)), CF_NAME_MAX_BYTES);
	InitMaterializedSRF(fcinfo, 0);

	SPI_connect();
	cf_replan_if_stale();
	cf_internal_begin(&st);
	/*
	 * One generic plan: custom plans of this statement cost more to make
	 * than to run (a fresh plan on every claim, a third of its time).
	 */
	cf_exec_generic(&plan, CLAIM_SQL,
					5, (Oid[]) {TEXTARRAYOID, INT4OID, TIMESTAMPTZOID, TEXTOID, OIDOID},
					(Datum[]) {queues, Int32GetDatum(max_tasks), TimestampTzGetDatum(cf_clock_now()),
						PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2), ObjectIdGetDatum(caller)},
					PG_ARGISNULL(2) ? "   n " : NULL, false, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		values[12];
		bool		nulls[12];

		heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	/* Each run's pass notices at once if its task's lease runs out. */
	if (SPI_processed > 0)
		cf_wakeups_add_at(cf_spi_ids(12), cf_spi_column_array(9, TIMESTAMPTZOID),
						  CF_TASK_LEASE_WAKEUP);
	cf_internal_end(&st);
	SPI_finish();
	return (Datum) 0;
}

/* The task and its token, which every call but the claim names. */
static void
task_arguments(FunctionCallInfo fcinfo, Datum *values)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		invalid_argument("task_id and claim_token must not be NULL");
	cf_citus_check_task(PG_GETARG_INT64(0));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
}

/*
 * heartbeat_task(task_id, claim_token, extend) -> 'ok' (the lease now
 * ends extend, or the task's lease, from now), 'cancelled' (its run was
 * cancelled: stop), 'lost' (the token is stale: the task was re-offered
 * or is done; or it is not the caller's).
 */
Datum
cf_heartbeat_task(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	char		nulls[6] = "     ";
	CfInternal	st;
	bool		isnull;
	text	   *answer;

	task_arguments(fcinfo, values);
	if (!PG_ARGISNULL(2))
	{
		Interval   *extend = PG_GETARG_INTERVAL_P(2);
		double		seconds = cf_interval_seconds(extend);

		if (cf_interval_is_negative(extend) || seconds <= 0 || seconds > CF_POLICY_MAX_SECONDS)
			invalid_argument(psprintf("extend must be positive and at most %d seconds",
									  CF_POLICY_MAX_SECONDS));
	}
	values[2] = TimestampTzGetDatum(cf_clock_now());
	values[3] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[3] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[4] = ObjectIdGetDatum(GetUserId());

	SPI_connect();
	cf_replan_if_stale();
	cf_internal_begin(&st);
	cf_exec(&plan,
			"WITH u AS (UPDATE chrono_forge.tasks t SET lease_until = $3 + coalesce($4, t.lease),"
			"  updated_at = $3"
			"  WHERE t.id = $1 AND t.claim_token = $2 AND t.state = 'claimed'"
			"   AND pg_catalog.pg_has_role($5, t.owner::oid, 'MEMBER') RETURNING t.id)"
			" SELECT CASE WHEN EXISTS (SELECT 1 FROM u) THEN 'ok'"
			"  WHEN EXISTS (SELECT 1 FROM chrono_forge.tasks t WHERE t.id = $1 AND t.claim_token = $2"
			"   AND t.state = 'cancelled' AND pg_catalog.pg_has_role($5, t.owner::oid, 'MEMBER'))"
			"  THEN 'cancelled' ELSE 'lost' END",
			5, (Oid[]) {INT8OID, UUIDOID, TIMESTAMPTZOID, INTERVALOID, OIDOID},
			values, nulls, false, 0);
	answer = DatumGetTextPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_TEXT_P(answer);
}

/*
 * Record the outcome of a claimed task (the statement's $3..$6 are its
 * columns), if the token is current and the task the caller's, and make
 * its run due now: its claim's lease wake-up moves to now (the pass that
 * records the outcome has none left to delete).  True if recorded; the
 * run is woken at commit.
 */
static bool
record_outcome(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types, Datum *values,
			   char *nulls, const char *reason)
{
	CfInternal	st;
	bool		isnull;
	TimestampTz now = cf_clock_now();
	bool		recorded;

	values[nargs - 2] = TimestampTzGetDatum(now);
	values[nargs - 1] = ObjectIdGetDatum(GetUserId());
	SPI_connect();
	cf_replan_if_stale();
	cf_internal_begin(&st);
	cf_exec(plan, sql, nargs, types, values, nulls, false, 0);
	recorded = SPI_processed == 1;
	if (recorded)
		cf_wakeup_move(DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
					   CF_TASK_LEASE_WAKEUP, now, reason);
	cf_internal_end(&st);
	SPI_finish();
	return recorded;
}

/* An outcome's update of a claimed task ($1, $2: task, token; last two: now, caller). */
#define OUTCOME_SQL(set, now, caller) \
	"UPDATE chrono_forge.tasks t SET " set ", updated_at = " now \
	" WHERE t.id = $1 AND t.claim_token = $2 AND t.state = 'claimed'" \
	"  AND pg_catalog.pg_has_role(" caller ", t.owner::oid, 'MEMBER') RETURNING t.workflow_id"

/*
 * complete_task(task_id, claim_token, result) -> true if recorded (once:
 * the task is completed and its run woken at commit); false if the token
 * is stale, the task cancelled or not the caller's: nothing changed.
 */
Datum
cf_complete_task(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	char		nulls[6] = "     ";

	task_arguments(fcinfo, values);
	if (!PG_ARGISNULL(2))
		cf_check_json_size("task result", PG_GETARG_JSONB_P(2));
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	PG_RETURN_BOOL(record_outcome(&plan,
								  OUTCOME_SQL("state = 'completed', result = $3, completed_at = $4",
											  "$4", "$5"),
								  5, (Oid[]) {INT8OID, UUIDOID, JSONBOID, TIMESTAMPTZOID, OIDOID},
								  values, nulls, "task completed"));
}

/*
 * fail_task(task_id, claim_token, error_class, message, retryable) -> true
 * if recorded: the run's pass records it as a failed attempt under the
 * step's retry policy (not retryable: the step fails at once).  false as
 * complete_task's.
 */
Datum
cf_fail_task(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[7];
	char		nulls[8] = "       ";
	char	   *error_class = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));

	task_arguments(fcinfo, values);
	if (error_class == NULL || error_class[0] == '\0')
		invalid_argument("error_class must not be NULL or empty");
	cf_check_length("error_class", error_class, CF_NAME_MAX_BYTES);
	if (!PG_ARGISNULL(3))
		cf_check_length("message", text_to_cstring(PG_GETARG_TEXT_PP(3)), CF_JSON_MAX_BYTES);
	values[2] = PG_GETARG_DATUM(2);
	values[3] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[3] = PG_ARGISNULL(3) ? 'n' : ' ';
	values[4] = BoolGetDatum(PG_ARGISNULL(4) ? true : PG_GETARG_BOOL(4));
	PG_RETURN_BOOL(record_outcome(&plan,
								  OUTCOME_SQL("state = 'failed', error_class = $3, error_message = $4,"
											  " retryable = $5", "$6", "$7"),
								  7, (Oid[]) {INT8OID, UUIDOID, TEXTOID, TEXTOID, BOOLOID,
									  TIMESTAMPTZOID, OIDOID},
								  values, nulls, "task failed"));
}
