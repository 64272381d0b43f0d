/*-------------------------------------------------------------------------
 *
 * executor.c
 *	  Passes: claim one (claim.c), replay the workflow procedure as the
 *	  run's owner, then finish it (finish.c); the drain loop of
 *	  run_pending() and the workers, and the shared commits of a batch.
 *
 * Owns running the body and what follows its errors: aborts, restarts,
 * stops (cancel, max_duration, preemption).  The workflow procedure runs
 * as a non-atomic CALL, as the run's owner; the drain may itself run
 * inside the caller's PL/pgSQL (a DO block, a procedure, a cursor loop),
 * whose SPI stack and cursors every abort of a pass must leave alone
 * (abort_and_restart()).  This file must never run user code as anyone
 * but the owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/prepare.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/timestamp.h"

#include "branch.h"
#include "citus.h"
#include "claim.h"
#include "clock.h"
#include "concurrency.h"
#include "deadlines.h"
#include "executor.h"
#include "finish.h"
#include "guc.h"
#include "internal.h"
#include "merge.h"
#include "pass.h"
#include "pass_timer.h"
#include "replay.h"
#include "retry.h"
#include "shmem.h"
#include "step.h"
#include "wakeups.h"

PG_FUNCTION_INFO_V1(cf_run_pending);
PG_FUNCTION_INFO_V1(cf_worker_drain);

int			cf_last_drain_passes = 0;

/* Did this pass's claim waive the share (nobody else's work was due)? */
static bool pass_share_waived = false;


/* ---------------------------------------------------------------------
 * Running the body
 * ---------------------------------------------------------------------
 */

/*
 * CALL the workflow procedure with the run's args; a compensating run
 * (0.12.0) calls the engine's compensation body instead (compensate.c),
 * in the same way, as the owner: the undo steps are the owner's code.
 */
static void
call_workflow_procedure(void)
{
	SPIExecuteOptions options;
	ParamListInfo params;
	char	   *sql = cf_pass.compensating ? "CALL chrono_forge.run_compensation($1)"
		: psprintf("CALL %s($1)", cf_pass.procedure);
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
		return cf_claim_retake_spawned_child();
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
 * (cf_claim_and_lock()).  A pass the launcher preempted (the owner took more
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
			(errmsg("chrono_forge: pass of workflow run %lld stopped: the run was cancelled or passed its deadline",
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
	int			attempt = (int) cf_pass.attempt + 1;
	Jsonb	   *counts = cf_pass.retry_counts;

	if (policy == NULL)
		policy = cf_policy_builtin("workflow");
	d = cf_policy_decide(policy, edata->sqlerrcode, attempt, cf_pass.retry_counts);
	if (d.budget_key != NULL)
	{
		char	   *text = psprintf("{\"%s\": %d}", d.budget_key, d.budget_count);

		counts = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
													JsonbPGetDatum(cf_pass.retry_counts),
													DirectFunctionCall1(jsonb_in, CStringGetDatum(text))));
	}
	if (d.retry)
		cf_finish_pass(CF_FINISH_RETRY, edata,
					TimestampTzPlusMilliseconds(cf_clock_now(), (int64) (d.delay_s * 1000)),
					attempt, counts);
	else
		cf_finish_pass(CF_FINISH_FAIL, edata, 0, attempt, counts);
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
		cf_pass.retry_counts = (Jsonb *) PG_DETOAST_DATUM_COPY(JsonbPGetDatum(cf_pass.retry_counts));
		if (cf_pass.claimed_wakeups != (Datum) 0)
			cf_pass.claimed_wakeups = PointerGetDatum(PG_DETOAST_DATUM_COPY(cf_pass.claimed_wakeups));
		MemoryContextSwitchTo(prev);
	}
	MemoryContextDelete(old.cxt);
	cf_pass.has_continuation = false;
	cf_pass.continuation_reason = NULL;
	cf_pass.outcome = CF_OUTCOME_NONE;
	cf_pass.commit_pending = false;
	cf_pass.context_dirty = false;
	cf_pass.result = NULL;		/* the body runs again and sets it again */
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
	cf_pass.claimed_wakeups = (Datum) 0;
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
	if (!pass_share_waived)
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
			if (!cf_pass.compensating)
				cf_branch_before_complete();	/* fan-out: unmerged branches */
			cf_pass_timer_disarm();
			cf_check_pass_stop();
			SetUserIdAndSecContext(save_userid, save_sec);
			cf_pass.active = false;
			cf_finish_pass(cf_pass.compensating ? CF_FINISH_COMPENSATED : CF_FINISH_COMPLETE,
						   NULL, 0, 0, NULL);
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
	if (cf_pass.released)
	{
		/* Parked: cf_park() ended the pass in the commit before its halt. */
		Assert(cf_pass.outcome == CF_OUTCOME_HALT);
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
		cf_finish_pass(CF_FINISH_RELEASE, NULL, 0, 0, NULL);
	else if (cf_pass.outcome == CF_OUTCOME_STALL)
		cf_finish_pass(CF_FINISH_STALL, NULL, 0, 0, NULL);
	else if (cf_pass.outcome == CF_OUTCOME_FAIL_NOW)
		cf_finish_pass(CF_FINISH_FAIL, edata, 0, (int) cf_pass.attempt + 1, NULL);
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

/* Past its marker, a run's passes run its undo steps (0.12.0). */
static bool
run_is_compensating(void)
{
	Jsonb	   *why;

	return cf_step_completed(CF_COMPENSATING_MARKER, &why);
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
	if (!cf_claim_and_lock(only_owner, &pass_share_waived))
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
	cf_pass.compensating = run_is_compensating();

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

/*
 * run_pending(): the caller's runs waiting for a concurrency place that
 * ended runs gave back, or a rate window that has room again, are
 * admitted, committed.  True if any was.
 */
static bool
admit_released(Oid only_owner)
{
	bool		more;
	TimestampTz next;
	int			admitted = cf_gates_admit(only_owner, &more, &next);

	SPI_commit();
	return admitted > 0;
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
	/* run_pending(): the caller's runs past their deadline end first. */
	if (cf_worker_slot < 0 && cf_deadlines_enforce(only_owner, NULL) > 0)
		SPI_commit();
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
			/* ... and admits the runs waiting for places given back. */
			if (cf_worker_slot < 0 && admit_released(only_owner))
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
	cf_citus_draining(true);	/* its passes commit with 2PC on Citus */
	PG_TRY();
	{
		(void) drain(max_passes, GetUserId());
	}
	PG_FINALLY();
	{
		cf_citus_draining(false);
	}
	PG_END_TRY();
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
