/*-------------------------------------------------------------------------
 *
 * concurrency.c
 *	  Concurrency limits: the gate a run is admitted through, the runs
 *	  that wait for a place, and set_concurrency_limit().
 *
 * A gate (concurrency_gates) counts an owner's runs of one concurrency key
 * (start() option "concurrency_key"), or of one workflow, that were
 * admitted and have not ended.  start() admits a new run while the count
 * is under the gate's limit and nobody waits; otherwise the run waits
 * (concurrency_waiting), idle, with no wake-up and no worker.  A run that
 * ends (the runs' trigger) hands its place to the oldest waiting run,
 * which gets a wake-up (in a worker, just before its transaction commits,
 * with the places of every run that transaction ended); or, if the gate
 * is locked by another transaction at that moment, gives it back
 * (concurrency_releases) for the launcher, or run_pending(), to hand on.
 * Each admission holds the gate's row lock until its transaction ends, so
 * that two admissions never see the same free place; a run that ends
 * never waits for that lock.  A waiting run is never woken by wake() or
 * send_event(): only its admission makes it due.
 * Nothing here runs user code.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "access.h"
#include "clock.h"
#include "concurrency.h"
#include "internal.h"
#include "shmem.h"
#include "util.h"
#include "wakeups.h"

/* Places a worker's transaction notes before handing them on at commit. */
#define CF_LEFT_PLACES_MAX 64

PG_FUNCTION_INFO_V1(cf_set_concurrency_limit);

static void
invalid_limit(const char *msg)
{
	ereport(ERROR,
			(errcode(ERRCODE_CF_INVALID_ARGUMENT),
			 errmsg("%s", msg)));
}

/*
 * start()'s option "concurrency_key": a non-empty JSON string of at most
 * CF_NAME_MAX_BYTES, or NULL if absent.  CF012 otherwise.
 */
char *
cf_concurrency_key_option(Jsonb *options)
{
	char	   *key;

	if (!cf_jsonb_string_field(options, "concurrency_key", &key) || (key != NULL && key[0] == '\0'))
		invalid_limit("option \"concurrency_key\" must be a non-empty JSON string");
	if (key != NULL)
		cf_check_length("concurrency_key", key, CF_NAME_MAX_BYTES);
	return key;
}

/* The key's gate of the owner, made if it has none yet. */
static int64
key_gate(Oid owner, const char *key)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr make_plan = NULL;
	Datum		values[3] = {ObjectIdGetDatum(owner), CStringGetTextDatum(key),
	TimestampTzGetDatum(cf_clock_now())};
	Oid			types[3] = {OIDOID, TEXTOID, TIMESTAMPTZOID};
	bool		isnull;

	for (int look = 0; look < 2; look++)
	{
		cf_exec(&find_plan,
				"SELECT id FROM chrono_forge.concurrency_gates"
				" WHERE owner = $1::regrole AND workflow IS NULL AND concurrency_key = $2",
				2, types, values, NULL, false, 1);
		if (SPI_processed == 1)
			break;
		cf_exec(&make_plan,
				"INSERT INTO chrono_forge.concurrency_gates (owner, concurrency_key, running, updated_at)"
				" VALUES ($1::regrole, $2, 0, $3)"
				" ON CONFLICT ON CONSTRAINT concurrency_gates_owner_workflow_key_key DO NOTHING RETURNING id",
				3, types, values, NULL, false, 0);
		if (SPI_processed == 1)
			break;
		/* Made by another transaction meanwhile: look again. */
	}
	if (SPI_processed != 1)
		elog(ERROR, "the concurrency gate of key \"%s\" vanished", key);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The gate of a new run of the owner's: its key's (made if need be), else
 * its workflow's if set_concurrency_limit() made one, else 0 (none).
 * Caller is connected to SPI, in the engine's identity.
 */
int64
cf_gate_for(Oid owner, const char *workflow, const char *key)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;

	if (key != NULL)
		return key_gate(owner, key);
	cf_exec(&plan,
			"SELECT id FROM chrono_forge.concurrency_gates"
			" WHERE owner = $1::regrole AND workflow = $2 AND concurrency_key IS NULL",
			2, (Oid[]) {OIDOID, TEXTOID},
			(Datum[]) {ObjectIdGetDatum(owner), CStringGetTextDatum(workflow)}, NULL, false, 1);
	if (SPI_processed != 1)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The gate's row, locked until this transaction ends; *rated: whether it
 * has a rate limit.
 */
static void
lock_gate(int64 gate, bool *rated)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;

	cf_exec(&plan,
			"SELECT max_starts IS NOT NULL FROM chrono_forge.concurrency_gates WHERE id = $1"
			"  FOR NO KEY UPDATE",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(gate)}, NULL, false, 1);
	if (SPI_processed != 1)
		elog(ERROR, "concurrency gate %lld vanished", (long long) gate);
	*rated = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Admit `run` through `gate`: true if it may run now (counted), false if
 * it waits (queued behind the others).  The decision is taken with the
 * gate locked, by a statement whose snapshot is taken after the lock: it
 * sees every admission and end that committed before.  Caller is
 * connected to SPI, in the engine's identity; it writes the run's
 * wake-up if admitted.
 */
bool
cf_gate_admit(int64 run, int64 gate, TimestampTz now)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	bool		admit;
	bool		rated;
	Datum		frees_at;

	lock_gate(gate, &rated);
	cf_exec(&plan,
			"WITH g AS (SELECT * FROM chrono_forge.concurrency_gates WHERE id = $2),"
			" recent AS (SELECT count(*) AS n, min(a.admitted_at) AS oldest"
			"  FROM chrono_forge.concurrency_admissions a"
			"  WHERE a.gate_id = $2 AND a.admitted_at > $3 - (SELECT per FROM g)),"
			" ok AS (SELECT (g.max_running IS NULL OR g.running < g.max_running)"
			"   AND (g.max_starts IS NULL OR (SELECT n FROM recent) < g.max_starts)"
			"   AND NOT EXISTS (SELECT FROM chrono_forge.concurrency_waiting q WHERE q.gate_id = g.id) AS admit"
			"  FROM g),"
			" u AS (UPDATE chrono_forge.concurrency_gates SET running = running + 1, updated_at = $3"
			"  WHERE id = $2 AND (SELECT admit FROM ok)),"
			" r AS (INSERT INTO chrono_forge.concurrency_admissions (gate_id, admitted_at)"
			"  SELECT $2, $3 FROM g WHERE (SELECT admit FROM ok) AND g.max_starts IS NOT NULL),"
			" w AS (INSERT INTO chrono_forge.concurrency_waiting (workflow_id, gate_id, queued_at)"
			"  SELECT $1, $2, $3 WHERE NOT (SELECT admit FROM ok))"
			" SELECT admit, (SELECT oldest FROM recent) + (SELECT per FROM g) FROM ok",
			3, (Oid[]) {INT8OID, INT8OID, TIMESTAMPTZOID},
			(Datum[]) {Int64GetDatum(run), Int64GetDatum(gate), TimestampTzGetDatum(now)},
			NULL, false, 0);
	admit = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	frees_at = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

	/*
	 * Waiting on a gate whose rate window is full: the launcher admits it
	 * when the window's oldest admission leaves it, if no run ends first.
	 */
	if (!admit && !isnull)
		cf_queue_launcher_timer(DatumGetTimestampTz(frees_at));
	return admit;
}

/*
 * admit_waiting()'s statement, with a gate's rate limit or without (a
 * gate without one skips the window's count, its record and its pruning:
 * a place handed on at the end of every run of a limited key).
 */
#define ADMIT_WAITING_SQL(window_room, record, priority_col, priority, any_prioritized) \
	"WITH g AS (SELECT max_running, running AS was, greatest(running - $3, 0) AS running," \
	"  max_starts, per FROM chrono_forge.concurrency_gates WHERE id = $1)," \
	" n AS (SELECT q.workflow_id FROM chrono_forge.concurrency_waiting q WHERE q.gate_id = $1" \
	"  ORDER BY q.seq LIMIT (SELECT least(" \
	"   CASE WHEN g.max_running IS NULL THEN NULL ELSE greatest(g.max_running - g.running, 0) END," \
	window_room ") FROM g))," \
	" d AS (DELETE FROM chrono_forge.concurrency_waiting q USING n" \
	"  WHERE q.workflow_id = n.workflow_id RETURNING q.workflow_id)," \
	" k AS (INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason" priority_col ")" \
	"  SELECT workflow_id, $2, 'admitted'" priority " FROM d RETURNING *)," \
	record \
	" u AS (UPDATE chrono_forge.concurrency_gates" \
	"  SET running = (SELECT running FROM g) + (SELECT count(*) FROM d), updated_at = $2" \
	"  WHERE id = $1 AND (SELECT running FROM g) + (SELECT count(*) FROM d) <> (SELECT was FROM g))" \
	" SELECT count(*)::int, " any_prioritized " FROM d"
#define WINDOW_ROOM \
	"   greatest(g.max_starts - (SELECT count(*) FROM chrono_forge.concurrency_admissions a" \
	"    WHERE a.gate_id = $1 AND a.admitted_at > $2 - g.per), 0)"
#define WINDOW_RECORD \
	" r AS (INSERT INTO chrono_forge.concurrency_admissions (gate_id, admitted_at)" \
	"  SELECT $1, $2 FROM d)," \
	" p AS (DELETE FROM chrono_forge.concurrency_admissions a" \
	"  WHERE a.gate_id = $1 AND a.admitted_at <= $2 - (SELECT per FROM g)),"
/* From 0.13.0 an admitted run's wake-up carries its priority. */
#define ADMIT_PRIORITY \
	", priority", ", " CF_PRIORITY_OF("d.workflow_id"), \
	"(SELECT bool_or(k.priority IS NOT NULL) OR NULL FROM k)"
#define ADMIT_NO_PRIORITY "", "", "NULL::boolean"
#define ADMIT_SQL(...) ADMIT_WAITING_SQL(__VA_ARGS__)

/*
 * With the gate locked (by this transaction, so that this statement's
 * snapshot, taken after the lock, sees every admission and end that
 * committed): take `leaving` places back (runs that ended), then admit
 * the oldest waiting runs into the places free (and, if the gate is
 * `rated`, into its rate window's room); they are due now.  The gate's
 * row is written only if its count changes (a place handed from an ended
 * run to a waiting one does not change it).  Returns how many were
 * admitted.
 */
static int
admit_waiting(int64 gate, int leaving, TimestampTz now, bool rated)
{
	static SPIPlanPtr plans[2][2];
	static const char *const sql[2][2] = {
		{ADMIT_SQL("NULL", "", ADMIT_NO_PRIORITY),
		ADMIT_SQL(WINDOW_ROOM, WINDOW_RECORD, ADMIT_NO_PRIORITY)},
		{ADMIT_SQL("NULL", "", ADMIT_PRIORITY),
		ADMIT_SQL(WINDOW_ROOM, WINDOW_RECORD, ADMIT_PRIORITY)},
	};
	bool		prioritized = cf_schema_at_least(CF_SCHEMA(0, 13, 0));
	bool		isnull;
	int			admitted;

	cf_exec(&plans[prioritized][rated], sql[prioritized][rated],
			3, (Oid[]) {INT8OID, TIMESTAMPTZOID, INT4OID},
			(Datum[]) {Int64GetDatum(gate), TimestampTzGetDatum(now), Int32GetDatum(leaving)},
			NULL, false, 0);
	admitted = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	cf_note_wakeup_priorities(2);
	if (admitted > 0)
		cf_queue_wakeup(now);
	return admitted;
}

/*
 * The places runs left, `places[i]` of gate `gates[i]` (each gate locked
 * and with room for them: leave_gates()), go to the oldest runs waiting at
 * each: they are due now, and the gates' counts do not change.  The
 * common case of runs' ends under a limit, in one statement for all the
 * gates a transaction left (admit_waiting() is the general case, a
 * statement per gate three times the cost).  Generic plans, as for the
 * lock below: their array parameters made the plan cache plan them
 * again on every call, more than half their time.  handed[i]: how many runs
 * gate i admitted; fewer than its places if fewer waited (its count must
 * then go down: admit_waiting()).
 */
#define HAND_ON_SQL(priority_col, priority, any_prioritized) \
	"WITH p AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[])," \
	"   pg_catalog.unnest($2::pg_catalog.int4[])) AS p(gate, places))," \
	" n AS (SELECT q.workflow_id FROM p, LATERAL (SELECT q.workflow_id" \
	"   FROM chrono_forge.concurrency_waiting q WHERE q.gate_id = p.gate" \
	"   ORDER BY q.seq LIMIT p.places) q)," \
	" d AS (DELETE FROM chrono_forge.concurrency_waiting q USING n" \
	"  WHERE q.workflow_id = n.workflow_id RETURNING q.workflow_id, q.gate_id)," \
	" k AS (INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason" priority_col ")" \
	"  SELECT workflow_id, $3, 'admitted'" priority " FROM d RETURNING *)" \
	" SELECT (SELECT count(*) FROM d WHERE d.gate_id = p.gate)::int, " any_prioritized \
	" FROM p ORDER BY p.gate"
#define HAND_ON(...) HAND_ON_SQL(__VA_ARGS__)

static void
hand_on_places(int64 *gates, int *places, int n, TimestampTz now, int *handed)
{
	static SPIPlanPtr plans[2];
	bool		prioritized = cf_schema_at_least(CF_SCHEMA(0, 13, 0));
	Datum		gate_ids[CF_LEFT_PLACES_MAX];
	Datum		counts[CF_LEFT_PLACES_MAX];
	bool		isnull;
	int			total = 0;

	for (int i = 0; i < n; i++)
	{
		gate_ids[i] = Int64GetDatum(gates[i]);
		counts[i] = Int32GetDatum(places[i]);
	}
	cf_exec_generic(&plans[prioritized],
			prioritized ? HAND_ON(ADMIT_PRIORITY) : HAND_ON(ADMIT_NO_PRIORITY),
			3, (Oid[]) {INT8ARRAYOID, INT4ARRAYOID, TIMESTAMPTZOID},
			(Datum[]) {PointerGetDatum(construct_array(gate_ids, n, INT8OID, sizeof(int64),
													   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
				PointerGetDatum(construct_array(counts, n, INT4OID, sizeof(int32), true,
												TYPALIGN_INT)),
			TimestampTzGetDatum(now)}, NULL, false, 0);
	for (int i = 0; i < n; i++)
	{
		handed[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		total += handed[i];
	}
	cf_note_wakeup_priorities(2);
	if (total > 0)
		cf_queue_wakeup(now);
}

/*
 * Hand on `places[i]` places of each gate `gates[i]` (ascending ids) that
 * runs left: each gate free to lock now hands them to its waiting runs
 * (its count goes down by those it cannot hand on); a gate another
 * transaction holds gets them back through concurrency_releases, for the
 * launcher (or run_pending()) to hand on after commit (cf_gates_admit()).
 * Never waits for a lock.  Caller is connected to SPI, in the engine's
 * identity.
 */
static void
leave_gates(int64 *gates, int *places, int n)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr release_plan = NULL;
	TimestampTz now = cf_clock_now();
	int64		room_gates[CF_LEFT_PLACES_MAX];
	int			room_places[CF_LEFT_PLACES_MAX];
	int			handed[CF_LEFT_PLACES_MAX];
	int64		other_gates[CF_LEFT_PLACES_MAX];
	int			other_places[CF_LEFT_PLACES_MAX];
	bool		other_rated[CF_LEFT_PLACES_MAX];
	Datum		ids[CF_LEFT_PLACES_MAX];
	ArrayBuildState *held_elsewhere = initArrayResult(INT8OID, CurrentMemoryContext, false);
	int			n_room = 0;
	int			n_other = 0;
	int			row = 0;
	bool		isnull;

	for (int i = 0; i < n; i++)
		ids[i] = Int64GetDatum(gates[i]);
	cf_exec_generic(&lock_plan,
			"SELECT id, max_starts IS NOT NULL, max_running IS NOT NULL AND running <= max_running"
			" FROM chrono_forge.concurrency_gates WHERE id = ANY ($1) ORDER BY id"
			" FOR NO KEY UPDATE SKIP LOCKED",
			1, (Oid[]) {INT8ARRAYOID},
			(Datum[]) {PointerGetDatum(construct_array(ids, n, INT8OID, sizeof(int64),
													   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE))},
			NULL, false, 0);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = (uint64) row < SPI_processed ? SPI_tuptable->vals[row] : NULL;
		bool		locked = tup != NULL &&
			DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull)) == gates[i];
		bool		rated;

		if (!locked)
		{
			for (int j = 0; j < places[i]; j++)
				accumArrayResult(held_elsewhere, Int64GetDatum(gates[i]), false, INT8OID,
								 CurrentMemoryContext);
			continue;
		}
		row++;
		rated = DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		if (!rated && DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull)))
		{
			room_gates[n_room] = gates[i];
			room_places[n_room++] = places[i];
		}
		else
		{
			other_gates[n_other] = gates[i];
			other_rated[n_other] = rated;
			other_places[n_other++] = places[i];
		}
	}
	if (n_room > 0)
		hand_on_places(room_gates, room_places, n_room, now, handed);
	for (int i = 0; i < n_room; i++)
		if (handed[i] < room_places[i])
			(void) admit_waiting(room_gates[i], room_places[i] - handed[i], now, false);
	for (int i = 0; i < n_other; i++)
		(void) admit_waiting(other_gates[i], other_places[i], now, other_rated[i]);
	if (n_room + n_other < n)
	{
		cf_exec_generic(&release_plan,
				"INSERT INTO chrono_forge.concurrency_releases (gate_id)"
				" SELECT pg_catalog.unnest($1::pg_catalog.int8[])",
				1, (Oid[]) {INT8ARRAYOID},
				(Datum[]) {makeArrayResult(held_elsewhere, CurrentMemoryContext)}, NULL, false, 0);
		cf_queue_gate_release();
	}
}

/*
 * The places a worker's transaction left (0.13.0).  In a worker, a run
 * that ends does not hand its place on at once: its gate is noted, and
 * every place the transaction left is handed on just before it commits
 * (XACT_EVENT_PRE_COMMIT), a statement or two for all its gates rather
 * than two for every run (a worker's shared commit ends up to
 * chrono_forge.commit_batch runs; the whole was a fifth of a one-step
 * run's cost).  A subtransaction that aborts takes back the places noted
 * in it, as its run's end is undone; an abort, all of them.
 */
typedef struct LeftPlace
{
	int64		gate;
	SubTransactionId subxact;	/* where the run ended */
} LeftPlace;

static LeftPlace left_places[CF_LEFT_PLACES_MAX];
static int	n_left_places = 0;

static int
compare_left_places(const void *a, const void *b)
{
	int64		x = ((const LeftPlace *) a)->gate;
	int64		y = ((const LeftPlace *) b)->gate;

	return (x > y) - (x < y);
}

/* Hand on every place noted, grouped by gate. */
static void
hand_on_left_places(void)
{
	int64		gates[CF_LEFT_PLACES_MAX];
	int			places[CF_LEFT_PLACES_MAX];
	int			n = 0;
	CfInternal	st;

	qsort(left_places, n_left_places, sizeof(LeftPlace), compare_left_places);
	for (int i = 0; i < n_left_places; i++)
	{
		if (n > 0 && gates[n - 1] == left_places[i].gate)
			places[n - 1]++;
		else
		{
			gates[n] = left_places[i].gate;
			places[n++] = 1;
		}
	}
	n_left_places = 0;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cf_internal_begin(&st);
	leave_gates(gates, places, n);
	cf_internal_end(&st);
	SPI_finish();
}

static void
left_places_xact(XactEvent event, void *arg)
{
	if (n_left_places == 0)
		return;
	if (event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PRE_PREPARE)
		hand_on_left_places();
	else
		n_left_places = 0;		/* an abort */
}

static void
left_places_subxact(SubXactEvent event, SubTransactionId subxact, SubTransactionId parent,
					void *arg)
{
	int			kept = 0;

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	/* Its own and its children's (later ids), of which it was the parent. */
	for (int i = 0; i < n_left_places; i++)
		if (left_places[i].subxact < subxact)
			left_places[kept++] = left_places[i];
	n_left_places = kept;
}

void
cf_concurrency_register(void)
{
	RegisterXactCallback(left_places_xact, NULL);
	RegisterSubXactCallback(left_places_subxact, NULL);
}

/*
 * Run `run` of gate `gate` ended (the runs' trigger).  A run that never
 * started may have been waiting: it just leaves the queue.  Otherwise its
 * place goes to the oldest waiting run at once if the gate is free to
 * lock; if another transaction holds the gate (a start, or a pass ending
 * a run of the same gate in a shared commit not made yet), the place is
 * given back through concurrency_releases instead, for the launcher (or
 * run_pending()) to hand on after commit (cf_gates_admit()):
 * the ending run's transaction never waits for another's.  Connects to
 * SPI itself.
 */
void
cf_gate_release(int64 gate, int64 run, bool started)
{
	static SPIPlanPtr unqueue_plan = NULL;
	CfInternal	st;

	if (started && cf_worker_slot >= 0 && n_left_places < CF_LEFT_PLACES_MAX)
	{
		left_places[n_left_places].gate = gate;
		left_places[n_left_places++].subxact = GetCurrentSubTransactionId();
		return;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cf_internal_begin(&st);
	if (!started)
		cf_exec(&unqueue_plan, "DELETE FROM chrono_forge.concurrency_waiting WHERE workflow_id = $1",
				1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(run)}, NULL, false, 0);
	if (started || SPI_processed == 0)
		leave_gates(&gate, (int[]) {1}, 1);
	cf_internal_end(&st);
	SPI_finish();
}

/*
 * Take the places given back (of only_owner's gates, or all if
 * InvalidOid), gate by gate in id order, and admit the waiting runs into
 * them.  Returns how many runs were admitted; *more: a full batch was
 * taken.
 */
static int
admit_released(Oid only_owner, TimestampTz now, bool *more)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	int			admitted = 0;
	int			taken = 0;
	uint64		n;
	int64	   *gates;
	int		   *places;

	cf_exec(&plan,
			"WITH r AS (DELETE FROM chrono_forge.concurrency_releases x WHERE x.id IN"
			"  (SELECT y.id FROM chrono_forge.concurrency_releases y"
			"    JOIN chrono_forge.concurrency_gates g ON g.id = y.gate_id"
			"   WHERE $1 = 0 OR g.owner::oid = $1 ORDER BY y.id LIMIT $2)"
			"  RETURNING x.gate_id)"
			" SELECT gate_id, count(*)::int FROM r GROUP BY gate_id ORDER BY gate_id",
			2, (Oid[]) {OIDOID, INT4OID},
			(Datum[]) {ObjectIdGetDatum(only_owner), Int32GetDatum(CF_GATE_RELEASE_BATCH)},
			NULL, false, 0);
	n = SPI_processed;
	gates = palloc(sizeof(int64) * (n + 1));
	places = palloc(sizeof(int) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		gates[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		places[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		taken += places[i];
	}
	for (uint64 i = 0; i < n; i++)
	{
		bool		rated;

		lock_gate(gates[i], &rated);
		admitted += admit_waiting(gates[i], places[i], now, rated);
	}
	*more = taken >= CF_GATE_RELEASE_BATCH;
	return admitted;
}

/*
 * The gates with a rate limit and waiting runs (only_owner's, or all),
 * each with when its window's oldest admission leaves it (NULL: the
 * window is empty).
 */
static void
rate_gates_waiting(Oid only_owner, TimestampTz now)
{
	static SPIPlanPtr plan = NULL;

	cf_exec(&plan,
			"SELECT g.id, (SELECT min(a.admitted_at) FROM chrono_forge.concurrency_admissions a"
			"   WHERE a.gate_id = g.id AND a.admitted_at > $2 - g.per) + g.per"
			" FROM chrono_forge.concurrency_gates g"
			" WHERE g.max_starts IS NOT NULL AND ($1 = 0 OR g.owner::oid = $1)"
			"  AND EXISTS (SELECT FROM chrono_forge.concurrency_waiting q WHERE q.gate_id = g.id)"
			" ORDER BY g.id",
			2, (Oid[]) {OIDOID, TIMESTAMPTZOID},
			(Datum[]) {ObjectIdGetDatum(only_owner), TimestampTzGetDatum(now)}, NULL, false, 0);
}

/*
 * Admit the runs waiting on gates whose rate window has room again.
 * *next gets when the next window frees (DT_NOEND: none).  Returns how
 * many runs were admitted.
 */
static int
admit_rate_windows(Oid only_owner, TimestampTz now, TimestampTz *next)
{
	bool		isnull;
	int			admitted = 0;
	uint64		n;
	int64	   *due;
	int			ndue = 0;

	rate_gates_waiting(only_owner, now);
	n = SPI_processed;
	due = palloc(sizeof(int64) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		Datum		frees = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);

		if (isnull || DatumGetTimestampTz(frees) <= now)
			due[ndue++] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	for (int i = 0; i < ndue; i++)
	{
		bool		rated;

		lock_gate(due[i], &rated);
		admitted += admit_waiting(due[i], 0, now, rated);
	}
	*next = DT_NOEND;
	rate_gates_waiting(only_owner, now);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		frees = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);

		if (!isnull && DatumGetTimestampTz(frees) > now)
			*next = Min(*next, DatumGetTimestampTz(frees));
	}
	return admitted;
}

/*
 * The launcher's (and run_pending()'s, for only_owner) look at the gates:
 * the places that ended runs gave back, and the rate windows that have
 * room again, go to the runs waiting for them.  Returns how many runs were
 * admitted; *more: more places were given back than one look takes;
 * *next: when a rate window frees next (DT_NOEND: none).  Connects to SPI
 * itself; the caller commits.
 */
int
cf_gates_admit(Oid only_owner, bool *more, TimestampTz *next)
{
	CfInternal	st;
	int			admitted;
	TimestampTz now = cf_clock_now();

	*more = false;
	*next = DT_NOEND;
	cf_spi_connect();
	if (!cf_schema_at_least(CF_SCHEMA(0, 11, 0)))
	{
		SPI_finish();
		return 0;
	}
	cf_internal_begin(&st);
	admitted = admit_released(only_owner, now, more);
	admitted += admit_rate_windows(only_owner, now, next);
	cf_internal_end(&st);
	SPI_finish();
	return admitted;
}

/*
 * Is `run` waiting for a place?  (wake() and send_event() do not make a
 * waiting run due.)  Caller is connected to SPI, in the engine's identity.
 */
bool
cf_gate_waiting(int64 run)
{
	static SPIPlanPtr plan = NULL;

	if (!cf_schema_at_least(CF_SCHEMA(0, 11, 0)))
		return false;
	cf_exec(&plan, "SELECT 1 FROM chrono_forge.concurrency_waiting WHERE workflow_id = $1",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(run)}, NULL, true, 1);
	return SPI_processed > 0;
}

/*
 * The gate of run `run` (0: none), for retry().  Caller is connected to
 * SPI, in the engine's identity.
 */
int64
cf_gate_of_run(int64 run)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	Datum		gate;

	if (!cf_schema_at_least(CF_SCHEMA(0, 11, 0)))
		return 0;
	cf_exec(&plan, "SELECT gate_id FROM chrono_forge.workflows WHERE id = $1",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(run)}, NULL, true, 1);
	if (SPI_processed != 1)
		return 0;
	gate = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetInt64(gate);
}

/*
 * set_concurrency_limit(max_running, concurrency_key, workflow,
 * max_starts, per) -> the waiting runs admitted.  The caller's own runs of that key, or of that
 * workflow (resolved as start() resolves it), at most max_running in
 * flight at once; NULL removes the limit.  A key's gate counts every run
 * started with the key; a workflow's counts the runs started after its
 * first limit.  With max_starts and per, at most max_starts of them are
 * admitted in any window of that length.  Raising or removing a limit
 * admits the waiting runs it makes room for; lowering one stops nothing
 * that runs.
 */
Datum
cf_set_concurrency_limit(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Oid			caller = GetUserId();	/* before the engine's identity */
	char	   *key = cf_optional_text(fcinfo, 1);
	char	   *workflow = cf_optional_text(fcinfo, 2);
	TimestampTz now = cf_clock_now();
	CfInternal	st;
	bool		isnull;
	bool		rated;
	int64		gate;
	int			admitted;

	if ((key == NULL) == (workflow == NULL))
		invalid_limit("give exactly one of concurrency_key and workflow");
	if (!PG_ARGISNULL(0) && PG_GETARG_INT32(0) < 1)
		invalid_limit("max_running must be at least 1, or NULL for no limit");
	if (PG_ARGISNULL(3) != PG_ARGISNULL(4))
		invalid_limit("give both max_starts and per, or neither");
	if (!PG_ARGISNULL(3) && PG_GETARG_INT32(3) < 1)
		invalid_limit("max_starts must be at least 1");
	if (!PG_ARGISNULL(4) && (cf_interval_is_negative(PG_GETARG_INTERVAL_P(4)) ||
							 cf_interval_seconds(PG_GETARG_INTERVAL_P(4)) <= 0 ||
							 cf_interval_seconds(PG_GETARG_INTERVAL_P(4)) > 366.0 * 86400))
		invalid_limit("per must be a positive interval of at most 366 days");
	if (key != NULL)
	{
		if (key[0] == '\0')
			invalid_limit("concurrency_key must not be empty");
		cf_check_length("concurrency_key", key, CF_NAME_MAX_BYTES);
	}
	else
		workflow = cf_resolve_workflow(workflow, false);

	SPI_connect();
	cf_internal_begin(&st);
	cf_exec(&plan,
			"INSERT INTO chrono_forge.concurrency_gates"
			" (owner, workflow, concurrency_key, max_running, running, updated_at, max_starts, per)"
			" VALUES ($1::regrole, $2, $3, $4, 0, $5, $6, $7)"
			" ON CONFLICT ON CONSTRAINT concurrency_gates_owner_workflow_key_key"
			" DO UPDATE SET max_running = EXCLUDED.max_running, updated_at = EXCLUDED.updated_at,"
			"  max_starts = EXCLUDED.max_starts, per = EXCLUDED.per"
			" RETURNING id",
			7, (Oid[]) {OIDOID, TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID, INT4OID, INTERVALOID},
			(Datum[]) {ObjectIdGetDatum(caller), workflow ? CStringGetTextDatum(workflow) : (Datum) 0,
				key ? CStringGetTextDatum(key) : (Datum) 0, PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0),
				TimestampTzGetDatum(now), PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3),
			PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4)},
			(char[]) {' ', workflow ? ' ' : 'n', key ? ' ' : 'n', PG_ARGISNULL(0) ? 'n' : ' ', ' ',
				PG_ARGISNULL(3) ? 'n' : ' ', PG_ARGISNULL(4) ? 'n' : ' ', '\0'},
			false, 0);
	gate = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	lock_gate(gate, &rated);
	admitted = admit_waiting(gate, 0, now, rated);
	/* A rate window full now: the launcher looks again when it frees. */
	if (!PG_ARGISNULL(3))
		cf_queue_launcher_timer(now);
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_INT32(admitted);
}
