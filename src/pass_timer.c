/*-------------------------------------------------------------------------
 *
 * pass_timer.c
 *	  Stopping a pass in flight: when it outlives max_duration, and when
 *	  cancel() or its run's deadline asks for its run.
 *
 * Owns the pass's tick (PostgreSQL's timeout.c, armed while the workflow
 * body runs) that enforces max_duration, the SIGUSR2 handler through
 * which cancel() stops a pass (in workers and in run_pending() sessions),
 * and the cancel_requests table (the durable half of a cancel, or of a
 * deadline (deadlines.c), that found its run held by a pass).  Both stops
 * are delivered as a query cancel, the way statement_timeout is, and
 * again at every tick until the body ends; a worker whose body keeps
 * swallowing them is ended.  The flags set
 * here are what tells the executor that the cancel is ours and not an
 * operator's or a shutdown.  A stop is only delivered while the body runs:
 * the engine's own statements that end a pass are never cancelled by it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "replication/walsender.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "compensation.h"
#include "guc.h"
#include "internal.h"
#include "journal.h"
#include "pass_timer.h"
#include "shmem.h"

#define STOP_REPEAT_MS 100		/* the pass's tick */
#define STOP_GRACE_MS 5000		/* a worker's body may swallow stops this long */

static TimeoutId pass_timeout = MAX_TIMEOUTS;	/* registered on first use */
static TimestampTz pass_deadline = 0;
static int	pass_limit_s = 0;		/* max_duration when the pass started */
static bool timer_armed = false;
static volatile TimestampTz stop_since = 0;	/* first tick with a stop due */

/* Set by the handlers; read by the executor once the error is caught. */
static volatile sig_atomic_t timer_fired = false;
static volatile sig_atomic_t cancel_fired = false;
static volatile sig_atomic_t preempt_fired = false;
/* Is the body running (may a stop be delivered as a query cancel)? */
static volatile sig_atomic_t body_running = false;
/* The run of the pass in progress, for the SIGUSR2 handler. */
static volatile int64 pass_run = 0;

static void
deliver_stop(void)
{
	if (body_running)
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	SetLatch(MyLatch);
}

/*
 * timeout.c calls this from its SIGALRM handler, every STOP_REPEAT_MS
 * while the pass runs.  Past the deadline, or once cancel() asked, it
 * delivers the stop again at each tick: a body that swallows the query
 * cancel (an EXCEPTION clause catching query_canceled) is stopped again at
 * its next interrupt check.  A worker whose body has swallowed stops for
 * STOP_GRACE_MS ends as pg_terminate_backend() would end it (a FATAL no
 * handler catches); the launcher re-drives its run.
 */
static void
pass_tick_handler(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!timer_fired && now >= pass_deadline)
		timer_fired = true;
	if (!timer_fired && !cancel_fired && !preempt_fired)
		return;
	if (stop_since == 0)
		stop_since = now;
	else if (cf_worker_slot >= 0 && body_running &&
			 TimestampDifferenceExceeds(stop_since, now, STOP_GRACE_MS))
	{
		ProcDiePending = true;
		InterruptPending = true;
	}
	deliver_stop();
}

/*
 * SIGUSR2 in a backend driving passes: cancel() committed a request for
 * some run and marked this backend's pass slot.  Only a mark naming the
 * run of the pass in progress stops it, so a signal that arrives after
 * that pass ended never stops the next one.
 */
static void
cancel_signal_handler(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (cf_pass_slot_cancel_asked(pass_run))
	{
		cancel_fired = true;
		deliver_stop();
	}
	else if (cf_pass_slot_preempt_asked(pass_run))
	{
		preempt_fired = true;
		deliver_stop();
	}
	else
		SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Workers, and sessions calling run_pending(): SIGUSR2 stops a pass that
 * cancel() asked to stop.  A session ignores SIGUSR2 otherwise; a
 * walsender uses it for itself and keeps it (its passes are bounded by
 * max_duration only).
 */
void
cf_pass_cancel_signal_init(void)
{
	static bool installed = false;

	if (installed || am_walsender)
		return;
	pqsignal(SIGUSR2, cancel_signal_handler);
	installed = true;
}

/*
 * The pass of `run` starts: its body may run until now + max_duration.
 * run_pending() passes are bounded the same way.
 */
void
cf_pass_timer_arm(int64 run)
{
	/*
	 * A worker drains many passes per call; take a new max_duration (a
	 * SIGHUP) from the next pass on, not the next drain.
	 */
	if (cf_worker_slot >= 0 && ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
	timer_fired = false;
	cancel_fired = false;
	preempt_fired = false;
	stop_since = 0;
	pass_run = run;
	if (pass_timeout == MAX_TIMEOUTS)
		pass_timeout = RegisterTimeout(USER_TIMEOUT, pass_tick_handler);
	pass_limit_s = cf_max_duration_s;
	pass_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												(int64) pass_limit_s * 1000);
	cf_pass_timer_resume();
}

/* The body runs (again, after an eager restart): same deadline. */
void
cf_pass_timer_resume(void)
{
	if (!timer_armed)
	{
		enable_timeout_every(pass_timeout,
							 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STOP_REPEAT_MS),
							 STOP_REPEAT_MS);
		timer_armed = true;
	}
	body_running = true;
	if (timer_fired || cancel_fired || preempt_fired)
		deliver_stop();
}

/*
 * The body has returned or failed: no stop is delivered any more.  A stop
 * that fired as the body returned, not delivered yet, is dropped (the
 * executor still sees the flags), so that it cannot cancel the engine's
 * statements that end the pass.
 */
void
cf_pass_timer_disarm(void)
{
	body_running = false;
	if (timer_armed)
	{
		disable_timeout(pass_timeout, false);
		timer_armed = false;
	}
	if ((timer_fired || cancel_fired || preempt_fired) && QueryCancelPending)
		QueryCancelPending = false;
}

bool
cf_pass_timer_fired(void)
{
	return timer_fired;
}

bool
cf_pass_cancel_fired(void)
{
	return cancel_fired;
}

bool
cf_pass_preempt_fired(void)
{
	return preempt_fired;
}

/* The pass has ended: signals for its run no longer concern this process. */
void
cf_pass_interrupts_end(void)
{
	cf_pass_timer_disarm();
	pass_run = 0;
	timer_fired = false;
	cancel_fired = false;
	preempt_fired = false;
	stop_since = 0;
}

/*
 * The error a pass that outlived max_duration records: CF021, whatever
 * the body was doing when it was stopped (the query cancel it received,
 * or its next primitive's refusal).
 */
ErrorData *
cf_pass_timeout_error(ErrorData *edata, int64 run)
{
	char	   *was = edata->message;

	edata->sqlerrcode = ERRCODE_CF_PASS_TIMEOUT;
	edata->message = psprintf("pass of workflow run %lld exceeded chrono_forge.max_duration (%d s) and was stopped",
							  (long long) run, pass_limit_s);
	edata->detail = was ? psprintf("It was stopped with: %s", was) : NULL;
	edata->hint = pstrdup("Its transaction was rolled back; the run goes on by its workflow retry policy.");
	return edata;
}

/*
 * Has cancel() left a request for `run`?  Only asked while requests may
 * exist (cf_cancels_pending()).  Connects to SPI itself.
 */
bool
cf_cancel_requested(int64 run)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	bool		requested;

	cf_spi_connect();
	if (!cf_schema_at_least(CF_SCHEMA(0, 5, 0)))	/* no cancel_requests yet */
	{
		SPI_finish();
		return false;
	}
	cf_internal_begin(&st);
	cf_exec(&plan, "SELECT 1 FROM chrono_forge.cancel_requests WHERE workflow_id = $1",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(run)}, NULL, false, 1);
	requested = SPI_processed > 0;
	cf_internal_end(&st);
	SPI_finish();
	return requested;
}

/*
 * The requests (of $1, or all if 0) whose runs no pass holds now (SKIP
 * LOCKED) are carried out, as of $2; the others stay.  Returns the runs
 * still held, and the runs ended.
 */
#define APPLY_HEAD_SQL \
	"WITH r AS (SELECT q.* FROM chrono_forge.cancel_requests q WHERE $1 = 0 OR q.workflow_id = $1)," \
	" x AS (SELECT w.id FROM chrono_forge.workflows w" \
	"  WHERE w.id IN (SELECT workflow_id FROM r) FOR NO KEY UPDATE SKIP LOCKED),"
#define APPLY_TAIL_SQL \
	" k AS (DELETE FROM chrono_forge.wakeups k USING w WHERE k.workflow_id = w.id)," \
	" d AS (DELETE FROM chrono_forge.cancel_requests q USING x WHERE q.workflow_id = x.id)" \
	" SELECT (SELECT array_agg(r.workflow_id) FROM r WHERE NOT r.workflow_id IN (SELECT id FROM x))," \
	"  (SELECT array_agg(id) FROM w)"

/* Schemas 0.5.0 to 0.10.0: every request is a cancel. */
#define APPLY_CANCELS_SQL \
	APPLY_HEAD_SQL \
	" w AS (UPDATE chrono_forge.workflows w SET state = 'cancelled', locked_by = NULL," \
	"   locked_at = NULL, updated_at = $2" \
	"  FROM x WHERE w.id = x.id AND w.state NOT IN ('completed', 'cancelled') RETURNING w.id)," \
	" l AS (INSERT INTO chrono_forge.execution_logs" \
	"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, metadata)" \
	"  SELECT w.id, '$workflow_cancelled$', 'completed', 1, $2, $2, $2," \
	"   jsonb_build_object('reason', r.reason, 'requested_by', r.requested_by::regrole::text," \
	"    'cancelled_run', r.cancelled_run)" \
	"  FROM w JOIN r ON r.workflow_id = w.id ON CONFLICT (workflow_id, step_name) DO NOTHING)," \
	APPLY_TAIL_SQL

/*
 * 0.11.0: a request of kind 'deadline' fails its run (CF029, with a
 * $workflow_deadline$ marker, written again if a retried run passes a
 * moved deadline) if the run has not ended.  (set_deadline() deletes the
 * request when it moves the deadline away.)
 */
#define APPLY_REQUESTS_SQL \
	APPLY_HEAD_SQL \
	" w AS (UPDATE chrono_forge.workflows w" \
	"   SET state = CASE r.kind WHEN 'deadline' THEN 'failed' ELSE 'cancelled' END::chrono_forge.workflow_state," \
	"   locked_by = NULL, locked_at = NULL, updated_at = $2" \
	"  FROM x JOIN r ON r.workflow_id = x.id" \
	"  WHERE w.id = x.id AND w.state::text NOT IN ('completed', 'cancelled', 'compensated')" \
	"   AND (r.kind = 'cancel' OR (w.state <> 'failed' AND w.deadline IS NOT NULL))" \
	"  RETURNING w.id, r.kind, r.reason, r.requested_by, r.cancelled_run, w.deadline, w.context)," \
	" l AS (INSERT INTO chrono_forge.execution_logs AS g" \
	"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, metadata)" \
	"  SELECT w.id, CASE w.kind WHEN 'deadline' THEN '$workflow_deadline$' ELSE '$workflow_cancelled$' END," \
	"   'completed', 1, $2, $2, $2," \
	"   CASE w.kind WHEN 'deadline' THEN jsonb_build_object('deadline', w.deadline)" \
	"   ELSE jsonb_build_object('reason', w.reason, 'requested_by', w.requested_by::regrole::text," \
	"    'cancelled_run', w.cancelled_run) END" \
	"  FROM w ON CONFLICT (workflow_id, step_name) DO UPDATE SET attempts = g.attempts + 1," \
	"   last_executed_at = EXCLUDED.last_executed_at, completed_at = EXCLUDED.completed_at," \
	"   metadata = EXCLUDED.metadata WHERE g.step_name = '$workflow_deadline$')," \
	" e AS (INSERT INTO chrono_forge.error_logs" \
	"  (workflow_id, error_class, error_message, error_detail, error_hint, context, created_at)" \
	"  SELECT w.id, 'CF029', 'workflow run ' || w.id || ' passed its deadline'," \
	"   'Its deadline was ' || w.deadline || '.'," \
	"   'retry() refuses it while its deadline is past: move it with set_deadline() first.'," \
	"   w.context, $2 FROM w WHERE w.kind = 'deadline')," \
	APPLY_TAIL_SQL

/*
 * 0.12.0: the requests (of `run`, or all if 0) whose runs have undo steps
 * and no pass holds: those runs compensate (cf_compensation_begin())
 * instead of ending, and their requests go.  A run past its deadline
 * keeps the failure's trace ($workflow_deadline$ and a CF029 error) all
 * the same.  The caller is connected to SPI, as the engine.
 */
static void
compensate_requested(int64 run)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr done_plan = NULL;
	SPITupleTable *rows;
	uint64		nrows;

	cf_exec(&plan,
			"SELECT q.workflow_id, q.kind, q.reason, q.requested_by, q.cancelled_run, w.deadline"
			" FROM chrono_forge.cancel_requests q JOIN chrono_forge.workflows w ON w.id = q.workflow_id"
			" WHERE ($1 = 0 OR q.workflow_id = $1) AND w.state::text IN ('idle', 'running', 'stalled')",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(run)}, NULL, false, 0);
	rows = SPI_tuptable;
	nrows = SPI_processed;
	for (uint64 i = 0; i < nrows; i++)
	{
		HeapTuple	row = rows->vals[i];
		bool		isnull;
		bool		no_reason;
		bool		no_run;
		bool		no_deadline;
		int64		id = DatumGetInt64(SPI_getbinval(row, rows->tupdesc, 1, &isnull));
		char	   *kind = TextDatumGetCString(SPI_getbinval(row, rows->tupdesc, 2, &isnull));
		Datum		reason = SPI_getbinval(row, rows->tupdesc, 3, &no_reason);
		Oid			by = DatumGetObjectId(SPI_getbinval(row, rows->tupdesc, 4, &isnull));
		Datum		named = SPI_getbinval(row, rows->tupdesc, 5, &no_run);
		Datum		deadline = SPI_getbinval(row, rows->tupdesc, 6, &no_deadline);
		int			began;
		Datum		running;
		Datum		ids = PointerGetDatum(construct_array(&(Datum) {Int64GetDatum(id)}, 1, INT8OID,
														  sizeof(int64), FLOAT8PASSBYVAL,
														  TYPALIGN_DOUBLE));

		if (strcmp(kind, "deadline") == 0 && no_deadline)
			continue;			/* its deadline was removed: applied as a no-op */
		(void) cf_compensation_begin(ids, cf_compensation_why(kind, no_reason ? NULL : TextDatumGetCString(reason),
															  by, no_run ? 0 : DatumGetInt64(named)),
									 &began, &running);
		if (began == 0)
			continue;
		if (running != (Datum) 0)
			cf_queue_cancel_signal(id);
		cf_exec(&done_plan,
				"WITH d AS (DELETE FROM chrono_forge.cancel_requests WHERE workflow_id = $1),"
				" l AS (INSERT INTO chrono_forge.execution_logs AS g"
				"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, metadata)"
				"  SELECT $1, '$workflow_deadline$', 'completed', 1, $3, $3, $3,"
				"   jsonb_build_object('deadline', $4) WHERE $2"
				"  ON CONFLICT (workflow_id, step_name) DO UPDATE SET attempts = g.attempts + 1,"
				"   last_executed_at = EXCLUDED.last_executed_at, completed_at = EXCLUDED.completed_at,"
				"   metadata = EXCLUDED.metadata)"
				" INSERT INTO chrono_forge.error_logs"
				"  (workflow_id, error_class, error_message, error_detail, error_hint, context, created_at)"
				" SELECT $1, 'CF029', 'workflow run ' || $1 || ' passed its deadline',"
				"  'Its deadline was ' || $4 || '; it compensates.', NULL, w.context, $3"
				" FROM chrono_forge.workflows w WHERE w.id = $1 AND $2",
				4, (Oid[]) {INT8OID, BOOLOID, TIMESTAMPTZOID, TIMESTAMPTZOID},
				(Datum[]) {Int64GetDatum(id), BoolGetDatum(strcmp(kind, "deadline") == 0),
				TimestampTzGetDatum(cf_clock_now()), deadline},
				strcmp(kind, "deadline") == 0 ? NULL : "   n", false, 0);
	}
}

/*
 * Carry out cancel requests (of `run`, or all if 0) whose runs no pass
 * holds now: the run becomes cancelled, as cancel() would have made it,
 * with the request's reason and requester in its marker, or, for a
 * request of kind 'deadline' (deadlines.c), failed with CF029; its
 * request goes (also if the run ended meanwhile).  Requests of runs still
 * held stay for the pass that holds them, or a later look; with
 * `signal_held`, the passes holding them are told (again) to stop.
 * Returns how many requests are left.  Connects to SPI itself; the caller commits.
 */
int
cf_apply_cancel_requests(int64 run, bool signal_held)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr plan_0_5 = NULL;
	CfInternal	st;
	bool		isnull;
	bool		no_cancelled;
	Datum		held;
	Datum		cancelled;
	int			left = 0;

	cf_spi_connect();
	if (!cf_schema_at_least(CF_SCHEMA(0, 5, 0)))
	{
		SPI_finish();
		return 0;
	}
	cf_internal_begin(&st);
	if (cf_schema_at_least(CF_SCHEMA(0, 12, 0)))
		compensate_requested(run);
	if (cf_schema_at_least(CF_SCHEMA(0, 11, 0)))
		cf_exec(&plan, APPLY_REQUESTS_SQL, 2, (Oid[]) {INT8OID, TIMESTAMPTZOID},
				(Datum[]) {Int64GetDatum(run), TimestampTzGetDatum(cf_clock_now())},
				NULL, false, 0);
	else
		cf_exec(&plan_0_5, APPLY_CANCELS_SQL, 2, (Oid[]) {INT8OID, TIMESTAMPTZOID},
				(Datum[]) {Int64GetDatum(run), TimestampTzGetDatum(cf_clock_now())},
				NULL, false, 0);
	held = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	cancelled = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &no_cancelled);
	if (!isnull)
	{
		Datum	   *runs;
		int64	   *ids;

		deconstruct_array(DatumGetArrayTypeP(held), INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
						  TYPALIGN_DOUBLE, &runs, NULL, &left);
		ids = palloc(sizeof(int64) * left);
		for (int i = 0; i < left; i++)
			ids[i] = DatumGetInt64(runs[i]);
		if (signal_held)
			cf_signal_pass_holders(ids, left);
	}
	cf_internal_end(&st);
	if (!no_cancelled)
		cf_journal_cancel_tasks(PointerGetDatum(PG_DETOAST_DATUM_COPY(cancelled)));
	SPI_finish();
	return left;
}
