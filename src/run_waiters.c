/*-------------------------------------------------------------------------
 *
 * run_waiters.c
 *	  wait_for_run(): a client blocks until a run ends, without polling.
 *
 * Owns the client call that returns when a run becomes terminal or
 * stalled, or when its timeout passes: the refusals where waiting cannot
 * work, the run functions' visibility rule, and the loop that re-reads
 * the run each time its latch is set.  The shared registry of waiters
 * and the wake-up after the commit that ends a run are waiter_slots.c's.
 * It writes nothing and never runs user code.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/wait_event.h"

#include "access.h"
#include "citus.h"
#include "internal.h"
#include "pass.h"
#include "util.h"
#include "waiter_slots.h"

PG_FUNCTION_INFO_V1(cf_wait_for_run);
PG_FUNCTION_INFO_V1(cf_run_waiters);

/* A timeout this long (100 years) is no timeout. */
#define CF_WAIT_FOREVER_S (100.0 * 365 * SECS_PER_DAY)

/*
 * A waiter reads its run again at least this often.  The commit that
 * ends a run sets the latch; a run ended by COMMIT PREPARED is not told
 * to anyone (the transaction's callbacks ran at its PREPARE, before the
 * end was visible), so without this its waiters would sleep to their
 * timeout, or forever.
 */
#define CF_WAIT_RECHECK_MS 5000

/* The run as one read saw it. */
typedef struct CfRunSeen
{
	bool		done;			/* terminal or stalled */
	Datum		values[5];		/* state, context, error_class, error_message, result */
	bool		nulls[5];
} CfRunSeen;

/*
 * Where waiting cannot work.  In a pass, a wait would hold a worker (as
 * run_pending() there, it is a programming error: the run fails).  Under
 * REPEATABLE READ or SERIALIZABLE the snapshot would never see the run
 * change.
 */
static void
refuse_where_it_cannot_wait(void)
{
	if (cf_pass.active)
	{
		cf_poison_pass(pstrdup("wait_for_run() cannot be called from inside a workflow"));
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_IN_PASS),
				 errmsg("wait_for_run() cannot be called from inside a workflow"),
				 errdetail("A pass that waits holds its worker; the run fails."),
				 errhint("A workflow waits for other runs with await_event or merge_branches.")));
	}
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("wait_for_run() cannot wait under REPEATABLE READ or SERIALIZABLE"),
				 errdetail("The transaction's snapshot would never see the run change."),
				 errhint("Call it in a READ COMMITTED transaction.")));
}

/* When the wait ends (the real clock, not the engine's): DT_NOEND if never. */
static TimestampTz
wait_deadline(FunctionCallInfo fcinfo)
{
	Interval   *timeout;
	double		seconds;

	if (PG_ARGISNULL(2))
		return DT_NOEND;
	timeout = PG_GETARG_INTERVAL_P(2);
	if (cf_interval_is_negative(timeout))
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("wait_for_run() timeout must not be negative")));
	seconds = cf_interval_seconds(timeout);
	if (seconds >= CF_WAIT_FOREVER_S)
		return DT_NOEND;
	return GetCurrentTimestamp() + (TimestampTz) (seconds * USECS_PER_SEC);
}

/* Milliseconds left until the deadline (rounded up), 0 if past, -1 if none. */
static long
ms_until(TimestampTz deadline)
{
	TimestampTz now = GetCurrentTimestamp();

	if (deadline == DT_NOEND)
		return -1;
	if (deadline <= now)
		return 0;
	return (long) Min((deadline - now + 999) / 1000, (TimestampTz) PG_INT32_MAX);
}

/*
 * The run as of now: a fresh snapshot (READ COMMITTED), as the engine.
 * Its last error only if it failed or stalled.  The values live in `cxt`.
 */
static CfRunSeen
read_run(int64 run, const char *workflow, const char *key, MemoryContext cxt)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	CfRunSeen	seen;
	MemoryContext old;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT w.state::text, w.context, e.error_class, e.error_message, c.result"
			" FROM chrono_forge.workflows w"
			" LEFT JOIN LATERAL (SELECT l.error_class, l.error_message"
			"   FROM chrono_forge.error_logs l"
			"  WHERE l.workflow_id = w.id AND w.state IN ('failed', 'stalled')"
			"  ORDER BY l.id DESC LIMIT 1) e ON true"
			" LEFT JOIN chrono_forge.execution_logs c ON c.workflow_id = w.id"
			"  AND c.step_name = '$workflow_completion$' AND w.state = 'completed'"
			" WHERE w.id = $1",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(run)}, NULL, false, 1);
	cf_internal_end(&st);
	if (SPI_processed != 1)
		cf_unknown_run(workflow, key);	/* deleted while we waited */
	old = MemoryContextSwitchTo(cxt);
	for (int i = 0; i < 5; i++)
	{
		Datum		v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1,
									  &seen.nulls[i]);

		seen.values[i] = seen.nulls[i] ? (Datum) 0
			: (i == 1 || i == 4 ? PointerGetDatum(PG_DETOAST_DATUM_COPY(v))
			   : PointerGetDatum(DatumGetTextPCopy(v)));
	}
	{
		char	   *state = TextDatumGetCString(seen.values[0]);

		seen.done = strcmp(state, "completed") == 0 || strcmp(state, "failed") == 0 ||
			strcmp(state, "cancelled") == 0 || strcmp(state, "stalled") == 0;
	}
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	return seen;
}

/*
 * Before blocking: what would keep the run from ending, or this wait
 * from hearing of it.  What this transaction wrote (the run's start, an
 * event, a wake-up, rows its steps need) is invisible or locked to the
 * passes until it commits; without the shared registry (chrono_forge not
 * preloaded), or on a standby, no commit here sets the latch.
 */
static void
refuse_hopeless_wait(bool registered)
{
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("wait_for_run() cannot wait in a transaction that has written"),
				 errdetail("What this transaction wrote reaches the workflow's passes only when it commits."),
				 errhint("Commit first, then wait.")));
	if (!registered || RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("wait_for_run() can wait only on a primary with chrono_forge in shared_preload_libraries"),
				 errdetail("The run has not ended, and nothing here would tell this session when it does.")));
}

/*
 * Wait until the run is done or the deadline passes; returns what the
 * last read saw.  Registered before the first read, so that a commit
 * ending the run after that read sets the latch; the slot is cleared
 * whatever happens (an error, a cancel; a FATAL exit clears it too).
 */
static CfRunSeen
wait_loop(int64 run, const char *workflow, const char *key, TimestampTz deadline,
		  MemoryContext cxt)
{
	CfRunSeen	seen;
	bool		registered = cf_waiter_slots_ready() && !RecoveryInProgress();

	if (registered)
		cf_waiter_slot_set(run);
	PG_TRY();
	{
		for (;;)
		{
			long		ms;

			MemoryContextReset(cxt);
			seen = read_run(run, workflow, key, cxt);
			ms = ms_until(deadline);
			if (seen.done || ms == 0)
				break;
			refuse_hopeless_wait(registered);
			if (ms < 0 || ms > CF_WAIT_RECHECK_MS)
				ms = CF_WAIT_RECHECK_MS;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | WL_TIMEOUT,
							 ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_FINALLY();
	{
		if (registered)
			cf_waiter_slot_clear();
	}
	PG_END_TRY();
	return seen;
}

/*
 * wait_for_run(workflow, key, timeout DEFAULT NULL) -> (state, context,
 * error_class, error_message, result): the caller's run (as the other run
 * functions find it) once it is completed, failed, cancelled or stalled,
 * or as it is when timeout passes (NULL: no timeout).  Before 0.10.0 the
 * function has no result column: the tuple is formed to the declared
 * descriptor, which then takes the first four values.
 */
Datum
cf_wait_for_run(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *workflow;
	char	   *key;
	TimestampTz deadline;
	Oid			caller = GetUserId();
	MemoryContext cxt;
	CfInternal	st;
	CfRunSeen	seen;
	int64		run;

	refuse_where_it_cannot_wait();
	workflow = cf_required_text(fcinfo, 0, "workflow");
	key = cf_required_text(fcinfo, 1, "key");
	cf_citus_check_key(key);
	deadline = wait_deadline(fcinfo);
	InitMaterializedSRF(fcinfo, 0);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "wait_for_run", ALLOCSET_SMALL_SIZES);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cf_internal_begin(&st);
	run = cf_find_visible_run(caller, workflow, key);
	cf_internal_end(&st);
	seen = wait_loop(run, workflow, key, deadline, cxt);
	SPI_finish();

	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, seen.values, seen.nulls);
	MemoryContextDelete(cxt);
	return (Datum) 0;
}

/* run_waiters() -> sessions blocked in wait_for_run() now (admins). */
Datum
cf_run_waiters(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(cf_waiter_slots_active());
}
