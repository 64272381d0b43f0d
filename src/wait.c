/*-------------------------------------------------------------------------
 *
 * wait.c
 *	  Waiting primitives: wait, wait_until, continue_if.
 *
 * Owns how a pass defers on time or on a condition: each primitive is a
 * durable step that records what it waits for, then halts with at most
 * one continuation (none for continue_if: wake() resumes it).  A waiting
 * run holds no worker.  This file must never evaluate a condition outside
 * a subtransaction, nor retry a condition error unless the per-call policy
 * says so.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/datetime.h"
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

PG_FUNCTION_INFO_V1(cf_wait);
PG_FUNCTION_INFO_V1(cf_wait_until);
PG_FUNCTION_INFO_V1(cf_continue_if);

static bool
interval_is_positive(Interval *i)
{
	return !cf_interval_is_negative(i) && (i->month > 0 || i->day > 0 || i->time > 0);
}

static Jsonb *
jsonb_true(void)
{
	return cf_jsonb_parse("true");
}

typedef struct ConditionCall
{
	CfFunction *function;
	Jsonb	   *result;
} ConditionCall;

static void
evaluate_condition(void *arg)
{
	ConditionCall *c = (ConditionCall *) arg;

	c->result = cf_function_call(c->function, NULL, 0);
}

/* Complete a waiting step now: log it, commit, remember it. */
static void
complete_step(const char *step_name, int attempts, Jsonb *metadata_patch, Jsonb *result)
{
	cf_step_log_write_owned(step_name, "completed", attempts, metadata_patch, result, NULL);
	cf_commit();
	/* Before SPI_finish(): result may live in the SPI connection's memory. */
	cf_step_remember(step_name, result);
	SPI_finish();
}

/* Record the step as still waiting and park the run. */
static void
defer_step(const char *step_name, int attempts, Jsonb *metadata_patch)
{
	cf_step_log_write_owned(step_name, "pending", attempts, metadata_patch, NULL, NULL);
	cf_park(step_name, false);
}

/* wait(duration interval, name text) */
Datum
cf_wait(PG_FUNCTION_ARGS)
{
	Interval   *duration;
	char	   *name;
	char	   *step_name;
	Jsonb	   *ignored;
	CfStepLog	log;
	TimestampTz now;
	TimestampTz target;

	cf_require_pass(fcinfo, "wait");
	if (PG_ARGISNULL(0))
		cf_primitive_invalid_argument("wait duration must not be NULL");
	duration = PG_GETARG_INTERVAL_P(0);
	if (cf_interval_is_negative(duration))
		cf_primitive_invalid_argument("wait duration must not be negative");
	cf_fail_now();
	name = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	cf_validate_name_segment("wait name", name);
	cf_pass.outcome = CF_OUTCOME_NONE;

	step_name = psprintf("wait$%s", name);
	if (cf_step_completed(step_name, &ignored))
		PG_RETURN_VOID();

	cf_spi_connect();
	log = cf_step_log_read(step_name);
	now = cf_clock_now();

	/* First seen: the target is fixed now, once. */
	if (!log.exists || !cf_metadata_timestamp(log.metadata, "wait_until", &target))
	{
		Jsonb	   *metadata;

		target = cf_timestamp_plus(now, duration);
		metadata = cf_jsonb_parse(psprintf("{\"wait_until\": %s}", cf_json_timestamp(target)));
		if (target <= now)
			complete_step(step_name, 1, metadata, NULL);
		else
		{
			cf_set_continuation(target, "wait");
			defer_step(step_name, 1, metadata);
		}
		PG_RETURN_VOID();
	}

	if (now >= target)
	{
		complete_step(step_name, log.attempts + 1, NULL, NULL);
		PG_RETURN_VOID();
	}

	/* Woken early: sleep the remainder only, writing nothing of the step. */
	cf_set_continuation(target, "wait");
	cf_park(step_name, false);
	PG_RETURN_VOID();			/* not reached */
}

/* wait_until(condition, timeout, check_interval, retry_policy) */
Datum
cf_wait_until(PG_FUNCTION_ARGS)
{
	char	   *condition;
	Interval   *timeout;
	Interval   *check_interval;
	Jsonb	   *policy = NULL;
	char	   *step_name;
	Jsonb	   *ignored;
	CfStepLog	log;
	TimestampTz now;
	TimestampTz timeout_at;
	Jsonb	   *metadata = NULL;
	ConditionCall call;
	ErrorData  *edata;
	int			attempts;

	cf_require_pass(fcinfo, "wait_until");
	cf_fail_now();
	condition = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	cf_validate_name_segment("condition", condition);
	if (PG_ARGISNULL(1) || cf_interval_is_negative(PG_GETARG_INTERVAL_P(1)))
		cf_primitive_invalid_argument("wait_until timeout must not be NULL or negative");
	timeout = PG_GETARG_INTERVAL_P(1);
	if (PG_ARGISNULL(2) || !interval_is_positive(PG_GETARG_INTERVAL_P(2)))
		cf_primitive_invalid_argument("wait_until check_interval must be positive");
	check_interval = PG_GETARG_INTERVAL_P(2);
	if (!PG_ARGISNULL(3))
		policy = cf_policy_validate(PG_GETARG_JSONB_P(3));
	cf_pass.outcome = CF_OUTCOME_NONE;

	step_name = psprintf("wait_until$%s", condition);
	if (cf_step_completed(step_name, &ignored))
		PG_RETURN_VOID();

	cf_spi_connect();
	call.function = cf_condition_lookup(condition, "condition");
	log = cf_step_log_read(step_name);
	now = cf_clock_now();
	if (!cf_metadata_timestamp(log.metadata, "timeout_at", &timeout_at))
	{
		timeout_at = cf_timestamp_plus(now, timeout);
		metadata = cf_jsonb_parse(psprintf("{\"timeout_at\": %s, \"check_interval\": %.6f}",
										   cf_json_timestamp(timeout_at),
										   cf_interval_seconds(check_interval)));
	}
	attempts = log.attempts + 1;

	/* The condition first, then the timeout (as the gem does). */
	edata = cf_run_guarded(evaluate_condition, &call);
	if (edata != NULL)
		cf_step_failed(step_name, attempts, log.metadata, metadata,
					   policy ? policy : cf_policy_builtin("wait"), edata);

	if (cf_jsonb_is_true(call.result))
	{
		complete_step(step_name, attempts, cf_jsonb_parse("{\"result\": true}"), jsonb_true());
		PG_RETURN_VOID();
	}
	if (now > timeout_at)
		cf_timeout_step(step_name, attempts,
						cf_jsonb_parse("{\"result\": \"timed_out\"}"),
						"wait condition not met before its timeout");

	cf_set_continuation(cf_timestamp_plus(now, check_interval), "poll");
	defer_step(step_name, attempts, metadata);
	PG_RETURN_VOID();			/* not reached */
}

/* continue_if(condition, name): no polling; wake() resumes it. */
Datum
cf_continue_if(PG_FUNCTION_ARGS)
{
	char	   *condition;
	char	   *name;
	char	   *step_name;
	Jsonb	   *ignored;
	CfStepLog	log;
	ConditionCall call;
	ErrorData  *edata;
	Jsonb	   *metadata;
	int			attempts;

	cf_require_pass(fcinfo, "continue_if");
	cf_fail_now();
	condition = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	cf_validate_name_segment("condition", condition);
	name = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (name != NULL)
		cf_validate_name_segment("continue_if name", name);
	cf_pass.outcome = CF_OUTCOME_NONE;

	step_name = psprintf("continue_if$%s", name ? name : condition);
	if (cf_step_completed(step_name, &ignored))
		PG_RETURN_VOID();

	cf_spi_connect();
	call.function = cf_condition_lookup(condition, "condition");
	log = cf_step_log_read(step_name);
	attempts = log.attempts + 1;
	metadata = log.exists ? NULL
		: cf_jsonb_parse(psprintf("{\"condition\": %s, \"name\": %s}",
								  cf_json_string(condition),
								  name ? cf_json_string(name) : "null"));

	edata = cf_run_guarded(evaluate_condition, &call);
	if (edata != NULL)
		cf_step_failed(step_name, attempts, log.metadata, metadata, NULL, edata);
	if (cf_jsonb_is_true(call.result))
	{
		complete_step(step_name, attempts, cf_jsonb_parse("{\"result\": true}"), jsonb_true());
		PG_RETURN_VOID();
	}
	/* Halt with no continuation: the run waits for wake(). */
	defer_step(step_name, attempts, metadata);
	PG_RETURN_VOID();			/* not reached */
}
