/*-------------------------------------------------------------------------
 *
 * step.c
 *	  durably_execute: a step whose database effects happen exactly once.
 *
 * Owns the step protocol: replay from the pass's cache, else run the step
 * function in a subtransaction and commit its writes, its context changes,
 * its result and its completion row together.  A failed attempt rolls all
 * of that back and commits only its attempt count and error.  This file
 * must never commit a step for a pass that no longer holds the run's lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "call.h"
#include "clock.h"
#include "internal.h"
#include "journal.h"
#include "pass.h"
#include "replay.h"
#include "retry.h"
#include "step.h"
#include "steplog.h"
#include "util.h"

PG_FUNCTION_INFO_V1(cf_durably_execute);

typedef struct StepAttempt
{
	const char *step_name;
	CfFunction *function;
	Jsonb	   *args;
	Jsonb	   *metadata;		/* written with the completion */
	int			attempt;
	Jsonb	   *result;
} StepAttempt;

/* Inside the subtransaction: the step, its log row, the lock check. */
static void
attempt_step(void *arg)
{
	StepAttempt *a = (StepAttempt *) arg;

	a->result = cf_function_call(a->function, a->args, 0);
	cf_step_log_write_owned(a->step_name, "completed", a->attempt, a->metadata, a->result, NULL);
}

/*
 * Return the step's result to the caller: a one-column composite for the
 * INOUT overload, nothing for the other.
 */
Datum
cf_return_result(FunctionCallInfo fcinfo, bool has_result, Jsonb *result)
{
	TupleDesc	desc;
	Datum		values[1];
	bool		nulls[1];

	if (!has_result)
		PG_RETURN_VOID();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "INOUT result expected");
	desc = BlessTupleDesc(desc);
	nulls[0] = (result == NULL);
	values[0] = result ? JsonbPGetDatum(result) : (Datum) 0;
	return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}

/* The retry budgets after this failure, for a composite policy. */
static Jsonb *
retry_counts_patch(Jsonb *metadata, CfRetryDecision *d)
{
	Jsonb	   *counts;
	Jsonb	   *one;

	if (d->budget_key == NULL)
		return NULL;
	/* Budget keys are SQLSTATEs, condition names and "*": no quoting. */
	one = cf_jsonb_parse(psprintf("{\"%s\": %d}", d->budget_key, d->budget_count));
	counts = cf_jsonb_get(metadata, "retry_counts");
	if (counts != NULL)
		one = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(counts),
												 JsonbPGetDatum(one)));
	return cf_jsonb_parse(psprintf("{\"retry_counts\": %s}",
								   JsonbToCString(NULL, &one->root, VARSIZE(one))));
}

/*
 * A step's attempt failed (its writes already rolled back): record the
 * attempt, its error and its budget, and decide whether the policy grants
 * another attempt (a NULL policy grants none).  The row is left pending
 * for a retry, else failed.  The caller commits.  Errors that stop the
 * pass (lock lost, cancel) are re-thrown unrecorded.
 */
CfRetryDecision
cf_step_failure_record(const char *step_name, int attempts, Jsonb *log_metadata,
					   Jsonb *metadata_patch, Jsonb *policy, ErrorData *edata)
{
	CfRetryDecision d = {false, 0, NULL, 0};
	Jsonb	   *patch;

	if (cf_error_is_fatal_to_pass(edata))
		ReThrowError(edata);
	if (policy != NULL)
		d = cf_policy_decide(policy, edata->sqlerrcode, attempts,
							 cf_jsonb_get(log_metadata, "retry_counts"));
	patch = retry_counts_patch(log_metadata, &d);
	if (patch == NULL)
		patch = metadata_patch;
	else if (metadata_patch != NULL)
		patch = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(metadata_patch),
												   JsonbPGetDatum(patch)));

	cf_log_error(cf_pass.workflow_id, step_name, attempts, edata, cf_pass.context);
	cf_step_log_write(step_name, d.retry ? "pending" : "failed", attempts, patch, NULL, edata);
	cf_save_context_and_check_lock();
	return d;
}

/* Park the run with what the attempt wrote until the backoff has passed. */
void
cf_commit_and_retry_after(const char *step_name, double delay_s)
{
	cf_set_continuation(TimestampTzPlusMilliseconds(cf_clock_now(), (int64) (delay_s * 1000)),
						"retry");
	cf_park(step_name, false);
}

/*
 * A step's attempt failed: record it, commit, then halt for a retry after
 * the policy's backoff, or stall the run.
 */
void
cf_step_failed(const char *step_name, int attempts, Jsonb *log_metadata,
			   Jsonb *metadata_patch, Jsonb *policy, ErrorData *edata)
{
	CfRetryDecision d = cf_step_failure_record(step_name, attempts, log_metadata,
											   metadata_patch, policy, edata);

	if (d.retry)
		cf_commit_and_retry_after(step_name, d.delay_s);
	cf_commit();
	SPI_finish();
	cf_stall(step_name, attempts, edata);
}

/*
 * Run a step not completed yet: call `function` with `args` in a
 * subtransaction and complete its log with `metadata` (its commit is made
 * by the next primitive or the pass's end), returning its value; or, if
 * the attempt fails, record it and retry after the policy's backoff or
 * stall the run (neither returns).  durably_execute's steps and the
 * compensation pass's undo steps.  The caller is connected to SPI (the
 * function's lookup needs it); this disconnects.
 */
Jsonb *
cf_run_step(const char *step_name, CfFunction *function, Jsonb *args, Jsonb *policy,
			Jsonb *metadata)
{
	Jsonb	   *context_before;
	bool		dirty_before;
	CfStepLog	log;
	StepAttempt attempt;
	ErrorData  *edata;

	attempt.step_name = step_name;
	attempt.function = function;
	attempt.args = args;
	attempt.metadata = metadata;
	log = cf_step_log_read(step_name);
	attempt.attempt = log.attempts + 1;
	attempt.result = NULL;

	context_before = cf_pass.context;
	dirty_before = cf_pass.context_dirty;
	edata = cf_run_guarded(attempt_step, &attempt);
	if (edata == NULL)
	{
		/* Committed by the next primitive or with the pass's end. */
		if (cf_pass.eager)
			cf_commit();
		else
			cf_pass.commit_pending = true;
		SPI_finish();
		cf_step_remember(step_name, attempt.result);
		return attempt.result;
	}

	/* The attempt failed: its writes and context changes are gone. */
	cf_pass.context = context_before;
	cf_pass.context_dirty = dirty_before;
	cf_step_failed(step_name, attempt.attempt, log.metadata, NULL, cf_step_policy(policy), edata);
}

/*
 * The undo step a completed step registers (0.12.0), as the metadata its
 * log keeps: the function, its policy, and the args the step was given
 * (only if given: else the workflow's, which the run keeps anyway).
 */
Jsonb *
cf_undo_registration(const char *undo, Jsonb *undo_policy, Jsonb *args)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"compensate\": ");
	escape_json(&buf, undo);
	if (undo_policy != NULL)
		appendStringInfo(&buf, ", \"compensate_policy\": %s",
						 JsonbToCString(NULL, &undo_policy->root, VARSIZE(undo_policy)));
	if (args != NULL)
		appendStringInfo(&buf, ", \"compensate_args\": %s",
						 JsonbToCString(NULL, &args->root, VARSIZE(args)));
	appendStringInfoChar(&buf, '}');
	return cf_jsonb_parse(buf.data);
}

/*
 * A primitive's compensate and compensate_policy arguments (at n, n + 1):
 * the undo function's name (NULL: none) and its policy, validated.  A
 * policy without a function is bad input.
 */
char *
cf_undo_arguments(FunctionCallInfo fcinfo, int n, Jsonb **undo_policy)
{
	char	   *undo = PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n));

	*undo_policy = NULL;
	if (!PG_ARGISNULL(n + 1))
	{
		if (undo == NULL)
			cf_primitive_invalid_argument("compensate_policy needs compensate");
		*undo_policy = cf_policy_validate(PG_GETARG_JSONB_P(n + 1));
	}
	return undo;
}

/*
 * durably_execute(step, name, args, retry_policy, compensate,
 * compensate_policy) and durably_execute(step, INOUT result, name, args,
 * retry_policy, compensate, compensate_policy).  Schemas before 0.12.0
 * declare them without the last two arguments.
 */
Datum
cf_durably_execute(PG_FUNCTION_ARGS)
{
	bool		has_result = (PG_NARGS() == 5 || PG_NARGS() == 7);
	int			a = has_result ? 1 : 0;
	bool		has_undo = (PG_NARGS() >= 6);
	char	   *step;
	char	   *name;
	char	   *step_name;
	char	   *undo = NULL;
	Jsonb	   *undo_policy = NULL;
	Jsonb	   *policy = NULL;
	Jsonb	   *args;
	Jsonb	   *result = NULL;
	CfFunction *function;

	cf_require_pass(fcinfo, "durably_execute");

	/* Programming errors: the run fails at once, visibly. */
	cf_fail_now();
	step = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	cf_validate_name_segment("step", step);
	name = PG_ARGISNULL(1 + a) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1 + a));
	if (name != NULL)
		cf_validate_name_segment("step name", name);
	if (!PG_ARGISNULL(3 + a))
		policy = cf_policy_validate(PG_GETARG_JSONB_P(3 + a));
	if (has_undo)
		undo = cf_undo_arguments(fcinfo, 4 + a, &undo_policy);
	cf_pass.outcome = CF_OUTCOME_NONE;

	step_name = psprintf("durably_execute$%s", name ? name : step);
	if (cf_step_completed(step_name, &result))
		return cf_return_result(fcinfo, has_result, result);

	/* Every SPI call below is on our own connection. */
	cf_spi_connect();
	args = PG_ARGISNULL(2 + a) ? NULL : PG_GETARG_JSONB_P(2 + a);
	function = cf_function_lookup(step, "step", false);
	/* A missing undo function is found now, not when it is needed. */
	if (undo != NULL)
		(void) cf_function_lookup(undo, "compensation", false);
	result = cf_run_step(step_name, function, args, policy,
						 undo ? cf_undo_registration(undo, undo_policy, args) : NULL);
	return cf_return_result(fcinfo, has_result, result);
}

/* Programming errors in a primitive's arguments fail the run at once. */
void
cf_primitive_invalid_argument(const char *msg)
{
	cf_fail_now();
	ereport(ERROR,
			(errcode(ERRCODE_CF_INVALID_ARGUMENT),
			 errmsg("%s", msg)));
}

/*
 * t + i for the primitives, whose intervals and start times are the
 * caller's.  A result beyond the timestamp range (or an infinite t, which
 * no interval moves) is bad input: CF012, failing the run at once, rather
 * than 22008 going round the workflow-level retries to fail the same way.
 * The addition itself is pure, so its range error can be caught here
 * without a subtransaction.
 */
TimestampTz
cf_timestamp_plus(TimestampTz t, Interval *i)
{
	volatile TimestampTz result = DT_NOEND;
	volatile bool out_of_range = TIMESTAMP_NOT_FINITE(t);
	MemoryContext cxt = CurrentMemoryContext;

	if (!out_of_range)
	{
		PG_TRY();
		{
			result = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
															 TimestampTzGetDatum(t),
															 IntervalPGetDatum(i)));
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			if (edata->sqlerrcode != ERRCODE_DATETIME_VALUE_OUT_OF_RANGE)
				PG_RE_THROW();
			FlushErrorState();
			FreeErrorData(edata);
			out_of_range = true;
		}
		PG_END_TRY();
	}
	if (out_of_range)
		cf_primitive_invalid_argument(psprintf("timestamp out of range: %s + %s",
											   DatumGetCString(DirectFunctionCall1(timestamptz_out,
																				   TimestampTzGetDatum(t))),
											   DatumGetCString(DirectFunctionCall1(interval_out,
																				   IntervalPGetDatum(i)))));
	return result;
}

/*
 * A waiting step's deadline: the one its pending log keeps (fixed when
 * the step first waited), else timeout from now; DT_NOEND without a
 * timeout.  A step that timed out and was retried waits a whole timeout
 * again (its log is no longer pending).
 */
TimestampTz
cf_pending_deadline(const CfStepLog *log, Interval *timeout)
{
	TimestampTz deadline;

	if (timeout == NULL)
		return DT_NOEND;
	if (log->exists && strcmp(log->state, "pending") == 0 &&
		cf_metadata_timestamp(log->metadata, "deadline", &deadline))
		return deadline;
	return cf_timestamp_plus(cf_clock_now(), timeout);
}

/* A boolean condition function; anything else is bad input. */
CfFunction *
cf_condition_lookup(const char *condition, const char *what)
{
	CfFunction *f = cf_function_lookup(condition, what, false);

	if (f->rettype != BOOLOID)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("%s %s must return boolean", what, condition)));
	return f;
}

/*
 * A wait that ran out: the step fails, the error is logged on it, and the
 * run stalls with CF010.
 */
void
cf_timeout_step(const char *step_name, int attempts, Jsonb *metadata_patch,
				const char *message)
{
	ErrorData	edata;

	memset(&edata, 0, sizeof(edata));
	edata.sqlerrcode = ERRCODE_CF_WAIT_CONDITION_NOT_MET;
	edata.message = (char *) message;
	cf_log_error(cf_pass.workflow_id, step_name, attempts, &edata, cf_pass.context);
	cf_step_log_write(step_name, "failed", attempts, metadata_patch, NULL, &edata);
	cf_save_context_and_check_lock();
	cf_commit();
	SPI_finish();
	cf_pass.outcome = CF_OUTCOME_STALL;
	ereport(ERROR,
			(errcode(ERRCODE_CF_WAIT_CONDITION_NOT_MET),
			 errmsg("%s: %s", step_name, message),
			 errdetail("The run is now stalled."),
			 errhint("Call chrono_forge.retry() to wait again.")));
}
