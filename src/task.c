/*-------------------------------------------------------------------------
 *
 * task.c
 *	  run_task: a step done by a worker outside the database.
 *
 * Owns the workflow side of the task protocol.  The first pass writes the
 * step's task (one row of chrono_forge.tasks per run and step), notifies
 * its queue at commit and parks the run; later passes read the task under
 * its row lock and record on the step what the workers did: the result
 * (once), a failure or an expired lease as a failed attempt under the
 * step's retry policy (the task re-offered after the backoff, or the run
 * stalled), the overall timeout, a re-offer after retry().  The worker
 * side (claim, heartbeat, complete, fail) is task_api.c's.  This file must
 * never record a task's outcome on its step twice, nor re-offer a task
 * that a live claim still holds.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "call.h"
#include "clock.h"
#include "internal.h"
#include "journal.h"
#include "pass.h"
#include "replay.h"
#include "retry.h"
#include "step.h"
#include "steplog.h"
#include "util.h"

PG_FUNCTION_INFO_V1(cf_run_task);

/* What the call asked for. */
typedef struct TaskCall
{
	bool		has_result;
	char	   *step;
	char	   *step_name;		/* run_task$<step> */
	char	   *queue;
	Jsonb	   *args;
	Jsonb	   *policy;			/* the call's, validated; NULL: the default */
	Interval   *timeout;		/* NULL: none */
	Interval   *lease;
	char	   *undo;			/* compensate (0.12.0); NULL: none */
	Jsonb	   *undo_policy;
} TaskCall;

/* The step's task as the pass found it (under its row lock). */
typedef struct TaskRow
{
	bool		exists;
	int64		id;
	char	   *state;
	int			attempt;
	TimestampTz available_at;
	bool		has_lease;
	TimestampTz lease_until;
	bool		has_timeout;
	TimestampTz timeout_at;
	Jsonb	   *result;
	char	   *error_class;
	char	   *error_message;
	bool		retryable;
} TaskRow;

static void park(TaskCall *call, TaskRow *task, bool has_at, TimestampTz at,
				 const char *reason, bool notify) pg_attribute_noreturn();
static void offer_new_task(TaskCall *call, CfStepLog *log) pg_attribute_noreturn();
static void reoffer_after_retry(TaskCall *call, CfStepLog *log, TaskRow *task) pg_attribute_noreturn();
static void failed_attempt(TaskCall *call, CfStepLog *log, TaskRow *task,
						   ErrorData *edata) pg_attribute_noreturn();
static void task_timed_out(TaskCall *call, TaskRow *task) pg_attribute_noreturn();
static void settle_task(TaskCall *call, CfStepLog *log, TaskRow *task) pg_attribute_noreturn();

/* A positive interval of at most CF_POLICY_MAX_SECONDS, or CF012. */
static Interval *
lease_argument(FunctionCallInfo fcinfo, int n)
{
	Interval   *lease;
	double		seconds;

	if (PG_ARGISNULL(n))
		cf_primitive_invalid_argument("run_task lease must not be NULL");
	lease = PG_GETARG_INTERVAL_P(n);
	seconds = cf_interval_seconds(lease);
	if (cf_interval_is_negative(lease) || seconds <= 0 || seconds > CF_POLICY_MAX_SECONDS)
		cf_primitive_invalid_argument(psprintf("run_task lease must be positive and at most %d seconds",
											   CF_POLICY_MAX_SECONDS));
	return lease;
}

/*
 * run_task(step, queue, args, retry_policy, timeout, lease) and
 * run_task(step, queue, INOUT result, args, ...): bad arguments are
 * programming errors, failing the run at once.
 */
static void
parse_call(FunctionCallInfo fcinfo, TaskCall *call)
{
	int			a;

	/* 6 or 7 arguments; 8 or 9 since 0.12.0 (compensate, compensate_policy). */
	call->has_result = (PG_NARGS() == 7 || PG_NARGS() == 9);
	a = call->has_result ? 1 : 0;
	cf_fail_now();
	call->step = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	cf_validate_name_segment("step", call->step);
	call->queue = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	cf_validate_name_segment("queue", call->queue);
	call->args = PG_ARGISNULL(2 + a) ? NULL : PG_GETARG_JSONB_P(2 + a);
	cf_check_json_size("task args", call->args);
	call->policy = PG_ARGISNULL(3 + a) ? NULL : cf_policy_validate(PG_GETARG_JSONB_P(3 + a));
	call->timeout = PG_ARGISNULL(4 + a) ? NULL : PG_GETARG_INTERVAL_P(4 + a);
	if (call->timeout != NULL && cf_interval_is_negative(call->timeout))
		cf_primitive_invalid_argument("run_task timeout must not be negative");
	call->lease = lease_argument(fcinfo, 5 + a);
	call->undo = PG_NARGS() >= 8 ? cf_undo_arguments(fcinfo, 6 + a, &call->undo_policy) : NULL;
	call->step_name = psprintf("run_task$%s", call->step);
}

/*
 * The step's task row, copied into the pass's memory; locked (FOR NO KEY
 * UPDATE) unless completed: nothing changes a completed task, and a lock
 * would be a WAL record in every pass that records a result.
 */
#define READ_TASK_SQL(lock) \
	"SELECT id, state, attempt, available_at, lease_until, timeout_at, result," \
	" error_class, error_message, coalesce(retryable, true)" \
	" FROM chrono_forge.tasks WHERE workflow_id = $1 AND step = $2" lock

static TaskRow
read_task_row(const char *step, bool lock)
{
	static SPIPlanPtr plans[2];
	TaskRow		t;
	CfInternal	st;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	MemoryContext old;

	memset(&t, 0, sizeof(t));
	cf_internal_begin(&st);
	cf_exec(&plans[lock], lock ? READ_TASK_SQL(" FOR NO KEY UPDATE") : READ_TASK_SQL(""),
			2, (Oid[]) {INT8OID, TEXTOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(step)},
			NULL, false, 1);
	cf_internal_end(&st);
	if (SPI_processed != 1)
		return t;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	old = MemoryContextSwitchTo(cf_pass.cxt);
	t.exists = true;
	t.id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	t.state = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	t.attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	t.available_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
	d = SPI_getbinval(tup, desc, 5, &isnull);
	t.has_lease = !isnull;
	t.lease_until = isnull ? 0 : DatumGetTimestampTz(d);
	d = SPI_getbinval(tup, desc, 6, &isnull);
	t.has_timeout = !isnull;
	t.timeout_at = isnull ? 0 : DatumGetTimestampTz(d);
	d = SPI_getbinval(tup, desc, 7, &isnull);
	t.result = isnull ? NULL : DatumGetJsonbPCopy(d);
	d = SPI_getbinval(tup, desc, 8, &isnull);
	t.error_class = isnull ? NULL : TextDatumGetCString(d);
	d = SPI_getbinval(tup, desc, 9, &isnull);
	t.error_message = isnull ? NULL : TextDatumGetCString(d);
	t.retryable = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
	MemoryContextSwitchTo(old);
	return t;
}

/* The step's task, locked unless completed (a completed task is final). */
static TaskRow
read_task(const char *step)
{
	TaskRow		t = read_task_row(step, false);

	if (t.exists && strcmp(t.state, "completed") != 0)
		t = read_task_row(step, true);
	return t;
}

/* The step log's metadata: where its task is, and its timeout. */
static Jsonb *
task_metadata(TaskCall *call, int64 task_id, bool has_timeout, TimestampTz timeout_at)
{
	return cf_jsonb_parse(psprintf("{\"task_id\": " INT64_FORMAT ", \"queue\": %s, \"timeout_at\": %s}",
								   task_id, cf_json_string(call->queue),
								   has_timeout ? cf_json_timestamp(timeout_at) : "null"));
}

/*
 * Park the run: the task's queue is notified at the commit (if notify),
 * the next pass is due at the earlier of the timeout and at (if any).
 * What the pass wrote commits with the run's release (cf_park()).
 */
static void
park(TaskCall *call, TaskRow *task, bool has_at, TimestampTz at, const char *reason,
	 bool notify)
{
	if (task->has_timeout && (!has_at || task->timeout_at < at))
	{
		has_at = true;
		at = task->timeout_at;
		reason = "task timeout";
	}
	if (has_at)
		cf_set_continuation(at, reason);
	if (notify)
		Async_Notify(CF_TASKS_CHANNEL, call->queue);
	cf_park(call->step_name, true);
}

/*
 * The first pass: the task (pending, due now), the step's log (pending),
 * committed together with the notification of the queue; then halt.
 */
static void
offer_new_task(TaskCall *call, CfStepLog *log)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	TaskRow		task;
	TimestampTz now = cf_clock_now();
	bool		isnull;
	char		nulls[10] = "         ";

	memset(&task, 0, sizeof(task));
	task.has_timeout = (call->timeout != NULL);
	if (task.has_timeout)
		task.timeout_at = cf_timestamp_plus(now, call->timeout);
	nulls[3] = call->args ? ' ' : 'n';
	nulls[7] = task.has_timeout ? ' ' : 'n';
	cf_write_taken_run();		/* the task's foreign key is checked at once */
	cf_internal_begin(&st);
	cf_exec(&plan,
			"INSERT INTO chrono_forge.tasks (workflow_id, step, queue, args, state, attempt,"
			"  available_at, lease, timeout_at, owner, created_at, updated_at)"
			" VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9::regrole, $6, $6) RETURNING id",
			9, (Oid[]) {INT8OID, TEXTOID, TEXTOID, JSONBOID, INT4OID, TIMESTAMPTZOID, INTERVALOID,
				TIMESTAMPTZOID, OIDOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(call->step),
				CStringGetTextDatum(call->queue), call->args ? JsonbPGetDatum(call->args) : (Datum) 0,
				Int32GetDatum(log->attempts + 1), TimestampTzGetDatum(now), IntervalPGetDatum(call->lease),
				TimestampTzGetDatum(task.timeout_at), ObjectIdGetDatum(cf_pass.owner)},
			nulls, false, 0);
	task.id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	cf_internal_end(&st);
	cf_step_log_write(call->step_name, "pending", log->attempts,
					  task_metadata(call, task.id, task.has_timeout, task.timeout_at), NULL, NULL);
	park(call, &task, false, 0, NULL, true);
}

/*
 * Set the task's row (locked by this pass) pending again, due at
 * available_at as attempt `attempt`, its claim cleared; with a new
 * timeout if it has one.
 */
static void
reoffer_row(TaskRow *task, int attempt, TimestampTz available_at)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"UPDATE chrono_forge.tasks SET state = 'pending', attempt = $2, available_at = $3,"
			" claimed_by = NULL, claimed_at = NULL, lease_until = NULL, timeout_at = $4,"
			" updated_at = chrono_forge.now() WHERE id = $1",
			4, (Oid[]) {INT8OID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID},
			(Datum[]) {Int64GetDatum(task->id), Int32GetDatum(attempt),
				TimestampTzGetDatum(available_at), TimestampTzGetDatum(task->timeout_at)},
			task->has_timeout ? NULL : "   n", false, 0);
	cf_internal_end(&st);
}

/*
 * The run was retried (the task failed, timed out or was cancelled, and
 * the step recorded it): offer the task again at once as the step's next
 * attempt, with its timeout counted afresh, and notify its queue.
 */
static void
reoffer_after_retry(TaskCall *call, CfStepLog *log, TaskRow *task)
{
	TimestampTz now = cf_clock_now();
	int			attempt = Max(task->attempt, log->attempts + 1);

	task->has_timeout = (call->timeout != NULL);
	if (task->has_timeout)
		task->timeout_at = cf_timestamp_plus(now, call->timeout);
	reoffer_row(task, attempt, now);
	cf_step_log_write(call->step_name, "pending", log->attempts,
					  task_metadata(call, task->id, task->has_timeout, task->timeout_at), NULL, NULL);
	park(call, task, false, 0, NULL, true);
}

/* Lease wake-ups of the run (claim_tasks()'s) are moot once the step records an outcome. */
static void
drop_lease_wakeups(void)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"DELETE FROM chrono_forge.wakeups WHERE workflow_id = $1 AND reason = $2",
			2, (Oid[]) {INT8OID, TEXTOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(CF_TASK_LEASE_WAKEUP)},
			NULL, false, 0);
	cf_internal_end(&st);
}

/*
 * The error of a failed attempt.  A worker's error class that is a
 * SQLSTATE is the attempt's (so that retry_on can match it), unless it
 * is one that stops a pass; any other class is CF027, named in the
 * message.  An expired lease is CF026.
 */
static ErrorData *
attempt_error(TaskRow *task, bool lease_expired)
{
	ErrorData  *edata = palloc0(sizeof(ErrorData));
	const char *cls = task->error_class ? task->error_class : "";
	const char *msg = task->error_message ? task->error_message : "";
	bool		sqlstate = strlen(cls) == 5 && strspn(cls, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 5;

	edata->elevel = ERROR;
	if (lease_expired)
	{
		edata->sqlerrcode = ERRCODE_CF_TASK_LEASE_EXPIRED;
		edata->message = psprintf("the lease of task %lld (attempt %d) expired before its worker finished it",
								  (long long) task->id, task->attempt);
		return edata;
	}
	if (sqlstate)
		edata->sqlerrcode = MAKE_SQLSTATE(cls[0], cls[1], cls[2], cls[3], cls[4]);
	if (!sqlstate || cf_error_is_fatal_to_pass(edata))
	{
		edata->sqlerrcode = ERRCODE_CF_TASK_FAILED;
		edata->message = psprintf("%s: %s", cls, msg);
	}
	else
		edata->message = pstrdup(msg);
	edata->detail = psprintf("Task %lld failed in its worker (attempt %d%s).", (long long) task->id,
							 task->attempt, task->retryable ? "" : ", not retryable");
	return edata;
}

/*
 * A failed attempt (the worker's failure, or an expired lease): record it
 * on the step under its policy (none if the worker said not retryable);
 * then offer the task again after the backoff, or stall the run.
 */
static void
failed_attempt(TaskCall *call, CfStepLog *log, TaskRow *task, ErrorData *edata)
{
	Jsonb	   *policy = task->retryable ? cf_step_policy(call->policy) : NULL;
	CfRetryDecision d;
	TimestampTz available_at;

	d = cf_step_failure_record(call->step_name, task->attempt, log->metadata, NULL, policy, edata);
	drop_lease_wakeups();
	if (!d.retry)
	{
		cf_commit();
		SPI_finish();
		cf_stall(call->step_name, task->attempt, edata);
	}
	available_at = TimestampTzPlusMilliseconds(cf_clock_now(), (int64) (d.delay_s * 1000));
	reoffer_row(task, task->attempt + 1, available_at);
	park(call, task, true, available_at, "task retry", false);
}

/* The lease ran out: the task is failed with CF026 before the step records it. */
static void
expire_lease(TaskRow *task)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"UPDATE chrono_forge.tasks SET state = 'failed', error_class = 'CF026',"
			" error_message = 'lease expired', retryable = true, updated_at = chrono_forge.now()"
			" WHERE id = $1",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(task->id)}, NULL, false, 0);
	cf_internal_end(&st);
	task->retryable = true;
}

/* The overall timeout passed first: the task fails (CF010), the run stalls. */
static void
task_timed_out(TaskCall *call, TaskRow *task)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"UPDATE chrono_forge.tasks SET state = 'failed', error_class = 'CF010',"
			" error_message = 'timed out', updated_at = chrono_forge.now() WHERE id = $1",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(task->id)}, NULL, false, 0);
	cf_internal_end(&st);
	drop_lease_wakeups();
	cf_timeout_step(call->step_name, task->attempt, NULL,
					psprintf("task %lld on queue \"%s\" was not completed before its timeout",
							 (long long) task->id, call->queue));
}

/* The worker completed the task: the step completes with its result. */
static Datum
record_completion(FunctionCallInfo fcinfo, TaskCall *call, TaskRow *task)
{
	/* complete_task() moved the lease wake-up: none is left to drop. */
	cf_step_log_write_owned(call->step_name, "completed", task->attempt,
							call->undo ? cf_undo_registration(call->undo, call->undo_policy, call->args) : NULL,
							task->result, NULL);
	/* Committed by the next primitive or with the pass's end, as a step. */
	if (cf_pass.eager)
		cf_commit();
	else
		cf_pass.commit_pending = true;
	SPI_finish();
	cf_step_remember(call->step_name, task->result);
	return cf_return_result(fcinfo, call->has_result, task->result);
}

/*
 * A task not completed: settle what happened to it, then park the run
 * (or stall it).  Never returns.
 */
static void
settle_task(TaskCall *call, CfStepLog *log, TaskRow *task)
{
	TimestampTz now = cf_clock_now();
	bool		processed = task->attempt <= log->attempts;

	if (strcmp(task->state, "cancelled") == 0 ||
		(strcmp(task->state, "failed") == 0 && processed))
		reoffer_after_retry(call, log, task);
	if (task->has_timeout && now >= task->timeout_at)
		task_timed_out(call, task);
	if (strcmp(task->state, "failed") == 0)
		failed_attempt(call, log, task, attempt_error(task, false));
	if (strcmp(task->state, "claimed") == 0)
	{
		if (task->lease_until <= now)
		{
			expire_lease(task);
			failed_attempt(call, log, task, attempt_error(task, true));
		}
		/* Heartbeats moved the lease: look again when it ends. */
		park(call, task, true, task->lease_until, CF_TASK_LEASE_WAKEUP, false);
	}
	/* Pending: notify its queue once it is due (a retry's backoff ended). */
	if (task->available_at <= now)
		park(call, task, false, 0, NULL, true);
	park(call, task, true, task->available_at, "task retry", false);
}

/*
 * run_task(step, queue, args, retry_policy, timeout, lease) and
 * run_task(step, queue, INOUT result, args, retry_policy, timeout, lease).
 */
Datum
cf_run_task(PG_FUNCTION_ARGS)
{
	TaskCall	call;
	Jsonb	   *result = NULL;
	CfStepLog	log;
	TaskRow		task;

	cf_require_pass(fcinfo, "run_task");
	parse_call(fcinfo, &call);
	cf_pass.outcome = CF_OUTCOME_NONE;
	if (cf_step_completed(call.step_name, &result))
		return cf_return_result(fcinfo, call.has_result, result);

	cf_spi_connect();
	/* A missing undo function is found before the task is offered. */
	if (call.undo != NULL)
		(void) cf_function_lookup(call.undo, "compensation", false);
	log = cf_step_log_read(call.step_name);
	/* A task is written with its step's log, never without: no log, no task. */
	if (!log.exists)
		offer_new_task(&call, &log);
	task = read_task(call.step);
	if (!task.exists)
		offer_new_task(&call, &log);
	if (strcmp(task.state, "completed") == 0)
		return record_completion(fcinfo, &call, &task);
	settle_task(&call, &log, &task);
	PG_RETURN_VOID();			/* not reached */
}
