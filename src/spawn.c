/*-------------------------------------------------------------------------
 *
 * spawn.c
 *	  Spawning children into the current branch: spawn and spawn_each.
 *
 * Owns the dispatch of children: spawn inserts its child's run with a due
 * wake-up; spawn_each reads its source query page by page, as the run's
 * owner, and writes spawn_batches rows (0.4.0), whose children become runs
 * when a pass takes them (executor.c); either in the transaction that
 * records the dispatch cursor on the branch log, so a crash loses or
 * repeats no child.  A sealed branch never re-runs its spawns or its
 * source query.
 *
 * This file must never run a spawn_each source as anyone but the run's
 * owner, and never dispatch for a pass that lost its lock (every batch
 * commits through cf_commit_step).  Which branch is current is branch.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "access.h"
#include "branch.h"
#include "clock.h"
#include "internal.h"
#include "pass.h"
#include "shmem.h"
#include "util.h"
#include "wakeups.h"

PG_FUNCTION_INFO_V1(cf_spawn);
PG_FUNCTION_INFO_V1(cf_spawn_each);

/* A child row for the batch being dispatched. */
typedef struct ChildBatch
{
	ArrayBuildState *workflows;
	ArrayBuildState *keys;
	ArrayBuildState *procedures;
	ArrayBuildState *args;
	int			n;
} ChildBatch;

static void
batch_init(ChildBatch *cb, MemoryContext cxt)
{
	cb->workflows = initArrayResult(TEXTOID, cxt, false);
	cb->keys = initArrayResult(TEXTOID, cxt, false);
	cb->procedures = initArrayResult(TEXTOID, cxt, false);
	cb->args = initArrayResult(JSONBOID, cxt, false);
	cb->n = 0;
}

/* The child's workflow is stored as its procedure's canonical name. */
static void
batch_add(ChildBatch *cb, const char *workflow, const char *key, const char *procedure,
		  Jsonb *args, MemoryContext cxt)
{
	/*
	 * A child's key is an index key: past the maximum its run could never
	 * be written, and a worker would fail to take it again and again.
	 * Keys grow with every level of nesting; this bounds the depth too.
	 */
	if (strlen(key) > CF_CHILD_KEY_MAX_BYTES)
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
				 psprintf("child key is too long (%zu bytes, at most %d)", strlen(key), CF_CHILD_KEY_MAX_BYTES),
				 "A child's key is $<parent run id>$<parent key>$<branch>$<spawn>[_<item_key>]: shorten one of them.");
	accumArrayResult(cb->workflows, CStringGetTextDatum(procedure), false, TEXTOID, cxt);
	accumArrayResult(cb->keys, CStringGetTextDatum(key), false, TEXTOID, cxt);
	accumArrayResult(cb->procedures, CStringGetTextDatum(procedure), false, TEXTOID, cxt);
	accumArrayResult(cb->args, JsonbPGetDatum(args), false, JSONBOID, cxt);
	cb->n++;
}

/*
 * A key of the batch that is a run but not this branch's child (only a run
 * from before 0.5.0 can be: start() refuses child keys) would be the child
 * dropped silently: fail the parent instead.  (An existing child of this
 * branch is this spawn replayed.)
 */
static void
check_keys_are_children(Datum workflows, Datum keys, int64 log_id)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;

	cf_exec(&plan,
			"SELECT min(x.key) FROM chrono_forge.workflows x,"
			"  unnest($1::text[], $2::text[]) AS u(w, k)"
			" WHERE x.workflow = u.w AND x.key = u.k AND x.owner = $3::regrole"
			"  AND x.parent_execution_log_id IS DISTINCT FROM $4",
			4, (Oid[]) {TEXTARRAYOID, TEXTARRAYOID, OIDOID, INT8OID},
			(Datum[]) {workflows, keys, ObjectIdGetDatum(cf_pass.owner), Int64GetDatum(log_id)},
			NULL, false, 1);
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
				 psprintf("child key \"%s\" is already a run outside this branch",
						  SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
				 "Cancel and remove that run, then retry this one.");
}

/*
 * Insert the batch's children (those that do not exist yet) with a wake-up
 * due now, owned by the run's owner and linked to the branch log.  Returns
 * how many were new.  The caller commits.
 */
static int64
dispatch(ChildBatch *cb, int64 log_id, MemoryContext cxt)
{
	static SPIPlanPtr plan = NULL;
	Datum		workflows;
	Datum		keys;
	CfInternal	st;
	TimestampTz now = cf_clock_now();
	int64		n;

	if (cb->n == 0)
		return 0;
	workflows = makeArrayResult(cb->workflows, cxt);
	keys = makeArrayResult(cb->keys, cxt);
	cf_internal_begin(&st);
	cf_exec(&plan,
			"INSERT INTO chrono_forge.workflows"
			" (workflow, key, procedure, args, owner, parent_execution_log_id, created_at, updated_at)"
			" SELECT u.w, u.k, u.p, u.a, $5::regrole, $6, $7, $7"
			"  FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[]) AS u(w, k, p, a)"
			" ON CONFLICT DO NOTHING RETURNING id",
			7, (Oid[]) {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID, OIDOID, INT8OID, TIMESTAMPTZOID},
			(Datum[]) {workflows, keys,
				makeArrayResult(cb->procedures, cxt), makeArrayResult(cb->args, cxt),
				ObjectIdGetDatum(cf_pass.owner), Int64GetDatum(log_id), TimestampTzGetDatum(now)},
			NULL, false, 0);
	n = (int64) SPI_processed;
	if (n > 0)
		cf_wakeups_add(cf_spi_ids(1), now, "spawn", CF_WAKEUP_ALWAYS);
	if (n < cb->n)
		check_keys_are_children(workflows, keys, log_id);
	cf_internal_end(&st);
	return n;
}

/*
 * Children per spawn_batches row: a dispatch batch's 1/32, at most 32.  A
 * worker taking a child reads the row's arrays whole, so rows stay small
 * (2-3 kB, compressed inline at most), and it holds the row until that
 * child's first commit, so siblings in one row start one after another:
 * a dispatch batch is spread over 32 rows (one child per row below 64),
 * so that workers start its children side by side.
 */
#define SPAWN_ROWS_PER_BATCH 32
#define SPAWN_ROW_MAX_CHILDREN 32

/*
 * spawn_each's dispatch on 0.4.0 and later: the batch's children as
 * spawn_batches rows, runnable at once (a worker makes each a run when it
 * starts it).  Returns how many.  The caller commits.
 */
static int64
dispatch_batches(ChildBatch *cb, int64 log_id, MemoryContext cxt)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	TimestampTz now = cf_clock_now();
	int			per_row = Max(1, Min(SPAWN_ROW_MAX_CHILDREN, cb->n / SPAWN_ROWS_PER_BATCH));
	ArrayBuildState *from[4] = {cb->workflows, cb->keys, cb->procedures, cb->args};

	if (cb->n == 0)
		return 0;
	cf_internal_begin(&st);
	for (int lo = 0; lo < cb->n; lo += per_row)
	{
		int			count = Min(per_row, cb->n - lo);
		Datum		arrays[4];
		MemoryContext prev;

		/*
		 * Each row's arrays from the batch's values, in the batch's memory
		 * (an SPI call leaves the SPI procedure's memory current, which
		 * lasts the whole dispatch).  Text and jsonb: varlena, int-aligned.
		 */
		prev = MemoryContextSwitchTo(cxt);
		for (int i = 0; i < 4; i++)
			arrays[i] = PointerGetDatum(construct_array(from[i]->dvalues + lo, count,
														from[i]->element_type, -1, false,
														TYPALIGN_INT));
		MemoryContextSwitchTo(prev);
		cf_exec(&plan,
				"INSERT INTO chrono_forge.spawn_batches"
				" (branch_log_id, owner, due_at, n, workflows, keys, procedures, args)"
				" VALUES ($1, $2::regrole, $3, $4, $5, $6, $7, $8)",
				8, (Oid[]) {INT8OID, OIDOID, TIMESTAMPTZOID, INT4OID, TEXTARRAYOID, TEXTARRAYOID,
					TEXTARRAYOID, JSONBARRAYOID},
				(Datum[]) {Int64GetDatum(log_id), ObjectIdGetDatum(cf_pass.owner),
					TimestampTzGetDatum(now), Int32GetDatum(count),
				arrays[0], arrays[1], arrays[2], arrays[3]},
				NULL, false, 0);
	}
	cf_internal_end(&st);
	cf_queue_spawned(now);
	return cb->n;
}

/* The spawn's cursor, merged into the branch log's "cursors". */
static void
save_cursor(int64 log_id, const char *spawn, const char *cursor_json)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"UPDATE chrono_forge.execution_logs SET metadata = coalesce(metadata, '{}')"
			"  || jsonb_build_object('cursors', coalesce(metadata->'cursors', '{}')"
			"   || jsonb_build_object($2::text, $3::jsonb)),"
			" last_executed_at = chrono_forge.now(), updated_at = chrono_forge.now()"
			" WHERE id = $1",
			3, (Oid[]) {INT8OID, TEXTOID, JSONBOID},
			(Datum[]) {Int64GetDatum(log_id), CStringGetTextDatum(spawn),
				JsonbPGetDatum(cf_jsonb_parse(cursor_json))},
			NULL, false, 0);
	cf_internal_end(&st);
}

/* Workflow procedures resolved during one spawn_each (few distinct). */
typedef struct ResolvedWorkflow
{
	char	   *workflow;
	char	   *procedure;
	struct ResolvedWorkflow *next;
} ResolvedWorkflow;

static const char *
resolve_cached(ResolvedWorkflow **cache, const char *workflow, MemoryContext cxt)
{
	ResolvedWorkflow *r;
	char	   *procedure;

	for (r = *cache; r != NULL; r = r->next)
		if (strcmp(r->workflow, workflow) == 0)
			return r->procedure;
	procedure = cf_resolve_workflow(workflow, false);
	r = MemoryContextAlloc(cxt, sizeof(ResolvedWorkflow));
	r->workflow = MemoryContextStrdup(cxt, workflow);
	r->procedure = MemoryContextStrdup(cxt, procedure);
	r->next = *cache;
	*cache = r;
	return r->procedure;
}


/* spawn(name text, workflow text, args jsonb) */
Datum
cf_spawn(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *workflow;
	Jsonb	   *args;
	CfBranchRef b;
	ChildBatch	cb;
	ResolvedWorkflow *cache = NULL;
	const char *procedure;

	cf_require_pass(fcinfo, "spawn");
	cf_fail_now();
	name = cf_optional_text(fcinfo, 0);
	cf_validate_name_segment("spawn name", name);
	workflow = cf_optional_text(fcinfo, 1);
	if (workflow == NULL || workflow[0] == '\0')
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT, "spawn workflow must not be NULL or empty", NULL);
	args = PG_ARGISNULL(2) ? cf_jsonb_parse("{}") : PG_GETARG_JSONB_P(2);
	if (!JB_ROOT_IS_OBJECT(args))
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT, "spawn args must be a JSON object", NULL);
	cf_check_json_size("spawn args", args);
	b = cf_branch_current("spawn");
	if (b.sealed)
	{
		cf_pass.outcome = CF_OUTCOME_NONE;
		PG_RETURN_VOID();
	}
	/* As the owner: a missing or forbidden procedure fails the run. */
	procedure = resolve_cached(&cache, workflow, CurrentMemoryContext);
	cf_pass.outcome = CF_OUTCOME_NONE;

	cf_spi_connect();
	batch_init(&cb, CurrentMemoryContext);
	batch_add(&cb, workflow, cf_child_key(b.name, name), procedure, args,
			  CurrentMemoryContext);
	(void) dispatch(&cb, b.log_id, CurrentMemoryContext);
	cf_commit_step();
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * The spawn's cursor from the branch log: done?, the last item_key, and
 * whether that key is in canonical form (0.6.0; see canonical_begin()).
 */
static void
read_cursor(int64 log_id, const char *spawn, bool *done, char **after, int64 *spawned,
			bool *canonical)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	bool		isnull;
	Datum		d;

	*done = false;
	*after = NULL;
	*spawned = 0;
	*canonical = true;			/* a new cursor */
	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT (c->>'done')::boolean, c->>'after', (c->>'spawned')::bigint,"
			"  c IS NULL OR c ? 'canonical'"
			" FROM (SELECT metadata->'cursors'->$2 AS c FROM chrono_forge.execution_logs WHERE id = $1) s",
			2, (Oid[]) {INT8OID, TEXTOID},
			(Datum[]) {Int64GetDatum(log_id), CStringGetTextDatum(spawn)}, NULL, true, 1);
	cf_internal_end(&st);
	if (SPI_processed != 1)
		return;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	*done = !isnull && DatumGetBool(d);
	*after = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	*spawned = isnull ? 0 : DatumGetInt64(d);
	*canonical = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
}

/*
 * An item_key's text (a child's key, the cursor) must not depend on the
 * settings of the session that happens to dispatch: a dispatch resumed by
 * a worker with another DateStyle, TimeZone or float setting would
 * misread its cursor.  Keys are rendered and the cursor read back under
 * fixed settings, in a GUC nesting level of their own (the source query
 * itself runs under the session's).  Returns the level for canonical_end().
 */
static int
canonical_begin(void)
{
	static const char *const settings[][2] = {
		{"DateStyle", "ISO, MDY"},
		{"IntervalStyle", "postgres"},
		{"TimeZone", "UTC"},
		{"extra_float_digits", "1"},	/* > 0: shortest exact */
		{"bytea_output", "hex"},
		{"lc_monetary", "C"},
	};
	int			level = NewGUCNestLevel();

	for (int i = 0; i < (int) lengthof(settings); i++)
		(void) set_config_option(settings[i][0], settings[i][1], PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	return level;
}

static void
canonical_end(int level)
{
	AtEOXact_GUC(true, level);
}

/* One spawn_each call: its arguments, its source's shape, its cursor. */
typedef struct SpawnEach
{
	CfBranchRef b;
	char	   *name;
	char	   *workflow;
	char	   *source;
	int32		batch_size;
	bool		batched;		/* spawn_batches exists (0.4.0) */
	/* the source's item_key, and the keyset pages' queries */
	Oid			key_type;
	Oid			key_input;
	Oid			key_ioparam;
	Oid			key_output;
	char	   *first_sql;
	char	   *next_sql;
	/* the cursor */
	char	   *after;
	int64		spawned;
	bool		canonical;
	ResolvedWorkflow *cache;
	MemoryContext cache_cxt;
	MemoryContext batch_cxt;
} SpawnEach;

/* spawn_each's arguments; a bad one fails the run (CF012). */
static void
spawn_each_args(FunctionCallInfo fcinfo, SpawnEach *se)
{
	se->name = cf_optional_text(fcinfo, 0);
	cf_validate_name_segment("spawn name", se->name);
	se->workflow = cf_optional_text(fcinfo, 1);
	if (se->workflow != NULL && se->workflow[0] == '\0')
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT, "spawn_each workflow must not be empty", NULL);
	se->source = cf_optional_text(fcinfo, 2);
	if (se->source == NULL || se->source[0] == '\0')
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT, "spawn_each source must not be NULL or empty", NULL);
	/* One batch is read into memory and inserted in one statement. */
	if (PG_ARGISNULL(3) || PG_GETARG_INT32(3) < 1 || PG_GETARG_INT32(3) > CF_SPAWN_BATCH_MAX)
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
				 psprintf("spawn_each batch_size must be between 1 and %d", CF_SPAWN_BATCH_MAX), NULL);
	se->batch_size = PG_GETARG_INT32(3);
}

/*
 * Describe the source (as the owner): item_key, args, workflow; and build
 * the queries of its keyset pages.
 */
static void
describe_source(SpawnEach *se)
{
	TupleDesc	desc;
	int			key_col = 0,
				args_col = 0,
				wf_col = 0;
	bool		key_varlena;
	const char *args_expr;
	const char *wf_expr;

	if (SPI_execute(psprintf("SELECT * FROM (%s) AS s LIMIT 0", se->source), false, 0) < 0)
		elog(ERROR, "could not describe the spawn_each source");
	desc = SPI_tuptable->tupdesc;
	for (int i = 1; i <= desc->natts; i++)
	{
		const char *col = NameStr(TupleDescAttr(desc, i - 1)->attname);

		if (strcmp(col, "item_key") == 0)
			key_col = i;
		else if (strcmp(col, "args") == 0)
			args_col = i;
		else if (strcmp(col, "workflow") == 0)
			wf_col = i;
	}
	if (key_col == 0)
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT, "spawn_each source must return an item_key column",
				 "The source is a query returning item_key (unique, sortable), args jsonb and optionally workflow text.");
	se->key_type = TupleDescAttr(desc, key_col - 1)->atttypid;
	SPI_freetuptable(SPI_tuptable);
	getTypeInputInfo(se->key_type, &se->key_input, &se->key_ioparam);
	getTypeOutputInfo(se->key_type, &se->key_output, &key_varlena);
	args_expr = args_col ? "s.args::jsonb" : "'{}'::jsonb";
	wf_expr = wf_col ? "s.workflow::text" : "NULL::text";
	se->first_sql = psprintf("SELECT s.item_key, %s, %s FROM (%s) AS s"
							 " ORDER BY s.item_key LIMIT $1",
							 args_expr, wf_expr, se->source);
	se->next_sql = psprintf("SELECT s.item_key, %s, %s FROM (%s) AS s"
							" WHERE s.item_key > $2 ORDER BY s.item_key LIMIT $1",
							args_expr, wf_expr, se->source);
}

/* The next keyset page, as the owner: batch_size rows and one more. */
static uint64
read_page(SpawnEach *se)
{
	int			rc;

	if (se->after == NULL)
		rc = SPI_execute_with_args(se->first_sql, 1, (Oid[]) {INT4OID},
								   (Datum[]) {Int32GetDatum(se->batch_size + 1)}, NULL, false, 0);
	else
	{
		/* A cursor written by 0.5.0 is read as it was written. */
		int			level = se->canonical ? canonical_begin() : 0;
		Datum		cursor = OidInputFunctionCall(se->key_input, se->after, se->key_ioparam, -1);

		if (se->canonical)
			canonical_end(level);
		rc = SPI_execute_with_args(se->next_sql, 2, (Oid[]) {INT4OID, se->key_type},
								   (Datum[]) {Int32GetDatum(se->batch_size + 1), cursor},
								   NULL, false, 0);
	}
	if (rc < 0)
		elog(ERROR, "could not read the spawn_each source: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/* The page's item_keys as text, under the fixed settings (NULL stays NULL). */
static char **
page_keys(SpawnEach *se, uint64 rows)
{
	char	  **keys = palloc0(sizeof(char *) * Max(rows, 1));
	int			level = canonical_begin();

	for (int i = 0; i < (int) rows; i++)
	{
		bool		isnull;
		Datum		k = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			keys[i] = OidOutputFunctionCall(se->key_output, k);
	}
	canonical_end(level);
	se->canonical = true;
	return keys;
}

/*
 * The page's first take rows into cb, each checked (the look-ahead row
 * only for its key).  Returns the last key taken (NULL if none).
 */
static char *
batch_page(SpawnEach *se, ChildBatch *cb, char **keys, uint64 rows, int take)
{
	char	   *prev_key = NULL;
	char	   *last_key = NULL;

	for (int i = 0; i < (int) rows; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		char	   *item_key = keys[i];
		char	   *row_wf;
		bool		isnull;
		Datum		a;
		Jsonb	   *row_args;

		if (item_key == NULL)
			cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT, "spawn_each source returned a NULL item_key", NULL);
		if (prev_key != NULL && strcmp(prev_key, item_key) == 0)
			cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
					 psprintf("spawn_each source returned item_key \"%s\" twice", item_key),
					 "item_key must be unique: it names the child.");
		prev_key = item_key;
		if (i >= take)
			break;				/* the look-ahead row */
		last_key = item_key;
		row_wf = SPI_getvalue(tup, SPI_tuptable->tupdesc, 3);
		if (row_wf == NULL)
			row_wf = se->workflow;
		if (row_wf == NULL || row_wf[0] == '\0')
			cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
					 psprintf("spawn_each row \"%s\" names no workflow", item_key),
					 "Pass a workflow to spawn_each or return a workflow column.");
		a = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);
		row_args = isnull ? cf_jsonb_parse("{}") : DatumGetJsonbPCopy(a);
		if (!JB_ROOT_IS_OBJECT(row_args))
			cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
					 psprintf("spawn_each row \"%s\": args must be a JSON object", item_key), NULL);
		cf_check_json_size(psprintf("spawn_each row \"%s\": args", item_key), row_args);
		batch_add(cb, row_wf,
				  cf_child_key(se->b.name, psprintf("%s_%s", se->name, item_key)),
				  resolve_cached(&se->cache, row_wf, se->cache_cxt), row_args, se->batch_cxt);
	}
	return last_key;
}

/*
 * One batch in one transaction: read the page after the cursor, insert
 * its children, move the cursor.  Returns true after the last page.
 */
static bool
spawn_one_batch(SpawnEach *se)
{
	ChildBatch	cb;
	uint64		rows;
	int			take;
	bool		last;
	char	   *last_key;
	MemoryContext old;

	MemoryContextReset(se->batch_cxt);
	rows = read_page(se);
	take = (int) Min(rows, (uint64) se->batch_size);
	last = rows <= (uint64) se->batch_size;

	old = MemoryContextSwitchTo(se->batch_cxt);
	batch_init(&cb, se->batch_cxt);
	last_key = batch_page(se, &cb, page_keys(se, rows), rows, take);
	MemoryContextSwitchTo(old);
	/* SPI keeps result sets until the connection ends: free each page. */
	SPI_freetuptable(SPI_tuptable);

	se->spawned += se->batched ? dispatch_batches(&cb, se->b.log_id, se->batch_cxt) :
		dispatch(&cb, se->b.log_id, se->batch_cxt);
	if (last_key != NULL)
		se->after = MemoryContextStrdup(cf_pass.cxt, last_key);
	save_cursor(se->b.log_id, se->name,
				psprintf("{\"after\": %s, \"spawned\": %lld, \"done\": %s, \"canonical\": true}",
						 se->after ? cf_json_string(se->after) : "null",
						 (long long) se->spawned, last ? "true" : "false"));
	cf_commit_step();
	return last;
}

/*
 * spawn_each(name text, workflow text, source text, batch_size int)
 *
 * The source runs as the owner, wrapped in keyset order of item_key:
 * each batch reads the rows after the cursor, inserts their children and
 * moves the cursor in one transaction.  One row beyond the batch is read
 * to prove item_key unique across the batch boundary.
 */
Datum
cf_spawn_each(PG_FUNCTION_ARGS)
{
	SpawnEach	se = {0};
	bool		done;

	se.cache_cxt = CurrentMemoryContext;
	se.batched = cf_schema_at_least(CF_SCHEMA(0, 4, 0));
	cf_require_pass(fcinfo, "spawn_each");
	cf_fail_now();
	spawn_each_args(fcinfo, &se);
	se.b = cf_branch_current("spawn_each");
	if (se.b.sealed)
	{
		cf_pass.outcome = CF_OUTCOME_NONE;
		PG_RETURN_VOID();
	}

	cf_spi_connect();
	read_cursor(se.b.log_id, se.name, &done, &se.after, &se.spawned, &se.canonical);
	if (done)
	{
		SPI_finish();
		cf_pass.outcome = CF_OUTCOME_NONE;
		PG_RETURN_VOID();
	}
	describe_source(&se);

	se.batch_cxt = AllocSetContextCreate(cf_pass.cxt, "chrono_forge spawn_each batch",
										 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (spawn_one_batch(&se))
			break;
	}
	MemoryContextDelete(se.batch_cxt);
	SPI_finish();
	cf_pass.outcome = CF_OUTCOME_NONE;
	PG_RETURN_VOID();
}
