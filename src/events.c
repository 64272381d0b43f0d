/*-------------------------------------------------------------------------
 *
 * events.c
 *	  Durable events: send_event() from any client, await_event() inside a
 *	  workflow.
 *
 * Owns the events table's protocol: an event is kept until a step
 * consumes it; each await_event step consumes the oldest unconsumed event
 * of its name, in the same transaction that completes the step, so an
 * event is consumed exactly once and replays with the same payload.  This
 * file must never drop an event that no step has consumed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "access.h"
#include "citus.h"
#include "clock.h"
#include "concurrency.h"
#include "internal.h"
#include "journal.h"
#include "pass.h"
#include "replay.h"
#include "step.h"
#include "steplog.h"
#include "util.h"
#include "wakeups.h"

PG_FUNCTION_INFO_V1(cf_send_event);
PG_FUNCTION_INFO_V1(cf_await_event);

/*
 * send_event(workflow, key, name, payload) RETURNS boolean: false (and
 * nothing kept) if the run is terminal.
 */
Datum
cf_send_event(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *workflow;
	char	   *key;
	char	   *name;
	Oid			caller = GetUserId();
	CfInternal	st;
	CfRunRef	run;
	bool		delivered = false;
	TimestampTz now = cf_clock_now();
	Datum		values[4];
	char		nulls[5] = "    ";

	workflow = cf_required_text(fcinfo, 0, "workflow");
	key = cf_required_text(fcinfo, 1, "key");
	cf_citus_check_key(key);
	name = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	cf_validate_name_segment("event name", name);
	if (!PG_ARGISNULL(3))
		cf_check_json_size("event payload", PG_GETARG_JSONB_P(3));

	SPI_connect();
	cf_internal_begin(&st);
	run = cf_find_own_run(caller, workflow, key, false);
	if (strcmp(run.state, "idle") == 0 || strcmp(run.state, "running") == 0)
	{
		values[0] = Int64GetDatum(run.id);
		values[1] = CStringGetTextDatum(name);
		if (PG_ARGISNULL(3))
			nulls[2] = 'n';
		else
			values[2] = JsonbPGetDatum(PG_GETARG_JSONB_P(3));
		values[3] = TimestampTzGetDatum(now);
		cf_exec(&plan,
				"INSERT INTO chrono_forge.events (workflow_id, name, payload, sent_at)"
				" VALUES ($1, $2, $3, $4)",
				4, (Oid[]) {INT8OID, TEXTOID, JSONBOID, TIMESTAMPTZOID},
				values, nulls, false, 0);
		/* A run waiting for its concurrency place sees it once admitted. */
		if (!cf_gate_waiting(run.id))
			cf_wakeup_add(run.id, now, "event", CF_WAKEUP_ALWAYS);
		delivered = true;
	}
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_BOOL(delivered);
}

/* Take the oldest unconsumed event of this name for this step, if any. */
static bool
consume_event(const char *name, const char *step_name, Jsonb **payload)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	bool		isnull;
	bool		found;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"UPDATE chrono_forge.events SET consumed_at = chrono_forge.now(), consumed_by_step = $3"
			" WHERE id = (SELECT id FROM chrono_forge.events"
			"              WHERE workflow_id = $1 AND name = $2 AND consumed_at IS NULL"
			"              ORDER BY id LIMIT 1 FOR UPDATE)"
			" RETURNING payload",
			3, (Oid[]) {INT8OID, TEXTOID, TEXTOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(name),
			CStringGetTextDatum(step_name)},
			NULL, false, 1);
	cf_internal_end(&st);
	found = (SPI_processed == 1);
	*payload = NULL;
	if (found)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
		{
			/* In the pass's memory: it is returned after SPI_finish(). */
			MemoryContext old = MemoryContextSwitchTo(cf_pass.cxt);

			*payload = DatumGetJsonbPCopy(d);
			MemoryContextSwitchTo(old);
		}
	}
	return found;
}

/*
 * await_event(name, timeout) and await_event(name, INOUT payload, timeout).
 */
Datum
cf_await_event(PG_FUNCTION_ARGS)
{
	bool		has_payload = (PG_NARGS() == 3);
	int			a = has_payload ? 1 : 0;
	char	   *name;
	char	   *step_name;
	Interval   *timeout = NULL;
	Jsonb	   *payload = NULL;
	CfStepLog	log;
	TimestampTz now;
	TimestampTz timeout_at = DT_NOEND;
	bool		has_timeout;
	Jsonb	   *metadata = NULL;

	cf_require_pass(fcinfo, "await_event");
	cf_fail_now();
	name = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	cf_validate_name_segment("event name", name);
	if (!PG_ARGISNULL(1 + a))
	{
		timeout = PG_GETARG_INTERVAL_P(1 + a);
		if (cf_interval_is_negative(timeout))
			ereport(ERROR,
					(errcode(ERRCODE_CF_INVALID_ARGUMENT),
					 errmsg("await_event timeout must not be negative")));
	}
	cf_pass.outcome = CF_OUTCOME_NONE;

	step_name = psprintf("await_event$%s", name);
	if (cf_step_completed(step_name, &payload))
		return cf_return_result(fcinfo, has_payload, payload);

	cf_spi_connect();
	log = cf_step_log_read(step_name);
	now = cf_clock_now();
	has_timeout = cf_metadata_timestamp(log.metadata, "timeout_at", &timeout_at);
	if (!log.exists)
	{
		has_timeout = (timeout != NULL);
		if (has_timeout)
			timeout_at = cf_timestamp_plus(now, timeout);
		metadata = cf_jsonb_parse(psprintf("{\"timeout_at\": %s}",
										   has_timeout ? cf_json_timestamp(timeout_at) : "null"));
	}

	if (consume_event(name, step_name, &payload))
	{
		cf_step_log_write(step_name, "completed", log.attempts + 1, metadata, payload, NULL);
		cf_save_context_and_check_lock();
		cf_commit();
		SPI_finish();
		cf_step_remember(step_name, payload);
		return cf_return_result(fcinfo, has_payload, payload);
	}

	if (has_timeout && now >= timeout_at)
		cf_timeout_step(step_name, log.attempts + 1, NULL,
						psprintf("no event \"%s\" arrived before the timeout", name));

	/* Halt until an event (send_event wakes the run) or the timeout. */
	if (has_timeout)
		cf_set_continuation(timeout_at, "event timeout");
	if (!log.exists)
		cf_step_log_write(step_name, "pending", 0, metadata, NULL, NULL);
	cf_park(step_name, false);
	PG_RETURN_VOID();			/* not reached */
}
