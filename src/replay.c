/*-------------------------------------------------------------------------
 *
 * replay.c
 *	  The replay cache: the run's step logs, read once per pass.
 *
 * Owns the sorted arrays of completed steps (their results) and open steps
 * (pending or failed, so a first attempt needs no query), and the names
 * written since.  Must never answer for a repeat tick or a name the pass
 * has written: those are read from the table.
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

#include "internal.h"
#include "journal.h"
#include "pass.h"
#include "replay.h"
#include "util.h"

typedef struct CompletedStep
{
	char	   *name;
	Jsonb	   *result;
	int64		id;				/* 0: completed during this pass */
	bool		visited;		/* looked up during this pass */
} CompletedStep;

/* The replay cache: completed steps, sorted by name, read once per pass. */
static CompletedStep *completed_steps = NULL;

static int	n_completed_steps = 0;

static int	max_completed_steps = 0;

/*
 * Read with them, the run's other step logs (pending or failed), sorted by
 * name: a step's first attempt needs no query to learn that it has no log
 * yet.  Names this pass has written since are read again from the table:
 * written_steps holds their hashes (a collision only costs a query).
 */
typedef struct OpenStep
{
	char	   *name;
	CfStepLog	log;
	bool		visited;		/* looked up during this pass */
} OpenStep;

static OpenStep *open_steps = NULL;

static int	n_open_steps = 0;

static HTAB *written_steps = NULL;

/*
 * The newest log (by id) the pass has looked up so far: how far its replay
 * has come through what earlier passes wrote (cf_replay_went_past()).
 */
static int64 newest_visited_id = 0;

void
cf_replay_reset(void)
{
	completed_steps = NULL;
	n_completed_steps = max_completed_steps = 0;
	open_steps = NULL;
	n_open_steps = 0;
	written_steps = NULL;
	newest_visited_id = 0;
}

static void
visit(int64 id, bool *visited)
{
	*visited = true;
	newest_visited_id = Max(newest_visited_id, id);
}

static uint32
step_name_hash(const char *step_name)
{
	return hash_bytes((const unsigned char *) step_name, strlen(step_name));
}

static int
completed_cmp(const void *a, const void *b)
{
	return strcmp(((const CompletedStep *) a)->name, ((const CompletedStep *) b)->name);
}

bool
cf_step_completed(const char *step_name, Jsonb **result)
{
	CompletedStep key;
	CompletedStep *found;

	if (n_completed_steps == 0)
		return false;
	key.name = (char *) step_name;
	found = bsearch(&key, completed_steps, n_completed_steps,
					sizeof(CompletedStep), completed_cmp);
	if (found == NULL)
		return false;
	visit(found->id, &found->visited);
	*result = found->result;
	return true;
}

static int
open_step_cmp(const void *a, const void *b)
{
	return strcmp(((const OpenStep *) a)->name, ((const OpenStep *) b)->name);
}

/* A repeat tick's log (never in the cache): durably_repeat$<name>$<epoch>. */
static bool
is_repeat_tick(const char *step_name)
{
	return strncmp(step_name, "durably_repeat$", 15) == 0 &&
		strchr(step_name + 15, CF_STEP_DELIMITER) != NULL;
}

/*
 * The step's log as the pass's cache knows it; false if the cache cannot
 * tell (a tick, a completed step, or a name written during this pass).
 */
bool
cf_step_log_cached(const char *step_name, CfStepLog *log)
{
	OpenStep	key;
	OpenStep   *found;
	Jsonb	   *ignored;
	uint32		h;

	if (!cf_pass.active || is_repeat_tick(step_name) ||
		cf_step_completed(step_name, &ignored))
		return false;
	h = step_name_hash(step_name);
	if (written_steps != NULL && hash_search(written_steps, &h, HASH_FIND, NULL) != NULL)
		return false;
	key.name = (char *) step_name;
	found = n_open_steps == 0 ? NULL
		: bsearch(&key, open_steps, n_open_steps, sizeof(OpenStep), open_step_cmp);
	if (found != NULL)
	{
		visit(found->log.id, &found->visited);
		*log = found->log;
	}
	else
	{
		memset(log, 0, sizeof(*log));
		log->metadata = cf_jsonb_parse("{}");
	}
	return true;
}

/* The pass wrote step_name's log: the cache no longer knows it. */
void
cf_step_log_forget(const char *step_name)
{
	uint32		h;

	if (!cf_pass.active || cf_pass.cxt == NULL)
		return;
	if (written_steps == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint32);
		ctl.entrysize = sizeof(uint32);
		ctl.hcxt = cf_pass.cxt;
		written_steps = hash_create("chrono_forge written steps", 64, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	h = step_name_hash(step_name);
	(void) hash_search(written_steps, &h, HASH_ENTER, NULL);
}

/* Record a step completed during this pass (keeps the array sorted). */
void
cf_step_remember(const char *step_name, Jsonb *result)
{
	MemoryContext old = MemoryContextSwitchTo(cf_pass.cxt);
	int			pos;

	if (n_completed_steps == max_completed_steps)
	{
		max_completed_steps = Max(16, max_completed_steps * 2);
		completed_steps = completed_steps
			? repalloc(completed_steps, sizeof(CompletedStep) * max_completed_steps)
			: palloc(sizeof(CompletedStep) * max_completed_steps);
	}
	for (pos = n_completed_steps; pos > 0; pos--)
	{
		if (strcmp(completed_steps[pos - 1].name, step_name) < 0)
			break;
		completed_steps[pos] = completed_steps[pos - 1];
	}
	completed_steps[pos].name = pstrdup(step_name);
	completed_steps[pos].result = result ? (Jsonb *) PG_DETOAST_DATUM_COPY(JsonbPGetDatum(result)) : NULL;
	completed_steps[pos].id = 0;
	completed_steps[pos].visited = true;
	n_completed_steps++;
	MemoryContextSwitchTo(old);
}

/* Add one step log read by cf_replay_load(), in the pass's memory. */
static void
replay_cache_add(Datum name, bool completed, Datum result, bool result_null,
				 const char *state, int32 attempts, Datum metadata, bool metadata_null,
				 int64 id, int *max_open)
{
	if (completed)
	{
		if (n_completed_steps == max_completed_steps)
		{
			max_completed_steps *= 2;
			completed_steps = repalloc(completed_steps, sizeof(CompletedStep) * max_completed_steps);
		}
		completed_steps[n_completed_steps].name = TextDatumGetCString(name);
		completed_steps[n_completed_steps].result = result_null ? NULL : DatumGetJsonbPCopy(result);
		completed_steps[n_completed_steps].id = id;
		completed_steps[n_completed_steps].visited = false;
		n_completed_steps++;
	}
	else
	{
		OpenStep   *o;

		if (n_open_steps == *max_open)
		{
			*max_open *= 2;
			open_steps = repalloc(open_steps, sizeof(OpenStep) * *max_open);
		}
		o = &open_steps[n_open_steps++];
		o->name = TextDatumGetCString(name);
		o->log.exists = true;
		o->log.state = pstrdup(state);
		o->log.attempts = attempts;
		o->log.metadata = metadata_null ? cf_jsonb_parse("{}") : DatumGetJsonbPCopy(metadata);
		o->log.id = id;
		o->visited = false;
	}
}

/* The run's step logs by an index scan of execution_logs_replay_idx. */
static void
replay_scan_index(Oid relid, Oid idxid, int *max_open)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	AttrNumber	att_name = get_attnum(relid, "step_name");
	AttrNumber	att_result = get_attnum(relid, "result");
	AttrNumber	att_state = get_attnum(relid, "state");
	AttrNumber	att_attempts = get_attnum(relid, "attempts");
	AttrNumber	att_metadata = get_attnum(relid, "metadata");
	AttrNumber	att_id = get_attnum(relid, "id");
	Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	ScanKeyInit(&key, get_attnum(relid, "workflow_id"), BTEqualStrategyNumber, F_INT8EQ,
				Int64GetDatum(cf_pass.workflow_id));
	scan = systable_beginscan(rel, idxid, true, snapshot, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		bool		result_null;
		bool		metadata_null;
		Datum		name = heap_getattr(tup, att_name, desc, &isnull);
		char	   *state = DatumGetCString(DirectFunctionCall1(enum_out,
																heap_getattr(tup, att_state, desc, &isnull)));
		Datum		result = heap_getattr(tup, att_result, desc, &result_null);
		Datum		metadata = heap_getattr(tup, att_metadata, desc, &metadata_null);

		replay_cache_add(name, strcmp(state, "completed") == 0, result, result_null, state,
						 DatumGetInt32(heap_getattr(tup, att_attempts, desc, &isnull)),
						 metadata, metadata_null,
						 DatumGetInt64(heap_getattr(tup, att_id, desc, &isnull)), max_open);
	}
	systable_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
}

/* The run's step logs by a query (a 0.1.0 database has no replay index). */
static void
replay_query(int *max_open)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT step_name, result, state::text, attempts, metadata, id"
			" FROM chrono_forge.execution_logs"
			" WHERE workflow_id = $1 AND step_name NOT LIKE 'durably\\_repeat$%$%'",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(cf_pass.workflow_id)},
			NULL, true, 0);
	cf_internal_end(&st);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bool		result_null;
		bool		metadata_null;
		char	   *state = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
		Datum		result = SPI_getbinval(tup, desc, 2, &result_null);
		Datum		metadata = SPI_getbinval(tup, desc, 5, &metadata_null);

		replay_cache_add(SPI_getbinval(tup, desc, 1, &isnull), strcmp(state, "completed") == 0,
						 result, result_null, state,
						 DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull)),
						 metadata, metadata_null,
						 DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull)), max_open);
	}
}

/*
 * One read of every step log of the run, repetition ticks excluded: the
 * completed ones are the replay cache, the others the open steps.  An
 * index scan of execution_logs_replay_idx (whose predicate excludes the
 * ticks), not a query: planned, the lookup was custom-planned on every
 * pass whenever the statistics showed few distinct runs (as they do after
 * a fan-out's parent wrote the only logs), 8% of a child's pass.  A 0.1.0
 * database has no such index and is read by the query.
 */
void
cf_replay_load(void)
{
	Oid			relid = cf_relation_oid("execution_logs");
	Oid			idxid = cf_relation_oid("execution_logs_replay_idx");
	MemoryContext old = MemoryContextSwitchTo(cf_pass.cxt);
	int			max_open = 16;

	max_completed_steps = 16;
	completed_steps = palloc(sizeof(CompletedStep) * max_completed_steps);
	open_steps = palloc(sizeof(OpenStep) * max_open);
	n_completed_steps = 0;
	n_open_steps = 0;
	newest_visited_id = 0;
	if (cf_pass.run_unwritten)
	{
		/* a child just taken from spawn_batches: no log yet */
	}
	else if (OidIsValid(idxid))
		replay_scan_index(relid, idxid, &max_open);
	else
		replay_query(&max_open);
	qsort(completed_steps, n_completed_steps, sizeof(CompletedStep), completed_cmp);
	qsort(open_steps, n_open_steps, sizeof(OpenStep), open_step_cmp);
	MemoryContextSwitchTo(old);
}

/*
 * Did the run, in its earlier passes, go past the point this pass has
 * reached?  True if a step log written before this pass, newer than every
 * log the pass has looked up so far, has not been looked up: a step the
 * code reaches later (or no longer reaches) ran before.  The engine's own
 * markers ($workflow_...) are not steps; ticks are not in the cache (their
 * coordination log is).  versioning.c's patched() asks it.
 */
bool
cf_replay_went_past(void)
{
	for (int i = 0; i < n_completed_steps; i++)
		if (!completed_steps[i].visited && completed_steps[i].id > newest_visited_id &&
			completed_steps[i].name[0] != CF_STEP_DELIMITER)
			return true;
	for (int i = 0; i < n_open_steps; i++)
		if (!open_steps[i].visited && open_steps[i].log.id > newest_visited_id &&
			open_steps[i].name[0] != CF_STEP_DELIMITER)
			return true;
	return false;
}
