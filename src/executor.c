/*-------------------------------------------------------------------------
 *
 * executor.c
 *	  Passes: claim a due wake-up and take the run's lock (or take a
 *	  spawned child, whose run is written at the pass's first commit or
 *	  end), replay the workflow procedure, then complete, release with one
 *	  continuation, stall or fail the run, all in the transaction that ends
 *	  the pass.
 *
 * Owns the claim, the finish and the drain loop of run_pending() and the
 * workers (the pass state the primitives share is pass.c's).  The workflow procedure runs as a non-atomic CALL,
 * as the run's owner; the drain may itself run inside the caller's
 * PL/pgSQL (a DO block, a procedure, a cursor loop), whose SPI stack and
 * cursors every abort of a pass must leave alone (abort_and_restart()).
 * This file must never run user code as anyone but the owner, and never
 * publish a continuation while the run's lock is still held (the
 * continuation is written by the very statement that releases it).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/prepare.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "tcop/pquery.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "branch.h"
#include "clock.h"
#include "executor.h"
#include "guc.h"
#include "internal.h"
#include "merge.h"
#include "pass.h"
#include "pass_timer.h"
#include "replay.h"
#include "retry.h"
#include "shmem.h"
#include "steplog.h"
#include "wakeups.h"

PG_FUNCTION_INFO_V1(cf_run_pending);
PG_FUNCTION_INFO_V1(cf_worker_drain);

int			cf_last_drain_passes = 0;

/* Wake-up rows this pass claimed (deleted again if the claim rolls back). */
static Datum claimed_wakeups = (Datum) 0;

static int64 pass_attempt;		/* workflow-level failures so far */
static Jsonb *pass_retry_counts;

/* ---------------------------------------------------------------------
 * Claim, replay cache, finish
 * ---------------------------------------------------------------------
 */

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
	pass_attempt = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
	pass_retry_counts = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 9, &isnull));
	d = SPI_getbinval(tup, desc, 10, &isnull);
	cf_pass.parent_log_id = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(tup, desc, 11, &isnull);
	claimed_wakeups = isnull ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
	cf_pass.claimed_at = now;
	MemoryContextSwitchTo(old);
}

/*
 * Spawn batches (0.4.0): children of spawn_each not started yet.  A
 * session that read spawn generation g and then found no batch at all
 * does not look again until a dispatch commits (the generation moves), so
 * that passes pay nothing for fan-out when there is none.  Without shared
 * memory (generation unknown) it looks before every claim.
 */
static uint64 spawn_none_at = PG_UINT64_MAX;
static uint64 spawn_looked_at = PG_UINT64_MAX;

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
		if (!exist)
			spawn_none_at = generation;
	}
	return exist;
}

static bool
spawn_batches_maybe(void)
{
	uint64		generation;
	bool		known = cf_spawn_generation(&generation);

	if (known && generation == spawn_none_at)
		return false;
	if (known && generation == spawn_looked_at)
		return true;
	/* Once per generation, look (a session's first claim, a dispatch). */
	if (!cf_schema_at_least(CF_SCHEMA(0, 4, 0)))	/* no spawn_batches yet */
	{
		if (known)
			spawn_none_at = generation;
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
#define CLAIM_WAKEUP_SQL(due_limit) \
	"WITH c AS (" \
	"  SELECT w.*, NULL::bigint[] FROM" \
	"   (SELECT k.workflow_id, k.due_at FROM chrono_forge.wakeups k" \
	"     WHERE k.due_at <= " due_limit " ORDER BY k.due_at LIMIT 1024) AS k," \
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
	"  c.retry_counts, c.parent_execution_log_id, (SELECT array_agg(d.id) FROM d) FROM c"

static bool
claim_wakeup(Oid only_owner, bool before_spawned, Datum skip_owners)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr spawned_plan = NULL;
	CfInternal	st;
	TimestampTz now = cf_clock_now();
	Interval   *max_duration = cf_max_duration_interval();

	cf_internal_begin(&st);
	if (before_spawned)
		cf_exec(&spawned_plan,
				CLAIM_WAKEUP_SQL("least($1, coalesce((SELECT b.due_at FROM chrono_forge.spawn_batches b"
								 " WHERE ($3 = 0 OR b.owner::oid = $3) AND NOT b.owner::oid = ANY ($4)"
								 " ORDER BY b.id LIMIT 1), $1))"),
				4, (Oid[]) {TIMESTAMPTZOID, INTERVALOID, OIDOID, OIDARRAYOID},
				(Datum[]) {TimestampTzGetDatum(now), IntervalPGetDatum(max_duration),
				ObjectIdGetDatum(only_owner), skip_owners}, NULL, false, 0);
	else
		cf_exec(&plan, CLAIM_WAKEUP_SQL("$1"),
				4, (Oid[]) {TIMESTAMPTZOID, INTERVALOID, OIDOID, OIDARRAYOID},
				(Datum[]) {TimestampTzGetDatum(now), IntervalPGetDatum(max_duration),
				ObjectIdGetDatum(only_owner), skip_owners}, NULL, false, 0);
	cf_internal_end(&st);
	if (SPI_processed == 0)
		return false;
	read_claim(now);
	return true;
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
static bool
retake_spawned_child(void)
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
 * Claim the next due work, in due order, of owners not in skip_owners: a
 * wake-up, or a spawned child not started yet.
 */
static bool
claim_next(Oid only_owner, Datum skip_owners)
{
	static TimestampTz none_due_at = 0;
	bool		spawned = spawn_batches_maybe();
	TimestampTz now = GetCurrentTimestamp();

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
 * owners' work that way again only SHARE_RECHECK_MS later (such a claim
 * may walk the whole due window of the owners it skips, so not before
 * every pass of a one-owner backlog).
 */
#define SHARE_RECHECK_MS 100

/* Did this pass's claim waive the share (nobody else's work was due)? */
static bool share_waived = false;

static bool
claim_and_lock(Oid only_owner)
{
	static TimestampTz others_idle_at = 0;
	int			n_skipped;
	Datum		skip_owners = owners_at_share(&n_skipped);
	Datum		no_owners = PointerGetDatum(construct_empty_array(OIDOID));
	TimestampTz now = GetCurrentTimestamp();

	cf_pass.lock_token = MemoryContextStrdup(cf_pass.cxt, make_lock_token());
	share_waived = n_skipped > 0;
	if (n_skipped == 0 ||
		!TimestampDifferenceExceeds(others_idle_at, now, SHARE_RECHECK_MS))
		return claim_next(only_owner, no_owners);
	share_waived = false;
	if (claim_next(only_owner, skip_owners))
		return true;
	others_idle_at = now;
	share_waived = true;
	return claim_next(only_owner, no_owners);
}

typedef enum FinishKind
{
	FINISH_COMPLETE,
	FINISH_RELEASE,
	FINISH_STALL,
	FINISH_FAIL,
	FINISH_RETRY
} FinishKind;

/*
 * Each finish statement ends with one row (owned?, next due) or none (not
 * owned): true if the pass still owned the run; the launcher is told of
 * the run's next wake-up, if any.
 */
static bool
finish_row_owned(void)
{
	bool		isnull;
	Datum		next;

	if (SPI_processed == 0 ||
		DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) == 0)
		return false;
	next = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
		cf_queue_wakeup(DatumGetTimestampTz(next));
	return true;
}

/*
 * Release the run idle and publish its continuation (or retry), in the
 * transaction that releases it: the continuation cannot become claimable
 * while the lock is held.  values[0..5] and nulls are finish_pass()'s.
 * True if the pass still owned the run.
 */
static bool
finish_release(FinishKind kind, Datum *values, char *nulls, TimestampTz retry_at, int attempt)
{
	static SPIPlanPtr plan = NULL;
	bool		cont = (kind == FINISH_RETRY) || cf_pass.has_continuation;

	values[6] = Int32GetDatum(kind == FINISH_RETRY ? attempt : 0);
	cf_exec(&plan,
			"WITH w AS ("
			"  UPDATE chrono_forge.workflows SET state = 'idle', locked_by = NULL, locked_at = NULL,"
			"   context = CASE WHEN $4 THEN $5 ELSE context END, attempt = $7,"
			"   retry_counts = CASE WHEN $7 = 0 THEN '{}' ELSE retry_counts END, updated_at = $3"
			"  WHERE id = $1 AND locked_by = $2 RETURNING id),"
			" d AS (DELETE FROM chrono_forge.wakeups k USING w"
			"  WHERE k.workflow_id = w.id AND k.id = ANY ($6))"
			" SELECT (SELECT count(*) FROM w), (SELECT min(k.due_at) FROM chrono_forge.wakeups k"
			"  WHERE k.workflow_id = $1 AND NOT k.id = ANY (coalesce($6, '{}')))",
			7, (Oid[]) {INT8OID, TEXTOID, TIMESTAMPTZOID, BOOLOID, JSONBOID, INT8ARRAYOID, INT4OID},
			values, nulls, false, 0);
	if (!finish_row_owned())
		return false;
	if (cont)
		cf_wakeup_add(cf_pass.workflow_id,
					  kind == FINISH_RETRY ? retry_at : cf_pass.continuation_at,
					  kind == FINISH_RETRY ? "retry" :
					  cf_pass.continuation_reason ? cf_pass.continuation_reason : "continue",
					  CF_WAKEUP_UNLESS_SAME);
	return true;
}

/*
 * End the run completed or stalled; values[0..5] and nulls are
 * finish_pass()'s.  True if the pass still owned the run.
 */
static bool
finish_terminal(FinishKind kind, Datum *values, char *nulls)
{
	static SPIPlanPtr plan = NULL;

	values[6] = CStringGetTextDatum(kind == FINISH_COMPLETE ? "completed" : "stalled");
	/* A pass that never committed ends holding the claim's row lock. */
	values[7] = BoolGetDatum(!cf_pass.stamped);
	values[8] = TimestampTzGetDatum(cf_pass.claimed_at);
	cf_exec(&plan,
			"WITH w AS ("
			"  UPDATE chrono_forge.workflows SET state = $7::chrono_forge.workflow_state,"
			"   completed_at = CASE WHEN $7 = 'completed' THEN $3 ELSE completed_at END,"
			"   started_at = coalesce(started_at, $9),"
			"   locked_by = NULL, locked_at = NULL, attempt = 0, retry_counts = '{}',"
			"   context = CASE WHEN $4 THEN $5 ELSE context END, updated_at = $3"
			"  WHERE id = $1 AND (locked_by = $2 OR $8) RETURNING id),"
			" l AS (INSERT INTO chrono_forge.execution_logs"
			"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at)"
			"  SELECT id, '$workflow_completion$', 'completed', 1, $3, $3, $3 FROM w"
			"  WHERE $7 = 'completed' ON CONFLICT (workflow_id, step_name) DO NOTHING),"
			" d AS (DELETE FROM chrono_forge.wakeups k USING w WHERE k.workflow_id = w.id)"
			" SELECT (SELECT count(*) FROM w), NULL::timestamptz",
			9, (Oid[]) {INT8OID, TEXTOID, TIMESTAMPTZOID, BOOLOID, JSONBOID, INT8ARRAYOID, TEXTOID,
			BOOLOID, TIMESTAMPTZOID},
			values, nulls, false, 0);
	return finish_row_owned();
}

/*
 * End the run failed: check the lock before writing the failure, then log
 * the error and mark the run with it.  values[0..5] and nulls are
 * finish_pass()'s.  True if the pass still owned the run.
 */
static bool
finish_failed(Datum *values, char *nulls, int attempt, ErrorData *edata, TimestampTz now)
{
	static SPIPlanPtr failure_plan = NULL;
	static SPIPlanPtr marker_plan = NULL;
	int64		error_id;
	Datum		mvalues[3];

	values[6] = Int32GetDatum(attempt);
	cf_exec(&failure_plan,
			"UPDATE chrono_forge.workflows SET state = 'failed', locked_by = NULL, locked_at = NULL,"
			" attempt = $7, context = CASE WHEN $4 THEN $5 ELSE context END, updated_at = $3"
			" WHERE id = $1 AND locked_by = $2"
			" RETURNING id, NULL::timestamptz",
			7, (Oid[]) {INT8OID, TEXTOID, TIMESTAMPTZOID, BOOLOID, JSONBOID, INT8ARRAYOID, INT4OID},
			values, nulls, false, 0);
	if (SPI_processed != 1)
		return false;
	error_id = cf_log_error(cf_pass.workflow_id, NULL, attempt, edata, cf_pass.context);
	mvalues[0] = Int64GetDatum(cf_pass.workflow_id);
	mvalues[1] = Int64GetDatum(error_id);
	mvalues[2] = TimestampTzGetDatum(now);
	cf_exec(&marker_plan,
			"WITH l AS (INSERT INTO chrono_forge.execution_logs"
			"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, metadata)"
			"  VALUES ($1, '$workflow_failure$' || $2, 'completed', 1, $3, $3, $3,"
			"   jsonb_build_object('error_log_id', $2))),"
			" d AS (DELETE FROM chrono_forge.wakeups WHERE workflow_id = $1)"
			" SELECT 1::bigint, NULL::timestamptz",
			3, (Oid[]) {INT8OID, INT8OID, TIMESTAMPTZOID}, mvalues, NULL, false, 0);
	return finish_row_owned();
}

/* A retry: remember the workflow-level failure itself, and the counts. */
static void
record_retried_failure(ErrorData *edata, int attempt, Jsonb *counts)
{
	static SPIPlanPtr plan = NULL;

	cf_log_error(cf_pass.workflow_id, NULL, attempt, edata, cf_pass.context);
	cf_exec(&plan,
			"UPDATE chrono_forge.workflows SET retry_counts = $2 WHERE id = $1",
			2, (Oid[]) {INT8OID, JSONBOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), JsonbPGetDatum(counts)},
			NULL, false, 0);
}

/*
 * End the pass in the current transaction (the caller commits).  Every
 * branch first proves the lock is still ours; if it is not, the pass ends
 * quietly and leaves the new owner alone.
 */
static void
finish_pass(FinishKind kind, ErrorData *edata, TimestampTz retry_at,
			int attempt, Jsonb *retry_counts)
{
	Datum		values[9];
	char		nulls[10] = "         ";
	CfInternal	st;
	TimestampTz now = cf_clock_now();
	Jsonb	   *counts = retry_counts ? retry_counts : pass_retry_counts;
	bool		owned;

	/* A child completed in its first pass: its run is written once. */
	if (cf_pass.run_unwritten)
	{
		cf_write_taken_run_as(kind == FINISH_COMPLETE);
		if (kind == FINISH_COMPLETE)
			return;
	}

	/* $1..$6 of every branch's statement. */
	values[0] = Int64GetDatum(cf_pass.workflow_id);
	values[1] = CStringGetTextDatum(cf_pass.lock_token);
	values[2] = TimestampTzGetDatum(now);
	values[3] = BoolGetDatum(cf_pass.context_dirty);
	values[4] = JsonbPGetDatum(cf_pass.context);
	values[5] = claimed_wakeups;
	if (claimed_wakeups == (Datum) 0)
		nulls[5] = 'n';

	cf_internal_begin(&st);
	if (kind == FINISH_RELEASE || kind == FINISH_RETRY)
		owned = finish_release(kind, values, nulls, retry_at, attempt);
	else if (kind == FINISH_COMPLETE || kind == FINISH_STALL)
		owned = finish_terminal(kind, values, nulls);
	else
		owned = finish_failed(values, nulls, attempt, edata, now);

	if (!owned)
	{
		cf_internal_end(&st);
		ereport(LOG,
				(errmsg("chrono_forge: pass of workflow run %lld lost its lock; it ends without writing",
						(long long) cf_pass.workflow_id)));
		return;
	}
	if (kind == FINISH_RETRY)
		record_retried_failure(edata, attempt, counts);
	cf_internal_end(&st);
}

/* ---------------------------------------------------------------------
 * Running the body
 * ---------------------------------------------------------------------
 */

static void
call_workflow_procedure(void)
{
	SPIExecuteOptions options;
	ParamListInfo params;
	char	   *sql = psprintf("CALL %s($1)", cf_pass.procedure);
	int			rc;

	params = makeParamList(1);
	params->params[0].value = JsonbPGetDatum(cf_pass.args);
	params->params[0].isnull = false;
	params->params[0].pflags = PARAM_FLAG_CONST;
	params->params[0].ptype = JSONBOID;

	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = false;
	options.allow_nonatomic = true;

	rc = SPI_execute_extended(sql, &options);
	if (rc < 0)
		elog(ERROR, "could not run workflow procedure %s: %s",
			 cf_pass.procedure, SPI_result_code_string(rc));
}

/*
 * Where drain() stands in the caller's SPI stack.  run_pending() may be
 * CALLed from a DO block or a procedure (a pg_cron job, a test's loop):
 * their PL/pgSQL connections lie below drain()'s, and an abort pops every
 * connection down to the first one marked as ending the transaction
 * itself, so only SPI_rollback() on drain()'s own connection keeps the
 * caller's.  drain() connects from spi_home, a context nothing else is
 * ever current in: after an error, SPI_finish() pops what the failed code
 * left above it until it returns to spi_home.
 */
static MemoryContext spi_home = NULL;
static MemoryContext spi_proc_cxt = NULL;	/* drain()'s connection's */
static bool drain_nested = false;	/* below a PL's SPI connection */
static List *caller_portals = NIL;	/* names, in spi_home */

static void
drain_connect(void)
{
	MemoryContextSwitchTo(spi_home);
	cf_spi_connect();
	spi_proc_cxt = CurrentMemoryContext;
}

/*
 * The caller's cursor loop (FOR r IN SELECT ... LOOP CALL run_pending())
 * must survive an aborted pass: hold its cursor now, as the pass's first
 * COMMIT would (a loop over a query that writes is refused here, as it
 * would be there, with 2D000).  Their names tell them apart from cursors
 * a failed body left held (drop_body_portals()).
 */
static void
hold_caller_portals(void)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;

	HoldPinnedPortals();
	caller_portals = NIL;
	if (!drain_nested)
		return;
	cf_internal_begin(&st);
	cf_exec(&plan, "SELECT name FROM pg_catalog.pg_cursors", 0, NULL, NULL, NULL, true, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		Portal		portal = GetPortalByName(name);

		if (PortalIsValid(portal) && portal->portalPinned)
		{
			MemoryContext old = MemoryContextSwitchTo(spi_home);

			caller_portals = lappend(caller_portals, pstrdup(name));
			MemoryContextSwitchTo(old);
		}
	}
	cf_internal_end(&st);
}

static bool
is_caller_portal(const char *name)
{
	ListCell   *lc;

	foreach(lc, caller_portals)
		if (strcmp((char *) lfirst(lc), name) == 0)
			return true;
	return false;
}

/*
 * After the abort: drop the cursors a failed body left held and pinned
 * (a loop around a primitive, held by the primitive's commit), as the
 * main loop does after an error.  None but the caller's are anyone's now.
 */
static void
drop_body_portals(void)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	List	   *names = NIL;
	ListCell   *lc;

	if (!drain_nested)
	{
		PortalErrorCleanup();	/* no caller's cursor: every held one is the pass's */
		return;
	}
	cf_internal_begin(&st);
	cf_exec(&plan, "SELECT name FROM pg_catalog.pg_cursors", 0, NULL, NULL, NULL, true, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
		names = lappend(names, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	cf_internal_end(&st);
	foreach(lc, names)
	{
		Portal		portal = GetPortalByName((char *) lfirst(lc));

		if (PortalIsValid(portal) && portal->autoHeld && !is_caller_portal(portal->name))
		{
			portal->portalPinned = false;
			PortalDrop(portal, false);
		}
	}
}

/*
 * After an error escaped the body, throw the failed transaction away and
 * start a fresh one, as ROLLBACK inside a procedure does, on drain()'s
 * connection: the caller's SPI stack and cursors stay.  Subtransactions
 * the failed code left open go first, then the connections it left.
 * SPI_rollback() holds pinned cursors first; one the failed code left
 * pinned may refuse (its query failed, or writes): the rollback is done
 * all the same, and that error is not the pass's.
 */
static void
abort_and_restart(MemoryContext proc_cxt)
{
	while (IsSubTransaction())
		RollbackAndReleaseCurrentSubTransaction();
	while (SPI_finish() == SPI_OK_FINISH && CurrentMemoryContext != spi_home)
		;
	drain_connect();
	PG_TRY();
	{
		SPI_rollback();
	}
	PG_CATCH();
	{
		FlushErrorState();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(spi_proc_cxt);
	drop_body_portals();
	if (cf_batch.passes > 0)
		ereport(DEBUG1,
				(errmsg("chrono_forge: %d passes awaiting their shared commit rolled back; their runs are due again",
						cf_batch.passes)));
	cf_batch.passes = 0;
	cf_batch.n_nudges = cf_batch.nudges_committed;
}

/*
 * The abort also undid the claim if the pass had not committed yet: take
 * the lock again, unless another pass got the run meanwhile.
 */
static bool
relock_after_abort(void)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	TimestampTz now = cf_clock_now();

	if (cf_pass.committed)
		return true;
	if (cf_pass.spawn_batch_id != 0)
		return retake_spawned_child();
	cf_internal_begin(&st);
	cf_exec(&plan,
			"UPDATE chrono_forge.workflows SET locked_by = $2, locked_at = $3, state = 'running',"
			" started_at = coalesce(started_at, $3), updated_at = $3"
			" WHERE id = $1 AND (state = 'idle' OR (state = 'running' AND locked_at < $3 - $4))",
			4, (Oid[]) {INT8OID, TEXTOID, TIMESTAMPTZOID, INTERVALOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(cf_pass.lock_token),
			TimestampTzGetDatum(now), IntervalPGetDatum(cf_max_duration_interval())},
			NULL, false, 0);
	cf_internal_end(&st);
	cf_pass.stamped = (SPI_processed == 1);
	return cf_pass.stamped;
}

/*
 * Give the run back, due again at once (`reason` names the wake-up), for
 * another worker or later.  Two workers that claimed runs of one owner at
 * the same moment may put it over its share: the later one gives its
 * claim back before running anything, unless its claim waived the share
 * (claim_and_lock()).  A pass the launcher preempted (the owner took more
 * than its share while no other owner's work was due, and now some is)
 * gives its run back after its transaction rolled back; its committed
 * steps stay, and no attempt is counted.
 */
static void
give_back_claim(const char *reason)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	TimestampTz now = cf_clock_now();

	if (!cf_pass.stamped)
		cf_stamp_claim();
	cf_internal_begin(&st);
	cf_exec(&plan,
			"UPDATE chrono_forge.workflows SET state = 'idle', locked_by = NULL,"
			" locked_at = NULL WHERE id = $1 AND locked_by = $2",
			2, (Oid[]) {INT8OID, TEXTOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(cf_pass.lock_token)},
			NULL, false, 0);
	if (SPI_processed == 1)
		cf_wakeup_add(cf_pass.workflow_id, now, reason, CF_WAKEUP_ALWAYS);
	cf_internal_end(&st);
	SPI_commit();
	cf_batch_committed();
}

/*
 * cancel() asked for the run of this pass (which had stopped): end it
 * cancelled, in a transaction of its own, unless another pass holds the
 * run by now (its own checks end it then).
 */
static void
finish_cancelled(void)
{
	(void) cf_apply_cancel_requests(cf_pass.workflow_id, false);
	SPI_commit();
	cf_batch_committed();
	ereport(LOG,
			(errmsg("chrono_forge: pass of workflow run %lld stopped: the run was cancelled",
					(long long) cf_pass.workflow_id)));
}

static bool
error_is_interrupt(ErrorData *edata)
{
	return edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN;
}

/* The workflow-level policy after an error escaped the body. */
static void
finish_after_body_error(ErrorData *edata)
{
	Jsonb	   *policy = cf_policy_for_workflow(cf_pass.procedure);
	CfRetryDecision d;
	int			attempt = (int) pass_attempt + 1;
	Jsonb	   *counts = pass_retry_counts;

	if (policy == NULL)
		policy = cf_policy_builtin("workflow");
	d = cf_policy_decide(policy, edata->sqlerrcode, attempt, pass_retry_counts);
	if (d.budget_key != NULL)
	{
		char	   *text = psprintf("{\"%s\": %d}", d.budget_key, d.budget_count);

		counts = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
													JsonbPGetDatum(pass_retry_counts),
													DirectFunctionCall1(jsonb_in, CStringGetDatum(text))));
	}
	if (d.retry)
		finish_pass(FINISH_RETRY, edata,
					TimestampTzPlusMilliseconds(cf_clock_now(), (int64) (d.delay_s * 1000)),
					attempt, counts);
	else
		finish_pass(FINISH_FAIL, edata, 0, attempt, counts);
}

/*
 * May the pass that just completed leave its commit to a later pass of
 * the same worker?  Not if it committed before (its claim is visible), or
 * outside a worker.  A child's nudge of its parent waits for the commit.
 */
static bool
batch_pass(void)
{
	TimestampTz now;

	if (cf_worker_slot < 0 || cf_pass.committed ||
		cf_batch.passes + 1 >= cf_commit_batch)
		return false;
	if (cf_batch.suspended > 0)
	{
		cf_batch.suspended--;
		return false;
	}
	now = GetCurrentTimestamp();
	if (cf_batch.passes == 0)
	{
		cf_batch.started = now;
		cf_batch.owner = cf_pass.owner;
	}
	else if (cf_pass.owner != cf_batch.owner ||
			 TimestampDifferenceExceeds(cf_batch.started, now, cf_commit_batch_window_ms))
		return false;
	cf_batch.passes++;
	cf_batch.nudges[cf_batch.n_nudges] = cf_branch_take_nudge();
	if (cf_batch.nudges[cf_batch.n_nudges] != 0)
		cf_batch.n_nudges++;
	return true;
}

/* Nudge the parents of batched children whose completions committed. */
static void
run_committed_nudges(void)
{
	for (int i = 0; i < cf_batch.nudges_committed; i++)
		cf_branch_nudge(cf_batch.nudges[i]);
	memmove(cf_batch.nudges, cf_batch.nudges + cf_batch.nudges_committed,
			sizeof(int64) * (cf_batch.n_nudges - cf_batch.nudges_committed));
	cf_batch.n_nudges -= cf_batch.nudges_committed;
	cf_batch.nudges_committed = 0;
}

/*
 * Commit the passes waiting for a shared commit.  If the commit itself
 * fails (a deferred constraint of one of their steps), all of them roll
 * back and are due again; the next passes commit alone, so that the one
 * at fault fails by itself, as its own pass's error.
 */
static void
commit_batch(MemoryContext proc_cxt)
{
	int			n = cf_batch.passes;

	PG_TRY();
	{
		SPI_commit();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(proc_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		abort_and_restart(proc_cxt);
		ereport(LOG,
				(errmsg("chrono_forge: the shared commit of %d passes failed: %s", n, edata->message),
				 errdetail("Their runs are due again; the next passes commit one by one.")));
		FreeErrorData(edata);
		cf_batch.suspended = cf_commit_batch;
	}
	PG_END_TRY();
	cf_batch_committed();			/* no nudge left if the commit failed */
	run_committed_nudges();
}

/*
 * Did the error that escaped the body take a completed step with it?  A
 * step's commit waits for the next primitive or the pass's end, so an
 * error in the body's own code in between rolls it back.
 */
static bool
step_lost(ErrorData *edata)
{
	return cf_pass.commit_pending && !cf_pass.eager &&
		cf_pass.outcome == CF_OUTCOME_NONE && !cf_pass_stop_cancel &&
		edata->sqlerrcode != ERRCODE_CF_LOCK_LOST &&
		edata->sqlerrcode != ERRCODE_CF_PASS_TIMEOUT && !error_is_interrupt(edata);
}

/*
 * After step_lost(): run the pass again at once, this time committing each
 * step as it completes, so that the error meets the same committed steps as
 * if no commit had waited (the lost step runs once more; its first run left
 * nothing behind).  The pass keeps its claim and its lock; everything else
 * it knew (context, replay cache, open branches) is read again or dropped
 * with its memory.  False if the run could not be locked again.
 */
static bool
restart_pass_eagerly(void)
{
	static SPIPlanPtr plan = NULL;
	CfPass		old = cf_pass;
	CfInternal	st;
	bool		isnull;

	if (!relock_after_abort())
		return false;
	cf_pass.cxt = AllocSetContextCreate(TopMemoryContext, "chrono_forge pass",
										ALLOCSET_DEFAULT_SIZES);
	cf_pass.workflow = MemoryContextStrdup(cf_pass.cxt, old.workflow);
	cf_pass.key = MemoryContextStrdup(cf_pass.cxt, old.key);
	cf_pass.procedure = MemoryContextStrdup(cf_pass.cxt, old.procedure);
	cf_pass.lock_token = MemoryContextStrdup(cf_pass.cxt, old.lock_token);
	{
		MemoryContext prev = MemoryContextSwitchTo(cf_pass.cxt);

		cf_pass.args = (Jsonb *) PG_DETOAST_DATUM_COPY(JsonbPGetDatum(old.args));
		pass_retry_counts = (Jsonb *) PG_DETOAST_DATUM_COPY(JsonbPGetDatum(pass_retry_counts));
		if (claimed_wakeups != (Datum) 0)
			claimed_wakeups = PointerGetDatum(PG_DETOAST_DATUM_COPY(claimed_wakeups));
		MemoryContextSwitchTo(prev);
	}
	MemoryContextDelete(old.cxt);
	cf_pass.has_continuation = false;
	cf_pass.continuation_reason = NULL;
	cf_pass.outcome = CF_OUTCOME_NONE;
	cf_pass.commit_pending = false;
	cf_pass.context_dirty = false;
	cf_pass.eager = true;

	cf_internal_begin(&st);
	cf_exec(&plan, "SELECT context FROM chrono_forge.workflows WHERE id = $1",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(cf_pass.workflow_id)},
			NULL, true, 1);
	if (SPI_processed != 1)
		elog(ERROR, "workflow run %lld vanished under its lock", (long long) cf_pass.workflow_id);
	{
		MemoryContext prev = MemoryContextSwitchTo(cf_pass.cxt);

		cf_pass.context = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 1, &isnull));
		MemoryContextSwitchTo(prev);
	}
	cf_internal_end(&st);
	cf_replay_reset();
	cf_replay_load();
	return true;
}

/*
 * After an error escaped the body: was it a stop of ours?  A stop asked
 * by cancel() ends the run cancelled (cf_pass_stop_cancel); one by the
 * max_duration timer is recorded as CF021 and goes by the workflow retry
 * policy.  Any other query cancel is an operator's or a shutdown's.
 */
static ErrorData *
classify_stop(ErrorData *edata)
{
	if (cf_pass_cancel_fired())
		cf_pass_stop_cancel = true;
	else if (cf_pass_preempt_fired() && !cf_pass_timer_fired() &&
			 (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			  edata->sqlerrcode == ERRCODE_CF_PASS_PREEMPTED))
		cf_pass_stop_preempt = true;
	else if (!cf_pass_stop_cancel && cf_pass_timer_fired() &&
			 (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			  edata->sqlerrcode == ERRCODE_CF_PASS_TIMEOUT))
	{
		MemoryContext old = MemoryContextSwitchTo(cf_pass.cxt);

		edata = cf_pass_timeout_error(edata, cf_pass.workflow_id);
		MemoryContextSwitchTo(old);
		ereport(LOG,
				(errmsg("chrono_forge: %s", edata->message)));
	}
	return edata;
}

/* The pass is over: this backend's slots no longer name it. */
static void
end_pass_slot(void)
{
	cf_pass_interrupts_end();
	cf_pass_slot_set(0);
	if (cf_worker_slot >= 0)
	{
		cf_worker_set_current_run(cf_worker_slot, 0);
		cf_worker_clear_owner(cf_worker_slot);
	}
}

/* A fresh pass state, its memory, nothing claimed yet. */
static void
begin_pass(void)
{
	memset(&cf_pass, 0, sizeof(cf_pass));
	cf_pass.cxt = AllocSetContextCreate(TopMemoryContext, "chrono_forge pass",
										ALLOCSET_DEFAULT_SIZES);
	cf_replay_reset();
	claimed_wakeups = (Datum) 0;
	cf_pass_stop_cancel = false;
	cf_pass_stop_preempt = false;
	cf_pass_poison = NULL;
}

static void
discard_pass(void)
{
	MemoryContextDelete(cf_pass.cxt);
	memset(&cf_pass, 0, sizeof(cf_pass));
}

/*
 * The claimed run is this backend's now: its slots name it.  False if the
 * worker, over its share while others' work is due, gave the claim back.
 */
static bool
occupy_slots(void)
{
	cf_pass_slot_set(cf_pass.workflow_id);
	if (cf_worker_slot < 0)
		return true;
	cf_worker_set_current_run(cf_worker_slot, cf_pass.workflow_id);
	if (!cf_worker_publish_owner(cf_worker_slot, cf_pass.owner, cf_worker_share_effective()))
		return true;
	if (!share_waived)
	{
		give_back_claim("share");
		end_pass_slot();
		return false;
	}
	/* Over its share: the launcher watches for others' work. */
	if (cf_share_watch(true))
		cf_wake_launcher();
	return true;
}

/*
 * Run the body as the owner, then finish the pass completed and commit;
 * again at once if the pass lost a step to a concurrent one and may
 * restart.  Returns the error that stopped the body (NULL: completed);
 * its transaction is aborted and a new one open then.
 */
static ErrorData *
run_body(MemoryContext proc_cxt, Oid save_userid, int save_sec)
{
	ErrorData  *volatile edata = NULL;

	for (;;)
	{
		cf_pass.active = true;
		PG_TRY();
		{
			cf_pass_timer_resume();
			cf_enter_owner_identity();
			call_workflow_procedure();
			if (cf_pass_poison != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_CF_NOT_IN_PASS),
						 errmsg("%s", cf_pass_poison),
						 errdetail("The workflow caught this error and went on; the run fails all the same.")));
			cf_branch_before_complete();	/* fan-out: unmerged branches */
			cf_pass_timer_disarm();
			cf_check_pass_stop();
			SetUserIdAndSecContext(save_userid, save_sec);
			cf_pass.active = false;
			finish_pass(FINISH_COMPLETE, NULL, 0, 0, NULL);
			/* The owner's deferred triggers are its code: bounded alike. */
			cf_pass_timer_resume();
			cf_fire_deferred_as_owner();
			cf_pass_timer_disarm();
			cf_check_pass_stop();
			if (!batch_pass())
			{
				SPI_commit();
				cf_batch_committed();
			}
		}
		PG_CATCH();
		{
			cf_pass_timer_disarm();
			MemoryContextSwitchTo(cf_pass.cxt);
			edata = CopyErrorData();
			FlushErrorState();
			cf_pass.active = false;
			abort_and_restart(proc_cxt);
			SetUserIdAndSecContext(save_userid, save_sec);
			edata = classify_stop(edata);
			if (cf_pass_poison != NULL && !cf_pass_stop_cancel && !error_is_interrupt(edata) &&
				edata->sqlerrcode != ERRCODE_CF_LOCK_LOST &&
				edata->sqlerrcode != ERRCODE_CF_NOT_IN_PASS)
			{
				edata = cf_poison_error();
				cf_pass.outcome = CF_OUTCOME_FAIL_NOW;
			}
		}
		PG_END_TRY();
		if (edata == NULL || !step_lost(edata) || !restart_pass_eagerly())
			return edata;
		edata = NULL;			/* it went with the old pass's memory */
	}
}

/*
 * The body stopped with edata (its transaction aborted): end the pass as
 * the stop says, cancelled, preempted, or by its outcome, and commit.  A
 * cancel or shutdown of this backend is rethrown once the run is safe.
 */
static void
finish_stopped_pass(ErrorData *edata, MemoryContext proc_cxt)
{
	if (cf_pass_stop_cancel)
	{
		finish_cancelled();
		return;
	}
	if (cf_pass_stop_preempt)
	{
		if (relock_after_abort())
			give_back_claim("preempted");
		ereport(LOG,
				(errmsg("chrono_forge: pass of workflow run %lld was stopped to give its worker to another owner's work; the run is due again",
						(long long) cf_pass.workflow_id)));
		return;
	}
	if (edata->sqlerrcode == ERRCODE_CF_LOCK_LOST || !relock_after_abort())
		ereport(LOG,
				(errmsg("chrono_forge: pass of workflow run %lld ended without writing: %s",
						(long long) cf_pass.workflow_id, edata->message)));
	else if (cf_pass.outcome == CF_OUTCOME_HALT)
		finish_pass(FINISH_RELEASE, NULL, 0, 0, NULL);
	else if (cf_pass.outcome == CF_OUTCOME_STALL)
		finish_pass(FINISH_STALL, NULL, 0, 0, NULL);
	else if (cf_pass.outcome == CF_OUTCOME_FAIL_NOW)
		finish_pass(FINISH_FAIL, edata, 0, (int) pass_attempt + 1, NULL);
	else
		finish_after_body_error(edata);
	SPI_commit();
	cf_batch_committed();

	/*
	 * A cancel or shutdown stops the caller too, once the run is safe.
	 * The pass memory goes with the caller's context then.
	 */
	if (error_is_interrupt(edata))
	{
		cf_pass_interrupts_end();
		MemoryContextSetParent(cf_pass.cxt, proc_cxt);
		memset(&cf_pass, 0, sizeof(cf_pass));
		cf_replay_reset();
		ReThrowError(edata);
	}
}

/*
 * One pass.  Returns false if nothing was due.  Precondition: inside a
 * transaction, connected to SPI non-atomically; on return the pass's last
 * transaction has committed and a new one is open.
 */
static bool
run_one_pass(Oid only_owner, MemoryContext proc_cxt)
{
	Oid			save_userid;
	int			save_sec;
	ErrorData  *edata;

	begin_pass();
	if (!claim_and_lock(only_owner))
	{
		discard_pass();
		return false;
	}
	if (!occupy_slots())
	{
		discard_pass();
		return true;
	}
	cf_replay_load();

	GetUserIdAndSecContext(&save_userid, &save_sec);
	cf_pass.outer_userid = save_userid;
	cf_pass.outer_sec_context = save_sec;
	cf_pass_timer_arm(cf_pass.workflow_id);
	edata = run_body(proc_cxt, save_userid, save_sec);
	if (edata != NULL)
		finish_stopped_pass(edata, proc_cxt);

	cf_branch_after_pass(edata == NULL);	/* fan-out: nudge the parent */
	end_pass_slot();
	MemoryContextDelete(cf_pass.cxt);
	memset(&cf_pass, 0, sizeof(cf_pass));
	cf_replay_reset();
	return true;
}

static void
require_top_level_call(FunctionCallInfo fcinfo, const char *what)
{
	CallContext *cc = (CallContext *) fcinfo->context;

	/* From a body or a step: a programming error, the run fails. */
	if (cf_pass.active)
	{
		cf_poison_pass(psprintf("%s cannot be called from inside a workflow", what));
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_IN_PASS),
				 errmsg("%s cannot be called from inside a workflow", what),
				 errdetail("Passes do not nest; the run fails.")));
	}
	if (cc == NULL || !IsA(cc, CallContext) || cc->atomic || IsSubTransaction())
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_IN_PASS),
				 errmsg("%s must be called with CALL outside a transaction block", what),
				 errdetail("Each pass commits.")));
}

/*
 * A worker's next pass may be another owner's: forget everything this one
 * left in the session, as DISCARD ALL would (which cannot run inside the
 * worker's transaction): settings, LISTEN, cursors (a holdable cursor
 * could be read by the next owner), prepared statements, session advisory
 * locks, temporary objects (a temporary view named like another owner's
 * table would stand in for it).  Plans stay: each is checked against the
 * role and search path it was made for.  run_pending() runs only the
 * caller's own runs, in the caller's session: it leaves the session alone.
 */
static void
reset_session_after_pass(void)
{
	Oid			temp_namespace;
	Oid			temp_toast_namespace;

	ResetAllOptions();
	Async_UnlistenAll();
	PortalHashTableDeleteAll();	/* not the active one: worker_drain()'s */
	DropAllPreparedStatements();
	LockReleaseAll(USER_LOCKMETHOD, true);
	GetTempNamespaceState(&temp_namespace, &temp_toast_namespace);
	if (OidIsValid(temp_namespace))
		ResetTempTableNamespace();
}

static int
drain(int max_passes, Oid only_owner)
{
	MemoryContext proc_cxt = CurrentMemoryContext;
	int			passes = 0;

	drain_nested = SPI_inside_nonatomic_context();
	spi_home = AllocSetContextCreate(proc_cxt, "chrono_forge drain", ALLOCSET_SMALL_SIZES);
	drain_connect();
	hold_caller_portals();
	while (max_passes <= 0 || passes < max_passes)
	{
		CHECK_FOR_INTERRUPTS();
		if (!run_one_pass(cf_batch.passes > 0 ? cf_batch.owner : only_owner, proc_cxt))
		{
			/* Nothing more of the batch's owner: commit, then any owner. */
			if (cf_batch.passes > 0)
			{
				commit_batch(proc_cxt);
				continue;
			}
			/* run_pending() also runs due merge polls (the launcher's, else). */
			if (cf_worker_slot < 0 && cf_merge_run_due_polls(only_owner) > 0)
				continue;
			break;
		}
		passes++;
		if (cf_batch.nudges_committed > 0 && cf_batch.passes == 0)
			run_committed_nudges();
		if (cf_worker_slot >= 0)
			reset_session_after_pass();
		cf_replan_if_stale();
	}
	if (cf_batch.passes > 0)
		commit_batch(proc_cxt);
	SPI_finish();
	MemoryContextSwitchTo(proc_cxt);
	MemoryContextDelete(spi_home);
	spi_home = NULL;
	caller_portals = NIL;
	return passes;
}

/*
 * CALL chrono_forge.run_pending(max_passes): the synchronous twin of the
 * workers.  It runs only the caller's own runs, as the caller: it never
 * acts as another role.
 */
Datum
cf_run_pending(PG_FUNCTION_ARGS)
{
	int			max_passes = PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0);

	require_top_level_call(fcinfo, "chrono_forge.run_pending()");
	if (!PG_ARGISNULL(0) && max_passes < 1)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("max_passes must be at least 1 or NULL")));
	cf_pass_cancel_signal_init();	/* cancel() stops this session's passes too */
	(void) drain(max_passes, GetUserId());
	PG_RETURN_VOID();
}

/* CALL chrono_forge.worker_drain(n): the executor workers' entry point. */
Datum
cf_worker_drain(PG_FUNCTION_ARGS)
{
	if (cf_worker_slot < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("chrono_forge.worker_drain() is reserved for chrono_forge workers")));
	require_top_level_call(fcinfo, "chrono_forge.worker_drain()");
	cf_last_drain_passes = drain(PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0), InvalidOid);
	PG_RETURN_VOID();
}
