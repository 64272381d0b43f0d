/*-------------------------------------------------------------------------
 *
 * repeat.c
 *	  durably_repeat: a step run once per tick of a schedule.
 *
 * Owns the repetition protocol: a coordination log fixes the grid's anchor
 * at the first pass and records the last tick handled; each tick has its
 * own log, completed in the same transaction as the coordination update;
 * `till` is evaluated on every pass before any tick; ticks that expired
 * while nothing ran are skipped in closed form and summarised by one row.
 * A resume reads only the coordination log and the current tick's log:
 * this file must never read or write the other ticks' logs, nor walk the
 * skipped ticks one by one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
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

PG_FUNCTION_INFO_V1(cf_durably_repeat);

/*
 * Months-based intervals step the calendar one tick at a time for this
 * many ticks before jumping: by then the day of month has settled (Jan 31
 * + 1 month lands on Feb 28 and stays on the 28th), so a jump of n ticks
 * lands where n single steps would.
 */
#define CALENDAR_SETTLE_TICKS 48

typedef struct Repeat
{
	char	   *coord_name;		/* durably_repeat$<name> */
	int64		coord_id;
	int			coord_attempts;
	Interval   *every;
	Interval   *timeout;
	CfFunction *step;
	Jsonb	   *policy;			/* per call; NULL: resolved on failure */
	bool		fail_workflow;	/* on_error => 'fail_workflow' */
} Repeat;

/* Seconds since the Unix epoch, rounded down: names a tick's log. */
static int64
epoch_seconds(TimestampTz t)
{
	int64		s = t / USECS_PER_SEC;

	if (t % USECS_PER_SEC < 0)
		s--;
	return s + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

static char *
tick_name(Repeat *r, TimestampTz tick)
{
	return psprintf("%s$%lld", r->coord_name, (long long) epoch_seconds(tick));
}

/* t + n * every, each field multiplied (the calendar arithmetic of +). */
static TimestampTz
grid_step(TimestampTz t, Interval *every, int64 n)
{
	Interval	span;
	int32		n32 = (int32) n;

	if (n != n32 ||
		pg_mul_s32_overflow(every->month, n32, &span.month) ||
		pg_mul_s32_overflow(every->day, n32, &span.day) ||
		pg_mul_s64_overflow(every->time, n, &span.time))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("durably_repeat: tick out of range")));
	return cf_timestamp_plus(t, &span);
}

/*
 * The one expiry rule: a tick expired once now is past tick + timeout.
 * Both the tick-by-tick loop and the fast-forward below use it: with a
 * calendar timeout, tick + timeout < now and tick < now - timeout
 * disagree at month ends (Feb 28 + 1 month = Mar 28 < Mar 31, while Mar
 * 31 - 1 month = Feb 28 is not after Feb 28), and the two rules once left
 * two summary rows for one catch-up.  tick + timeout never decreases as
 * the tick grows, so the first unexpired tick can be searched for.
 */
static bool
tick_expired(TimestampTz tick, Interval *timeout, TimestampTz now)
{
	return now > cf_timestamp_plus(tick, timeout);
}

/*
 * The first tick of the grid next, next + every, ... that has not expired
 * (tick_expired), given next has; *skipped counts the ticks before it,
 * *last_skipped is the one just before it.  Closed form: an estimate of
 * the count from the interval's length (to now - timeout), corrected by a
 * step or two.  Intervals mixing months with days or time are walked tick
 * by tick (no jump is exact for them); months-only ones settle first (see
 * above).
 */
static TimestampTz
first_unexpired_tick(TimestampTz next, Interval *every, Interval *timeout, TimestampTz now,
					 int64 *skipped, TimestampTz *last_skipped)
{
	TimestampTz t = next;
	TimestampTz prev = next;
	int64		count = 0;
	int64		walk_limit = 0;

	if (every->month != 0)
		walk_limit = (every->day != 0 || every->time != 0) ? PG_INT64_MAX : CALENDAR_SETTLE_TICKS;
	while (tick_expired(t, timeout, now) && count < walk_limit)
	{
		CHECK_FOR_INTERRUPTS();
		prev = t;
		t = grid_step(t, every, 1);
		count++;
	}
	if (tick_expired(t, timeout, now))
	{
		TimestampTz cutoff = cf_timestamp_plus(now, DatumGetIntervalP(DirectFunctionCall1(interval_um, IntervalPGetDatum(timeout))));
		double		span_us = (double) cutoff - (double) t;
		double		every_us = cf_interval_seconds(every) * USECS_PER_SEC;
		int64		n = Max(1, (int64) (span_us / every_us));
		int64		lo = 0;		/* a step known expired (t itself) */
		int64		hi;			/* one known not expired */
		int64		d = 1;

		/*
		 * The estimate is off by a few ticks (a calendar timeout: by up to
		 * three days' worth): gallop from it to a bracket, then halve.
		 */
		if (tick_expired(grid_step(t, every, n), timeout, now))
		{
			for (lo = n, hi = n + 1; tick_expired(grid_step(t, every, hi), timeout, now); d *= 2)
			{
				lo = hi;
				hi = n + 2 * d;
			}
		}
		else
		{
			for (hi = n; n - d > 0 && !tick_expired(grid_step(t, every, n - d), timeout, now); d *= 2)
				hi = n - d;
			lo = Max(n - d, 0);
		}
		while (hi - lo > 1)
		{
			int64		mid = lo + (hi - lo) / 2;

			CHECK_FOR_INTERRUPTS();
			if (tick_expired(grid_step(t, every, mid), timeout, now))
				lo = mid;
			else
				hi = mid;
		}
		n = hi;
		prev = grid_step(t, every, n - 1);
		t = grid_step(t, every, n);
		count += n;
	}
	*skipped = count;
	*last_skipped = prev;
	return t;
}

/* Record the last tick handled on the coordination log (uncommitted). */
static void
set_last_tick(Repeat *r, TimestampTz tick)
{
	cf_step_log_write(r->coord_name, "pending", r->coord_attempts,
					  cf_jsonb_parse(psprintf("{\"last_execution_at\": %s}",
											  cf_json_timestamp(tick))),
					  NULL, NULL);
}

/* A tick's own metadata. */
static Jsonb *
tick_metadata(Repeat *r, TimestampTz tick, const char *extra)
{
	return cf_jsonb_parse(psprintf("{\"scheduled_for\": %s, \"timeout_at\": %s, \"parent_id\": " INT64_FORMAT "%s}",
								   cf_json_timestamp(tick),
								   cf_json_timestamp(cf_timestamp_plus(tick, r->timeout)),
								   r->coord_id, extra ? extra : ""));
}

/* A failed tick row with an expiry error (no attempt was made for it). */
static void
write_expired_tick(Repeat *r, const char *name, int attempts, Jsonb *metadata,
				   const char *message)
{
	ErrorData	edata;

	memset(&edata, 0, sizeof(edata));
	edata.sqlerrcode = ERRCODE_CF_TICK_EXPIRED;
	edata.message = (char *) message;
	cf_step_log_write(name, "failed", attempts, metadata, NULL, &edata);
}

/* Stop this pass until `at`: park with what this call wrote. */
static void
wait_for(Repeat *r, TimestampTz at, const char *step_name)
{
	cf_set_continuation(at, "repeat");
	cf_park(step_name, false);
}

/* After a tick: the next one is due at tick + every (maybe already). */
static void
wait_for_next(Repeat *r, TimestampTz tick, const char *step_name)
{
	TimestampTz next = cf_timestamp_plus(tick, r->every);
	TimestampTz now = cf_clock_now();

	wait_for(r, next > now ? next : now, step_name);
}

typedef struct TickAttempt
{
	Repeat	   *repeat;
	const char *name;
	TimestampTz tick;
	int			attempt;
	Jsonb	   *metadata;
} TickAttempt;

/* Inside the subtransaction: the step, its tick log, the coordination. */
static void
attempt_tick(void *arg)
{
	TickAttempt *a = (TickAttempt *) arg;
	Jsonb	   *result = cf_function_call(a->repeat->step, NULL, a->tick);

	cf_step_log_write(a->name, "completed", a->attempt, a->metadata, result, NULL);
	set_last_tick(a->repeat, a->tick);
	cf_save_context_and_check_lock();
}

/* Run a due tick; never returns (the pass halts until the next tick). */
static void
run_tick(Repeat *r, const char *name, TimestampTz tick, CfStepLog *log)
{
	TickAttempt a;
	Jsonb	   *context_before = cf_pass.context;
	bool		dirty_before = cf_pass.context_dirty;
	ErrorData  *edata;
	CfRetryDecision d;

	a.repeat = r;
	a.name = name;
	a.tick = tick;
	a.attempt = log->attempts + 1;
	a.metadata = tick_metadata(r, tick, NULL);
	edata = cf_run_guarded(attempt_tick, &a);
	if (edata == NULL)
		wait_for_next(r, tick, name);	/* the tick commits with the park */

	/* The attempt failed: its writes and context changes are gone. */
	cf_pass.context = context_before;
	cf_pass.context_dirty = dirty_before;
	d = cf_step_failure_record(name, a.attempt, log->metadata, a.metadata,
							   cf_step_policy(r->policy), edata);
	if (d.retry)
		cf_commit_and_retry_after(name, d.delay_s);
	if (r->fail_workflow)
	{
		cf_commit();
		SPI_finish();
		cf_stall(name, a.attempt, edata);
	}
	/* on_error => 'continue': this tick is done with, failed. */
	set_last_tick(r, tick);
	wait_for_next(r, tick, name);
}

/*
 * durably_repeat's arguments into r, *step, *till and *name; a bad one
 * fails the run (CF012).
 */
static void
repeat_args(FunctionCallInfo fcinfo, Repeat *r, char **step, char **till, char **name)
{
	char	   *on_error;

	*step = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	cf_validate_name_segment("step", *step);
	if (PG_ARGISNULL(1))
		cf_primitive_invalid_argument("durably_repeat every must not be NULL");
	r->every = PG_GETARG_INTERVAL_P(1);
	if (cf_interval_is_negative(r->every) ||
		(r->every->month == 0 && r->every->day == 0 && r->every->time < USECS_PER_SEC))
		cf_primitive_invalid_argument("durably_repeat every must be positive, at least 1 second, and have no negative field");
	if (PG_ARGISNULL(2))
		cf_primitive_invalid_argument("durably_repeat till must not be NULL");
	if (!PG_ARGISNULL(3) && TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(3)))
		cf_primitive_invalid_argument("durably_repeat start_at must be finite");
	*till = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (!PG_ARGISNULL(4))
		r->policy = cf_policy_validate(PG_GETARG_JSONB_P(4));
	if (PG_ARGISNULL(5))
		cf_primitive_invalid_argument("durably_repeat timeout must not be NULL");
	r->timeout = PG_GETARG_INTERVAL_P(5);
	if (cf_interval_is_negative(r->timeout))
		cf_primitive_invalid_argument("durably_repeat timeout must not be negative");
	on_error = PG_ARGISNULL(6) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(6));
	if (strcmp(on_error, "continue") != 0 && strcmp(on_error, "fail_workflow") != 0)
		cf_primitive_invalid_argument("durably_repeat on_error must be 'continue' or 'fail_workflow'");
	r->fail_workflow = (strcmp(on_error, "fail_workflow") == 0);
	*name = PG_ARGISNULL(7) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(7));
	if (*name != NULL)
		cf_validate_name_segment("durably_repeat name", *name);
}

/*
 * The repeat's coordination log: written on the first pass, which fixes
 * the grid's anchor once (start_at, or the next whole second plus every);
 * read on later ones.  Returns whether a tick was done with, and *last
 * the latest one.
 */
static bool
open_coordination(Repeat *r, const TimestampTz *start_at, TimestampTz now,
				  TimestampTz *anchor, TimestampTz *last)
{
	CfStepLog	coord = cf_step_log_read(r->coord_name);

	if (coord.exists && cf_metadata_timestamp(coord.metadata, "anchor", anchor))
	{
		r->coord_id = coord.id;
		r->coord_attempts = coord.attempts;
		return cf_metadata_timestamp(coord.metadata, "last_execution_at", last);
	}
	*anchor = start_at == NULL
		? cf_timestamp_plus(now - (now % USECS_PER_SEC + USECS_PER_SEC) % USECS_PER_SEC, r->every)
		: *start_at;
	r->coord_attempts = 1;
	r->coord_id = cf_step_log_write(r->coord_name, "pending", 1,
									cf_jsonb_parse(psprintf("{\"anchor\": %s, \"every\": %s, \"timeout\": %s, \"last_execution_at\": null}",
															cf_json_timestamp(*anchor),
															cf_json_string(DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(r->every)))),
															cf_json_string(DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(r->timeout)))))),
									NULL, NULL);
	return false;
}

/*
 * till, before any tick, on every pass; its errors are the run's.  True
 * if it held: the repeat is completed (committed, SPI finished).
 */
static bool
repeat_done(Repeat *r, CfFunction *till_fn)
{
	if (!cf_jsonb_is_true(cf_function_call(till_fn, NULL, 0)))
		return false;
	cf_step_log_write(r->coord_name, "completed", r->coord_attempts, NULL, NULL, NULL);
	cf_save_context_and_check_lock();
	cf_commit();
	SPI_finish();
	cf_step_remember(r->coord_name, NULL);
	return true;
}

/* Dormant past whole ticks: skip them all, leave one summary row.  Returns the last skipped. */
static TimestampTz
fast_forward(Repeat *r, TimestampTz tick, TimestampTz now)
{
	int64		skipped;
	TimestampTz last_skipped;

	(void) first_unexpired_tick(tick, r->every, r->timeout, now, &skipped, &last_skipped);
	write_expired_tick(r, tick_name(r, last_skipped), 0,
					   tick_metadata(r, last_skipped,
									 psprintf(", \"fast_forwarded\": " INT64_FORMAT ", \"from\": %s, \"to\": %s",
											  skipped, cf_json_timestamp(tick),
											  cf_json_timestamp(last_skipped))),
					   psprintf("Fast-forwarded " INT64_FORMAT " expired tick(s)", skipped));
	return last_skipped;
}

/*
 * The tick due at tick: done with already, expired, waited for (the pass
 * ends) or run.  Returns the tick done with (the last skipped, if it fast
 * forwarded).
 */
static TimestampTz
visit_tick(Repeat *r, TimestampTz tick, TimestampTz now)
{
	char	   *name_of_tick = tick_name(r, tick);
	CfStepLog	log = cf_step_log_read(name_of_tick);
	bool		expired = tick_expired(tick, r->timeout, now);

	if (log.exists && (strcmp(log.state, "completed") == 0 ||
					   (expired && strcmp(log.state, "failed") == 0)))
	{
		/* Done with already (its coordination update was lost). */
	}
	else if (log.exists && expired)
		write_expired_tick(r, name_of_tick, log.attempts, NULL,
						   "tick expired before it could complete");
	else if (expired)
		tick = fast_forward(r, tick, now);
	else if (tick > now)
		wait_for(r, tick, r->coord_name);
	else
		run_tick(r, name_of_tick, tick, &log);
	return tick;
}

/*
 * durably_repeat(step, every, till, start_at, retry_policy, timeout,
 *				  on_error, name)
 */
Datum
cf_durably_repeat(PG_FUNCTION_ARGS)
{
	Repeat		r;
	char	   *step;
	char	   *till;
	char	   *name;
	CfFunction *till_fn;
	Jsonb	   *ignored;
	TimestampTz now;
	TimestampTz start_at;
	TimestampTz anchor;
	TimestampTz last = 0;
	bool		has_last;

	cf_require_pass(fcinfo, "durably_repeat");
	cf_fail_now();
	memset(&r, 0, sizeof(r));
	repeat_args(fcinfo, &r, &step, &till, &name);
	cf_pass.outcome = CF_OUTCOME_NONE;

	r.coord_name = psprintf("durably_repeat$%s", name ? name : step);
	if (cf_step_completed(r.coord_name, &ignored))
		PG_RETURN_VOID();

	cf_spi_connect();
	r.step = cf_function_lookup(step, "step", true);
	till_fn = cf_condition_lookup(till, "till");

	now = cf_clock_now();
	if (!PG_ARGISNULL(3))
		start_at = PG_GETARG_TIMESTAMPTZ(3);
	has_last = open_coordination(&r, PG_ARGISNULL(3) ? NULL : &start_at, now, &anchor, &last);
	if (repeat_done(&r, till_fn))
		PG_RETURN_VOID();

	for (;;)
	{
		TimestampTz tick = has_last ? cf_timestamp_plus(last, r.every) : anchor;

		CHECK_FOR_INTERRUPTS();
		tick = visit_tick(&r, tick, now);
		set_last_tick(&r, tick);
		last = tick;
		has_last = true;
	}
	PG_RETURN_VOID();			/* not reached */
}
