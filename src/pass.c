/*-------------------------------------------------------------------------
 *
 * pass.c
 *	  The current pass: its state, its stops, its commits.
 *
 * Owns the per-backend pass state (cf_pass) that the primitives read and
 * change: whether a pass runs, refusals that poison it, stopping it
 * (cancel, max_duration, preemption), halting and stalling, proving the
 * lock before a step commits, writing the claim, the pass's view of the
 * step log, and committing (alone or shared with the next passes).  This
 * file must never run user code as anyone but the run's owner, and never
 * commit a step for a pass that no longer holds the run's lock.
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

#include "clock.h"
#include "internal.h"
#include "pass.h"
#include "pass_timer.h"
#include "shmem.h"

CfPass		cf_pass;

/*
 * Shared commits: a worker's consecutive passes that each fit in one
 * transaction (nothing committed before their end, as in a trivial run)
 * and belong to one owner are committed together, up to commit_batch of
 * them and while the first is younger than commit_batch_window: the WAL
 * flush a commit waits for is the larger part of a trivial run's time.
 * Nothing of such a pass is visible before that commit; if the
 * transaction aborts first, their runs are due again as they were (their
 * claims roll back too) and run again.  One owner only, so that no role's
 * failing run can roll back another role's work.
 */
CfBatch		cf_batch;

/* The transaction holding the batched passes (if any) has committed. */
void
cf_batch_committed(void)
{
	cf_batch.passes = 0;
	cf_batch.nudges_committed = cf_batch.n_nudges;
}

/* This pass stopped itself because cancel() asked for its run. */
bool		cf_pass_stop_cancel = false;

/* ... or because the share gave its worker to another owner's work. */
bool		cf_pass_stop_preempt = false;

/*
 * Stop the pass if cancel() asked for its run, or it outlived
 * max_duration (a stop whose query cancel the body's code swallowed, or
 * that fired as it returned).  At each primitive and before the run's
 * completion: the next step never starts, and a step whose commit was
 * still pending is rolled back.
 */
void
cf_check_pass_stop(void)
{
	if (cf_pass_cancel_fired() ||
		(cf_cancels_pending() && cf_cancel_requested(cf_pass.workflow_id)))
	{
		cf_pass_stop_cancel = true;
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("workflow run %lld was cancelled", (long long) cf_pass.workflow_id)));
	}
	if (cf_pass_timer_fired())
		ereport(ERROR,
				(errcode(ERRCODE_CF_PASS_TIMEOUT),
				 errmsg("pass of workflow run %lld exceeded chrono_forge.max_duration",
						(long long) cf_pass.workflow_id)));
	if (cf_pass_preempt_fired())
		ereport(ERROR,
				(errcode(ERRCODE_CF_PASS_PREEMPTED),
				 errmsg("pass of workflow run %lld was stopped to give its worker to another owner's work",
						(long long) cf_pass.workflow_id)));
}

/*
 * A primitive (or run_pending()) refused its calling context during this
 * pass: the run fails with CF013, whatever the body does with the error.
 * A handler that catches it (an EXCEPTION block, a step's own retries)
 * changes nothing: the pass ends failed, never completed or released.
 */
char	   *cf_pass_poison = NULL;	/* the first refusal's message */

void
cf_poison_pass(char *message)
{
	cf_pass.outcome = CF_OUTCOME_FAIL_NOW;
	if (cf_pass_poison == NULL)
		cf_pass_poison = MemoryContextStrdup(cf_pass.cxt, message);
}

/* The body went on after a refusal and then halted or failed otherwise. */
ErrorData *
cf_poison_error(void)
{
	ErrorData  *edata = MemoryContextAllocZero(cf_pass.cxt, sizeof(ErrorData));

	edata->elevel = ERROR;
	edata->sqlerrcode = ERRCODE_CF_NOT_IN_PASS;
	edata->message = cf_pass_poison;
	edata->detail = MemoryContextStrdup(cf_pass.cxt,
										"The workflow caught this error and went on; the run fails all the same.");
	return edata;
}

/*
 * Primitives commit, so they need a pass and a non-atomic context.  Being
 * called in an atomic context during a pass is a programming error in the
 * workflow: the run fails at once.
 */
void
cf_require_pass(FunctionCallInfo fcinfo, const char *primitive)
{
	CallContext *cc = (CallContext *) fcinfo->context;

	if (!cf_pass.active)
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_IN_PASS),
				 errmsg("chrono_forge.%s can only be called while chrono_forge runs a workflow", primitive),
				 errhint("Start the workflow with chrono_forge.start(); the workers or CALL chrono_forge.run_pending() run it.")));

	/* After a refusal the body caught, nothing more of the pass runs. */
	if (cf_pass_poison != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_IN_PASS),
				 errmsg("%s", cf_pass_poison),
				 errdetail("The workflow caught this error and went on; the run fails all the same.")));

	if (cc == NULL || !IsA(cc, CallContext) || cc->atomic || IsSubTransaction())
	{
		cf_poison_pass(psprintf("chrono_forge.%s cannot run in an atomic context", primitive));
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_IN_PASS),
				 errmsg("chrono_forge.%s cannot run in an atomic context", primitive),
				 errdetail("It commits, so it must be CALLed from the workflow procedure itself."),
				 errhint("Do not call it from a function, inside a block with an EXCEPTION clause, "
						 "or from a procedure with SET clauses or SECURITY DEFINER.")));
	}

	cf_check_pass_stop();
	cf_commit_pending_step();
}

/*
 * A completed step's commit waits for the next primitive or the end of
 * the pass, so that the last step of a pass shares its commit with the
 * completion.  Never longer: the body's own code between two primitives
 * is all that a step's commit can wait for.
 */
void
cf_commit_pending_step(void)
{
	if (cf_pass.commit_pending)
	{
		cf_spi_connect();
		cf_commit();
		SPI_finish();
	}
}

void
cf_fail_now(void)
{
	cf_pass.outcome = CF_OUTCOME_FAIL_NOW;
}

/* A programming error in the workflow: the run fails at once. */
void
cf_fail_run(int sqlerrcode, const char *msg, const char *hint)
{
	cf_fail_now();
	ereport(ERROR,
			(errcode(sqlerrcode),
			 errmsg("%s", msg),
			 hint ? errhint("%s", hint) : 0));
}

/* Commit what a primitive wrote, proving the pass still holds the lock. */
void
cf_commit_step(void)
{
	cf_save_context_and_check_lock();
	SPI_freetuptable(SPI_tuptable);
	cf_commit();
}

/* At most one continuation per pass: the last one set wins. */
void
cf_set_continuation(TimestampTz at, const char *reason)
{
	cf_pass.has_continuation = true;
	cf_pass.continuation_at = at;
	cf_pass.continuation_reason = reason;
}

void
cf_halt(const char *step_name)
{
	cf_pass.outcome = CF_OUTCOME_HALT;
	ereport(ERROR,
			(errcode(ERRCODE_CF_HALT),
			 errmsg("chrono_forge pass halted at step \"%s\"", step_name),
			 errdetail("This is how a pass defers; the run resumes later.")));
}

/* A step exhausted its policy: the run becomes stalled. */
void
cf_stall(const char *step_name, int attempts, ErrorData *edata)
{
	cf_pass.outcome = CF_OUTCOME_STALL;
	ereport(ERROR,
			(errcode(ERRCODE_CF_STEP_FAILED),
			 errmsg("step \"%s\" failed after %d attempt%s: %s", step_name, attempts,
					attempts == 1 ? "" : "s", edata->message),
			 errdetail("The step's last error was SQLSTATE %s; the run is now stalled.",
					   unpack_sql_state(edata->sqlerrcode)),
			 errhint("Fix the cause, then call chrono_forge.retry().")));
}

/*
 * Inside a step's transaction: write the context if it changed, and prove
 * this pass still owns the run.  A pass that overran and lost its lock
 * must not commit its step.
 */
void
cf_save_context_and_check_lock(void)
{
	static SPIPlanPtr update_plan = NULL;
	static SPIPlanPtr lock_plan = NULL;
	Datum		values[4];
	CfInternal	st;

	/*
	 * Until the claim is stamped, this transaction still holds the row lock
	 * the claim took: nobody can have stolen the run.  A child's run not
	 * written yet is claimed by its spawn_batches row's lock, and gets its
	 * context when it is written.
	 */
	if ((!cf_pass.stamped && !cf_pass.context_dirty) || cf_pass.run_unwritten)
		return;
	values[0] = Int64GetDatum(cf_pass.workflow_id);
	values[1] = CStringGetTextDatum(cf_pass.lock_token);
	values[2] = JsonbPGetDatum(cf_pass.context);
	values[3] = BoolGetDatum(!cf_pass.stamped);
	cf_internal_begin(&st);
	/* The row lock holds until commit: a stealer waits for this step. */
	if (cf_pass.context_dirty)
		cf_exec(&update_plan,
				"UPDATE chrono_forge.workflows SET updated_at = chrono_forge.now(), context = $3"
				" WHERE id = $1 AND (locked_by = $2 OR $4)",
				4, (Oid[]) {INT8OID, TEXTOID, JSONBOID, BOOLOID}, values, NULL, false, 0);
	else
		cf_exec(&lock_plan,
				"SELECT 1 FROM chrono_forge.workflows WHERE id = $1 AND locked_by = $2"
				" FOR NO KEY UPDATE",
				2, (Oid[]) {INT8OID, TEXTOID}, values, NULL, false, 0);
	cf_internal_end(&st);
	if (SPI_processed != 1)
		cf_lock_lost();
	cf_pass.context_dirty = false;
}

void
cf_lock_lost(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_CF_LOCK_LOST),
			 errmsg("workflow run %lld ran longer than chrono_forge.max_duration and lost its lock",
					(long long) cf_pass.workflow_id),
			 errdetail("Its step was rolled back; the pass that holds the lock now carries on.")));
}

/*
 * Write the run of a child taken from spawn_batches (see take_spawned_child()):
 * running under this pass's lock, or, at the end of a pass that completed
 * it, completed with its completion marker, so that a child that completes
 * in its first pass writes its run once.  A run with its key written
 * meanwhile (by start()) loses the child: the pass rolls back.
 */
void
cf_write_taken_run_as(bool completed)
{
	static SPIPlanPtr plans[2];
	CfInternal	st;
	TimestampTz now = cf_clock_now();
	bool		isnull;
	bool		written;

	cf_internal_begin(&st);
	cf_exec(&plans[completed],
			"WITH w AS (INSERT INTO chrono_forge.workflows (id, workflow, key, procedure, args, context,"
			"   owner, parent_execution_log_id, state, locked_by, locked_at, started_at, completed_at,"
			"   created_at, updated_at) OVERRIDING SYSTEM VALUE"
			"  VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
			"   CASE WHEN $11 THEN 'completed' ELSE 'running' END::chrono_forge.workflow_state,"
			"   CASE WHEN $11 THEN NULL ELSE $9 END, CASE WHEN $11 THEN NULL ELSE $10 END, $10,"
			"   CASE WHEN $11 THEN $13 END, $12, $13)"
			"  ON CONFLICT DO NOTHING RETURNING id),"
			" l AS (INSERT INTO chrono_forge.execution_logs"
			"  (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, result)"
			"  SELECT id, '$workflow_completion$', 'completed', 1, $13, $13, $13, $14 FROM w WHERE $11)"
			" SELECT count(*) FROM w",
			14, (Oid[]) {INT8OID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, OIDOID, INT8OID,
				TEXTOID, TIMESTAMPTZOID, BOOLOID, TIMESTAMPTZOID, TIMESTAMPTZOID, JSONBOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(cf_pass.workflow),
				CStringGetTextDatum(cf_pass.key), CStringGetTextDatum(cf_pass.procedure),
				JsonbPGetDatum(cf_pass.args), JsonbPGetDatum(cf_pass.context),
				ObjectIdGetDatum(cf_pass.owner), Int64GetDatum(cf_pass.parent_log_id),
				CStringGetTextDatum(cf_pass.lock_token), TimestampTzGetDatum(cf_pass.claimed_at),
				BoolGetDatum(completed), TimestampTzGetDatum(cf_pass.spawn_due_at),
				TimestampTzGetDatum(now),
			cf_pass.result ? JsonbPGetDatum(cf_pass.result) : (Datum) 0},
			cf_pass.result ? NULL : "             n", false, 0);
	written = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) == 1;
	cf_internal_end(&st);
	if (!written)
		cf_lock_lost();
	cf_pass.run_unwritten = false;
	cf_pass.stamped = true;
	cf_pass.context_dirty = false;
}

/* Before a write that needs the run's row (an error log, a merge poll). */
void
cf_write_taken_run(void)
{
	if (cf_pass.run_unwritten)
		cf_write_taken_run_as(false);
}

/*
 * Write the claim on the run's row: the lock's holder and time, and the
 * state running.  Deferred from the claim to the pass's first commit (or
 * left to the pass's last statement, when that is its only commit): until
 * then the row lock the claim took is the lock, and no other session can
 * tell the difference, since nothing of the pass is visible before it
 * commits.  A trivial run so updates its row once, not twice.
 */
void
cf_stamp_claim(void)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;

	if (cf_pass.run_unwritten)
	{
		cf_write_taken_run_as(false);
		return;
	}
	cf_internal_begin(&st);
	cf_exec(&plan,
			"UPDATE chrono_forge.workflows SET locked_by = $2, locked_at = $3, state = 'running',"
			" started_at = coalesce(started_at, $3), updated_at = $3 WHERE id = $1",
			3, (Oid[]) {INT8OID, TEXTOID, TIMESTAMPTZOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(cf_pass.lock_token),
			TimestampTzGetDatum(cf_pass.claimed_at)},
			NULL, false, 0);
	cf_internal_end(&st);
	cf_pass.stamped = true;
}

/*
 * The identity user code runs under: the run's owner, as in a SECURITY
 * DEFINER function (no SET ROLE, no SET SESSION AUTHORIZATION).  Not a
 * security-restricted operation: PostgreSQL refuses to queue deferred
 * triggers in one, and a step must be free to write a table with a
 * deferred constraint.  What a pass may leave in a worker's session for the
 * next owner's pass, reset_session_after_pass() drops.
 */
void
cf_enter_owner_identity(void)
{
	SetUserIdAndSecContext(cf_pass.owner,
						   cf_pass.outer_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

/*
 * Fire, as the run's owner, what the owner's code queued for the commit:
 * deferred triggers and deferred constraint checks.  Left to the commit
 * itself they would fire under the identity that commits, a worker's
 * superuser.  Called after the engine's own writes of the transaction and
 * just before it commits; the commit finds nothing left but the engine's
 * own deferred checks, queued afterwards.  An error here is the pass's
 * error, as it would have been at the commit.
 */
void
cf_fire_deferred_as_owner(void)
{
	Oid			userid;
	int			sec_context;

	GetUserIdAndSecContext(&userid, &sec_context);
	cf_enter_owner_identity();
	AfterTriggerFireDeferred();
	SetUserIdAndSecContext(userid, sec_context);
}

/*
 * Commit from a primitive.  The next transaction starts under the pass's
 * outer identity, so that an abort of it restores that identity and never
 * leaves a session as the run's owner.
 */
void
cf_commit(void)
{
	Oid			userid;
	int			sec_context;

	if (!cf_pass.stamped && !cf_pass.released)
		cf_stamp_claim();
	cf_fire_deferred_as_owner();
	GetUserIdAndSecContext(&userid, &sec_context);
	SetUserIdAndSecContext(cf_pass.outer_userid, cf_pass.outer_sec_context);
	SPI_commit();
	SetUserIdAndSecContext(userid, sec_context);
	cf_pass.committed = true;
	cf_pass.commit_pending = false;
	cf_batch_committed();			/* the batched passes went with this commit */
}

/*
 * This transaction's commit returns without waiting for its WAL to reach
 * disk (synchronous_commit off, for this transaction only).
 */
void
cf_skip_flush_wait(void)
{
	(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * Ends the pass released in the current transaction; false if the pass no
 * longer holds the run.  Set by the pass layer (cf_finish_register()),
 * which sits above this file.
 */
bool		(*cf_release_parked_pass) (void) = NULL;

/*
 * Park the run and halt: end the pass released in the transaction that
 * holds what the primitive wrote (its pending step, its task) and its
 * continuation (cf_set_continuation() first), commit, then halt.  One
 * commit where a halt, its abort and a release after it took two, and a
 * claim still unstamped never needs stamping: its row lock holds to this
 * commit.  The release proves the lock, so a pass that lost it writes
 * nothing.
 *
 * unflushed: the commit does not wait for its WAL flush when it holds
 * nothing but this pass's deferral (run_task: its task).  Losing it in a
 * crash loses nothing anyone relied on: the run is re-driven and parks
 * again, and whoever acts on the deferral (a worker's claim) commits
 * synchronously later, which flushes it first.  Earlier steps of this
 * pass, or passes batched into this transaction, make it wait as usual.
 *
 * The caller is connected to SPI; this disconnects.
 */
void
cf_park(const char *step_name, bool unflushed)
{
	if (!cf_release_parked_pass())
		cf_lock_lost();
	if (unflushed && cf_batch.passes == 0 && !cf_pass.commit_pending)
		cf_skip_flush_wait();
	cf_pass.released = true;	/* cf_commit() must not stamp the claim */
	PG_TRY();
	{
		cf_commit();
	}
	PG_CATCH();
	{
		cf_pass.released = false;	/* the release rolled back with the rest */
		PG_RE_THROW();
	}
	PG_END_TRY();
	SPI_finish();
	cf_halt(step_name);
}

/*
 * The same for a JSON value a run keeps (start's args, an event payload).
 * Inside a pass (spawn's args, a start() in a body), a programming error:
 * the run fails at once.
 */
void
cf_check_json_size(const char *what, Jsonb *value)
{
	if (value == NULL || VARSIZE(value) <= CF_JSON_MAX_BYTES)
		return;
	cf_fail_now();
	ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("%s is too large", what),
				 errdetail("It has %zu bytes as jsonb; at most %d are allowed.",
						   (size_t) VARSIZE(value), CF_JSON_MAX_BYTES)));
}

/*
 * A child's key: "$<parent run id>$<parent key>$<branch>$<name>" (with
 * an empty name, the prefix of every child's key of the branch).  A
 * child's identity is (owner, procedure, key) like any run's; the parent's
 * run id makes it unique to its parent (two parents sharing a business key
 * never share children), and start() refuses keys beginning with '$', so
 * nothing outside the parent can take it first.
 */
char *
cf_child_key(const char *branch, const char *name)
{
	return psprintf("$" INT64_FORMAT "$%s$%s$%s", cf_pass.workflow_id, cf_pass.key, branch, name);
}
