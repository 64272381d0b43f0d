/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared state of the runtime, and the wake-up after commit.
 *
 * Owns the shared-memory segment (launcher and worker slots, the epoch
 * that tells this server lifetime's locks from a crashed one's) and the
 * transaction callback that wakes the workers once a transaction that
 * scheduled work has committed.  The callback must cost nothing for
 * transactions that queued no work, and it never touches the database.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/backendid.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/array.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "shmem.h"
#include "waiter_slots.h"

typedef struct CfWorkerSlot
{
	pid_t		pid;
	Latch	   *latch;
	int64		current_run;	/* run whose pass is in progress, or 0 */
	Oid			current_owner;	/* its owner (the per-owner share) */
	bool		draining;		/* taking due work: it looks before it sleeps */
	uint64		claim_seq;		/* when it was published (ties in the share) */
	TimestampTz pass_started;	/* when it was published */
	int			n_held;			/* runs its transaction holds (claim row locks) */
	int64		held[CF_HELD_RUNS_MAX];
} CfWorkerSlot;

/*
 * One per backend (by MyBackendId), workers and run_pending() sessions
 * alike: the pass it drives, so that cancel() can stop that pass.  Only
 * the backend itself writes its `run` and `pid`.
 */
typedef struct CfPassSlot
{
	pid_t		pid;
	pg_atomic_uint64 run;		/* run whose pass is in progress, or 0 */
	pg_atomic_uint64 cancel_run;	/* cancel() asks to stop this run's pass */
	pg_atomic_uint64 preempt_run;	/* the share asks to give this run's worker back */
} CfPassSlot;

typedef struct CfShared
{
	slock_t		mutex;
	uint64		epoch;			/* new on every shared-memory init */
	Latch	   *launcher_latch;
	TimestampTz launcher_wake_at;	/* when the launcher will next look */
	TimestampTz committed_due;	/* earliest wake-up committed this round */
	uint64		spawn_generation;	/* commits that dispatched spawn batches */
	uint64		priority_generation;	/* commits that wrote prioritized wake-ups */
	uint64		claim_counter;	/* orders the passes published by workers */
	bool		cancels_pending;	/* cancel_requests may hold rows */
	bool		timers_changed; /* a commit set a launcher's timer (deadlines, rate windows) */
	bool		gates_released; /* a commit ended gated runs (the launcher admits) */
	Oid			served_db;		/* the launcher's database, while attached */
	bool		share_skipped;	/* a worker passed over an owner at its share */
	bool		share_watched;	/* the launcher watches an owner over its share */
	bool		launcher_connecting;	/* a launcher is connecting and has not yet */
	int			launcher_failed_starts; /* starts in a row that never connected */
	bool		launcher_retry_next;	/* a waiting launcher says: connect now */
	CfWorkerSlot workers[CF_MAX_WORKERS];
} CfShared;

static CfShared *cf_shared = NULL;
static CfPassSlot *cf_pass_slots = NULL;	/* MaxBackends of them */
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Per-backend: did this transaction schedule work, and how soon? */
static bool cf_wakeup_queued = false;
static TimestampTz cf_wakeup_earliest = 0;
static TimestampTz cf_timer_earliest = DT_NOEND;	/* a launcher's timer (deadlines) */
static bool cf_launcher_wake_queued = false;
static bool cf_spawn_queued = false;
static bool cf_prioritized_queued = false;	/* this transaction wrote prioritized wake-ups */
static bool cf_release_queued = false;	/* this transaction ended gated runs */

/* Runs this transaction asked to cancel while a pass held them. */
static int64 *cf_cancel_queue = NULL;	/* in TopMemoryContext */
static int	cf_cancel_queue_size = 0;
static int	cf_n_cancel_queue = 0;
static bool cf_cancel_queued = false;

static void
cf_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(MAXALIGN(sizeof(CfShared)),
									mul_size(MaxBackends, sizeof(CfPassSlot))));
	RequestAddinShmemSpace(cf_waiter_slots_size());
}

static void
cf_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	cf_shared = ShmemInitStruct("chrono_forge", sizeof(CfShared), &found);
	if (!found)
	{
		memset(cf_shared, 0, sizeof(CfShared));
		SpinLockInit(&cf_shared->mutex);
		/* Distinct per shared-memory lifetime: a crash restart renews it. */
		cf_shared->epoch = (uint64) GetCurrentTimestamp();
		cf_shared->launcher_wake_at = DT_NOEND;
		cf_shared->committed_due = DT_NOEND;
	}
	cf_pass_slots = ShmemInitStruct("chrono_forge passes",
									mul_size(MaxBackends, sizeof(CfPassSlot)), &found);
	if (!found)
	{
		for (int i = 0; i < MaxBackends; i++)
		{
			cf_pass_slots[i].pid = 0;
			pg_atomic_init_u64(&cf_pass_slots[i].run, 0);
			pg_atomic_init_u64(&cf_pass_slots[i].cancel_run, 0);
			pg_atomic_init_u64(&cf_pass_slots[i].preempt_run, 0);
		}
	}
	cf_waiter_slots_init();
	LWLockRelease(AddinShmemInitLock);
}

void
cf_shmem_register(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = cf_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = cf_shmem_startup;
}

bool
cf_shmem_ready(void)
{
	return cf_shared != NULL;
}

uint64
cf_shmem_epoch(void)
{
	return cf_shared ? cf_shared->epoch : 0;
}

/* ---- launcher and worker registration in shared memory ---- */

void
cf_launcher_attach(void)
{
	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->launcher_latch = MyLatch;
	cf_shared->served_db = MyDatabaseId;
	SpinLockRelease(&cf_shared->mutex);
}

/*
 * A launcher about to connect: 0 to connect now, else the milliseconds
 * to wait first.  A launcher that cannot connect exits FATAL and the
 * postmaster starts it again a second later: the start after one that
 * never connected waits instead (launcher.c), twice as long as the last
 * (2 s, 4 s, ... at most CF_LAUNCHER_RETRY_MAX_MS), then says "now"
 * (cf_launcher_retry_next()) and exits, and the start after it connects.
 * *failed_starts: the starts in a row that never connected.
 */
#define CF_LAUNCHER_RETRY_MAX_MS 60000

int
cf_launcher_connect_delay_ms(int *failed_starts)
{
	int			failed;
	bool		now;

	SpinLockAcquire(&cf_shared->mutex);
	if (cf_shared->launcher_connecting)
		cf_shared->launcher_failed_starts++;
	failed = cf_shared->launcher_failed_starts;
	now = failed == 0 || cf_shared->launcher_retry_next;
	cf_shared->launcher_retry_next = false;
	cf_shared->launcher_connecting = now;
	SpinLockRelease(&cf_shared->mutex);
	*failed_starts = failed;
	if (now)
		return 0;
	return failed >= 6 ? CF_LAUNCHER_RETRY_MAX_MS : Min(1000 << failed, CF_LAUNCHER_RETRY_MAX_MS);
}

/* The waiting launcher is done waiting: the next start connects. */
void
cf_launcher_retry_next(void)
{
	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->launcher_retry_next = true;
	SpinLockRelease(&cf_shared->mutex);
}

/* The launcher connected: the next start after a stop waits for nothing. */
void
cf_launcher_connected(void)
{
	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->launcher_connecting = false;
	cf_shared->launcher_failed_starts = 0;
	SpinLockRelease(&cf_shared->mutex);
}

void
cf_launcher_detach(void)
{
	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->launcher_latch = NULL;
	cf_shared->served_db = InvalidOid;
	cf_shared->launcher_wake_at = DT_NOEND;
	SpinLockRelease(&cf_shared->mutex);
}

/*
 * The launcher's timer, without a round per commit.  A commit that queues
 * a wake-up due later wakes the launcher only if it is due before the
 * launcher's published wake (cf_xact_callback), and notes it in
 * committed_due either way.  The launcher forgets the notes as a round
 * begins (what committed before is in its reads), and at the end
 * publishes its plan and takes what committed meanwhile in one step:
 * nothing falls between the round's reads and the plan.  (It used to
 * publish "no planned wake" for the round instead: every commit of a
 * wake-up due later that landed during a round woke it for another.)
 */
void
cf_launcher_begin_round(void)
{
	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->committed_due = DT_NOEND;
	SpinLockRelease(&cf_shared->mutex);
}

/* Publishes the launcher's next wake; returns it, earlier if need be. */
TimestampTz
cf_launcher_plan_wake(TimestampTz planned)
{
	TimestampTz at;

	SpinLockAcquire(&cf_shared->mutex);
	at = Min(planned, cf_shared->committed_due);
	cf_shared->committed_due = DT_NOEND;
	cf_shared->launcher_wake_at = at;
	SpinLockRelease(&cf_shared->mutex);
	return at;
}

void
cf_worker_attach(int slot)
{
	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->workers[slot].pid = MyProcPid;
	cf_shared->workers[slot].latch = MyLatch;
	cf_shared->workers[slot].current_owner = InvalidOid;
	cf_shared->workers[slot].draining = false;
	SpinLockRelease(&cf_shared->mutex);
}

/* A worker starts (true) or ends (false) taking due work. */
void
cf_worker_set_draining(int slot, bool draining)
{
	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->workers[slot].draining = draining;
	SpinLockRelease(&cf_shared->mutex);
}

/*
 * Whether every worker is taking due work: each will look for more before
 * it sleeps, so nobody needs to look for them (the launcher sets their
 * latches instead: a worker ending its look as we ask looks once more).
 */
bool
cf_workers_all_draining(void)
{
	bool		all = true;
	int			n = 0;

	SpinLockAcquire(&cf_shared->mutex);
	for (int i = 0; i < CF_MAX_WORKERS; i++)
	{
		if (cf_shared->workers[i].pid == 0)
			continue;
		n++;
		if (!cf_shared->workers[i].draining)
			all = false;
	}
	SpinLockRelease(&cf_shared->mutex);
	return all && n > 0;
}

void
cf_worker_detach(int slot)
{
	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->workers[slot].pid = 0;
	cf_shared->workers[slot].latch = NULL;
	SpinLockRelease(&cf_shared->mutex);
}

/*
 * Which run a worker is executing.  Its claim commits only with the pass's
 * first commit, so if the worker dies before that, only this tells the
 * launcher which pass killed it.
 */
void
cf_worker_set_current_run(int slot, int64 run)
{
	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->workers[slot].current_run = run;
	SpinLockRelease(&cf_shared->mutex);
}

int64
cf_worker_take_current_run(int slot)
{
	int64		run;

	SpinLockAcquire(&cf_shared->mutex);
	run = cf_shared->workers[slot].current_run;
	cf_shared->workers[slot].current_run = 0;
	SpinLockRelease(&cf_shared->mutex);
	return run;
}

pid_t
cf_worker_pid(int slot)
{
	pid_t		pid;

	SpinLockAcquire(&cf_shared->mutex);
	pid = cf_shared->workers[slot].pid;
	SpinLockRelease(&cf_shared->mutex);
	return pid;
}

/* ---- the per-owner share of the workers ---- */

/*
 * Publish the owner of the pass this worker just claimed.  Returns true if
 * that makes the owner hold more than `limit` workers counting only passes
 * published before this one: this worker must give the pass back (two
 * workers claimed the same owner's runs at the same moment, each before
 * seeing the other).
 */
bool
cf_worker_publish_owner(int slot, Oid owner, int limit)
{
	int			before = 0;
	uint64		seq;

	SpinLockAcquire(&cf_shared->mutex);
	seq = ++cf_shared->claim_counter;
	cf_shared->workers[slot].current_owner = owner;
	cf_shared->workers[slot].claim_seq = seq;
	cf_shared->workers[slot].pass_started = GetCurrentTimestamp();
	for (int i = 0; i < CF_MAX_WORKERS; i++)
		if (i != slot && cf_shared->workers[i].pid != 0 &&
			cf_shared->workers[i].current_owner == owner &&
			cf_shared->workers[i].claim_seq < seq)
			before++;
	SpinLockRelease(&cf_shared->mutex);
	return before >= limit;
}

void
cf_worker_clear_owner(int slot)
{
	bool		skipped;

	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->workers[slot].current_owner = InvalidOid;
	skipped = cf_shared->share_skipped;
	cf_shared->share_skipped = false;
	SpinLockRelease(&cf_shared->mutex);

	/*
	 * Workers that passed over this owner's runs may sleep with them due:
	 * its share has room again.
	 */
	if (skipped)
		cf_wake_workers();
}

/*
 * Owners whose passes already occupy `limit` workers other than `slot`:
 * this worker does not claim their runs.  Returns how many (at most
 * CF_MAX_WORKERS) were written to `owners`.
 */
int
cf_owners_at_share(int slot, int limit, Oid *owners)
{
	int			n = 0;

	SpinLockAcquire(&cf_shared->mutex);
	for (int i = 0; i < CF_MAX_WORKERS; i++)
	{
		Oid			owner = cf_shared->workers[i].current_owner;
		int			count = 0;
		bool		listed = false;

		if (i == slot || cf_shared->workers[i].pid == 0 || !OidIsValid(owner))
			continue;
		for (int j = 0; j < n; j++)
			listed |= owners[j] == owner;
		if (listed)
			continue;
		for (int j = 0; j < CF_MAX_WORKERS; j++)
			if (j != slot && cf_shared->workers[j].pid != 0 &&
				cf_shared->workers[j].current_owner == owner)
				count++;
		if (count >= limit)
			owners[n++] = owner;
	}
	if (n > 0)
		cf_shared->share_skipped = true;
	SpinLockRelease(&cf_shared->mutex);
	return n;
}

/*
 * Has an owner more than `limit` workers while every worker is busy?  Its
 * claims waived the share while no other owner's work was due (see
 * claim_and_lock()).  Returns that owner (InvalidOid if none) and, in
 * `victim`, the run of its newest pass that has run `min_age_ms` or more
 * (the least work lost; 0 if none has yet): the pass to give back when
 * another owner's work is due.
 */
Oid
cf_share_overrun(int limit, long min_age_ms, int64 *victim)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz newest = DT_NOBEGIN;
	Oid			over = InvalidOid;

	*victim = 0;
	SpinLockAcquire(&cf_shared->mutex);
	for (int i = 0; i < CF_MAX_WORKERS; i++)
	{
		CfWorkerSlot *w = &cf_shared->workers[i];
		int			count = 0;

		if (w->pid == 0)
			continue;
		if (!OidIsValid(w->current_owner))
		{
			over = InvalidOid;	/* a worker is free: nothing to preempt */
			break;
		}
		if (OidIsValid(over))
			continue;
		for (int j = 0; j < CF_MAX_WORKERS; j++)
			if (cf_shared->workers[j].pid != 0 &&
				cf_shared->workers[j].current_owner == w->current_owner)
				count++;
		if (count > limit)
			over = w->current_owner;
	}
	for (int i = 0; OidIsValid(over) && i < CF_MAX_WORKERS; i++)
	{
		CfWorkerSlot *w = &cf_shared->workers[i];

		if (w->pid != 0 && w->current_owner == over && w->pass_started > newest &&
			TimestampDifferenceExceeds(w->pass_started, now, (int) min_age_ms))
		{
			newest = w->pass_started;
			*victim = w->current_run;
		}
	}
	SpinLockRelease(&cf_shared->mutex);
	return over;
}

/*
 * Does the launcher watch the share (enforce_share() in launcher.c)?  A
 * worker whose claim put an owner over its share asks with `watch` true:
 * true means the launcher was not watching yet and must be woken.  The
 * launcher sets it to what it found (false first, then true if some owner
 * is over its share).
 */
bool
cf_share_watch(bool watch)
{
	bool		was;

	SpinLockAcquire(&cf_shared->mutex);
	was = cf_shared->share_watched;
	cf_shared->share_watched = watch;
	SpinLockRelease(&cf_shared->mutex);
	return watch && !was;
}

/* ---- cancel() of a run whose pass is in flight ---- */

static CfPassSlot *
my_pass_slot(void)
{
	if (cf_pass_slots == NULL || MyBackendId < 1 || MyBackendId > MaxBackends)
		return NULL;
	return &cf_pass_slots[MyBackendId - 1];
}

/*
 * This backend drives a pass of `run` (0: none any more).  A cancel aimed
 * at the pass that ended has nothing left to stop, so it is cleared.
 */
void
cf_pass_slot_set(int64 run)
{
	CfPassSlot *slot = my_pass_slot();

	if (slot == NULL)
		return;
	slot->pid = MyProcPid;
	if (run == 0)
	{
		pg_atomic_write_u64(&slot->cancel_run, 0);
		pg_atomic_write_u64(&slot->preempt_run, 0);
	}
	pg_atomic_write_u64(&slot->run, (uint64) run);
}

/* The SIGUSR2 handler's question: is `run` the one a cancel asks to stop? */
bool
cf_pass_slot_cancel_asked(int64 run)
{
	CfPassSlot *slot = my_pass_slot();

	return slot != NULL && run != 0 &&
		(int64) pg_atomic_read_u64(&slot->cancel_run) == run;
}

/* The same question for a stop asked by the share (cf_preempt_pass). */
bool
cf_pass_slot_preempt_asked(int64 run)
{
	CfPassSlot *slot = my_pass_slot();

	return slot != NULL && run != 0 &&
		(int64) pg_atomic_read_u64(&slot->preempt_run) == run;
}

/* Tell the backend whose pass is `run` to stop it and give its run back. */
void
cf_preempt_pass(int64 run)
{
	if (cf_pass_slots == NULL || run == 0)
		return;
	for (int i = 0; i < MaxBackends; i++)
	{
		if ((int64) pg_atomic_read_u64(&cf_pass_slots[i].run) == run &&
			cf_pass_slots[i].pid != 0)
		{
			pg_atomic_write_u64(&cf_pass_slots[i].preempt_run, (uint64) run);
			(void) kill(cf_pass_slots[i].pid, SIGUSR2);
		}
	}
}

/*
 * Tell every backend whose pass is one of `runs` to stop it (SIGUSR2; see
 * pass_timer.c).  Sent again to a pass that swallowed the first stop, it
 * stops it again.
 */
void
cf_signal_pass_holders(const int64 *runs, int n)
{
	if (cf_pass_slots == NULL || n == 0)
		return;
	for (int i = 0; i < MaxBackends; i++)
	{
		int64		run = (int64) pg_atomic_read_u64(&cf_pass_slots[i].run);
		pid_t		pid = cf_pass_slots[i].pid;

		if (run == 0 || pid == 0)
			continue;
		for (int j = 0; j < n; j++)
		{
			if (runs[j] == run)
			{
				pg_atomic_write_u64(&cf_pass_slots[i].cancel_run, (uint64) run);
				(void) kill(pid, SIGUSR2);
				break;
			}
		}
	}
}

/*
 * Called by cancel() for a run it could not lock (a pass holds it): after
 * commit, the backend driving that run's pass is told to stop it (the
 * request itself is a row of cancel_requests, written by the caller), and
 * the launcher applies whatever requests are left, telling their passes
 * again until they end.
 */
void
cf_queue_cancel_signal(int64 run)
{
	if (cf_n_cancel_queue == cf_cancel_queue_size)
	{
		int			size = Max(16, cf_cancel_queue_size * 2);

		cf_cancel_queue = cf_cancel_queue
			? repalloc(cf_cancel_queue, size * sizeof(int64))
			: MemoryContextAlloc(TopMemoryContext, size * sizeof(int64));
		cf_cancel_queue_size = size;
	}
	cf_cancel_queue[cf_n_cancel_queue++] = run;
	cf_cancel_queued = true;
	cf_queue_launcher_wake();
}

/* cf_queue_cancel_signal() for each run of `runs` (an int8[]; 0: none). */
void
cf_queue_cancel_signals(Datum runs)
{
	Datum	   *ids;
	int			n;

	if (runs == (Datum) 0)
		return;
	deconstruct_array(DatumGetArrayTypeP(runs), INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &ids, NULL, &n);
	for (int i = 0; i < n; i++)
		cf_queue_cancel_signal(DatumGetInt64(ids[i]));
}

static void
signal_cancels(void)
{
	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->cancels_pending = true;
	SpinLockRelease(&cf_shared->mutex);
	cf_signal_pass_holders(cf_cancel_queue, cf_n_cancel_queue);
}

/*
 * Are there cancel requests to look for?  Set at the commit of a cancel()
 * that wrote one; cleared by the launcher when it has applied them all,
 * which it knows only of its own database.  Without shared memory, and in
 * a database the launcher does not serve: always look.
 */
bool
cf_cancels_pending(void)
{
	bool		pending;

	if (cf_shared == NULL)
		return true;
	SpinLockAcquire(&cf_shared->mutex);
	pending = cf_shared->cancels_pending || cf_shared->served_db != MyDatabaseId;
	SpinLockRelease(&cf_shared->mutex);
	return pending;
}

/*
 * Did a commit set a launcher's timer (a run's deadline, a gate's rate
 * window) since the launcher last asked?  (The launcher looks at the
 * deadlines and the gates when the next timer it knows of is due, or
 * when one was set since.)  Asking clears it.  Without shared memory:
 * always.
 */
bool
cf_timers_changed_take(void)
{
	bool		changed;

	if (cf_shared == NULL)
		return true;
	SpinLockAcquire(&cf_shared->mutex);
	changed = cf_shared->timers_changed;
	cf_shared->timers_changed = false;
	SpinLockRelease(&cf_shared->mutex);
	return changed;
}

void
cf_cancels_set_pending(bool pending)
{
	if (cf_shared == NULL)
		return;
	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->cancels_pending = pending;
	SpinLockRelease(&cf_shared->mutex);
}

void
cf_wake_workers(void)
{
	Latch	   *latches[CF_MAX_WORKERS];
	int			n = 0;

	if (cf_shared == NULL)
		return;
	SpinLockAcquire(&cf_shared->mutex);
	for (int i = 0; i < CF_MAX_WORKERS; i++)
		if (cf_shared->workers[i].latch != NULL)
			latches[n++] = cf_shared->workers[i].latch;
	SpinLockRelease(&cf_shared->mutex);

	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

void
cf_wake_launcher(void)
{
	Latch	   *latch;

	if (cf_shared == NULL)
		return;
	SpinLockAcquire(&cf_shared->mutex);
	latch = cf_shared->launcher_latch;
	SpinLockRelease(&cf_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/* ---- wake-ups after commit ---- */

/*
 * Called by whoever inserts a wake-up row.  Nothing is signalled until the
 * transaction commits: a worker woken earlier could not see the row.
 */
void
cf_queue_wakeup(TimestampTz due_at)
{
	if (!cf_wakeup_queued || due_at < cf_wakeup_earliest)
		cf_wakeup_earliest = due_at;
	cf_wakeup_queued = true;
}

/*
 * After commit, the launcher must look at `at` (a run's deadline, a
 * gate's rate window), even
 * if this transaction also queued work due sooner: the workers take that,
 * and only the launcher keeps timers.
 */
void
cf_queue_launcher_timer(TimestampTz at)
{
	if (!cf_wakeup_queued)
	{
		cf_wakeup_earliest = DT_NOEND;
		cf_wakeup_queued = true;
	}
	cf_timer_earliest = Min(cf_timer_earliest, at);
}

/*
 * This transaction wrote spawn batches: after commit, executors that
 * found none look again (cf_spawn_generation()).
 */
void
cf_queue_spawned(TimestampTz due_at)
{
	cf_spawn_queued = true;
	cf_queue_wakeup(due_at);
}

/*
 * Bumped after every commit that wrote spawn batches.  A session that
 * read generation g, then found no batch, need not look again while it
 * is still g.  Without shared memory: always look.
 */
static bool
read_generation(const uint64 *field, uint64 *generation)
{
	if (cf_shared == NULL)
		return false;
	SpinLockAcquire(&cf_shared->mutex);
	*generation = *field;
	SpinLockRelease(&cf_shared->mutex);
	return true;
}

bool
cf_spawn_generation(uint64 *generation)
{
	return read_generation(cf_shared ? &cf_shared->spawn_generation : NULL, generation);
}

/*
 * This transaction wrote wake-ups with a priority (0.13.0): after commit,
 * claims that found none look again (cf_priority_generation()).
 */
void
cf_queue_prioritized(void)
{
	cf_prioritized_queued = true;
	if (!cf_wakeup_queued)
	{
		cf_wakeup_earliest = DT_NOEND;
		cf_wakeup_queued = true;
	}
}

/*
 * Bumped after every commit that wrote prioritized wake-ups, as the spawn
 * generation is after spawn batches.  Without shared memory: always look.
 */
bool
cf_priority_generation(uint64 *generation)
{
	return read_generation(cf_shared ? &cf_shared->priority_generation : NULL, generation);
}

/*
 * This transaction ended runs that held places of concurrency gates
 * (concurrency_releases): after commit, the launcher admits the runs
 * waiting for them.
 */
void
cf_queue_gate_release(void)
{
	cf_release_queued = true;
	cf_queue_launcher_wake();
}

/* Did gated runs end since the launcher last asked?  Asking clears it. */
bool
cf_gates_released_take(void)
{
	bool		released;

	if (cf_shared == NULL)
		return true;
	SpinLockAcquire(&cf_shared->mutex);
	released = cf_shared->gates_released;
	cf_shared->gates_released = false;
	SpinLockRelease(&cf_shared->mutex);
	return released;
}

/* After commit, the launcher looks again (e.g. the extension appeared). */
void
cf_queue_launcher_wake(void)
{
	cf_launcher_wake_queued = true;
	cf_queue_wakeup(DT_NOEND);
}

/*
 * The runs a worker's open transaction holds (each pass's claim locks its
 * run's row until the commit that may carry several passes): other
 * workers' claims pass them over rather than probe and try to lock each
 * (see claim.c).  A hint: the list is cleared when the transaction ends,
 * a moment after its locks go, and is capped; a claim that finds nothing
 * looks again without it.
 */
static bool cf_held_pending = false;

void
cf_worker_hold_run(int slot, int64 run)
{
	CfWorkerSlot *w = &cf_shared->workers[slot];

	SpinLockAcquire(&cf_shared->mutex);
	if (w->n_held < CF_HELD_RUNS_MAX)
		w->held[w->n_held++] = run;
	SpinLockRelease(&cf_shared->mutex);
	cf_held_pending = true;
}

/* Into runs (room for max): the runs the other workers' transactions hold. */
int
cf_runs_held_by_others(int slot, int64 *runs, int max)
{
	int			n = 0;

	SpinLockAcquire(&cf_shared->mutex);
	for (int i = 0; i < CF_MAX_WORKERS; i++)
	{
		CfWorkerSlot *w = &cf_shared->workers[i];

		if (i == slot || w->pid == 0)
			continue;
		for (int j = 0; j < w->n_held && n < max; j++)
			runs[n++] = w->held[j];
	}
	SpinLockRelease(&cf_shared->mutex);
	return n;
}

static void
release_held_runs(XactEvent event)
{
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	cf_held_pending = false;
	if (cf_shared == NULL || cf_worker_slot < 0)
		return;
	SpinLockAcquire(&cf_shared->mutex);
	cf_shared->workers[cf_worker_slot].n_held = 0;
	SpinLockRelease(&cf_shared->mutex);
}

/* What a commit wrote that executors and the launcher look for. */
static void
publish_commit(bool spawned, bool prioritized, bool released)
{
	SpinLockAcquire(&cf_shared->mutex);
	if (spawned)
		cf_shared->spawn_generation++;
	if (prioritized)
		cf_shared->priority_generation++;
	if (released)
		cf_shared->gates_released = true;
	SpinLockRelease(&cf_shared->mutex);
}

static void
cf_xact_callback(XactEvent event, void *arg)
{
	TimestampTz due;
	TimestampTz timer;
	TimestampTz launcher_at;
	bool		wake_launcher;
	bool		spawned;
	bool		prioritized;
	bool		released;
	bool		cancels;

	if (unlikely(cf_held_pending))
		release_held_runs(event);
	/* The waiters of runs this transaction ended (waiter_slots.c). */
	if (unlikely(cf_runs_ended_pending))
		cf_waiter_slots_xact_end(event);
	/* The one test every unrelated transaction pays (with the one above). */
	if (likely(!cf_wakeup_queued))
		return;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT &&
		event != XACT_EVENT_PARALLEL_ABORT)
		return;

	due = cf_wakeup_earliest;
	timer = cf_timer_earliest;
	cf_timer_earliest = DT_NOEND;
	wake_launcher = cf_launcher_wake_queued;
	cancels = cf_cancel_queued;
	cf_cancel_queued = false;
	spawned = cf_spawn_queued;
	prioritized = cf_prioritized_queued;
	cf_prioritized_queued = false;
	released = cf_release_queued;
	cf_release_queued = false;
	cf_wakeup_queued = false;
	cf_launcher_wake_queued = false;
	cf_spawn_queued = false;
	if (cf_shared == NULL ||
		(event != XACT_EVENT_COMMIT && event != XACT_EVENT_PARALLEL_COMMIT))
	{
		cf_n_cancel_queue = 0;
		return;
	}
	if (cancels)
		signal_cancels();
	cf_n_cancel_queue = 0;
	if (spawned || prioritized || released)
		publish_commit(spawned, prioritized, released);
	if (wake_launcher)
		cf_wake_launcher();

	/*
	 * Due now (the engine clock may be fake, so compare with both clocks):
	 * the workers take it at once.  Due later: the launcher must know if it
	 * plans to sleep past it.
	 */
	if (due <= GetCurrentTimestamp() || due <= cf_clock_now())
	{
		cf_wake_workers();
		due = DT_NOEND;			/* the launcher need not know */
	}
	due = Min(due, timer);
	if (due != DT_NOEND)
	{
		SpinLockAcquire(&cf_shared->mutex);
		if (timer != DT_NOEND)
			cf_shared->timers_changed = true;
		if (due < cf_shared->committed_due)
			cf_shared->committed_due = due;
		launcher_at = cf_shared->launcher_wake_at;
		SpinLockRelease(&cf_shared->mutex);
		if (due < launcher_at)
			cf_wake_launcher();
	}
}

void
cf_register_xact_callback(void)
{
	RegisterXactCallback(cf_xact_callback, NULL);
}

/* Set by worker.c in executor workers: which slot, for lock tokens. */
int			cf_worker_slot = -1;
