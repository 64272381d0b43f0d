/*-------------------------------------------------------------------------
 *
 * wakeups.c
 *	  The one writer of wake-ups: the rows that make runs due.
 *
 * Owns how a run is made due: a row in chrono_forge.wakeups, written here
 * and nowhere else, and the launcher's nudge after commit
 * (cf_queue_wakeup), so that no writer can forget it and a row is served
 * on time without polling.  Claiming and deleting wake-ups is the pass's.
 * This file must never decide whether a run should wake (its callers do,
 * with the state change that makes it due, in the same transaction), and
 * never commits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "internal.h"
#include "shmem.h"
#include "wakeups.h"

/*
 * The statements: one run ($1 int8) or many ($1 int8[]), for each rule of
 * CfWakeupRule.  A wake-up already due by $2 makes another redundant (the
 * pass it brings sees everything); an identical one makes it a duplicate.
 * From 0.13.0 a wake-up carries its run's priority (NULL: none), which
 * the statement returns: claims look for prioritized wake-ups only after
 * a commit wrote some (cf_queue_prioritized()).
 */
#define WAKEUP_SQL(source, rule) \
	"INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason)" \
	" SELECT r, $2, $3 FROM " source " AS s(r)" rule
#define WAKEUP_SQL_0_13(source, rule) \
	"INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason, priority)" \
	" SELECT r, $2, $3, " CF_PRIORITY_OF("s.r") " FROM " source " AS s(r)" rule \
	" RETURNING priority"
#define ONE_RUN "(VALUES ($1::pg_catalog.int8))"
#define MANY_RUNS "pg_catalog.unnest($1::pg_catalog.int8[])"
#define UNLESS(cmp) \
	" WHERE NOT EXISTS (SELECT 1 FROM chrono_forge.wakeups k" \
	"  WHERE k.workflow_id OPERATOR(pg_catalog.=) s.r AND k.due_at " cmp " $2)"
#define WAKEUP_SQL_RULES(sql, source) \
	{sql(source, ""), \
		sql(source, UNLESS("OPERATOR(pg_catalog.=)")), \
	sql(source, UNLESS("OPERATOR(pg_catalog.<=)"))}

/* [with priorities][many][rule] */
static const char *const wakeup_sql[2][2][3] = {
	{WAKEUP_SQL_RULES(WAKEUP_SQL, ONE_RUN), WAKEUP_SQL_RULES(WAKEUP_SQL, MANY_RUNS)},
	{WAKEUP_SQL_RULES(WAKEUP_SQL_0_13, ONE_RUN), WAKEUP_SQL_RULES(WAKEUP_SQL_0_13, MANY_RUNS)},
};

/*
 * Column `col` of the last SPI result holds the priorities of the
 * wake-ups written: if any has one, tell the claims after commit.
 */
void
cf_note_wakeup_priorities(int col)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		(void) SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col, &isnull);
		if (!isnull)
		{
			cf_queue_prioritized();
			return;
		}
	}
}

static uint64
write_wakeups(bool many, Datum runs, TimestampTz due, const char *reason,
			  CfWakeupRule rule)
{
	static SPIPlanPtr plans[2][2][3];
	bool		prioritized = cf_schema_at_least(CF_SCHEMA(0, 13, 0));
	CfInternal	st;
	uint64		n;

	cf_internal_begin(&st);
	cf_exec(&plans[prioritized][many][rule], wakeup_sql[prioritized][many][rule],
			3, (Oid[]) {many ? INT8ARRAYOID : INT8OID, TIMESTAMPTZOID, TEXTOID},
			(Datum[]) {runs, TimestampTzGetDatum(due), CStringGetTextDatum(reason)},
			NULL, false, 0);
	n = SPI_processed;
	if (prioritized)
		cf_note_wakeup_priorities(1);
	cf_internal_end(&st);
	if (n > 0)
		cf_queue_wakeup(due);
	return n;
}

/*
 * Make run `run` due at `due` (a wake-up row, and the launcher told at
 * commit), unless `rule` finds it redundant.  True if a row was written.
 * The caller is connected to SPI.
 */
bool
cf_wakeup_add(int64 run, TimestampTz due, const char *reason, CfWakeupRule rule)
{
	return write_wakeups(false, Int64GetDatum(run), due, reason, rule) > 0;
}

/*
 * Make run `run` due at `due` by moving its wake-ups of reason `from` (a
 * claim's lease wake-ups, now moot) there as `reason`, or by a new row if
 * it has none: one statement, and no second row for the pass to delete.
 * A wake-up another transaction holds (a pass deleting it while it waits
 * for the task's row, which this caller holds) is passed over, not waited
 * for: waiting deadlocked; a new row is written instead.
 * (A generic plan: the custom ones were made again for a quarter of the
 * calls.)  The caller is connected to SPI.
 */
#define MOVE_SQL(priority_col, priority, returning, result) \
	"WITH f AS (SELECT k.id FROM chrono_forge.wakeups k" \
	"  WHERE k.workflow_id OPERATOR(pg_catalog.=) $1 AND k.reason OPERATOR(pg_catalog.=) $4" \
	"  FOR UPDATE SKIP LOCKED)," \
	" m AS (UPDATE chrono_forge.wakeups k SET due_at = $2, reason = $3," \
	"  created_at = pg_catalog.now() FROM f WHERE k.id OPERATOR(pg_catalog.=) f.id" \
	"  RETURNING " returning ")," \
	" i AS (INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason" priority_col ")" \
	"  SELECT $1, $2, $3" priority " WHERE NOT EXISTS (SELECT 1 FROM m) RETURNING " returning ")" \
	" SELECT " result " FROM m UNION ALL SELECT " result " FROM i"

void
cf_wakeup_move(int64 run, const char *from, TimestampTz due, const char *reason)
{
	static SPIPlanPtr plans[2];
	bool		prioritized = cf_schema_at_least(CF_SCHEMA(0, 13, 0));
	CfInternal	st;

	cf_internal_begin(&st);
	cf_exec_generic(&plans[prioritized],
					prioritized ?
					MOVE_SQL(", priority", ", " CF_PRIORITY_OF("$1"), "priority", "priority") :
					MOVE_SQL("", "", "1", "1"),
					4, (Oid[]) {INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID},
					(Datum[]) {Int64GetDatum(run), TimestampTzGetDatum(due), CStringGetTextDatum(reason),
					CStringGetTextDatum(from)},
					NULL, false, 0);
	if (prioritized)
		cf_note_wakeup_priorities(1);
	cf_internal_end(&st);
	cf_queue_wakeup(due);
}

/* The same for every run of `runs` (an int8[]); how many rows were written. */
uint64
cf_wakeups_add(Datum runs, TimestampTz due, const char *reason, CfWakeupRule rule)
{
	return write_wakeups(true, runs, due, reason, rule);
}

/*
 * Make each run of `runs` (an int8[]) due at its own time, the same
 * element of `dues` (a timestamptz[]); how many rows were written.
 */
#define ADD_AT_SQL(priority_col, priority, any_prioritized) \
	"WITH i AS (INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason" priority_col ")" \
	"  SELECT r, d, $3" priority " FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[])," \
	"   pg_catalog.unnest($2::pg_catalog.timestamptz[])) AS s(r, d) RETURNING *)" \
	" SELECT pg_catalog.min(due_at), pg_catalog.count(*), " any_prioritized " FROM i"

uint64
cf_wakeups_add_at(Datum runs, Datum dues, const char *reason)
{
	static SPIPlanPtr plans[2];
	bool		prioritized = cf_schema_at_least(CF_SCHEMA(0, 13, 0));
	CfInternal	st;
	bool		isnull;
	uint64		n;
	Datum		first;

	cf_internal_begin(&st);
	cf_exec(&plans[prioritized],
			prioritized ?
			ADD_AT_SQL(", priority", ", " CF_PRIORITY_OF("s.r"),
					   "pg_catalog.bool_or(priority IS NOT NULL) OR NULL") :
			ADD_AT_SQL("", "", "NULL::boolean"),
			3, (Oid[]) {INT8ARRAYOID, TIMESTAMPTZARRAYOID, TEXTOID},
			(Datum[]) {runs, dues, CStringGetTextDatum(reason)}, NULL, false, 0);
	first = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	cf_note_wakeup_priorities(3);	/* true, or NULL: none */
	cf_internal_end(&st);
	if (n > 0)
		cf_queue_wakeup(DatumGetTimestampTz(first));
	return n;
}

/*
 * Column `col` (1-based, of type `type`, passed by value) of the last SPI
 * result as an array, NULLs skipped: for the writers above, the ids (and
 * due times) a state change returned.
 */
Datum
cf_spi_column_array(int col, Oid type)
{
	ArrayBuildState *a = initArrayResult(type, CurrentMemoryContext, false);

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col, &isnull);

		if (!isnull)
			accumArrayResult(a, d, false, type, CurrentMemoryContext);
	}
	return makeArrayResult(a, CurrentMemoryContext);
}

/* The int8[] of run ids in column `col` of the last SPI result. */
Datum
cf_spi_ids(int col)
{
	return cf_spi_column_array(col, INT8OID);
}
