/*-------------------------------------------------------------------------
 *
 * triggers.c
 *	  The triggers on chrono_forge.workflows.
 *
 * Owns the row triggers that keep a run's ended_at, the per-day outcome
 * counts and the blocked-children counts in step with its state, note
 * the runs that end for their waiters (waiter_slots.c), and give an
 * ended run's concurrency place to the next (concurrency.c).  They
 * run in every writer's transaction: they must never run user code, nor
 * read more than the changed row's neighbours.
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
#include "concurrency.h"
#include "definitions.h"
#include "internal.h"
#include "merge.h"
#include "waiter_slots.h"

PG_FUNCTION_INFO_V1(cf_workflows_ended_at);
PG_FUNCTION_INFO_V1(cf_workflows_state_columns);

/*
 * A run written without a definition hash (0.10.0) gets its procedure's
 * current one: the version of the code it starts with.  A run restored
 * from a dump keeps the one it had.  False if there is nothing to stamp
 * (no such column before 0.10.0, a hash given, no such procedure).
 */
static bool
stamp_definition(HeapTuple tuple, TupleDesc desc, Datum *value)
{
	int			col = SPI_fnumber(desc, "definition_hash");
	bool		isnull;
	Datum		procedure;
	int64		hash;

	if (col <= 0)
		return false;
	(void) heap_getattr(tuple, col, desc, &isnull);
	if (!isnull)
		return false;
	procedure = heap_getattr(tuple, SPI_fnumber(desc, "procedure"), desc, &isnull);
	if (isnull || !cf_definition_hash(TextDatumGetCString(procedure), &hash))
		return false;
	*value = Int64GetDatum(hash);
	return true;
}

/* The run's state (an enum label) in the tuple; "" if NULL. */
static const char *
tuple_state(HeapTuple tuple, TupleDesc desc)
{
	bool		isnull;
	Datum		state = heap_getattr(tuple, SPI_fnumber(desc, "state"), desc, &isnull);

	return isnull ? "" : DatumGetCString(DirectFunctionCall1(enum_out, state));
}

static bool
state_is_terminal(const char *state)
{
	return strcmp(state, "completed") == 0 || strcmp(state, "failed") == 0 ||
		strcmp(state, "cancelled") == 0 || strcmp(state, "compensated") == 0;
}

/*
 * state_code: 1..7 in the enum's order (0.2.0 computed it in the table;
 * compensated, 7, since 0.12.0).
 */
static int16
state_code(const char *state)
{
	static const char *const labels[] = {"idle", "running", "completed", "failed",
	"stalled", "cancelled", "compensated"};

	for (int i = 0; i < (int) lengthof(labels); i++)
		if (strcmp(state, labels[i]) == 0)
			return (int16) (i + 1);
	elog(ERROR, "unknown workflow state \"%s\"", state);
	return 0;					/* keep compiler quiet */
}

/*
 * ended_at for a run whose state changes from old_state to new_state
 * ("" for a run being written): updated_at on the way into completed,
 * failed or cancelled, NULL on the way out.  Sets the new value; false if
 * ended_at does not change.
 */
static bool
ended_at_change(const char *old_state, const char *new_state, HeapTuple new,
				TupleDesc desc, Datum *value, bool *isnull)
{
	bool		was = state_is_terminal(old_state);
	bool		is = state_is_terminal(new_state);

	if (was == is)
		return false;
	*isnull = true;
	*value = (Datum) 0;
	if (is)
		*value = heap_getattr(new, SPI_fnumber(desc, "updated_at"), desc, isnull);
	return true;
}

/*
 * A run whose ending lies in a day daily_outcomes() may have summarised
 * changes: note the day for its owner (see outcome_days_refresh(), which
 * summarises a day only an hour after it ended).  That is a run leaving an
 * ended state an hour or more after it ended, or entering one with an
 * updated_at an hour or more in the past (only with a clock set back);
 * never an update a pass makes.
 */
static void
note_outcome_day_change(const char *old_state, const char *new_state,
						HeapTuple old, HeapTuple new, TupleDesc desc)
{
	static SPIPlanPtr plan = NULL;
	TimestampTz cutoff = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), -3600 * 1000);
	bool		isnull;
	Datum		ended = heap_getattr(old, SPI_fnumber(desc, "ended_at"), desc, &isnull);
	CfInternal	st;

	if (!isnull)
	{
		if (strcmp(old_state, new_state) == 0 || DatumGetTimestampTz(ended) >= cutoff)
			return;
	}
	else
	{
		if (!state_is_terminal(new_state))
			return;
		ended = heap_getattr(new, SPI_fnumber(desc, "updated_at"), desc, &isnull);
		if (isnull || DatumGetTimestampTz(ended) >= cutoff)
			return;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cf_internal_begin(&st);
	cf_exec(&plan,
			"INSERT INTO chrono_forge.outcome_days_changed (day, owner)"
			" VALUES (pg_catalog.timezone('UTC', $1)::date, $2)",
			2, (Oid[]) {TIMESTAMPTZOID, REGROLEOID},
			(Datum[]) {ended, heap_getattr(new, SPI_fnumber(desc, "owner"), desc, &isnull)},
			NULL, false, 0);
	cf_internal_end(&st);
	SPI_finish();
}

/* failed, stalled, cancelled or compensated: what a merge calls a blocked child */
static bool
state_is_blocked(const char *state)
{
	return strcmp(state, "failed") == 0 || strcmp(state, "stalled") == 0 ||
		strcmp(state, "cancelled") == 0 || strcmp(state, "compensated") == 0;
}

/*
 * A child becoming blocked (failed, stalled, cancelled; written so by
 * whichever path: a pass, the launcher, cancel()): a parked merge of its
 * branch looks at once, so that its on_child_failure acts now rather than
 * at its next poll.  Rare: never on a pass's ordinary updates.
 */
static void
note_child_blocked(const char *old_state, const char *new_state, HeapTuple new,
				   TupleDesc desc)
{
	bool		isnull;
	Datum		parent;

	if (!state_is_blocked(new_state) || state_is_blocked(old_state))
		return;
	parent = heap_getattr(new, SPI_fnumber(desc, "parent_execution_log_id"), desc, &isnull);
	if (isnull)
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	(void) cf_merge_poll_due_now(DatumGetInt64(parent));
	SPI_finish();
}

/*
 * A run becoming terminal or stalled: the sessions waiting for it in
 * wait_for_run() are woken once this transaction commits (noted always:
 * a waiter may register between now and the commit).
 */
static void
note_run_ended(const char *old_state, const char *new_state, HeapTuple new,
			   TupleDesc desc)
{
	bool		isnull;
	Datum		id;

	if (strcmp(old_state, new_state) == 0 ||
		!(state_is_terminal(new_state) || strcmp(new_state, "stalled") == 0))
		return;
	id = heap_getattr(new, SPI_fnumber(desc, "id"), desc, &isnull);
	if (!isnull)
		cf_note_run_ended(DatumGetInt64(id));
}

/*
 * A run that ends leaves its concurrency gate (0.11.0): its place goes to
 * the oldest run waiting for one (concurrency.c).
 */
static void
leave_gate(const char *old_state, const char *new_state, HeapTuple new, TupleDesc desc)
{
	int			col;
	bool		isnull;
	Datum		gate;
	Datum		id;

	if (state_is_terminal(old_state) || !state_is_terminal(new_state))
		return;
	col = SPI_fnumber(desc, "gate_id");
	if (col <= 0)
		return;					/* before 0.11.0 */
	gate = heap_getattr(new, col, desc, &isnull);
	if (isnull)
		return;
	id = heap_getattr(new, SPI_fnumber(desc, "id"), desc, &isnull);
	(void) heap_getattr(new, SPI_fnumber(desc, "started_at"), desc, &isnull);
	cf_gate_release(DatumGetInt64(gate), DatumGetInt64(id), !isnull);
}

static void
require_row_trigger(FunctionCallInfo fcinfo, const char *name)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s: not called as a BEFORE row trigger", name)));
}

/*
 * 0.2.0's trigger on workflows (BEFORE UPDATE OF state, when a run enters
 * or leaves completed, failed or cancelled): ended_at.  Kept for databases
 * not yet updated to 0.3.0.
 */
Datum
cf_workflows_ended_at(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	int			cols[1];
	Datum		values[1];
	bool		nulls[1];

	require_row_trigger(fcinfo, "cf_workflows_ended_at");
	desc = trigdata->tg_relation->rd_att;
	if (!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ||
		!ended_at_change(tuple_state(trigdata->tg_trigtuple, desc),
						 tuple_state(trigdata->tg_newtuple, desc),
						 trigdata->tg_newtuple, desc, &values[0], &nulls[0]))
		return PointerGetDatum(trigdata->tg_newtuple);
	cols[0] = SPI_fnumber(desc, "ended_at");
	return PointerGetDatum(heap_modify_tuple_by_cols(trigdata->tg_newtuple, desc, 1, cols,
													 values, nulls));
}

/*
 * The trigger on workflows since 0.3.0 (BEFORE INSERT OR UPDATE OF state,
 * state_code): state_code from state, ended_at as above, and the note of
 * a changed outcome day.  In C and
 * without a WHEN clause because it fires on every state change of every
 * run: a stored generated column and a trigger's WHEN clause are both
 * re-read from the catalog text for each statement, which cost a trivial
 * run 4% of its worker's CPU.
 */
Datum
cf_workflows_state_columns(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tuple;
	int			cols[3];
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	int			n = 1;
	const char *new_state;

	require_row_trigger(fcinfo, "cf_workflows_state_columns");
	desc = trigdata->tg_relation->rd_att;
	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple
		: trigdata->tg_trigtuple;
	cols[0] = SPI_fnumber(desc, "state_code");
	new_state = tuple_state(tuple, desc);
	values[0] = Int16GetDatum(state_code(new_state));
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		const char *old_state = tuple_state(trigdata->tg_trigtuple, desc);

		if (ended_at_change(old_state, new_state, tuple, desc, &values[1], &nulls[1]))
			cols[n++] = SPI_fnumber(desc, "ended_at");
		note_outcome_day_change(old_state, new_state, trigdata->tg_trigtuple, tuple, desc);
		note_child_blocked(old_state, new_state, tuple, desc);
		note_run_ended(old_state, new_state, tuple, desc);
		leave_gate(old_state, new_state, tuple, desc);
	}
	else
	{
		/* A child that completed in its first pass is written completed. */
		if (ended_at_change("", new_state, tuple, desc, &values[1], &nulls[1]))
			cols[n++] = SPI_fnumber(desc, "ended_at");
		note_child_blocked("", new_state, tuple, desc);
		note_run_ended("", new_state, tuple, desc);
		if (stamp_definition(tuple, desc, &values[n]))
			cols[n++] = SPI_fnumber(desc, "definition_hash");
	}
	return PointerGetDatum(heap_modify_tuple_by_cols(tuple, desc, n, cols, values, nulls));
}
