/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  An executor worker: drains due passes, then sleeps on its latch.
 *
 * Owns the worker's loop and how it runs SQL as a top-level command (the
 * way a client's simple query runs), so that workflow procedures get a
 * non-atomic CALL and may commit.  It must never run a pass outside
 * chrono_forge.worker_drain(), where passes switch to the run's owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/pquery.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/snapmgr.h"

#include "executor.h"
#include "guc.h"
#include "internal.h"
#include "pass_timer.h"
#include "shmem.h"
#include "worker.h"

/*
 * Run one SQL statement as a top-level command in its own transaction,
 * through a portal, as postgres.c does for a simple query.
 */
static void
exec_toplevel(const char *sql, MemoryContext cxt)
{
	MemoryContext old;
	List	   *parsetrees;
	RawStmt    *parsetree;
	List	   *querytrees;
	List	   *plantrees;
	Portal		portal;
	DestReceiver *receiver;
	QueryCompletion qc;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, sql);
	old = MemoryContextSwitchTo(cxt);

	parsetrees = pg_parse_query(sql);
	Assert(list_length(parsetrees) == 1);
	parsetree = linitial_node(RawStmt, parsetrees);

	PushActiveSnapshot(GetTransactionSnapshot());
	querytrees = pg_analyze_and_rewrite_fixedparams(parsetree, sql, NULL, 0, NULL);
	plantrees = pg_plan_queries(querytrees, sql, CURSOR_OPT_PARALLEL_OK, NULL);
	PopActiveSnapshot();

	portal = CreatePortal("", true, true);
	portal->visible = false;
	PortalDefineQuery(portal, NULL, sql, CMDTAG_CALL, plantrees, NULL);
	PortalStart(portal, NULL, 0, InvalidSnapshot);
	receiver = CreateDestReceiver(DestNone);
	(void) PortalRun(portal, FETCH_ALL, true, true, receiver, receiver, &qc);
	receiver->rDestroy(receiver);
	PortalDrop(portal, false);

	MemoryContextSwitchTo(old);
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextReset(cxt);
}

static void
worker_detach(int code, Datum arg)
{
	cf_worker_detach(DatumGetInt32(arg));
}

void
cf_worker_main(Datum arg)
{
	int			slot = DatumGetInt32(arg);
	MemoryContext cxt;
	char	   *sql;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	cf_pass_cancel_signal_init();	/* SIGUSR2: cancel() stops a pass */
	BackgroundWorkerUnblockSignals();
#ifdef __GLIBC__

	/*
	 * Each pass allocates and frees the same few megabytes.  By default
	 * glibc hands them back to the kernel (trimming the heap, unmapping
	 * large blocks) and faults them in again on the next pass: a sixth of
	 * a trivial pass's CPU.  Keep them instead.
	 */
	mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
	mallopt(M_MMAP_THRESHOLD, 16 * 1024 * 1024);
#endif
	BackgroundWorkerInitializeConnection(cf_database, NULL, 0);
	pgstat_report_appname(psprintf("chrono_forge worker %d", slot));

	cf_worker_slot = slot;
	cf_worker_attach(slot);
	on_shmem_exit(worker_detach, Int32GetDatum(slot));
	cxt = AllocSetContextCreate(TopMemoryContext, "chrono_forge worker",
								ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (cf_enabled && cf_extension_installed())
		{
			cf_worker_set_draining(slot, true);
			sql = psprintf("CALL chrono_forge.worker_drain(%d)", cf_worker_batch);
			exec_toplevel(sql, cxt);
			pfree(sql);
			/* A full batch: more may be due; check config, then go on. */
			if (cf_last_drain_passes >= cf_worker_batch)
			{
				pgstat_report_stat(false);
				continue;
			}
		}

		/*
		 * A background worker must report its own statistics: without them
		 * autovacuum and autoanalyze never see what the passes write.
		 */
		pgstat_report_stat(false);

		/* Woken by commits that schedule work, and by the launcher's timers. */
		cf_worker_set_draining(slot, false);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1L,
						 PG_WAIT_EXTENSION);
	}
}
