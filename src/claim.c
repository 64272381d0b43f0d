/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  Claiming a pass: a due wake-up and the run's lock, or a spawned child
 *	  taken from spawn_batches (whose run is written at the pass's first
 *	  commit or end), under the per-owner share.
 *
 * Owns the claim statements and the lock token; what it claims it leaves
 * in cf_pass (the wake-ups it consumed, the run's workflow-level failures
 * and retry counts) for the finish.  This file must never take a run
 * another pass holds (its lock is younger than max_duration), and never
 * claim for an owner at its share while another owner's work is due.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "claim.h"
#include "clock.h"
#include "guc.h"
#include "internal.h"
#include "pass.h"
#include "shmem.h"

static char *
make_lock_token(void)
{
	if (cf_worker_slot >= 0)
		return psprintf("%llu:w%d:%d", (unsigned long long) cf_shmem_epoch(),
						cf_worker_slot, MyProcPid);
	return psprintf("%llu:s:%d", (unsigned long long) cf_shmem_epoch(), MyProcPid);
}

/* The claimed run's row (columns as both claim statements return them). */
static void
read_claim(TimestampTz now)
{
	HeapTuple	tup = SPI_tuptable->vals[0];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	MemoryContext old = MemoryContextSwitchTo(cf_pass.cxt);
	bool		isnull;
	Datum		d;

	cf_pass.workflow_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	cf_pass.workflow = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	cf_pass.key = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
	cf_pass.procedure = TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull));
	cf_pass.args = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 5, &isnull));
	cf_pass.context = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 6, &isnull));
	cf_pass.owner = DatumGetObjectId(SPI_getbinval(tup, desc, 7, &isnull));
	cf_pass.attempt = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
	cf_pass.retry_counts = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 9, &isnull));
	d = SPI_getbinval(tup, desc, 10, &isnull);
	cf_pass.parent_log_id = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(tup, desc, 11, &isnull);
	cf_pass.claimed_wakeups = isnull ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
	cf_pass.claimed_at = now;
	MemoryContextSwitchTo(old);
}

/*
 * Spawn batches (0.4.0): children of spawn_each not started yet.  A
 * session that read spawn generation g and then found no batch at all
 * does not look again until a dispatch commits (the generation moves), so
 * that passes pay nothing for fan-out when there is none.  Without shared
 * memory (generation unknown) it looks before every claim.
 *
 * That "none" may be this transaction's own view: passes sharing one
 * transaction took a batch's last children and deleted it.  If the
 * transaction then rolls back, the batch is back: forget the "none"
 * (forget_on_abort()).  And it is believed for at most
 * SPAWN_NONE_TRUST_MS, so that no other mistake can leave children
 * waiting in a batch while the workers sleep (the launcher wakes them
 * while batches wait).
 */
#define SPAWN_NONE_TRUST_MS 1000

static uint64 spawn_none_at = PG_UINT64_MAX;
static uint64 spawn_looked_at = PG_UINT64_MAX;
static TimestampTz spawn_none_since = 0;
static bool spawn_taken_in_xact = false;	/* this transaction took children */
static bool priority_claimed_in_xact = false;	/* ... or prioritized wake-ups */

/* Prioritized wake-ups: none due before priority_none_before (prioritized_maybe()). */
static uint64 priority_none_at = PG_UINT64_MAX;
static TimestampTz priority_none_before = 0;	/* engine clock */
static TimestampTz priority_none_since = 0;

/* Prioritized claims: the ceiling (priority_ceiling()). */
static int32 ceiling = 0;
static uint64 ceiling_generation = 0;
static TimestampTz ceiling_at = 0;

/*
 * Only a transaction that took children can have hidden a batch from its
 * own look, and only one that claimed prioritized wake-ups can have hidden
 * those: any other abort (a parked pass's halt ends in one) leaves the
 * "none" and the ceiling as true as they were.
 */
static void
forget_on_abort(XactEvent event, void *arg)
{
	bool		aborted = event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT;

	if (aborted && spawn_taken_in_xact)
		spawn_none_at = spawn_looked_at = PG_UINT64_MAX;	/* look again */
	if (aborted && priority_claimed_in_xact)
	{
		priority_none_at = PG_UINT64_MAX;
		ceiling = 0;
	}
	if (aborted || event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PREPARE)
		spawn_taken_in_xact = priority_claimed_in_xact = false;
}

void
cf_claim_register(void)
{
	RegisterXactCallback(forget_on_abort, NULL);
}

/* Is there any batch?  If not, remember it for this generation. */
static bool
spawn_batches_exist(void)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	uint64		generation;
	bool		known = cf_spawn_generation(&generation);
	bool		exist;

	cf_internal_begin(&st);
	/* Not read-only: a snapshot taken after the generation was read. */
	cf_exec(&plan, "SELECT 1 FROM chrono_forge.spawn_batches LIMIT 1", 0, NULL, NULL, NULL, false, 1);
	exist = SPI_processed > 0;
	cf_internal_end(&st);
	if (known)
	{
		spawn_looked_at = generation;
		spawn_none_at = exist ? PG_UINT64_MAX : generation;
		spawn_none_since = GetCurrentTimestamp();
	}
	return exist;
}

static bool
spawn_batches_maybe(void)
{
	uint64		generation;
	bool		known = cf_spawn_generation(&generation);

	if (known && generation == spawn_none_at)
	{
		if (!TimestampDifferenceExceeds(spawn_none_since, GetCurrentTimestamp(), SPAWN_NONE_TRUST_MS))
			return false;
		/* believed long enough: look again, below */
	}
	else if (known && generation == spawn_looked_at)
		return true;
	/* Once per generation, look (a session's first claim, a dispatch). */
	if (!cf_schema_at_least(CF_SCHEMA(0, 4, 0)))	/* no spawn_batches yet */
	{
		if (known)
		{
			spawn_none_at = generation;
			spawn_none_since = GetCurrentTimestamp();
		}
		return false;
	}
	return !known || spawn_batches_exist();
}

/*
 * Claim the earliest due wake-up of a run nobody executes, delete every due
 * wake-up of that run (duplicates coalesce into this pass), and take its
 * row lock, in one statement.  All of it commits with the pass's first
 * commit, or rolls back; the lock is written on the row just before that
 * commit (cf_stamp_claim()).
 *
 * The lock rules are acquire_lock()'s: only idle runs, or running runs
 * whose lock is older than max_duration (stolen).  Candidates are read in
 * due order from the wake-up index and each run row is locked with SKIP
 * LOCKED as it is reached, so the statement stops at the first claimable
 * run and never scans the runs table.  The window of 1024 candidates only
 * matters if that many due wake-ups all belong to runs being executed (or,
 * for run_pending(), to other roles' runs).
 *
 * before_spawned: only wake-ups due no later than the oldest spawn batch
 * (work is taken in due order, spawned children included).
 */
#define CLAIM_SQL(with, candidates, top) \
	with " c AS (" \
	"  SELECT w.*, NULL::bigint[], k.due_at, k.level FROM " candidates "," \
	"   LATERAL (SELECT w.id, w.workflow, w.key, w.procedure, w.args, w.context," \
	"     w.owner::oid, w.attempt, w.retry_counts, w.parent_execution_log_id" \
	"     FROM chrono_forge.workflows w" \
	"     WHERE w.id = k.workflow_id AND ($3 = 0 OR w.owner::oid = $3)" \
	"       AND NOT w.owner::oid = ANY ($4)" \
	"       AND (w.state = 'idle' OR (w.state = 'running' AND w.locked_at < $1 - $2))" \
	"     FOR NO KEY UPDATE SKIP LOCKED) AS w" \
	"  LIMIT 1)," \
	" d AS (DELETE FROM chrono_forge.wakeups k" \
	"  WHERE k.workflow_id = (SELECT id FROM c) AND k.due_at <= $1 RETURNING k.id)" \
	" SELECT c.id, c.workflow, c.key, c.procedure, c.args, c.context, c.owner, c.attempt," \
	"  c.retry_counts, c.parent_execution_log_id, (SELECT array_agg(d.id) FROM d), c.due_at, c.level," \
	"  " top " FROM c"
#define CLAIM_WAKEUP_SQL(due_limit) \
	CLAIM_SQL("WITH", \
	"   (SELECT k.workflow_id, k.due_at, NULL::int AS level FROM chrono_forge.wakeups k" \
	"     WHERE k.due_at >= $5 AND k.due_at <= " due_limit " AND NOT k.workflow_id = ANY ($6)" \
	"     ORDER BY k.due_at LIMIT 1024) AS k", "NULL::int")

/*
 * Prioritized wake-ups (0.13.0; a run's start() option "priority") come
 * before all others, the highest priority first, each priority in due
 * order.  The priorities present are found one by one from the top of
 * the wake-ups' priority index (a loose index scan: each is one descent),
 * and each priority's due wake-ups are a range of that index, read in due
 * order with the same lock rules as above.  Wake-ups without a priority
 * are not in that index: a workload without priorities adds nothing to
 * it, and claims do not run this statement at all while no commit wrote a
 * prioritized wake-up (prioritized_maybe()).
 *
 * How the plan is kept on that index: it keys the due time as UTC wall
 * time (UTC_DUE), an expression no other index has (ordered by due_at
 * itself, the generic plan walked the due index and filtered it by
 * priority, every wake-up due); and the window of 1024 is a parameter
 * ($7): with a constant, a generic plan that expects fewer rows than that
 * reads and sorts them all, with a parameter it plans for the first few.
 *
 * As the due index does, the priority index begins with the entries of
 * the wake-ups claims deleted, highest priorities first.  A claim starts
 * at the priority it claimed last from its floor ($8, $5: see below), and
 * the enumeration of priorities at the ceiling ($9; 0: the top of the
 * index), the highest priority present when the session last looked from
 * the top, which the statement returns: nothing above it can be due
 * until a commit writes prioritized wake-ups (priority_ceiling()).
 */
#define UTC_DUE "pg_catalog.timezone('UTC', k.due_at)"
#define TOP_PRIORITY \
	"(SELECT k.priority FROM chrono_forge.wakeups k WHERE k.priority IS NOT NULL" \
	" ORDER BY k.priority DESC LIMIT 1)"
#define PRIORITY_LEVELS(top) \
	"WITH RECURSIVE lv(p) AS (" \
	"  SELECT " top \
	"  UNION ALL" \
	"  SELECT (SELECT k.priority FROM chrono_forge.wakeups k WHERE k.priority < lv.p" \
	"    ORDER BY k.priority DESC LIMIT 1) FROM lv WHERE lv.p IS NOT NULL)"
#define CLAIM_PRIORITIZED_SQL \
	CLAIM_SQL(PRIORITY_LEVELS("CASE WHEN $9 > 0 THEN $9 ELSE " TOP_PRIORITY " END") ",", \
	"lv, LATERAL (SELECT k.workflow_id, k.due_at, k.priority AS level FROM chrono_forge.wakeups k" \
	"     WHERE k.priority = lv.p AND " UTC_DUE " <= pg_catalog.timezone('UTC', $1)" \
	"       AND " UTC_DUE " >= pg_catalog.timezone('UTC', CASE WHEN lv.p = $8 THEN $5" \
	"        ELSE '-infinity'::pg_catalog.timestamptz END)" \
	"       AND NOT k.workflow_id = ANY ($6)" \
	"     ORDER BY " UTC_DUE " LIMIT $7) AS k", \
	"(SELECT lv.p FROM lv LIMIT 1)")
/* When the first prioritized wake-up is due (NULL: there is none). */
#define FIRST_PRIORITIZED_SQL \
	PRIORITY_LEVELS(TOP_PRIORITY) \
	" SELECT pg_catalog.min((SELECT k.due_at FROM chrono_forge.wakeups k WHERE k.priority = lv.p" \
	"  ORDER BY " UTC_DUE " LIMIT 1)) FROM lv"

/*
 * The claim's floor: a worker's claim reads wake-ups due from shortly
 * before the one it claimed last.  Claims delete wake-ups oldest first,
 * so the wake-up index begins with the entries of deleted ones, which a
 * claim from the start walks page by page until VACUUM removes them (with
 * two workers busy, most of a claim's reads).  A wake-up due before the
 * floor (written by a transaction that committed late, or due in the
 * past) is found by the next claim from the start: one every
 * FLOOR_RESCAN_MS, and any claim that found nothing above the floor.
 * Only the background workers keep a floor: run_pending() claims in due
 * order exactly.  Prioritized claims keep one of their own, for the
 * priority they claimed last (the other priorities are read from their
 * start): a wake-up of that priority due before it may wait for the next
 * claim from the start (at most FLOOR_RESCAN_MS) behind lower priorities.
 */
#define FLOOR_SLACK_MS 100
#define FLOOR_RESCAN_MS 100

typedef struct ClaimFloor
{
	TimestampTz floor;			/* DT_NOBEGIN: none */
	TimestampTz rescanned_at;	/* the last claim from the start */
	int32		level;			/* prioritized claims: the floor's priority */
} ClaimFloor;

/* The floor for the next claim; DT_NOBEGIN: from the start. */
static TimestampTz
floor_for_claim(ClaimFloor *f, TimestampTz now)
{
	if (cf_worker_slot < 0 || TimestampDifferenceExceeds(f->rescanned_at, now, FLOOR_RESCAN_MS))
		return DT_NOBEGIN;
	return f->floor;
}

/*
 * After a claim from floor: it claimed a wake-up due at due, of priority
 * `priority` (found), or none.
 */
static void
floor_after_claim(ClaimFloor *f, TimestampTz floor, TimestampTz now, bool found, TimestampTz due,
				  int32 priority)
{
	if (floor == DT_NOBEGIN)
		f->rescanned_at = now;
	if (found)
	{
		f->floor = TimestampTzPlusMilliseconds(due, -FLOOR_SLACK_MS);
		f->level = priority;
	}
}

/*
 * The runs other workers' open transactions hold (their claims' row
 * locks, cf_runs_held_by_others()), as an int8[]: their wake-ups stay due
 * until those transactions commit, and a claim would probe and try to
 * lock each.  Empty outside the workers.
 */
static Datum
runs_held_by_others(int *n)
{
	int64		runs[CF_HELD_RUNS_MAX * 4];
	Datum		elems[CF_HELD_RUNS_MAX * 4];

	*n = 0;
	if (cf_worker_slot >= 0)
		*n = cf_runs_held_by_others(cf_worker_slot, runs, lengthof(runs));
	for (int i = 0; i < *n; i++)
		elems[i] = Int64GetDatum(runs[i]);
	return PointerGetDatum(construct_array(elems, *n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE));
}

/* Which wake-ups a claim looks at (the plans of claim_once()). */
typedef enum ClaimScope
{
	CLAIM_DUE,					/* any due, in due order */
	CLAIM_DUE_BEFORE_SPAWNED,	/* ... due no later than the oldest spawn batch */
	CLAIM_PRIORITIZED			/* prioritized, highest priority first */
} ClaimScope;

static ClaimFloor due_floor = {DT_NOBEGIN, 0, 0};
static ClaimFloor priority_floor = {DT_NOBEGIN, 0, 0};

static bool
claim_once(ClaimScope scope, Oid only_owner, Datum skip_owners, TimestampTz now,
		   TimestampTz floor, int32 floor_level, int32 ceiling, Datum held)
{
	static SPIPlanPtr plans[3];
	static const char *const sql[3] = {
		CLAIM_WAKEUP_SQL("$1"),
		CLAIM_WAKEUP_SQL("least($1, coalesce((SELECT b.due_at FROM chrono_forge.spawn_batches b"
						 " WHERE ($3 = 0 OR b.owner::oid = $3) AND NOT b.owner::oid = ANY ($4)"
						 " ORDER BY b.id LIMIT 1), $1))"),
		CLAIM_PRIORITIZED_SQL,
	};
	CfInternal	st;
	Interval   *max_duration = cf_max_duration_interval();

	cf_internal_begin(&st);

	/*
	 * Generic plans: a custom plan of this statement, made on every claim,
	 * cost a tenth of the claim.  Its LIMITs are constants, so the generic
	 * plan walks the wake-up index in due order as a custom one does.
	 */
	cf_exec_generic(&plans[scope], sql[scope],
					scope == CLAIM_PRIORITIZED ? 9 : 6,
					(Oid[]) {TIMESTAMPTZOID, INTERVALOID, OIDOID, OIDARRAYOID, TIMESTAMPTZOID,
						INT8ARRAYOID, INT4OID, INT4OID, INT4OID},
					(Datum[]) {TimestampTzGetDatum(now), IntervalPGetDatum(max_duration),
						ObjectIdGetDatum(only_owner), skip_owners, TimestampTzGetDatum(floor), held,
					Int32GetDatum(1024), Int32GetDatum(floor_level), Int32GetDatum(ceiling)},
					NULL, false, 0);
	cf_internal_end(&st);
	return SPI_processed > 0;
}

/*
 * Did the claim delete none of the run's wake-ups?  Then another pass of
 * the run committed between this statement's snapshot and its row lock:
 * the lock took the run's new row version, whose state passed the check
 * again (a parked run is idle), but the wake-up the claim came by is gone
 * with that pass, and running the run now would be a second pass for one
 * wake-up (7 % of the passes with two workers in bench/tasks).  The run
 * stays locked by this transaction until it commits; a claim with a new
 * snapshot sees the run's wake-ups as they are now.
 */
static bool
claim_came_too_late(void)
{
	bool		isnull;

	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 11, &isnull);
	return isnull;
}

/*
 * The due time and priority (0: none) of the wake-up the claim came by,
 * and the highest priority present (0: not looked at).
 */
static TimestampTz
claimed_due_at(int32 *priority, int32 *top)
{
	bool		isnull;
	Datum		p = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 13, &isnull);

	*priority = isnull ? 0 : DatumGetInt32(p);
	p = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 14, &isnull);
	*top = isnull ? 0 : DatumGetInt32(p);
	return DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 12, &isnull));
}

/*
 * Claim a wake-up of `scope` from its floor (prioritized: from priority
 * `ceiling` down, 0: from the top); if there is none above it (or only
 * runs others hold), from the start, passing over nothing: nothing
 * claimed then means nothing claimable.  *from_start: whether it looked
 * from the start; *top: the highest priority present (a prioritized claim
 * from the top that found one).
 */
static bool
claim_wakeup_from_floor(ClaimScope scope, Oid only_owner, Datum skip_owners, int32 ceiling,
						int32 *top, bool *from_start)
{
	ClaimFloor *f = scope == CLAIM_PRIORITIZED ? &priority_floor : &due_floor;
	TimestampTz now;
	TimestampTz floor;
	bool		found;

	do
	{
		int			n_held;
		Datum		held = runs_held_by_others(&n_held);
		TimestampTz due = 0;
		int32		priority = 0;

		CHECK_FOR_INTERRUPTS();
		now = cf_clock_now();
		floor = floor_for_claim(f, GetCurrentTimestamp());
		found = claim_once(scope, only_owner, skip_owners, now, floor, f->level, ceiling, held);
		*from_start = floor == DT_NOBEGIN && n_held == 0 && ceiling == 0;
		if (!found && !*from_start)
		{
			floor = DT_NOBEGIN;
			ceiling = 0;
			found = claim_once(scope, only_owner, skip_owners, now, floor, 0, 0,
							   PointerGetDatum(construct_empty_array(INT8OID)));
			*from_start = true;
		}
		if (found)
			due = claimed_due_at(&priority, top);
		floor_after_claim(f, floor, GetCurrentTimestamp(), found, due, priority);
		if (!found)
			return false;
	} while (claim_came_too_late());
	read_claim(now);
	if (cf_worker_slot >= 0)
		cf_worker_hold_run(cf_worker_slot, cf_pass.workflow_id);
	return true;
}

static bool
claim_wakeup(Oid only_owner, bool before_spawned, Datum skip_owners)
{
	bool		from_start;
	int32		top;

	return claim_wakeup_from_floor(before_spawned ? CLAIM_DUE_BEFORE_SPAWNED : CLAIM_DUE,
								   only_owner, skip_owners, 0, &top, &from_start);
}

/*
 * Whether prioritized wake-ups may be due.  A session that read priority
 * generation g, then found none due before t (cf_priority_generation()),
 * need not look again while it is still g and before t, as for spawn
 * batches: the generation moves when a commit writes prioritized
 * wake-ups.  That "none" may be this transaction's own view (passes
 * sharing one transaction claimed them); it is forgotten if a transaction
 * that claimed one aborts (so is the ceiling), and believed for at most
 * PRIORITY_NONE_TRUST_MS.
 */
#define PRIORITY_NONE_TRUST_MS 1000

static bool
prioritized_maybe(TimestampTz now)
{
	uint64		generation;

	if (!cf_schema_at_least(CF_SCHEMA(0, 13, 0)))
		return false;
	return !cf_priority_generation(&generation) || generation != priority_none_at ||
		now >= priority_none_before ||
		TimestampDifferenceExceeds(priority_none_since, GetCurrentTimestamp(), PRIORITY_NONE_TRUST_MS);
}

/*
 * A claim from the start found no prioritized wake-up to claim (as of
 * generation `generation`): when is the first one due?
 */
static void
priority_none_found(uint64 generation)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	bool		isnull;
	Datum		first;

	cf_internal_begin(&st);
	cf_exec_generic(&plan, FIRST_PRIORITIZED_SQL, 0, NULL, NULL, NULL, false, 1);
	first = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	cf_internal_end(&st);
	priority_none_at = generation;
	priority_none_before = isnull ? DT_NOEND : DatumGetTimestampTz(first);
	priority_none_since = GetCurrentTimestamp();
}

/*
 * The ceiling of the next prioritized claim (0: the top of the index): the
 * highest priority present when a claim of this worker last looked from
 * the top, while no commit has written prioritized wake-ups since, and
 * for FLOOR_RESCAN_MS.
 */
static int32
priority_ceiling(bool known, uint64 generation)
{
	if (!known || ceiling == 0 || cf_worker_slot < 0 || generation != ceiling_generation ||
		TimestampDifferenceExceeds(ceiling_at, GetCurrentTimestamp(), FLOOR_RESCAN_MS))
		return 0;
	return ceiling;
}

/* Claim the first due prioritized wake-up, if any may be due. */
static bool
claim_prioritized(Oid only_owner, Datum skip_owners)
{
	uint64		generation = 0;
	bool		known;
	bool		from_start;
	int32		top;
	int32		from_ceiling;

	if (!prioritized_maybe(cf_clock_now()))
		return false;
	known = cf_priority_generation(&generation);	/* before the snapshot */
	from_ceiling = priority_ceiling(known, generation);
	if (claim_wakeup_from_floor(CLAIM_PRIORITIZED, only_owner, skip_owners, from_ceiling,
								&top, &from_start))
	{
		priority_claimed_in_xact = true;
		if (from_ceiling == 0 && top > 0)
		{
			ceiling = top;
			ceiling_generation = generation;
			ceiling_at = GetCurrentTimestamp();
		}
		return true;
	}
	if (known && from_start)
		priority_none_found(generation);
	return false;
}

/*
 * Take the next child of the oldest spawn batch nobody else is taking
 * from: the batch row's lock (held until the pass commits) is the claim,
 * and nothing is visible before that commit.  The child's run gets its id
 * now and its row when the pass first commits or ends (cf_write_taken_run_as()),
 * so a child that completes in one pass writes its run once; its step logs
 * come first, their foreign key checked at commit.  A child whose key is
 * already a run is passed over (as the dispatch of 0.3.0 did), its id
 * NULL.  To take the same child again after an abort: batch $3 at position
 * $4, written at once as run $5.
 */
#define TAKE_CHILD_SQL(batch_filter, run_id, write_run) \
	"WITH s AS (SELECT b.id FROM chrono_forge.spawn_batches b WHERE b.taken < b.n AND " batch_filter \
	"  ORDER BY b.id LIMIT 1 FOR UPDATE SKIP LOCKED)," \
	" c AS (UPDATE chrono_forge.spawn_batches b SET taken = b.taken + 1 FROM s WHERE b.id = s.id" \
	"  RETURNING b.id, b.taken AS i, b.n, b.branch_log_id, b.owner, b.due_at, b.workflows[b.taken] AS w," \
	"   b.keys[b.taken] AS k, b.procedures[b.taken] AS p, b.args[b.taken] AS a)" \
	write_run \
	" SELECT " run_id ", c.w, c.k, c.p, c.a, '{}'::jsonb, c.owner::oid, 0, '{}'::jsonb, c.branch_log_id," \
	"  NULL::bigint[], c.id, c.i, c.i >= c.n, c.due_at FROM c"
#define TAKE_CHILD_NEW_ID \
	"CASE WHEN EXISTS (SELECT 1 FROM chrono_forge.workflows x WHERE x.workflow = c.w AND x.key = c.k" \
	"  AND x.owner = c.owner)" \
	" THEN NULL ELSE nextval('chrono_forge.workflows_id_seq') END"
#define TAKE_CHILD_WRITE_RUN \
	", r AS (INSERT INTO chrono_forge.workflows (id, workflow, key, procedure, args, owner," \
	"   parent_execution_log_id, state, locked_by, locked_at, started_at, created_at, updated_at)" \
	"  OVERRIDING SYSTEM VALUE SELECT $5, c.w, c.k, c.p, c.a, c.owner, c.branch_log_id, 'running', $2, $1, $1," \
	"   c.due_at, $1 FROM c ON CONFLICT DO NOTHING RETURNING id)"

/*
 * After TAKE_CHILD_SQL: the taken child becomes the pass's run, unless it
 * was passed over (false); the row goes with its last child (in the same
 * transaction, under the same row lock).
 */
static bool
finish_take(TimestampTz now)
{
	static SPIPlanPtr plan = NULL;
	HeapTuple	tup = SPI_tuptable->vals[0];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool		passed_over;
	bool		isnull;
	Datum		batch_id = SPI_getbinval(tup, desc, 12, &isnull);
	bool		last = DatumGetBool(SPI_getbinval(tup, desc, 14, &isnull));

	spawn_taken_in_xact = true;
	(void) SPI_getbinval(tup, desc, 1, &passed_over);
	if (!passed_over)
	{
		read_claim(now);
		cf_pass.spawn_batch_id = DatumGetInt64(batch_id);
		cf_pass.spawn_position = DatumGetInt32(SPI_getbinval(tup, desc, 13, &isnull));
		cf_pass.spawn_due_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 15, &isnull));
	}
	if (last)
		cf_exec(&plan, "DELETE FROM chrono_forge.spawn_batches WHERE id = $1",
				1, (Oid[]) {INT8OID}, &batch_id, NULL, false, 0);
	return !passed_over;
}

/*
 * The step logs of a run not written yet reference it: check their
 * foreign key at commit, after the run is written (0.4.0 made the
 * constraint deferrable).  For the rest of the transaction: once per
 * transaction, since several passes can share one.
 */
static void
defer_step_log_checks(void)
{
	static LocalTransactionId deferred_in = InvalidLocalTransactionId;

	if (MyProc->lxid == deferred_in)
		return;
	if (SPI_execute("SET CONSTRAINTS chrono_forge.execution_logs_workflow_id_fkey DEFERRED",
					false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not defer the step logs' foreign key check");
	deferred_in = MyProc->lxid;
}

static bool
take_spawned_child(Oid only_owner, Datum skip_owners)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	TimestampTz now = cf_clock_now();
	bool		taken = false;

	cf_internal_begin(&st);
	while (!taken)
	{
		CHECK_FOR_INTERRUPTS();
		cf_exec(&plan, TAKE_CHILD_SQL("($1 = 0 OR b.owner::oid = $1) AND NOT b.owner::oid = ANY ($2)",
									  TAKE_CHILD_NEW_ID, ""),
				2, (Oid[]) {OIDOID, OIDARRAYOID},
				(Datum[]) {ObjectIdGetDatum(only_owner), skip_owners}, NULL, false, 0);
		if (SPI_processed == 0)
			break;
		taken = finish_take(now);
	}
	if (taken)
	{
		cf_pass.run_unwritten = true;
		cf_pass.stamped = false;
		defer_step_log_checks();
	}
	cf_internal_end(&st);
	return taken;
}

/*
 * The abort of a pass that had not committed undid the taking of its
 * child too: take the same child again, as the same run, unless another
 * session took it meanwhile.
 */
bool
cf_claim_retake_spawned_child(void)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	TimestampTz now = cf_clock_now();
	Jsonb	   *context = cf_pass.context;	/* as the pass left it */
	bool		taken;

	cf_internal_begin(&st);
	cf_exec(&plan, TAKE_CHILD_SQL("b.id = $3 AND b.taken = $4 - 1", "(SELECT id FROM r)", TAKE_CHILD_WRITE_RUN),
			5, (Oid[]) {TIMESTAMPTZOID, TEXTOID, INT8OID, INT4OID, INT8OID},
			(Datum[]) {TimestampTzGetDatum(now), CStringGetTextDatum(cf_pass.lock_token),
				Int64GetDatum(cf_pass.spawn_batch_id), Int32GetDatum(cf_pass.spawn_position),
			Int64GetDatum(cf_pass.workflow_id)}, NULL, false, 0);
	taken = SPI_processed == 1 && finish_take(now);
	cf_internal_end(&st);
	cf_pass.context = context;
	cf_pass.run_unwritten = false;
	cf_pass.stamped = taken;
	return taken;
}

/*
 * The per-owner share of the workers: owners whose passes already occupy
 * chrono_forge.max_workers_per_owner other workers, whose runs this worker
 * does not claim while another owner's work is due (shared memory knows
 * each worker's current pass).  run_pending() runs its caller's own runs
 * in its own session: none.
 */
static Datum
owners_at_share(int *n)
{
	Oid			owners[CF_MAX_WORKERS];
	Datum		elems[CF_MAX_WORKERS];

	*n = 0;
	if (cf_worker_slot >= 0)
		*n = cf_owners_at_share(cf_worker_slot, cf_worker_share_effective(), owners);
	for (int i = 0; i < *n; i++)
		elems[i] = ObjectIdGetDatum(owners[i]);
	return PointerGetDatum(construct_array(elems, *n, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
}

/*
 * Claim the next due work of owners not in skip_owners: a prioritized
 * wake-up, highest priority first; else, in due order, a wake-up or a
 * spawned child not started yet.
 */
static bool
claim_next(Oid only_owner, Datum skip_owners)
{
	static TimestampTz none_due_at = 0;
	bool		spawned;
	TimestampTz now = GetCurrentTimestamp();

	if (claim_prioritized(only_owner, skip_owners))
		return true;
	spawned = spawn_batches_maybe();

	/*
	 * While a worker takes children from batches, it looks for wake-ups
	 * due before the oldest batch every 10 ms, not before each child:
	 * anything scheduled meanwhile is due later than that batch anyway.
	 */
	if (!spawned || cf_worker_slot < 0 || TimestampDifferenceExceeds(none_due_at, now, 10))
	{
		if (claim_wakeup(only_owner, spawned, skip_owners))
			return true;
		none_due_at = now;
	}
	if (!spawned)
		return false;
	if (take_spawned_child(only_owner, skip_owners))
		return true;
	/* No batch, or all taken by others: any wake-up due. */
	(void) spawn_batches_exist();
	return claim_wakeup(only_owner, false, skip_owners);
}

/*
 * Claim the next due work.  The share binds only while another owner's
 * work is due: when a claim that skips the owners at their share finds
 * nothing, this worker takes their work after all, and looks for other
 * owners' work that way again only a while later: such a claim may walk
 * the whole due window of the owners it skips (1,024 runs: 2 % of a
 * worker's time at 10 a second), so not before every pass of a one-owner
 * backlog.  The while is SHARE_RECHECK_MS, doubled after each look that
 * found nobody else's work up to SHARE_RECHECK_MAX_MS, and back to
 * SHARE_RECHECK_MS once one finds some.
 */
#define SHARE_RECHECK_MS 100
#define SHARE_RECHECK_MAX_MS 800

/*
 * Claim the next due pass and lock its run; *share_waived: whether the
 * claim waived the share (nobody else's work was due).  False if nothing
 * is due.
 */
bool
cf_claim_and_lock(Oid only_owner, bool *share_waived)
{
	static TimestampTz others_idle_at = 0;
	static int	recheck_ms = SHARE_RECHECK_MS;
	int			n_skipped;
	Datum		skip_owners = owners_at_share(&n_skipped);
	Datum		no_owners = PointerGetDatum(construct_empty_array(OIDOID));
	TimestampTz now = GetCurrentTimestamp();
	bool		others_idle = !TimestampDifferenceExceeds(others_idle_at, now, recheck_ms);

	cf_pass.lock_token = MemoryContextStrdup(cf_pass.cxt, make_lock_token());

	/*
	 * Nobody else's work was due a moment ago: this claim waives the share
	 * even if no owner was at it yet, so that two workers claiming one
	 * owner's backlog at once do not give one claim back (a pass's worth
	 * of writes for nothing).
	 */
	*share_waived = n_skipped > 0 || others_idle;
	if (n_skipped == 0 || others_idle)
		return claim_next(only_owner, no_owners);
	*share_waived = false;
	if (claim_next(only_owner, skip_owners))
	{
		recheck_ms = SHARE_RECHECK_MS;
		return true;
	}
	/* The look before found nobody either (not a new backlog): wait longer. */
	if (others_idle_at != 0 &&
		!TimestampDifferenceExceeds(others_idle_at, now, recheck_ms + 1000))
		recheck_ms = Min(recheck_ms * 2, SHARE_RECHECK_MAX_MS);
	else
		recheck_ms = SHARE_RECHECK_MS;
	others_idle_at = now;
	*share_waived = true;
	return claim_next(only_owner, no_owners);
}
