/*-------------------------------------------------------------------------
 *
 * probes.c
 *	  How far a branch's children are: branch_sealed, branch_pending,
 *	  and the counts the merge poller and branch_done (merge.c, which
 *	  knows the merges' rules) read.
 *
 * Owns the index scans over spawn_batches and the children index that
 * count a branch's children not started, running or blocked.  Read only:
 * must never write, nor tell a caller about another role's branch (the
 * answer is the same as for an id that is no branch log).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "internal.h"
#include "probes.h"

PG_FUNCTION_INFO_V1(cf_branch_sealed);
PG_FUNCTION_INFO_V1(cf_branch_pending);

/*
 * Children of a branch log still in spawn_batches (never started), at
 * least cap of them if there are (cap <= 0: all), by
 * spawn_batches_branch_log_id_idx; 0 before 0.4.0.  Read from the range's
 * end: rows go when their last child is taken, oldest first, and leave
 * dead index entries at the range's start until a vacuum (as runs do
 * in workflows_children_idx, below).
 */
static int64
children_not_taken(int64 log_id, int64 cap, Snapshot snapshot)
{
	Oid			relid = cf_relation_oid("spawn_batches");
	Oid			idxid = cf_relation_oid("spawn_batches_branch_log_id_idx");
	Relation	rel;
	Relation	idx;
	TupleDesc	desc;
	AttrNumber	n_att;
	AttrNumber	taken_att;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	int64		n = 0;

	if (!OidIsValid(relid) || !OidIsValid(idxid))
		return 0;
	rel = table_open(relid, AccessShareLock);
	idx = index_open(idxid, AccessShareLock);
	desc = RelationGetDescr(rel);
	n_att = get_attnum(relid, "n");
	taken_att = get_attnum(relid, "taken");
	ScanKeyInit(&key, get_attnum(relid, "branch_log_id"), BTEqualStrategyNumber, F_INT8EQ,
				Int64GetDatum(log_id));
	scan = systable_beginscan_ordered(rel, idx, snapshot, 1, &key);
	while ((cap <= 0 || n < cap) &&
		   HeapTupleIsValid(tup = systable_getnext_ordered(scan, BackwardScanDirection)))
	{
		bool		isnull;

		n += DatumGetInt32(heap_getattr(tup, n_att, desc, &isnull)) -
			DatumGetInt32(heap_getattr(tup, taken_att, desc, &isnull));
	}
	systable_endscan_ordered(scan);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	return n;
}

/* Which children count_children() walks. */
typedef enum ChildWalk
{
	WALK_PENDING,				/* not completed: live and blocked */
	WALK_LIVE,					/* not started yet, idle, running */
	WALK_BLOCKED				/* failed, stalled, cancelled */
} ChildWalk;

/*
 * Count the children of a branch log in the walk's states, at most cap
 * (cap <= 0: all): those not started yet (spawn_batches; not for
 * WALK_BLOCKED), then the runs, walking workflows_children_idx by one
 * equality range per state, so completed children are never visited,
 * whatever the planner would think of the table's statistics.  Each range
 * is read from its end: a child leaves the idle range when it runs, in
 * about id order, and the dead index entries it leaves at the range's
 * start stay until a vacuum, so a forward probe for "any idle child?"
 * walked past every child run so far (O(n) per child's nudge, 10% of a
 * child's pass at 20,000 children).  Optionally counts the never-started
 * (not started yet, or idle with no started_at), running and blocked
 * ones.  Reads with a fresh snapshot: what committed before the call.
 * Engine use only (no row-level security): callers check ownership.
 */
static int64
count_children(int64 log_id, int64 cap, ChildWalk walk, int64 *never_started,
			   int64 *running, int64 *blocked)
{
	/* state_code of idle, running, then the blocked failed, stalled, cancelled, compensated */
	static const int16 states[] = {1, 2, 4, 5, 6, 7};
	int			first = walk == WALK_BLOCKED ? 2 : 0;
	int			last = walk == WALK_LIVE ? 2 : (int) lengthof(states);
	Oid			relid = cf_relation_oid("workflows");
	Oid			idxid = cf_relation_oid("workflows_children_idx");
	Relation	rel;
	Relation	idx;
	TupleDesc	desc;
	AttrNumber	parent_att;
	AttrNumber	state_att;
	AttrNumber	started_att;
	Snapshot	snapshot;
	int64		n = 0;

	if (!OidIsValid(relid) || !OidIsValid(idxid))
		elog(ERROR, "chrono_forge.workflows_children_idx is missing");
	if (running)
		*running = 0;
	if (blocked)
		*blocked = 0;
	rel = table_open(relid, AccessShareLock);
	idx = index_open(idxid, AccessShareLock);
	desc = RelationGetDescr(rel);
	parent_att = get_attnum(relid, "parent_execution_log_id");
	state_att = get_attnum(relid, "state_code");
	started_att = get_attnum(relid, "started_at");
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	if (walk != WALK_BLOCKED)
		n = children_not_taken(log_id, never_started ? 0 : cap, snapshot);
	if (never_started)
		*never_started = n;
	for (int i = first; i < last && (cap <= 0 || n < cap); i++)
	{
		ScanKeyData key[2];
		SysScanDesc scan;
		HeapTuple	tup;

		CHECK_FOR_INTERRUPTS();
		/* Heap attribute numbers: systable_beginscan maps them to the index. */
		ScanKeyInit(&key[0], parent_att, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(log_id));
		ScanKeyInit(&key[1], state_att, BTEqualStrategyNumber, F_INT2EQ, Int16GetDatum(states[i]));
		scan = systable_beginscan_ordered(rel, idx, snapshot, 2, key);
		while (HeapTupleIsValid(tup = systable_getnext_ordered(scan, BackwardScanDirection)))
		{
			n++;
			if (i == 0 && never_started)
			{
				bool		isnull;

				(void) heap_getattr(tup, started_att, desc, &isnull);
				if (isnull)
					(*never_started)++;
			}
			else if (i == 1 && running)
				(*running)++;
			else if (i >= 2 && blocked)
				(*blocked)++;
			if (cap > 0 && n >= cap)
				break;
		}
		systable_endscan_ordered(scan);
	}
	UnregisterSnapshot(snapshot);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	return (cap > 0 && n > cap) ? cap : n;
}

/* Children not completed (see count_children), at most cap. */
int64
cf_branch_children_pending(int64 log_id, int64 cap, int64 *never_started, int64 *running,
						   int64 *blocked)
{
	return count_children(log_id, cap, WALK_PENDING, never_started, running, blocked);
}

/* Children not started yet, idle or running, at most cap. */
/* Failed, stalled, cancelled and compensated children of a branch log (all of them). */
int64
cf_branch_children_blocked(int64 log_id)
{
	return count_children(log_id, 0, WALK_BLOCKED, NULL, NULL, NULL);
}

int64
cf_branch_children_live(int64 log_id, int64 cap)
{
	return count_children(log_id, cap, WALK_LIVE, NULL, NULL, NULL);
}

/* The branch's log is completed (seal_branch() ran)? */
bool
cf_branch_is_sealed(int64 log_id)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	bool		isnull;
	bool		sealed;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT state = 'completed' FROM chrono_forge.execution_logs WHERE id = $1",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(log_id)}, NULL, true, 1);
	sealed = SPI_processed == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	cf_internal_end(&st);
	return sealed;
}

/* Children not completed, counting at most cap. */
static int64
branch_pending_internal(int64 log_id, int32 cap)
{
	if (cap == 0)
		return 0;
	return cf_branch_children_pending(log_id, cap, NULL, NULL, NULL);
}

/*
 * The SQL probes: only the owner of the branch's run (or a member of that
 * role) may look.  Returns the log's state, or raises.
 */
char *
cf_probe_check(int64 log_id)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	Oid			caller = GetUserId();
	bool		isnull;
	Oid			owner;
	char	   *state;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT w.owner::oid, l.state::text FROM chrono_forge.execution_logs l"
			" JOIN chrono_forge.workflows w ON w.id = l.workflow_id"
			" WHERE l.id = $1 AND l.step_name LIKE 'branch$%'",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(log_id)}, NULL, true, 1);
	cf_internal_end(&st);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_CF_UNKNOWN_BRANCH),
				 errmsg("execution log %lld is not a branch", (long long) log_id)));
	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	/* Another role's branch answers as a log that is not a branch. */
	if (!has_privs_of_role(caller, owner))
		ereport(ERROR,
				(errcode(ERRCODE_CF_UNKNOWN_BRANCH),
				 errmsg("execution log %lld is not a branch", (long long) log_id)));
	return state;
}

Datum
cf_branch_sealed(PG_FUNCTION_ARGS)
{
	bool		sealed;

	SPI_connect();
	sealed = strcmp(cf_probe_check(PG_GETARG_INT64(0)), "completed") == 0;
	SPI_finish();
	PG_RETURN_BOOL(sealed);
}

Datum
cf_branch_pending(PG_FUNCTION_ARGS)
{
	int64		n;

	if (PG_GETARG_INT32(1) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("cap must not be negative")));
	SPI_connect();
	(void) cf_probe_check(PG_GETARG_INT64(0));
	n = branch_pending_internal(PG_GETARG_INT64(0), PG_GETARG_INT32(1));
	SPI_finish();
	PG_RETURN_INT64(n);
}
