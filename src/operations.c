/*-------------------------------------------------------------------------
 *
 * operations.c
 *	  Operator actions on runs: cancel (with or without its children), reap
 *	  one stranded run, force-unlock, retry every blocked child of a
 *	  branch; retention one committed batch at a time.
 *
 * Like control.c, each action takes the caller's identity before entering
 * the engine's, and acts only on runs the caller owns (is a member of the
 * owner), unless the caller is a member of chrono_forge_admin (access.c
 * answers both).  Every
 * check happens before anything is written.  Nothing here runs user code.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "access.h"
#include "citus.h"
#include "clock.h"
#include "compensation.h"
#include "internal.h"
#include "journal.h"
#include "operations.h"
#include "shmem.h"
#include "step.h"
#include "util.h"
#include "wakeups.h"

PG_FUNCTION_INFO_V1(cf_cancel);
PG_FUNCTION_INFO_V1(cf_reap);
PG_FUNCTION_INFO_V1(cf_force_unlock);
PG_FUNCTION_INFO_V1(cf_retry_blocked_children);
PG_FUNCTION_INFO_V1(cf_cleanup_in_batches);
PG_FUNCTION_INFO_V1(cf_repeat_ticks);

/*
 * The run and (with_children) its descendants, the whole tree as an
 * int8[]; its descendants alone in *children ((Datum) 0: none); in
 * *allowed, whether `caller` may act on every one of them (admin:
 * always).  Not read-only: a fresh snapshot each look.
 */
Datum
cf_run_tree(int64 run, bool with_children, bool admin, Oid caller, Datum *children,
			bool *allowed)
{
	static SPIPlanPtr plan = NULL;
	Datum		ids;
	bool		isnull;

	cf_exec(&plan,
			"WITH RECURSIVE t(id, owner, depth) AS ("
			"  SELECT id, owner::oid, 0 FROM chrono_forge.workflows WHERE id = $1"
			"  UNION ALL"
			"  SELECT c.id, c.owner::oid, t.depth + 1 FROM t"
			"   JOIN chrono_forge.execution_logs l ON l.workflow_id = t.id AND l.step_name LIKE 'branch$%'"
			"   JOIN chrono_forge.workflows c ON c.parent_execution_log_id = l.id"
			"  WHERE $2 AND t.depth < 100)"
			" SELECT array_agg(id ORDER BY id), array_agg(id ORDER BY id) FILTER (WHERE depth > 0),"
			"  bool_and($3 OR pg_has_role($4, owner, 'MEMBER')) FROM t",
			4, (Oid[]) {INT8OID, BOOLOID, BOOLOID, OIDOID},
			(Datum[]) {Int64GetDatum(run), BoolGetDatum(with_children),
			BoolGetDatum(admin), ObjectIdGetDatum(caller)},
			NULL, false, 0);
	ids = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	*children = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	*children = isnull ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(*children));
	*allowed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	return PointerGetDatum(PG_DETOAST_DATUM_COPY(ids));
}

/*
 * cancel()'s runs: the run and (with_children) its descendants, checked
 * before writing: all of them must be the caller's.
 */
static Datum
cancel_tree(CfRunRef *run, bool with_children, bool admin, Oid caller,
			const char *workflow, const char *key)
{
	Datum		children;
	bool		allowed;
	Datum		ids = cf_run_tree(run->id, with_children, admin, caller, &children, &allowed);

	if (!allowed)
		cf_not_your_runs("the children", workflow, key);
	return ids;
}

/* Drop the runs' children not started yet (spawn_batches); returns how many. */
int64
cf_drop_unstarted_children(Datum ids)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;

	cf_exec(&plan,
			"WITH d AS (DELETE FROM chrono_forge.spawn_batches b USING chrono_forge.execution_logs l"
			"  WHERE l.id = b.branch_log_id AND l.workflow_id = ANY ($1) RETURNING b.n - b.taken AS left_)"
			" SELECT coalesce(sum(left_), 0)::bigint FROM d",
			1, (Oid[]) {INT8ARRAYOID}, (Datum[]) {ids}, NULL, false, 0);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Runs no pass holds are cancelled here; the others (SKIP LOCKED) get a
 * cancel request.  After commit, the worker running a pass of any of them
 * (held, or running between two steps) is told to stop it.  Returns how
 * many runs were cancelled or requested to be.
 */
int
cf_cancel_runs(Datum ids, Datum reason, bool reason_null, Oid caller, int64 run_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		held;
	Datum		cancelled;
	Datum		running;
	bool		isnull;
	bool		no_cancelled;
	int			n;
	int			compensating;

	/* Runs with undo steps compensate first (0.12.0); the rest end now. */
	ids = cf_compensation_begin(ids, cf_compensation_why("cancel", reason_null ? NULL : TextDatumGetCString(reason),
												caller, run_id),
								&compensating, &running);
	cf_queue_cancel_signals(running);
	cf_exec(&plan,
			"WITH x AS (SELECT w.id, w.state AS was FROM chrono_forge.workflows w WHERE w.id = ANY ($1)"
			"  FOR NO KEY UPDATE SKIP LOCKED),"
			" w AS ("
			"  UPDATE chrono_forge.workflows w SET state = 'cancelled', locked_by = NULL,"
			"   locked_at = NULL, updated_at = $2"
			"  FROM x WHERE w.id = x.id AND w.state::text NOT IN ('completed', 'cancelled', 'compensated')"
			"  RETURNING w.id, x.was AS state),"
			" d AS (DELETE FROM chrono_forge.wakeups k USING w WHERE k.workflow_id = w.id),"
			" l AS (INSERT INTO chrono_forge.execution_logs"
			"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, metadata)"
			"  SELECT w.id, '$workflow_cancelled$', 'completed', 1, $2, $2, $2,"
			"   jsonb_build_object('reason', $3::text, 'requested_by', $4::regrole::text,"
			"    'cancelled_run', $5)"
			"  FROM w ON CONFLICT (workflow_id, step_name) DO NOTHING),"
			" q AS (INSERT INTO chrono_forge.cancel_requests"
			"  (workflow_id, reason, requested_by, cancelled_run, requested_at)"
			"  SELECT h.id, $3, $4, $5, $2 FROM chrono_forge.workflows h"
			"  WHERE h.id = ANY ($1) AND NOT h.id IN (SELECT id FROM x)"
			"   AND h.state::text NOT IN ('completed', 'cancelled', 'compensated')"
			"  ON CONFLICT (workflow_id) DO NOTHING RETURNING workflow_id)"
			" SELECT (SELECT count(*) FROM w) + (SELECT count(*) FROM q),"
			"  (SELECT array_agg(id) FROM (SELECT id FROM w WHERE w.state = 'running'"
			"   UNION ALL SELECT workflow_id FROM q) s), (SELECT array_agg(id) FROM w)",
			5, (Oid[]) {INT8ARRAYOID, TIMESTAMPTZOID, TEXTOID, OIDOID, INT8OID},
			(Datum[]) {ids, TimestampTzGetDatum(cf_clock_now()), reason,
			ObjectIdGetDatum(caller), Int64GetDatum(run_id)},
			reason_null ? "  n  " : NULL, false, 0);
	n = (int) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	cancelled = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &no_cancelled);
	held = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	cf_queue_cancel_signals(isnull ? (Datum) 0 : held);
	if (!no_cancelled)
		cf_journal_cancel_tasks(PointerGetDatum(PG_DETOAST_DATUM_COPY(cancelled)));
	return n + compensating;
}

/*
 * cancel(workflow, key, reason, with_children) -> runs cancelled.
 *
 * Every run not yet completed or cancelled (idle, running, stalled,
 * failed) becomes cancelled for good: its lock is cleared and its pending
 * wake-ups go, in one statement (its open tasks right after).  A pass in flight between two steps finds
 * its lock gone at its next step commit or at its end, and stops without
 * writing (the executor checks locked_by in the same transaction).  A run
 * whose row a pass holds (its claim has not committed yet, or a step is
 * committing) is not waited for: a row of cancel_requests records the
 * cancel durably, and after commit the worker running that pass is told
 * to stop it (pass_timer.c); the pass, or the launcher once no pass holds
 * the run, makes it cancelled, and no further step runs meanwhile (every
 * primitive looks for a request first).  No path schedules or claims a
 * cancelled run again.  With children, the
 * runs spawned by the run's branches (recursively) go too; all of them
 * must be the caller's.  Children not started yet are dropped from
 * spawn_batches and counted.
 */
Datum
cf_cancel(PG_FUNCTION_ARGS)
{
	char	   *workflow = cf_required_text(fcinfo, 0, "workflow");
	char	   *key = cf_required_text(fcinfo, 1, "key");
	Datum		reason = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	bool		with_children = PG_ARGISNULL(3) ? false : PG_GETARG_BOOL(3);
	Oid			caller = GetUserId();
	bool		admin = cf_is_admin(caller);
	CfInternal	st;
	CfRunRef	run;
	Datum		ids;
	int			n;
	int64		dropped = 0;

	cf_citus_check_key(key);
	SPI_connect();
	cf_internal_begin(&st);
	run = cf_find_own_run(caller, workflow, key, false);	/* never waits */
	ids = cancel_tree(&run, with_children, admin, caller, workflow, key);

	/*
	 * With children, the tree is looked at twice: their children not
	 * started yet are dropped in between, which waits for a pass taking
	 * one of them to commit, so the second look sees every child that
	 * became a run.
	 */
	if (with_children && cf_schema_at_least(CF_SCHEMA(0, 4, 0)))
	{
		dropped = cf_drop_unstarted_children(ids);
		if (dropped > 0)
			ids = cancel_tree(&run, with_children, admin, caller, workflow, key);
	}
	n = cf_cancel_runs(ids, reason, PG_ARGISNULL(2), caller, run.id);
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_INT32(n + (int) dropped);
}

/*
 * Make the caller's run (workflow, key) idle with its lock cleared, if it
 * is running; with a wake-up reason, also schedule a pass now.  True if
 * it was running.  Never waits for a pass: a run whose row a pass holds
 * right now (its claim or a step is committing) is not stale, and is left
 * alone with a notice (cancel() stops a pass).
 */
static bool
unlock_running(FunctionCallInfo fcinfo, const char *wakeup_reason)
{
	static SPIPlanPtr plan = NULL;
	char	   *workflow = cf_required_text(fcinfo, 0, "workflow");
	char	   *key = cf_required_text(fcinfo, 1, "key");
	Oid			caller = GetUserId();	/* before the engine's identity */
	CfInternal	st;
	CfRunRef	run;
	TimestampTz now = cf_clock_now();
	bool		unlocked = false;
	bool		held = false;
	bool		isnull;

	cf_citus_check_key(key);
	SPI_connect();
	cf_internal_begin(&st);
	run = cf_find_own_run(caller, workflow, key, false);
	if (strcmp(run.state, "running") == 0)
	{
		cf_exec(&plan,
				"WITH x AS (SELECT id FROM chrono_forge.workflows WHERE id = $1"
				"  FOR NO KEY UPDATE SKIP LOCKED),"
				" r AS (UPDATE chrono_forge.workflows w SET state = 'idle', locked_by = NULL,"
				"  locked_at = NULL, updated_at = $2 FROM x WHERE w.id = x.id AND w.state = 'running'"
				"  RETURNING w.id)"
				" SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM x)",
				2, (Oid[]) {INT8OID, TIMESTAMPTZOID},
				(Datum[]) {Int64GetDatum(run.id), TimestampTzGetDatum(now)}, NULL, false, 0);
		unlocked = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull)) == 1;
		held = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 2, &isnull)) == 0;
		if (unlocked && wakeup_reason)
			cf_wakeup_add(run.id, now, wakeup_reason, CF_WAKEUP_ALWAYS);
	}
	cf_internal_end(&st);
	SPI_finish();
	if (held)
		ereport(NOTICE,
				(errmsg("workflow run (%s, %s) is held by a pass in progress; left as it is", workflow, key),
				 errhint("cancel() stops a pass in progress.")));
	return unlocked;
}

/*
 * reap(workflow, key): re-drive one running run now, whatever its lock's
 * age (the operator judged it stranded): clear the lock, schedule a pass.
 * A pass still running under the old lock stops at its next commit.
 * False if the run is not running.
 */
Datum
cf_reap(PG_FUNCTION_ARGS)
{
	bool		reaped = unlock_running(fcinfo, "reaped");

	if (reaped)
		ereport(LOG,
				(errmsg("chrono_forge: workflow run (%s, %s) reaped by %s",
						text_to_cstring(PG_GETARG_TEXT_PP(0)), text_to_cstring(PG_GETARG_TEXT_PP(1)),
						GetUserNameFromId(GetUserId(), false))));
	PG_RETURN_BOOL(reaped);
}

/*
 * force_unlock(workflow, key): clear a running run's lock and make it
 * idle, scheduling nothing (the dashboard's "Force unlock"; wake() resumes
 * it).  False if the run is not running.
 */
Datum
cf_force_unlock(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(unlock_running(fcinfo, NULL));
}

/*
 * retry_blocked_children(workflow, key, branch) -> children retried.
 * Every failed or stalled child of branch$<branch>, and every cancelled
 * one unless the run itself is cancelled, is retried as retry() would: a
 * $workflow_retry$ marker (a cancelled child's cancel marker renamed
 * after its id), state idle, one pass scheduled.
 */
Datum
cf_retry_blocked_children(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr retry_plan = NULL;
	char	   *workflow = cf_required_text(fcinfo, 0, "workflow");
	char	   *key = cf_required_text(fcinfo, 1, "key");
	char	   *branch = cf_required_text(fcinfo, 2, "branch");
	Oid			caller = GetUserId();
	bool		admin = cf_is_admin(caller);
	CfInternal	st;
	CfRunRef	run;
	TimestampTz now = cf_clock_now();
	bool		isnull;
	Datum		log_id;
	int			n;
	bool		with_cancelled;

	cf_citus_check_key(key);
	SPI_connect();
	cf_internal_begin(&st);
	run = cf_find_own_run(caller, workflow, key, false);
	with_cancelled = strcmp(run.state, "cancelled") != 0;
	cf_exec(&find_plan,
			"SELECT l.id, (SELECT bool_and($3 OR pg_has_role($4, c.owner, 'MEMBER'))"
			"  FROM chrono_forge.workflows c WHERE c.parent_execution_log_id = l.id"
			"   AND (c.state IN ('failed', 'stalled') OR (c.state = 'cancelled' AND $5)))"
			" FROM chrono_forge.execution_logs l WHERE l.workflow_id = $1 AND l.step_name = 'branch$' || $2",
			5, (Oid[]) {INT8OID, TEXTOID, BOOLOID, OIDOID, BOOLOID},
			(Datum[]) {Int64GetDatum(run.id), CStringGetTextDatum(branch),
			BoolGetDatum(admin), ObjectIdGetDatum(caller), BoolGetDatum(with_cancelled)},
			NULL, true, 0);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_CF_UNKNOWN_BRANCH),
				 errmsg("workflow run (%s, %s) has no branch \"%s\"", workflow, key, branch)));
	log_id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	{
		Datum		ok = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

		if (!isnull && !DatumGetBool(ok))
			cf_not_your_runs("the blocked children", workflow, key);
	}

	cf_exec(&retry_plan,
			"WITH c AS (SELECT id, state FROM chrono_forge.workflows"
			"  WHERE parent_execution_log_id = $1"
			"   AND (state IN ('failed', 'stalled') OR (state = 'cancelled' AND $3))"
			"  ORDER BY id FOR NO KEY UPDATE),"
			" w AS (UPDATE chrono_forge.workflows w SET state = 'idle', locked_by = NULL,"
			"  locked_at = NULL, attempt = 0, retry_counts = '{}', recoveries = 0, updated_at = $2"
			"  FROM c WHERE w.id = c.id AND w.state = c.state RETURNING w.id, c.state),"
			" m AS (UPDATE chrono_forge.execution_logs m SET step_name = '$workflow_cancelled$' || m.id"
			"  FROM w WHERE m.workflow_id = w.id AND m.step_name = '$workflow_cancelled$'),"
			" l AS (INSERT INTO chrono_forge.execution_logs"
			"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, metadata)"
			"  SELECT id, '$workflow_retry$' || (extract(epoch FROM $2)::bigint)::text, 'completed', 1,"
			"   $2, $2, $2, jsonb_build_object('previous_state', state::text, 'requested_at', $2)"
			"  FROM w ON CONFLICT (workflow_id, step_name) DO UPDATE"
			"  SET attempts = chrono_forge.execution_logs.attempts + 1,"
			"   last_executed_at = EXCLUDED.last_executed_at, metadata = EXCLUDED.metadata)"
			" SELECT id FROM w",
			3, (Oid[]) {INT8OID, TIMESTAMPTZOID, BOOLOID},
			(Datum[]) {log_id, TimestampTzGetDatum(now), BoolGetDatum(with_cancelled)},
			NULL, false, 0);
	n = (int) SPI_processed;
	if (n > 0)
		cf_wakeups_add(cf_spi_ids(1), now, "retry", CF_WAKEUP_ALWAYS);
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_INT32(n);
}

/*
 * CALL cleanup_in_batches(older_than, completed_older_than,
 * failed_older_than, prune_repetition_logs_older_than, batch_size,
 * INOUT counts): cleanup(), committing after every batch, so that no row
 * lock outlives one batch.  C rather than PL/pgSQL because a procedure
 * that commits cannot carry a SET search_path clause; the statements here
 * run on the engine's pinned path.  The caller needs EXECUTE on this
 * procedure (chrono_forge_admin); the batches run as the engine.
 */
#define CF_CLEANUP_COUNTS 7
static const char *const cleanup_keys[CF_CLEANUP_COUNTS] = {
	"workflows", "execution_logs", "error_logs", "wakeups", "events",
	"repetition_logs", "orphaned_children"
};

Datum
cf_cleanup_in_batches(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr cutoffs_plan = NULL;
	static SPIPlanPtr batch_plan = NULL;
	CallContext *cc = (CallContext *) fcinfo->context;
	Datum		args[5];
	char		nulls[5];
	Datum		cutoffs[4];
	char		cutoff_nulls[4];
	int64		totals[CF_CLEANUP_COUNTS] = {0};
	int64		batches = 0;
	CfInternal	st;
	StringInfoData json;
	bool		isnull;

	if (cc == NULL || !IsA(cc, CallContext) || cc->atomic || IsSubTransaction())
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_IN_PASS),
				 errmsg("chrono_forge.cleanup_in_batches() must be called with CALL outside a transaction block"),
				 errdetail("It commits after every batch; use chrono_forge.cleanup() inside a transaction.")));

	for (int i = 0; i < 5; i++)
	{
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		args[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
	}

	cf_spi_connect();
	cf_internal_begin(&st);
	cf_exec(&cutoffs_plan,
			"SELECT completed_before, failed_before, repetitions_before, $5"
			" FROM chrono_forge.cleanup_cutoffs($1, $2, $3, $4, $5)",
			5, (Oid[]) {INTERVALOID, INTERVALOID, INTERVALOID, INTERVALOID, INT4OID},
			args, nulls, true, 0);
	for (int i = 0; i < 4; i++)
	{
		cutoffs[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull);
		cutoff_nulls[i] = isnull ? 'n' : ' ';
	}
	cf_internal_end(&st);

	for (;;)
	{
		int64		n[CF_CLEANUP_COUNTS];

		CHECK_FOR_INTERRUPTS();
		cf_internal_begin(&st);
		cf_exec(&batch_plan,
				"SELECT (b->>'workflows')::bigint, (b->>'execution_logs')::bigint,"
				" (b->>'error_logs')::bigint, (b->>'wakeups')::bigint, (b->>'events')::bigint,"
				" (b->>'repetition_logs')::bigint, (b->>'orphaned_children')::bigint"
				" FROM chrono_forge.cleanup_batch($1, $2, $3, $4) AS b",
				4, (Oid[]) {TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID},
				cutoffs, cutoff_nulls, false, 0);
		for (int i = 0; i < CF_CLEANUP_COUNTS; i++)
			n[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull));
		cf_internal_end(&st);
		SPI_commit();
		if (n[0] == 0 && n[5] == 0)
			break;
		for (int i = 0; i < CF_CLEANUP_COUNTS; i++)
			totals[i] += n[i];
		batches++;
	}
	SPI_finish();

	initStringInfo(&json);
	appendStringInfoChar(&json, '{');
	for (int i = 0; i < CF_CLEANUP_COUNTS; i++)
		appendStringInfo(&json, "\"%s\": " INT64_FORMAT ", ", cleanup_keys[i], totals[i]);
	appendStringInfo(&json, "\"batches\": " INT64_FORMAT "}", batches);
	return cf_return_result(fcinfo, true, cf_jsonb_parse(json.data));
}

/* metadata->>key as text (NULL if absent), as the SQL operator gives it. */
static text *
metadata_field(Datum metadata, const char *key)
{
	LOCAL_FCINFO(fcinfo, 2);
	Datum		result;

	InitFunctionCallInfoData(*fcinfo, NULL, 2, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = metadata;
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = PointerGetDatum(cstring_to_text(key));
	fcinfo->args[1].isnull = false;
	result = jsonb_object_field_text(fcinfo);
	return fcinfo->isnull ? NULL : DatumGetTextPP(result);
}

/* What repeat_ticks() reads of execution_logs, looked up once per call. */
typedef struct TickScan
{
	Relation	rel;
	Relation	idx;
	TupleDesc	desc;
	AttrNumber	workflow_att;
	AttrNumber	step_att;
	AttrNumber	state_att;
	AttrNumber	metadata_att;
	AttrNumber	error_att;
	AttrNumber	started_att;
	Datum		pending;
	Datum		completed;
	Datum		failed;
} TickScan;

/* What tick_summary() counts over a window. */
typedef struct TickTally
{
	int64		missed;
	int64		failed;
	TimestampTz next_at;
	bool		has_next;
	Datum		late_sum;		/* interval */
	int64		late_n;
} TickTally;

/*
 * One tick's log into the tally: pending (the next one), completed (how
 * late it started), failed (missed if expired, CF016, counting the ticks
 * it fast-forwarded; else failed).
 */
static void
tally_tick(TickScan *ts, HeapTuple tup, TickTally *t)
{
	bool		isnull;
	bool		no_metadata;
	Datum		state = heap_getattr(tup, ts->state_att, ts->desc, &isnull);
	Datum		metadata = heap_getattr(tup, ts->metadata_att, ts->desc, &no_metadata);

	if (state == ts->pending || state == ts->completed)
	{
		TimestampTz scheduled;

		if (no_metadata || !cf_metadata_timestamp(DatumGetJsonbP(metadata), "scheduled_for", &scheduled))
			return;
		if (state == ts->pending)
		{
			if (!t->has_next || scheduled > t->next_at)
				t->next_at = scheduled;
			t->has_next = true;
		}
		else
		{
			Datum		started = heap_getattr(tup, ts->started_att, ts->desc, &isnull);
			Datum		late;

			if (isnull)
				return;
			late = DirectFunctionCall2(timestamp_mi, started, TimestampTzGetDatum(scheduled));
			t->late_sum = t->late_n == 0 ? late : DirectFunctionCall2(interval_pl, t->late_sum, late);
			t->late_n++;
		}
	}
	else if (state == ts->failed)
	{
		Datum		error = heap_getattr(tup, ts->error_att, ts->desc, &isnull);
		text	   *field;

		if (isnull || strcmp(TextDatumGetCString(error), "CF016") != 0)
			t->failed++;
		else
		{
			field = no_metadata ? NULL : metadata_field(metadata, "fast_forwarded");
			t->missed += field == NULL ? 1
				: DatumGetInt64(DirectFunctionCall1(int8in,
													CStringGetDatum(text_to_cstring(field))));
		}
	}
}

/*
 * One task's latest window ticks (logs named prefix<epoch seconds> of run
 * workflow_id), read backwards from the (workflow_id, step_name) index:
 * values/nulls 1..4 of repeat_ticks()' row.
 */
static void
tick_summary(TickScan *ts, int64 workflow_id, const char *prefix, int32 window,
			 Datum *values, bool *nulls)
{
	int			prefix_len = strlen(prefix);
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;
	TickTally	t = {0};
	int			n = 0;

	/* Heap attribute numbers: the scan maps them to the index's columns. */
	ScanKeyInit(&key[0], ts->workflow_att, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(workflow_id));
	ScanKeyEntryInitialize(&key[1], 0, ts->step_att, BTGreaterStrategyNumber, InvalidOid,
						   ts->idx->rd_indcollation[1], F_TEXT_GT,
						   PointerGetDatum(cstring_to_text(prefix)));
	scan = systable_beginscan_ordered(ts->rel, ts->idx, GetActiveSnapshot(), 2, key);
	while (n < window &&
		   HeapTupleIsValid(tup = systable_getnext_ordered(scan, BackwardScanDirection)))
	{
		bool		isnull;
		text	   *step = DatumGetTextPP(heap_getattr(tup, ts->step_att, ts->desc, &isnull));

		CHECK_FOR_INTERRUPTS();
		if ((int) VARSIZE_ANY_EXHDR(step) < prefix_len ||
			memcmp(VARDATA_ANY(step), prefix, prefix_len) != 0)
			continue;
		n++;
		tally_tick(ts, tup, &t);
	}
	systable_endscan_ordered(scan);

	values[1] = TimestampTzGetDatum(t.next_at);
	nulls[1] = !t.has_next;
	values[2] = Int64GetDatum(t.missed);
	values[3] = Int64GetDatum(t.failed);
	nulls[2] = nulls[3] = false;
	nulls[4] = t.late_n == 0;
	if (t.late_n > 0)
		values[4] = DirectFunctionCall2(interval_div, t.late_sum, Float8GetDatum((float8) t.late_n));
}

/*
 * repeat_ticks(coordination_ids, window_) -> (coordination_id, next_at,
 * missed, failed, avg_late): the health of each durably_repeat task over
 * its latest window_ ticks, for periodic_health().  For each task, the
 * same figures as this SQL over its run (t) and coordination log (c):
 *
 *   SELECT max((metadata->>'scheduled_for')::timestamptz) FILTER (WHERE state = 'pending'),
 *          coalesce(sum(coalesce((metadata->>'fast_forwarded')::bigint, 1))
 *                   FILTER (WHERE state = 'failed' AND error_class = 'CF016'), 0),
 *          count(*) FILTER (WHERE state = 'failed' AND error_class IS DISTINCT FROM 'CF016'),
 *          avg(started_at - (metadata->>'scheduled_for')::timestamptz) FILTER (WHERE state = 'completed')
 *     FROM (SELECT * FROM chrono_forge.execution_logs
 *            WHERE workflow_id = c.workflow_id AND step_name > c.step_name || '$'
 *              AND starts_with(step_name, c.step_name || '$')
 *            ORDER BY step_name DESC LIMIT window_) t
 *
 * In C because, under row-level security, that query pays the logs'
 * policy (an EXISTS probe of the run) on every tick it reads: 4,000
 * probes for the list of 200 tasks.  Here the coordination logs are read
 * through SPI as the caller, in one statement, so the policy decides once
 * per task whether it is visible (a task's ticks belong to its run, so
 * they are visible exactly when it is); the ticks are then read from the
 * index directly, in the query's snapshot.  Tasks the caller cannot see
 * are left out.
 */
Datum
cf_repeat_ticks(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum		ids = PG_GETARG_DATUM(0);
	int32		window = PG_GETARG_INT32(1);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext caller_cxt = CurrentMemoryContext;
	int			ntasks;
	int64	   *coord_ids;
	int64	   *workflow_ids;
	char	  **prefixes;
	Oid			state_type;
	TickScan	ts;

	if (window < 1)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("window_ must be at least 1")));
	InitMaterializedSRF(fcinfo, 0);

	/* The coordination logs, as the caller sees them (row-level security). */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cf_push_catalog_path();
	cf_exec(&plan,
			"SELECT id, workflow_id, step_name FROM chrono_forge.execution_logs WHERE id = ANY ($1)",
			1, (Oid[]) {INT8ARRAYOID}, &ids, NULL, true, 0);
	PopOverrideSearchPath();
	{
		MemoryContext spi_cxt = MemoryContextSwitchTo(caller_cxt);

		ntasks = (int) SPI_processed;
		coord_ids = palloc(sizeof(int64) * Max(ntasks, 1));
		workflow_ids = palloc(sizeof(int64) * Max(ntasks, 1));
		prefixes = palloc(sizeof(char *) * Max(ntasks, 1));
		for (int i = 0; i < ntasks; i++)
		{
			HeapTuple	row = SPI_tuptable->vals[i];
			bool		isnull;

			coord_ids[i] = DatumGetInt64(SPI_getbinval(row, SPI_tuptable->tupdesc, 1, &isnull));
			workflow_ids[i] = DatumGetInt64(SPI_getbinval(row, SPI_tuptable->tupdesc, 2, &isnull));
			prefixes[i] = psprintf("%s$", SPI_getvalue(row, SPI_tuptable->tupdesc, 3));
		}
		MemoryContextSwitchTo(spi_cxt);
	}
	SPI_finish();

	ts.rel = table_open(cf_relation_oid("execution_logs"), AccessShareLock);
	ts.idx = index_open(cf_relation_oid("execution_logs_workflow_step_key"), AccessShareLock);
	ts.desc = RelationGetDescr(ts.rel);
	ts.workflow_att = get_attnum(RelationGetRelid(ts.rel), "workflow_id");
	ts.step_att = get_attnum(RelationGetRelid(ts.rel), "step_name");
	ts.state_att = get_attnum(RelationGetRelid(ts.rel), "state");
	ts.metadata_att = get_attnum(RelationGetRelid(ts.rel), "metadata");
	ts.error_att = get_attnum(RelationGetRelid(ts.rel), "error_class");
	ts.started_att = get_attnum(RelationGetRelid(ts.rel), "started_at");
	state_type = TupleDescAttr(ts.desc, ts.state_att - 1)->atttypid;
	ts.pending = DirectFunctionCall2(enum_in, CStringGetDatum("pending"), ObjectIdGetDatum(state_type));
	ts.completed = DirectFunctionCall2(enum_in, CStringGetDatum("completed"), ObjectIdGetDatum(state_type));
	ts.failed = DirectFunctionCall2(enum_in, CStringGetDatum("failed"), ObjectIdGetDatum(state_type));

	for (int i = 0; i < ntasks; i++)
	{
		Datum		values[5];
		bool		nulls[5];

		values[0] = Int64GetDatum(coord_ids[i]);
		nulls[0] = false;
		tick_summary(&ts, workflow_ids[i], prefixes[i], window, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	index_close(ts.idx, AccessShareLock);
	table_close(ts.rel, AccessShareLock);
	return (Datum) 0;
}
