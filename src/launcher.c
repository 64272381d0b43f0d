/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher background worker: keeps the executor workers running,
 *	  re-drives the runs of a worker that died, recovers runs interrupted
 *	  by a server crash, ends the runs past their deadline, admits the
 *	  runs waiting for a concurrency place, keeps the readers' summaries
 *	  current, and sleeps until the next due wake-up.
 *
 * Owns worker supervision and timers.  It never runs a pass itself, and
 * never polls on a short fixed interval: it sleeps on its latch until the
 * earliest due wake-up (or a minute, for the summaries), and commits that
 * schedule something sooner wake it (see shmem.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "concurrency.h"
#include "deadlines.h"
#include "guc.h"
#include "internal.h"
#include "launcher.h"
#include "merge.h"
#include "pass_timer.h"
#include "shmem.h"
#include "wakeups.h"

#define LAUNCHER_MAINTENANCE_MS	60000	/* while any run is running */
#define LAUNCHER_SUMMARY_MS		60000	/* the readers' summaries, kept current */
#define LAUNCHER_CANCEL_RETRY_MS 500	/* while cancel requests wait for passes */
#define LAUNCHER_RETRY_MS 1000	/* after a deadline sweep or an admission failed */
#define PREEMPT_AFTER_MS 1000	/* a pass this old may be preempted by the share */
#define PREEMPT_CHECK_MS 250	/* while an owner holds more than its share */

static BackgroundWorkerHandle *worker_handles[CF_MAX_WORKERS];

void
cf_register_launcher(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;

	/*
	 * Not before recovery ends: a streaming standby shares its primary's
	 * settings, and nothing can be written there.  The postmaster starts
	 * us at promotion, and the runs the old primary's workers held (locks
	 * of another shared-memory epoch) are re-driven then, like those of a
	 * crash (test/integration/t_standby.sh).
	 */
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 1;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "chrono_forge");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "cf_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "chrono_forge launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "chrono_forge launcher");
	RegisterBackgroundWorker(&bgw);
}

static bool
start_worker(int slot)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "chrono_forge");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "cf_worker_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "chrono_forge worker %d", slot);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "chrono_forge worker");
	bgw.bgw_main_arg = Int32GetDatum(slot);
	bgw.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&bgw, &worker_handles[slot]);
}

/*
 * Run one internal statement in its own transaction, then `then` (if any)
 * on its result in the same transaction.  Returns what `then` returns,
 * else SPI_processed; `first_ts`, if given, gets the first row's first
 * column (DT_NOEND if none).
 */
static uint64
launcher_xact(const char *sql, int nargs, Oid *types, Datum *values,
			  TimestampTz *first_ts, uint64 (*then) (void))
{
	uint64		n;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	pgstat_report_activity(STATE_RUNNING, sql);
	if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0) < 0)
		elog(ERROR, "chrono_forge launcher statement failed: %s", sql);
	n = SPI_processed;
	if (then != NULL)
		n = then();
	else if (first_ts != NULL)
	{
		bool		isnull = true;

		if (n > 0)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			*first_ts = isnull ? DT_NOEND : DatumGetTimestampTz(d);
		}
		else
			*first_ts = DT_NOEND;
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return n;
}

static uint64
launcher_exec(const char *sql, int nargs, Oid *types, Datum *values,
			  TimestampTz *first_ts)
{
	return launcher_xact(sql, nargs, types, values, first_ts, NULL);
}

/* The runs redrive_runs() made idle get a wake-up due now. */
static uint64
wake_redriven(void)
{
	if (SPI_processed == 0)
		return 0;
	return cf_wakeups_add(cf_spi_ids(1), cf_clock_now(), "recovery", CF_WAKEUP_ALWAYS);
}

/*
 * Runs left 'running' under a lock whose holder is gone (`lost_lock`, an SQL
 * condition on the run's row), and the run `current_run` a dead worker was
 * executing (whose claim may have rolled back), get a new pass at once.  Each such loss counts as a recovery; a
 * run that lost more than max_recoveries passes is stalled with an error
 * instead, so a pass that kills its worker cannot loop forever.
 */
static void
redrive_runs(const char *lost_lock, int64 current_run)
{
	char	   *sql = psprintf(
							   "WITH r AS ("
							   "  UPDATE chrono_forge.workflows SET state = CASE WHEN recoveries + 1 > $1"
							   "   THEN 'stalled'::chrono_forge.workflow_state ELSE 'idle' END,"
							   "   recoveries = recoveries + 1, locked_by = NULL, locked_at = NULL,"
							   "   updated_at = chrono_forge.now()"
							   "  WHERE (state = 'running' AND (%s))"
							   "   OR (id = $2 AND state IN ('idle', 'running'))"
							   "  RETURNING id, state, context),"
							   " e AS (INSERT INTO chrono_forge.error_logs"
							   "  (workflow_id, attempt, error_class, error_message, context, created_at)"
							   "  SELECT id, $1 + 1, 'CF015', 'passes of this run ended their worker process too often',"
							   /* an error's context snapshot is capped (journal.c) */
							   "   CASE WHEN pg_catalog.octet_length(context::text) > " CppAsString2(CF_ERROR_CONTEXT_MAX)
							   "    THEN pg_catalog.jsonb_build_object('$truncated', pg_catalog.jsonb_build_object("
							   "     'bytes', pg_catalog.octet_length(context::text), 'kept', 0)) ELSE context END,"
							   "   chrono_forge.now() FROM r WHERE state = 'stalled'),"
							   " d AS (DELETE FROM chrono_forge.wakeups k USING r"
							   "  WHERE k.workflow_id = r.id AND r.state = 'stalled')"
							   " SELECT id FROM r WHERE state = 'idle'",
							   lost_lock);
	uint64		n;

	n = launcher_xact(sql, 2, (Oid[]) {INT4OID, INT8OID},
					  (Datum[]) {Int32GetDatum(cf_max_recoveries), Int64GetDatum(current_run)},
					  NULL, wake_redriven);
	if (n > 0)
	{
		ereport(LOG,
				(errmsg("chrono_forge launcher re-drove %llu interrupted workflow run(s)",
						(unsigned long long) n)));
		cf_wake_workers();
	}
}

/* Keep exactly the configured number of workers; re-drive dead ones' runs. */
static void
supervise_workers(bool serving)
{
	int			wanted = (serving && cf_enabled) ? cf_workers : 0;

	for (int slot = 0; slot < CF_MAX_WORKERS; slot++)
	{
		pid_t		pid;

		if (worker_handles[slot] != NULL &&
			GetBackgroundWorkerPid(worker_handles[slot], &pid) == BGWH_STOPPED)
		{
			pfree(worker_handles[slot]);
			worker_handles[slot] = NULL;
			if (serving)
				redrive_runs(psprintf("locked_by LIKE '%llu:w%d:%%'",
									  (unsigned long long) cf_shmem_epoch(), slot),
							 cf_worker_take_current_run(slot));
		}
		if (slot >= wanted && worker_handles[slot] != NULL)
		{
			TerminateBackgroundWorker(worker_handles[slot]);
			continue;
		}
		if (slot < wanted && worker_handles[slot] == NULL && !start_worker(slot))
			ereport(WARNING,
					(errmsg("chrono_forge launcher could not start worker %d", slot),
					 errhint("Raise max_worker_processes.")));
	}
}

/*
 * The earliest due wake-up of a run that a worker could claim, after
 * `after` (DT_NOBEGIN: any), or DT_NOEND if none.
 */
static TimestampTz
next_due_wakeup(TimestampTz after)
{
	TimestampTz due;
	Interval   *max_duration = cf_max_duration_interval();

	/*
	 * The wake-ups in due order, each run looked up by its id: EXISTS with
	 * OFFSET 0 stays a per-row lookup.  As a join, with statistics from
	 * before a burst (every run "completed"), the planner read every run
	 * and probed the wake-ups of each: 30 ms a call, twice a round, with
	 * 20,000 runs.
	 */
	launcher_exec("SELECT k.due_at FROM chrono_forge.wakeups k"
				  " WHERE k.due_at > $2"
				  "  AND EXISTS (SELECT FROM chrono_forge.workflows w WHERE w.id = k.workflow_id"
				  "   AND (w.state = 'idle' OR (w.state = 'running' AND w.locked_at < chrono_forge.now() - $1))"
				  "   OFFSET 0)"
				  " ORDER BY k.due_at LIMIT 1",
				  2, (Oid[]) {INTERVALOID, TIMESTAMPTZOID},
				  (Datum[]) {IntervalPGetDatum(max_duration), TimestampTzGetDatum(after)}, &due);
	return due;
}

/*
 * Children of spawn_each not started yet are always due (0.4.0): after a
 * restart, nothing else tells the workers.
 */
static bool
spawned_children_waiting(void)
{
	TimestampTz due = DT_NOEND;
	bool		exists;

	StartTransactionCommand();
	exists = cf_schema_at_least(CF_SCHEMA(0, 4, 0));
	CommitTransactionCommand();
	if (exists)
		launcher_exec("SELECT due_at FROM chrono_forge.spawn_batches ORDER BY id LIMIT 1",
					  0, NULL, NULL, &due);
	return due != DT_NOEND;
}

/*
 * Carry out the cancel requests no pass holds any more (their pass ended
 * without seeing them, its worker died, the server restarted).  True if
 * some are left: a pass still holds their runs; look again soon.
 */
static bool
apply_cancel_requests(void)
{
	int			left;

	cf_cancels_set_pending(false);	/* a cancel committing now sets it again */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	left = cf_apply_cancel_requests(0, true);
	PopActiveSnapshot();
	CommitTransactionCommand();
	if (left > 0)
		cf_cancels_set_pending(true);
	return left > 0;
}

/*
 * body(arg) in a transaction of its own.  An error is logged and false
 * returned, rather than taking the launcher down (it would be restarted
 * into the same error at once).
 */
static bool
guarded_xact(const char *activity, void (*body) (void *), void *arg)
{
	volatile bool ok = true;
	MemoryContext cxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, activity);
		body(arg);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		ok = false;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

static void
sweep_deadlines(void *next)
{
	if (cf_deadlines_enforce(InvalidOid, (TimestampTz *) next) >= CF_DEADLINE_SWEEP_BATCH)
		*(TimestampTz *) next = GetCurrentTimestamp();	/* more may be due */
}

/*
 * End the runs past their deadline (deadlines.c).  Returns when the next
 * deadline comes (DT_NOEND: none; now, if a full batch was ended and more
 * may be due; a little later if the sweep failed).
 */
static TimestampTz
enforce_deadlines(void)
{
	TimestampTz next = DT_NOEND;

	if (!guarded_xact("chrono_forge deadlines", sweep_deadlines, &next))
		next = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), LAUNCHER_RETRY_MS);
	return next;
}

typedef struct GateLook
{
	bool		more;			/* more places given back than one look takes */
	TimestampTz next;			/* when a rate window frees next */
} GateLook;

static void
admit_gates_batch(void *look)
{
	GateLook   *l = (GateLook *) look;

	(void) cf_gates_admit(InvalidOid, &l->more, &l->next);
}

/*
 * Admit the runs waiting for the places that ended runs gave back, and
 * for the rate windows that have room again (concurrency.c), a batch per
 * transaction.  Returns when a rate window frees next (DT_NOEND: none; a
 * little later if a look failed).
 */
static TimestampTz
admit_gates(void)
{
	GateLook	look = {true, DT_NOEND};

	while (look.more)
	{
		CHECK_FOR_INTERRUPTS();
		if (!guarded_xact("chrono_forge concurrency gates", admit_gates_batch, &look))
			return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), LAUNCHER_RETRY_MS);
	}
	return look.next;
}

/*
 * The per-owner share, under pressure: an owner whose claims took more
 * than its share of the workers (no other owner's work was due then) gives
 * one back once another owner's work is due and no worker is free: its
 * newest pass older than PREEMPT_AFTER_MS is stopped and its run is due
 * again (executor.c, give_back_claim).  True while some owner is over its
 * share (look again soon).
 */
static bool
enforce_share(void)
{
	int64		victim;
	Oid			over;
	TimestampTz due = DT_NOEND;

	/* Cleared first: a worker going over from now on wakes us. */
	(void) cf_share_watch(false);
	over = cf_share_overrun(cf_worker_share_effective(), PREEMPT_AFTER_MS, &victim);
	if (!OidIsValid(over))
		return false;
	(void) cf_share_watch(true);
	if (victim == 0)
		return true;
	launcher_exec("SELECT k.due_at FROM chrono_forge.wakeups k"
				  " JOIN chrono_forge.workflows w ON w.id = k.workflow_id"
				  " WHERE k.due_at OPERATOR(pg_catalog.<=) chrono_forge.now()"
				  "  AND w.owner::pg_catalog.oid OPERATOR(pg_catalog.<>) $1"
				  "  AND w.state OPERATOR(pg_catalog.=) 'idle'::chrono_forge.workflow_state"
				  " LIMIT 1",
				  1, (Oid[]) {OIDOID}, (Datum[]) {ObjectIdGetDatum(over)}, &due);
	if (due != DT_NOEND)
		cf_preempt_pass(victim);
	return true;
}

/* The extension in this database, or InvalidOid. */
static Oid
installed_extension(void)
{
	Oid			ext;

	StartTransactionCommand();
	ext = get_extension_oid("chrono_forge", true);
	CommitTransactionCommand();
	return ext;
}

/*
 * We start serving this database: runs locked in an earlier server
 * lifetime (a crash, a promoted standby, a physical backup), by workers of
 * an earlier launcher (stopped at our start), or by our own workers before
 * we stopped serving lost their pass.  The last covers a restore, made
 * with the workers off or into a re-created extension: the dump's locks
 * may be this server's own.
 */
static void
redrive_lost_runs(void)
{
	redrive_runs(psprintf("locked_by NOT LIKE '%llu:%%' OR locked_by LIKE '%llu:w%%'",
						  (unsigned long long) cf_shmem_epoch(),
						  (unsigned long long) cf_shmem_epoch()),
				 0);
	cf_cancels_set_pending(true);	/* requests of an earlier lifetime */
}

static void
launcher_detach(int code, Datum arg)
{
	cf_launcher_detach();
}

/*
 * Workers started by a launcher that died are not ours to supervise: stop
 * them, so that each slot has one worker; their runs are re-driven below.
 */
static void
stop_orphaned_workers(void)
{
	for (int slot = 0; slot < CF_MAX_WORKERS; slot++)
	{
		pid_t		pid = cf_worker_pid(slot);

		if (pid == 0)
			continue;
		(void) kill(pid, SIGTERM);
		for (int i = 0; i < 1000 && cf_worker_pid(slot) == pid; i++)
		{
			(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
}

/* The shorter of two timeouts, where < 0 means none. */
static long
min_timeout(long timeout_ms, long other_ms)
{
	return timeout_ms < 0 ? other_ms : Min(timeout_ms, other_ms);
}

/*
 * Reap stalled runs, re-drive the passes of run_pending() sessions that
 * disconnected, and delete the wake-ups of ended runs.
 */
static void
run_maintenance(void)
{
	launcher_exec("SELECT chrono_forge.reap_stalled()", 0, NULL, NULL, NULL);
	/* Passes of run_pending() sessions that have disconnected. */
	redrive_runs(psprintf("locked_by LIKE '%llu:s:%%' AND split_part(locked_by, ':', 3)::int"
						  " NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)",
						  (unsigned long long) cf_shmem_epoch()),
				 0);
	/* A wake() that raced a run's last pass leaves a dead row. */
	launcher_exec("DELETE FROM chrono_forge.wakeups k USING chrono_forge.workflows w"
				  " WHERE w.id = k.workflow_id"
				  " AND w.state_code IN (3, 4, 5, 6, 7)",
				  0, NULL, NULL, NULL);
}

/*
 * The summaries overview() and daily_outcomes() read (the workflows each
 * role has runs of; the outcomes of each closed day) fold in what changed
 * since, so that a reader never pays for a backlog: after a day of runs
 * nobody looked at, the first overview would otherwise read all of them.
 * Both functions do nothing when nothing is new, and no more than a
 * bounded amount otherwise (outcome_days_refresh() clamps its range).
 */
static void
refresh_summaries(void)
{
	bool		exists;

	StartTransactionCommand();
	exists = cf_schema_at_least(CF_SCHEMA(0, 5, 0));	/* summaries since */
	CommitTransactionCommand();
	if (!exists)
		return;
	launcher_exec("SELECT chrono_forge.workflow_owners_refresh()", 0, NULL, NULL, NULL);
	launcher_exec("SELECT chrono_forge.outcome_days_refresh(current_date - 366, current_date)",
				  0, NULL, NULL, NULL);
}

/*
 * Work due now goes to the workers (they drain all of it); merge polls
 * due run here, never behind the workers' backlog.  Returns when the
 * first work due later is due (DT_NOEND: none); while children wait in
 * spawn batches, a second from now (the workers are told again until
 * the batches are gone).
 */
static TimestampTz
dispatch_due_work(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		spawned = spawned_children_waiting();
	TimestampTz due;

	/*
	 * Workers all taking due work need no look on their behalf (it reads
	 * the due wake-ups from the oldest: milliseconds in a burst of them).
	 * Their latches are set instead: each looks once more before it sleeps.
	 */
	due = cf_workers_all_draining() ? DT_NOBEGIN : next_due_wakeup(DT_NOBEGIN);
	if (due <= now || spawned)
	{
		cf_wake_workers();
		due = next_due_wakeup(now);
	}
	if (spawned)
		due = Min(due, TimestampTzPlusMilliseconds(now, 1000));
	return Min(due, cf_merge_launcher_polls());
}

/*
 * One round of serving the database: cancels, maintenance, the share,
 * concurrency places, deadlines, due work, the summaries once a minute.
 * Returns how long to sleep at most.
 */
static long
serve_round(TimestampTz *last_maintenance, TimestampTz *last_summary, TimestampTz *next_deadline,
			TimestampTz *next_gate)
{
	long		timeout_ms = -1;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz due;
	TimestampTz oldest_lock;
	bool		cancels_left = false;
	bool		timers;

	cf_replan_if_stale();		/* the merge polls' cached plans */
	if (cf_cancels_pending())
		cancels_left = apply_cancel_requests();

	/*
	 * Maintenance only matters while some run is running (a lock to reap,
	 * a session that may have died mid-pass): with every run parked,
	 * nothing wakes us but our timers and commits.
	 */
	launcher_exec("SELECT min(locked_at) FROM chrono_forge.workflows WHERE state = 'running'",
				  0, NULL, NULL, &oldest_lock);
	if (oldest_lock != DT_NOEND &&
		TimestampDifferenceExceeds(*last_maintenance, now, LAUNCHER_MAINTENANCE_MS))
	{
		run_maintenance();
		*last_maintenance = now;
	}
	if (oldest_lock != DT_NOEND)
		timeout_ms = LAUNCHER_MAINTENANCE_MS;
	if (cancels_left)
		timeout_ms = min_timeout(timeout_ms, LAUNCHER_CANCEL_RETRY_MS);
	if (enforce_share())
		timeout_ms = min_timeout(timeout_ms, PREEMPT_CHECK_MS);

	/*
	 * Places that ended runs gave back, and rate windows with room again,
	 * go to the runs waiting for them; runs past their deadline end.  Each
	 * look when its next timer is due, or when a commit set a timer.
	 */
	timers = cf_timers_changed_take();
	if (cf_gates_released_take() || timers || *next_gate <= GetCurrentTimestamp())
		*next_gate = admit_gates();
	if (timers || *next_deadline <= GetCurrentTimestamp())
		*next_deadline = enforce_deadlines();
	due = cf_launcher_plan_wake(Min(Min(*next_deadline, *next_gate), dispatch_due_work()));
	if (due != DT_NOEND)
	{
		now = GetCurrentTimestamp();
		timeout_ms = min_timeout(timeout_ms,
								 due <= now ? 0 : TimestampDifferenceMilliseconds(now, due));
	}

	/* After the due work: a long refresh must not hold up a timer. */
	now = GetCurrentTimestamp();
	if (TimestampDifferenceExceeds(*last_summary, now, LAUNCHER_SUMMARY_MS))
	{
		refresh_summaries();
		*last_summary = now;
	}
	return min_timeout(timeout_ms, LAUNCHER_SUMMARY_MS);
}

/* Sleep ms on the latch; a shutdown (SIGTERM) exits 1, as the loop does, to be restarted. */
static void
sleep_or_exit(long ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

		if (ShutdownRequestPending)
			proc_exit(1);
		if (left <= 0)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * Does chrono_forge.database exist?  Connected to no database: a plain
 * scan of pg_database (its name index cannot be opened without one), as
 * the autovacuum launcher reads it.
 */
static bool
database_exists(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	bool		exists = false;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (!exists && HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
		exists = strcmp(NameStr(((Form_pg_database) GETSTRUCT(tup))->datname), cf_database) == 0;
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return exists;
}

/*
 * After a start that could not connect (its FATAL says why), wait here,
 * connected to no database, rather than fail again every second.  If
 * chrono_forge.database names no database (yet), look for it once a
 * second, without a log line; otherwise wait as cf_launcher_connect_delay_ms()
 * says.  Then exit: the postmaster starts the launcher again a second
 * later, and that start connects.  A database created after the server
 * started is served about two seconds later.
 */
static void
wait_before_connecting(void)
{
	int			failed_starts;
	long		delay_ms = cf_launcher_connect_delay_ms(&failed_starts);

	if (delay_ms == 0)
		return;
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	if (!database_exists())
	{
		ereport(LOG,
				(errmsg("chrono_forge launcher: database \"%s\" does not exist; waiting for it",
						cf_database),
				 errhint("Create it, or set chrono_forge.database to the database to serve and restart.")));
		do
			sleep_or_exit(1000);
		while (!database_exists());
	}
	else
	{
		ereport(LOG,
				(errmsg("chrono_forge launcher: %d start%s in a row could not connect to database \"%s\"; trying again in %ld s",
						failed_starts, failed_starts == 1 ? "" : "s", cf_database, delay_ms / 1000)));
		sleep_or_exit(delay_ms);
	}
	cf_launcher_retry_next();
	proc_exit(1);
}

/* Signals, the connection, a pinned search path; stop orphaned workers. */
static void
launcher_init(void)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	wait_before_connecting();
	BackgroundWorkerInitializeConnection(cf_database, NULL, 0);
	cf_launcher_connected();

	/*
	 * Every statement of the launcher runs as the bootstrap superuser and
	 * none runs user code: resolve names in pg_catalog only, whatever the
	 * database's or the role's settings say, so that no object another role
	 * creates (an operator in public, say) can stand in for a built-in one.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname("chrono_forge launcher");
	cf_launcher_attach();
	on_shmem_exit(launcher_detach, (Datum) 0);
	stop_orphaned_workers();
	ereport(LOG, (errmsg("chrono_forge launcher started for database \"%s\"", cf_database)));
}

void
cf_launcher_main(Datum arg)
{
	Oid			recovered_for = InvalidOid;	/* the extension we recovered */
	TimestampTz last_maintenance = 0;
	TimestampTz last_summary = 0;
	TimestampTz next_deadline = DT_NOBEGIN;	/* look at once */
	TimestampTz next_gate = DT_NOBEGIN; /* places given back while away */

	launcher_init();
	for (;;)
	{
		long		timeout_ms = -1;	/* until something wakes us */
		Oid			ext;
		bool		serving;

		/* Wake-ups committed from here on are kept for the plan. */
		cf_launcher_begin_round();
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		ext = cf_enabled ? installed_extension() : InvalidOid;
		serving = OidIsValid(ext);
		if (!serving)
			recovered_for = InvalidOid;
		else if (ext != recovered_for)
		{
			redrive_lost_runs();
			recovered_for = ext;
			last_maintenance = 0;	/* dead sessions' locks: at once */
			next_deadline = DT_NOBEGIN; /* deadlines passed while away */
			next_gate = DT_NOBEGIN;
		}
		supervise_workers(serving);
		if (serving)
			timeout_ms = serve_round(&last_maintenance, &last_summary, &next_deadline,
									 &next_gate);
		else
			(void) cf_launcher_plan_wake(DT_NOEND);	/* any commit wakes us */

		pgstat_report_stat(false);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | (timeout_ms >= 0 ? WL_TIMEOUT : 0),
						 timeout_ms, PG_WAIT_EXTENSION);
	}

	ereport(LOG, (errmsg("chrono_forge launcher shutting down")));
	for (int slot = 0; slot < CF_MAX_WORKERS; slot++)
		if (worker_handles[slot] != NULL)
			TerminateBackgroundWorker(worker_handles[slot]);

	/* Exit 1: the postmaster restarts us unless the server is stopping. */
	proc_exit(1);
}
