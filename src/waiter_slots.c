/*-------------------------------------------------------------------------
 *
 * waiter_slots.c
 *	  Sessions blocked in wait_for_run(), and their wake-up after commit.
 *
 * Owns the shared registry of waiters (one slot per backend: the run it
 * waits for, its latch), the list of runs the current transaction made
 * terminal or stalled (noted by the workflows trigger), and setting the
 * waiters' latches once that transaction has committed (from shmem.c's
 * transaction callback).  A transaction that ends no run pays one test;
 * one that ends runs nobody waits for, one atomic read.  Never touches
 * the database.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/backendid.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"

#include "chrono_forge.h"

/* Only the backend itself writes its slot. */
typedef struct CfWaiterSlot
{
	pg_atomic_uint64 run;		/* run waited for, or 0 */
	int			procno;			/* whose latch to set */
} CfWaiterSlot;

typedef struct CfWaiters
{
	pg_atomic_uint32 active;	/* slots with a run */
	CfWaiterSlot slots[FLEXIBLE_ARRAY_MEMBER];	/* MaxBackends of them */
} CfWaiters;

static CfWaiters *cf_waiters = NULL;
static bool cf_exit_callback_set = false;

/*
 * Runs this transaction made terminal or stalled.  Past the bound, every
 * waiter is woken instead (each re-checks its own run): a bulk cancel
 * must not make the commit compare every run with every waiter.
 */
#define CF_ENDED_MAX 64
static int64 cf_ended[CF_ENDED_MAX];
static int	cf_n_ended = 0;
static bool cf_ended_overflow = false;
bool		cf_runs_ended_pending = false;

Size
cf_waiter_slots_size(void)
{
	return add_size(offsetof(CfWaiters, slots),
					mul_size(MaxBackends, sizeof(CfWaiterSlot)));
}

/* Called by shmem.c's startup hook, under AddinShmemInitLock. */
void
cf_waiter_slots_init(void)
{
	bool		found;

	cf_waiters = ShmemInitStruct("chrono_forge run waiters", cf_waiter_slots_size(), &found);
	if (found)
		return;
	pg_atomic_init_u32(&cf_waiters->active, 0);
	for (int i = 0; i < MaxBackends; i++)
	{
		pg_atomic_init_u64(&cf_waiters->slots[i].run, 0);
		cf_waiters->slots[i].procno = -1;
	}
}

bool
cf_waiter_slots_ready(void)
{
	return cf_waiters != NULL && MyBackendId >= 1 && MyBackendId <= MaxBackends;
}

/* For tests and operators: sessions waiting now. */
int
cf_waiter_slots_active(void)
{
	return cf_waiters ? (int) pg_atomic_read_u32(&cf_waiters->active) : 0;
}

static void
waiter_exit_callback(int code, Datum arg)
{
	cf_waiter_slot_clear();
}

/*
 * This backend waits for `run` from now on.  The caller reads the run's
 * state only after this: a commit that ends the run after that read sees
 * the slot (the fetch-add is a full barrier, and the read's snapshot
 * orders it after the registration).
 */
void
cf_waiter_slot_set(int64 run)
{
	CfWaiterSlot *slot = &cf_waiters->slots[MyBackendId - 1];

	Assert(run != 0);
	/* A FATAL error leaves no PG_FINALLY: clear the slot at exit too. */
	if (!cf_exit_callback_set)
	{
		before_shmem_exit(waiter_exit_callback, (Datum) 0);
		cf_exit_callback_set = true;
	}
	cf_waiter_slot_clear();
	slot->procno = MyProc->pgprocno;
	pg_write_barrier();
	pg_atomic_write_u64(&slot->run, (uint64) run);
	pg_atomic_fetch_add_u32(&cf_waiters->active, 1);
}

/* This backend waits no more.  Idempotent; never raises. */
void
cf_waiter_slot_clear(void)
{
	CfWaiterSlot *slot;

	if (!cf_waiter_slots_ready())
		return;
	slot = &cf_waiters->slots[MyBackendId - 1];
	if (pg_atomic_read_u64(&slot->run) == 0)
		return;
	pg_atomic_write_u64(&slot->run, 0);
	pg_atomic_fetch_sub_u32(&cf_waiters->active, 1);
}

/*
 * The workflows trigger: `run` became terminal or stalled in this
 * transaction.  Its waiters are woken after commit.
 */
void
cf_note_run_ended(int64 run)
{
	if (cf_n_ended > 0 && cf_ended[cf_n_ended - 1] == run)
		return;
	if (cf_n_ended < CF_ENDED_MAX)
		cf_ended[cf_n_ended++] = run;
	else
		cf_ended_overflow = true;
	cf_runs_ended_pending = true;
}

static bool
ended_here(int64 run)
{
	if (cf_ended_overflow)
		return true;
	for (int i = 0; i < cf_n_ended; i++)
		if (cf_ended[i] == run)
			return true;
	return false;
}

static void
wake_waiters(void)
{
	pg_memory_barrier();
	if (pg_atomic_read_u32(&cf_waiters->active) == 0)
		return;
	for (int i = 0; i < MaxBackends; i++)
	{
		CfWaiterSlot *slot = &cf_waiters->slots[i];
		int64		run = (int64) pg_atomic_read_u64(&slot->run);

		pg_read_barrier();
		/* A slot reused since: at worst a spurious wake-up, re-checked. */
		if (run != 0 && slot->procno >= 0 && ended_here(run))
			SetLatch(&GetPGProcByNumber(slot->procno)->procLatch);
	}
}

/*
 * From shmem.c's transaction callback while cf_runs_ended_pending.  After
 * the commit is visible (XACT_EVENT_COMMIT comes after it): wake the
 * waiters of the runs noted.  An abort or a PREPARE forgets them (a
 * waiter of a prepared transaction's run is woken by its timeout only).
 */
void
cf_waiter_slots_xact_end(int event)
{
	bool		commit = event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT;

	if (!commit && event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	if (commit && cf_waiters != NULL)
		wake_waiters();
	cf_n_ended = 0;
	cf_ended_overflow = false;
	cf_runs_ended_pending = false;
}
