/*-------------------------------------------------------------------------
 *
 * branch.c
 *	  Fan-out: branch, spawn, spawn_each, seal_branch, merge_branches, the
 *	  unmerged-branch gate and the child-to-parent nudge at completion
 *	  (the branch probes are probes.c's).
 *
 * Owns the per-pass registry of opened branches and the dispatch of
 * children.  A branch is the step branch$<name> (pending while it
 * dispatches, completed once sealed, its result {"log_id": id}); children
 * are runs owned by the parent's owner whose parent_execution_log_id is
 * that log's id.  spawn inserts its child's run with a due wake-up;
 * spawn_each writes spawn_batches rows (0.4.0), whose children become runs
 * when a pass takes them (executor.c); either in the transaction that
 * records the dispatch cursor, so a crash loses or repeats no child.  A
 * sealed branch never re-runs its spawns or its source query.
 *
 * This file must never run a spawn_each source as anyone but the run's
 * owner, never dispatch for a pass that lost its lock (every batch commits
 * through cf_save_context_and_check_lock), and never scan a branch's
 * completed children: probes read spawn_batches and the non-completed
 * states of workflows_children_idx only.  The merge poller is merge.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "chrono_forge.h"

PG_FUNCTION_INFO_V1(cf_branch);
PG_FUNCTION_INFO_V1(cf_spawn);
PG_FUNCTION_INFO_V1(cf_spawn_each);
PG_FUNCTION_INFO_V1(cf_seal_branch);
PG_FUNCTION_INFO_V1(cf_merge_branches);

typedef struct OpenBranch
{
	char	   *name;
	int64		log_id;
	bool		automerge;
	bool		sealed;
	bool		merged;
	struct OpenBranch *next;
} OpenBranch;

/*
 * The branches opened by this pass, in cf_pass.cxt.  The registry is
 * forgotten when that context goes (a reset callback), so it can never
 * outlive its pass.
 */
static OpenBranch *open_branches = NULL;
static OpenBranch *current_branch = NULL;
static MemoryContext registry_cxt = NULL;

/* The completing run's branch log, for the nudge after commit. */
static int64 nudge_log_id = 0;

static void
forget_registry(void *arg)
{
	open_branches = NULL;
	current_branch = NULL;
	registry_cxt = NULL;
}

static void
ensure_registry(void)
{
	MemoryContextCallback *cb;

	if (registry_cxt == cf_pass.cxt)
		return;
	cb = MemoryContextAllocZero(cf_pass.cxt, sizeof(MemoryContextCallback));
	cb->func = forget_registry;
	MemoryContextRegisterResetCallback(cf_pass.cxt, cb);
	open_branches = NULL;
	current_branch = NULL;
	registry_cxt = cf_pass.cxt;
}

static OpenBranch *
find_branch(const char *name)
{
	for (OpenBranch *b = open_branches; b != NULL; b = b->next)
		if (strcmp(b->name, name) == 0)
			return b;
	return NULL;
}

/* A programming error in the workflow: the run fails at once. */
static void
fail_run(int sqlerrcode, const char *msg, const char *hint) pg_attribute_noreturn();
static void
fail_run(int sqlerrcode, const char *msg, const char *hint)
{
	cf_fail_now();
	ereport(ERROR,
			(errcode(sqlerrcode),
			 errmsg("%s", msg),
			 hint ? errhint("%s", hint) : 0));
}

static char *
text_arg(FunctionCallInfo fcinfo, int n)
{
	return PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n));
}

static int64
jsonb_int64(Jsonb *object, const char *key)
{
	Jsonb	   *v = cf_jsonb_get(object, key);
	JsonbValue	scalar;

	if (v == NULL || !JsonbExtractScalar(&v->root, &scalar) || scalar.type != jbvNumeric)
		return 0;
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(scalar.val.numeric)));
}

/* Commit what the primitive wrote, proving the lock is still ours. */
static void
commit_step(void)
{
	cf_save_context_and_check_lock();
	SPI_freetuptable(SPI_tuptable);
	cf_commit();
}

/* ---------------------------------------------------------------------
 * Probes (caller connected to SPI)
 * ---------------------------------------------------------------------
 */

/* ---------------------------------------------------------------------
 * branch / seal_branch
 * ---------------------------------------------------------------------
 */

/* branch(name text, automerge boolean) */
Datum
cf_branch(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *step_name;
	Jsonb	   *result;
	OpenBranch *b;

	cf_require_pass(fcinfo, "branch");
	cf_fail_now();
	name = text_arg(fcinfo, 0);
	cf_validate_name_segment("branch name", name);
	ensure_registry();
	if (current_branch != NULL)
		fail_run(ERRCODE_CF_INVALID_ARGUMENT,
				 psprintf("branch \"%s\" opened inside branch \"%s\"", name, current_branch->name),
				 "Branches do not nest in one workflow: seal the first with chrono_forge.seal_branch(), "
				 "or open the inner branch in a child workflow.");
	if (find_branch(name) != NULL)
		fail_run(ERRCODE_CF_INVALID_ARGUMENT,
				 psprintf("branch \"%s\" is opened twice in this workflow", name), NULL);
	cf_pass.outcome = CF_OUTCOME_NONE;

	b = MemoryContextAllocZero(cf_pass.cxt, sizeof(OpenBranch));
	b->name = MemoryContextStrdup(cf_pass.cxt, name);
	b->automerge = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	step_name = psprintf("branch$%s", name);
	if (cf_step_completed(step_name, &result))
	{
		b->sealed = true;
		b->log_id = jsonb_int64(result, "log_id");
	}
	else
	{
		CfStepLog	log;

		cf_spi_connect();
		log = cf_step_log_read(step_name);
		if (log.exists)
			b->log_id = log.id;
		else
		{
			b->log_id = cf_step_log_write(step_name, "pending", 1,
										  cf_jsonb_parse("{\"cursors\": {}}"), NULL, NULL);
			commit_step();
		}
		SPI_finish();
	}
	b->next = open_branches;
	open_branches = b;
	current_branch = b;
	PG_RETURN_VOID();
}

static void merge(OpenBranch **branches, int n, Interval *min_interval,
				  Interval *max_interval, CfChildFailure policy);

/* seal_branch(): the current branch dispatched everything. */
Datum
cf_seal_branch(PG_FUNCTION_ARGS)
{
	OpenBranch *b;

	cf_require_pass(fcinfo, "seal_branch");
	cf_fail_now();
	ensure_registry();
	if (current_branch == NULL)
		fail_run(ERRCODE_CF_NOT_IN_BRANCH, "chrono_forge.seal_branch() called outside a branch",
				 "Open one first with CALL chrono_forge.branch('name').");
	cf_pass.outcome = CF_OUTCOME_NONE;
	b = current_branch;
	if (!b->sealed)
	{
		char	   *step_name = psprintf("branch$%s", b->name);
		Jsonb	   *result = cf_jsonb_parse(psprintf("{\"log_id\": %lld}", (long long) b->log_id));

		cf_spi_connect();
		cf_step_log_write(step_name, "completed", 1, NULL, result, NULL);
		commit_step();
		SPI_finish();
		cf_step_remember(step_name, result);
		b->sealed = true;
	}
	current_branch = NULL;
	if (b->automerge)
	{
		Interval	min_interval = {5 * USECS_PER_SEC, 0, 0};
		Interval	max_interval = {300 * USECS_PER_SEC, 0, 0};

		merge(&b, 1, &min_interval, &max_interval, CF_CHILD_FAILURE_WAIT);
	}
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * Dispatch
 * ---------------------------------------------------------------------
 */

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

/*
 * A child's key: "$<parent run id>$<parent key>$<branch>$<name>".  A
 * child's identity is (owner, procedure, key) like any run's; the parent's
 * run id makes it unique to its parent (two parents sharing a business key
 * never share children), and start() refuses keys beginning with '$', so
 * nothing outside the parent can take it first.
 */
static char *
child_key(const char *branch, const char *name)
{
	return psprintf("$" INT64_FORMAT "$%s$%s$%s", cf_pass.workflow_id, cf_pass.key, branch, name);
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
		fail_run(ERRCODE_CF_INVALID_ARGUMENT,
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
check_keys_are_children(ChildBatch *cb, Datum keys, int64 log_id, MemoryContext cxt)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;

	cf_exec(&plan,
			"SELECT min(x.key) FROM chrono_forge.workflows x,"
			"  unnest($1::text[], $2::text[]) AS u(w, k)"
			" WHERE x.workflow = u.w AND x.key = u.k AND x.owner = $3::regrole"
			"  AND x.parent_execution_log_id IS DISTINCT FROM $4",
			4, (Oid[]) {TEXTARRAYOID, TEXTARRAYOID, OIDOID, INT8OID},
			(Datum[]) {makeArrayResult(cb->workflows, cxt), keys,
				ObjectIdGetDatum(cf_pass.owner), Int64GetDatum(log_id)},
			NULL, false, 1);
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		fail_run(ERRCODE_CF_INVALID_ARGUMENT,
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
	Datum		keys;
	CfInternal	st;
	TimestampTz now = cf_clock_now();
	int64		n;

	if (cb->n == 0)
		return 0;
	keys = makeArrayResult(cb->keys, cxt);
	cf_internal_begin(&st);
	cf_exec(&plan,
			"INSERT INTO chrono_forge.workflows"
			" (workflow, key, procedure, args, owner, parent_execution_log_id, created_at, updated_at)"
			" SELECT u.w, u.k, u.p, u.a, $5::regrole, $6, $7, $7"
			"  FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[]) AS u(w, k, p, a)"
			" ON CONFLICT DO NOTHING RETURNING id",
			7, (Oid[]) {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID, OIDOID, INT8OID, TIMESTAMPTZOID},
			(Datum[]) {makeArrayResult(cb->workflows, cxt), keys,
				makeArrayResult(cb->procedures, cxt), makeArrayResult(cb->args, cxt),
				ObjectIdGetDatum(cf_pass.owner), Int64GetDatum(log_id), TimestampTzGetDatum(now)},
			NULL, false, 0);
	n = (int64) SPI_processed;
	if (n > 0)
		cf_wakeups_add(cf_spi_ids(1), now, "spawn", CF_WAKEUP_ALWAYS);
	if (n < cb->n)
		check_keys_are_children(cb, keys, log_id, cxt);
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

static OpenBranch *
require_branch(const char *primitive)
{
	ensure_registry();
	if (current_branch == NULL)
		fail_run(ERRCODE_CF_NOT_IN_BRANCH,
				 psprintf("chrono_forge.%s() called outside a branch", primitive),
				 "Call it between CALL chrono_forge.branch('name') and CALL chrono_forge.seal_branch().");
	return current_branch;
}

/* spawn(name text, workflow text, args jsonb) */
Datum
cf_spawn(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *workflow;
	Jsonb	   *args;
	OpenBranch *b;
	ChildBatch	cb;
	ResolvedWorkflow *cache = NULL;
	const char *procedure;

	cf_require_pass(fcinfo, "spawn");
	cf_fail_now();
	name = text_arg(fcinfo, 0);
	cf_validate_name_segment("spawn name", name);
	workflow = text_arg(fcinfo, 1);
	if (workflow == NULL || workflow[0] == '\0')
		fail_run(ERRCODE_CF_INVALID_ARGUMENT, "spawn workflow must not be NULL or empty", NULL);
	args = PG_ARGISNULL(2) ? cf_jsonb_parse("{}") : PG_GETARG_JSONB_P(2);
	if (!JB_ROOT_IS_OBJECT(args))
		fail_run(ERRCODE_CF_INVALID_ARGUMENT, "spawn args must be a JSON object", NULL);
	cf_check_json_size("spawn args", args);
	b = require_branch("spawn");
	if (b->sealed)
	{
		cf_pass.outcome = CF_OUTCOME_NONE;
		PG_RETURN_VOID();
	}
	/* As the owner: a missing or forbidden procedure fails the run. */
	procedure = resolve_cached(&cache, workflow, CurrentMemoryContext);
	cf_pass.outcome = CF_OUTCOME_NONE;

	cf_spi_connect();
	batch_init(&cb, CurrentMemoryContext);
	batch_add(&cb, workflow, child_key(b->name, name), procedure, args,
			  CurrentMemoryContext);
	(void) dispatch(&cb, b->log_id, CurrentMemoryContext);
	commit_step();
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
	OpenBranch *b;
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
	se->name = text_arg(fcinfo, 0);
	cf_validate_name_segment("spawn name", se->name);
	se->workflow = text_arg(fcinfo, 1);
	if (se->workflow != NULL && se->workflow[0] == '\0')
		fail_run(ERRCODE_CF_INVALID_ARGUMENT, "spawn_each workflow must not be empty", NULL);
	se->source = text_arg(fcinfo, 2);
	if (se->source == NULL || se->source[0] == '\0')
		fail_run(ERRCODE_CF_INVALID_ARGUMENT, "spawn_each source must not be NULL or empty", NULL);
	/* One batch is read into memory and inserted in one statement. */
	if (PG_ARGISNULL(3) || PG_GETARG_INT32(3) < 1 || PG_GETARG_INT32(3) > CF_SPAWN_BATCH_MAX)
		fail_run(ERRCODE_CF_INVALID_ARGUMENT,
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
		fail_run(ERRCODE_CF_INVALID_ARGUMENT, "spawn_each source must return an item_key column",
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
			fail_run(ERRCODE_CF_INVALID_ARGUMENT, "spawn_each source returned a NULL item_key", NULL);
		if (prev_key != NULL && strcmp(prev_key, item_key) == 0)
			fail_run(ERRCODE_CF_INVALID_ARGUMENT,
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
			fail_run(ERRCODE_CF_INVALID_ARGUMENT,
					 psprintf("spawn_each row \"%s\" names no workflow", item_key),
					 "Pass a workflow to spawn_each or return a workflow column.");
		a = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);
		row_args = isnull ? cf_jsonb_parse("{}") : DatumGetJsonbPCopy(a);
		if (!JB_ROOT_IS_OBJECT(row_args))
			fail_run(ERRCODE_CF_INVALID_ARGUMENT,
					 psprintf("spawn_each row \"%s\": args must be a JSON object", item_key), NULL);
		cf_check_json_size(psprintf("spawn_each row \"%s\": args", item_key), row_args);
		batch_add(cb, row_wf,
				  child_key(se->b->name, psprintf("%s_%s", se->name, item_key)),
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

	se->spawned += se->batched ? dispatch_batches(&cb, se->b->log_id, se->batch_cxt) :
		dispatch(&cb, se->b->log_id, se->batch_cxt);
	if (last_key != NULL)
		se->after = MemoryContextStrdup(cf_pass.cxt, last_key);
	save_cursor(se->b->log_id, se->name,
				psprintf("{\"after\": %s, \"spawned\": %lld, \"done\": %s, \"canonical\": true}",
						 se->after ? cf_json_string(se->after) : "null",
						 (long long) se->spawned, last ? "true" : "false"));
	commit_step();
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
	se.b = require_branch("spawn_each");
	if (se.b->sealed)
	{
		cf_pass.outcome = CF_OUTCOME_NONE;
		PG_RETURN_VOID();
	}

	cf_spi_connect();
	read_cursor(se.b->log_id, se.name, &done, &se.after, &se.spawned, &se.canonical);
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

/* ---------------------------------------------------------------------
 * merge_branches
 * ---------------------------------------------------------------------
 */

static int
cmp_branch_name(const void *a, const void *b)
{
	return strcmp((*(OpenBranch *const *) a)->name, (*(OpenBranch *const *) b)->name);
}

static const char *const child_failure_names[] = {"wait", "fail", "ignore"};

/* merge_branches' on_child_failure; a bad value fails the run (CF012). */
static CfChildFailure
child_failure_parse(const char *s)
{
	for (int i = 0; i < (int) lengthof(child_failure_names); i++)
		if (s != NULL && strcmp(s, child_failure_names[i]) == 0)
			return (CfChildFailure) i;
	fail_run(ERRCODE_CF_INVALID_ARGUMENT,
			 psprintf("merge_branches on_child_failure must be 'wait', 'fail' or 'ignore', not %s",
					  s ? quote_literal_cstr(s) : "NULL"), NULL);
}

/* Failed, stalled and cancelled children of the branches (all of them). */
static int64
blocked_children(OpenBranch **branches, int n)
{
	int64		total = 0;

	for (int i = 0; i < n; i++)
		total += cf_branch_children_blocked(branches[i]->log_id);
	return total;
}

/*
 * on_child_failure => 'fail': a failed, stalled or cancelled child fails
 * the run at once (CF025), naming the first few.  The other children go
 * on; cancel(..., with_children => true) stops them.
 */
static void
fail_on_blocked(const char *step_name, OpenBranch **branches, int n)
{
	static SPIPlanPtr plan = NULL;
	int64		total = blocked_children(branches, n);
	ArrayBuildState *ids;
	StringInfoData names;
	CfInternal	st;

	if (total == 0)
		return;
	ids = initArrayResult(INT8OID, CurrentMemoryContext, false);
	for (int i = 0; i < n; i++)
		accumArrayResult(ids, Int64GetDatum(branches[i]->log_id), false, INT8OID, CurrentMemoryContext);
	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT key, state::text FROM chrono_forge.workflows"
			" WHERE parent_execution_log_id = ANY ($1) AND state_code IN (4, 5, 6) ORDER BY id LIMIT 5",
			1, (Oid[]) {INT8ARRAYOID}, (Datum[]) {makeArrayResult(ids, CurrentMemoryContext)},
			NULL, true, 0);
	cf_internal_end(&st);
	initStringInfo(&names);
	for (uint64 i = 0; i < SPI_processed; i++)
		appendStringInfo(&names, "%s%s (%s)", i > 0 ? ", " : "",
						 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
						 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
	if (total > (int64) SPI_processed)
		appendStringInfo(&names, " and " INT64_FORMAT " more", total - (int64) SPI_processed);
	cf_fail_now();
	ereport(ERROR,
			(errcode(ERRCODE_CF_CHILD_FAILED),
			 errmsg("child failed: " INT64_FORMAT " %s of %s failed, stalled or %s cancelled",
					total, total == 1 ? "child" : "children", step_name, total == 1 ? "was" : "were"),
			 errdetail("Children: %s.", names.data),
			 errhint("Retry them (chrono_forge.retry_blocked_children()), then retry this run.")));
}

/*
 * May the merge complete?  Every branch sealed and every child completed;
 * under 'ignore', every child ended (completed, failed, stalled or
 * cancelled).  Under 'fail' a blocked child fails the run.
 */
static bool
merge_ready(const char *step_name, OpenBranch **branches, int n, CfChildFailure policy)
{
	if (policy == CF_CHILD_FAILURE_FAIL)
		fail_on_blocked(step_name, branches, n);
	for (int i = 0; i < n; i++)
	{
		int64		log_id = branches[i]->log_id;

		if (!cf_branch_is_sealed(log_id))
			return false;
		if (policy == CF_CHILD_FAILURE_IGNORE ? cf_branch_children_live(log_id, 1) > 0 :
			cf_branch_children_pending(log_id, 1, NULL, NULL, NULL) > 0)
			return false;
	}
	return true;
}

/* The merge's policy, on its log (the poller reads it there). */
static Jsonb *
merge_metadata(CfChildFailure policy, int64 ignored)
{
	return cf_jsonb_parse(ignored >= 0
						  ? psprintf("{\"on_child_failure\": \"%s\", \"ignored_children\": " INT64_FORMAT "}",
									 child_failure_names[policy], ignored)
						  : psprintf("{\"on_child_failure\": \"%s\"}", child_failure_names[policy]));
}

/* The merge is complete: log it, drop its poll, commit, remember. */
static void
complete_merge(const char *step_name, OpenBranch **branches, int n, int attempts,
			   CfChildFailure policy)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;

	cf_step_log_write(step_name, "completed", attempts,
					  merge_metadata(policy, policy == CF_CHILD_FAILURE_IGNORE ?
									 blocked_children(branches, n) : -1),
					  NULL, NULL);
	cf_internal_begin(&st);
	cf_exec(&plan,
			"DELETE FROM chrono_forge.merge_polls WHERE workflow_id = $1 AND merge_step = $2",
			2, (Oid[]) {INT8OID, TEXTOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(step_name)},
			NULL, false, 0);
	cf_internal_end(&st);
	commit_step();
	cf_step_remember(step_name, NULL);
	for (int i = 0; i < n; i++)
		branches[i]->merged = true;
}

static char *
random_token(void)
{
	uint8		bytes[16];
	char	   *hex = palloc(33);

	if (!pg_strong_random(bytes, sizeof(bytes)))
		elog(ERROR, "could not generate a merge token");
	for (int i = 0; i < 16; i++)
		sprintf(hex + 2 * i, "%02x", bytes[i]);
	return hex;
}

/*
 * Join branches (sorted by name, distinct, sealed).  Returns once every
 * child is completed; otherwise parks the run (no continuation) behind a
 * poll, fenced by a new token stamped on every branch log.  The run is not
 * replayed while it waits: the poller or a child's completion wakes it.
 */
static void
merge(OpenBranch **branches, int n, Interval *min_interval, Interval *max_interval,
	  CfChildFailure policy)
{
	static SPIPlanPtr stamp_plan = NULL;
	StringInfoData step;
	Jsonb	   *ignored;
	CfStepLog	log;
	CfInternal	st;
	char	   *token;
	TimestampTz due;
	ArrayBuildState *ids;

	qsort(branches, n, sizeof(OpenBranch *), cmp_branch_name);
	initStringInfo(&step);
	appendStringInfoString(&step, "merge$");
	for (int i = 0; i < n; i++)
		appendStringInfo(&step, "%s%s", i > 0 ? "," : "", branches[i]->name);
	if (cf_step_completed(step.data, &ignored))
	{
		for (int i = 0; i < n; i++)
			branches[i]->merged = true;
		return;
	}

	cf_spi_connect();
	log = cf_step_log_read(step.data);
	if (merge_ready(step.data, branches, n, policy))
	{
		complete_merge(step.data, branches, n, log.attempts + 1, policy);
		SPI_finish();
		return;
	}

	/* Park behind a poll: stamp the token, schedule the first visit. */
	token = random_token();
	due = cf_timestamp_plus(cf_clock_now(), min_interval);
	ids = initArrayResult(INT8OID, CurrentMemoryContext, false);
	for (int i = 0; i < n; i++)
		accumArrayResult(ids, Int64GetDatum(branches[i]->log_id), false, INT8OID, CurrentMemoryContext);
	cf_step_log_write(step.data, "pending", log.attempts + 1, merge_metadata(policy, -1), NULL, NULL);
	cf_write_taken_run();		/* merge_polls' foreign key */
	cf_internal_begin(&st);
	cf_exec(&stamp_plan,
			"WITH s AS (UPDATE chrono_forge.execution_logs SET"
			"  metadata = coalesce(metadata, '{}') || jsonb_build_object('poll_token', $3::text)"
			"  WHERE id = ANY ($2))"
			" INSERT INTO chrono_forge.merge_polls AS p"
			"  (workflow_id, merge_step, branch_log_ids, min_interval, max_interval, token, due_at)"
			" VALUES ($1, $4, $2, $5, $6, $3, $7)"
			" ON CONFLICT (workflow_id, merge_step) DO UPDATE SET branch_log_ids = EXCLUDED.branch_log_ids,"
			"  min_interval = EXCLUDED.min_interval, max_interval = EXCLUDED.max_interval,"
			"  token = EXCLUDED.token, due_at = EXCLUDED.due_at",
			7, (Oid[]) {INT8OID, INT8ARRAYOID, TEXTOID, TEXTOID, INTERVALOID, INTERVALOID, TIMESTAMPTZOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), makeArrayResult(ids, CurrentMemoryContext),
				CStringGetTextDatum(token), CStringGetTextDatum(step.data),
				IntervalPGetDatum(min_interval), IntervalPGetDatum(max_interval),
			TimestampTzGetDatum(due)},
			NULL, false, 0);
	cf_internal_end(&st);
	cf_queue_wakeup(due);		/* the launcher plans the poll */
	commit_step();

	/*
	 * A last child that completed before the token was visible did not
	 * nudge us: look once more now that it is.  Either it sees the token
	 * or we see its completion.
	 */
	if (merge_ready(step.data, branches, n, policy))
	{
		complete_merge(step.data, branches, n, log.attempts + 1, policy);
		SPI_finish();
		return;
	}
	SPI_finish();
	cf_halt(step.data);
}

/* merge_branches' intervals; a bad one fails the run (CF012). */
static void
check_merge_intervals(Interval *min_interval, Interval *max_interval)
{
	if (cf_interval_seconds(min_interval) <= 0)
		fail_run(ERRCODE_CF_INVALID_ARGUMENT, "merge_branches min_interval must be positive", NULL);
	if (cf_interval_seconds(min_interval) > cf_interval_seconds(max_interval))
		fail_run(ERRCODE_CF_INVALID_ARGUMENT,
				 "merge_branches min_interval must not exceed max_interval", NULL);
	/* The poller adds it to now in microseconds: bound it. */
	if (cf_interval_seconds(max_interval) > CF_POLICY_MAX_SECONDS)
		fail_run(ERRCODE_CF_INVALID_ARGUMENT,
				 psprintf("merge_branches max_interval must be at most %d seconds", CF_POLICY_MAX_SECONDS), NULL);
}

/* The branch names, each checked, sorted (duplicates kept). */
static char **
sorted_branch_names(Datum *elems, bool *nulls, int n)
{
	char	  **sorted = palloc(sizeof(char *) * n);

	for (int i = 0; i < n; i++)
	{
		char	   *name = nulls[i] ? NULL : TextDatumGetCString(elems[i]);

		cf_validate_name_segment("branch name", name);
		if (strchr(name, ',') != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CF_INVALID_STEP_NAME),
					 errmsg("invalid step name: branch name \"%s\" contains \",\"", name),
					 errhint("\",\" separates the branch names of a merge step.")));
		sorted[i] = name;
	}
	qsort(sorted, n, sizeof(char *), pg_qsort_strcmp);
	return sorted;
}

/* merge$<the distinct sorted names, joined by ",">, bounded as an index key. */
static char *
merge_step_name(char **sorted, int n)
{
	StringInfoData step;

	initStringInfo(&step);
	appendStringInfoString(&step, "merge$");
	for (int i = 0; i < n; i++)
		if (i == 0 || strcmp(sorted[i], sorted[i - 1]) != 0)
			appendStringInfo(&step, "%s%s", i > 0 ? "," : "", sorted[i]);
	cf_check_length("merge step name", step.data, CF_STEP_NAME_MAX_BYTES);
	return step.data;
}

/*
 * The open branches the distinct names name, each sealed; an unknown one
 * or the current one is an error.  *m their count.
 */
static OpenBranch **
branches_to_merge(char **sorted, int n, int *m)
{
	OpenBranch **branches = palloc(sizeof(OpenBranch *) * n);

	*m = 0;
	for (int i = 0; i < n; i++)
	{
		OpenBranch *b;

		if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
			continue;
		b = find_branch(sorted[i]);
		if (b == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CF_UNKNOWN_BRANCH),
					 errmsg("unknown branch \"%s\"", sorted[i]),
					 errdetail("merge_branches names a branch this workflow has not opened before it."),
					 errhint("Open it with CALL chrono_forge.branch('%s') first.", sorted[i])));
		if (b == current_branch)
			fail_run(ERRCODE_CF_INVALID_ARGUMENT,
					 psprintf("branch \"%s\" cannot be merged before it is sealed", b->name),
					 "Call chrono_forge.seal_branch() first.");
		branches[(*m)++] = b;
	}
	return branches;
}

/*
 * merge_branches(names text[], min_interval interval, max_interval
 * interval, on_child_failure text) (0.6.0; 0.5.0's has no on_child_failure)
 */
Datum
cf_merge_branches(PG_FUNCTION_ARGS)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	Interval   *min_interval;
	Interval   *max_interval;
	OpenBranch **branches;
	int			m;
	char	   *step;
	Jsonb	   *ignored;
	char	  **sorted;
	CfChildFailure policy = CF_CHILD_FAILURE_WAIT;

	cf_require_pass(fcinfo, "merge_branches");
	cf_fail_now();
	if (PG_ARGISNULL(0))
		fail_run(ERRCODE_CF_INVALID_ARGUMENT, "merge_branches names must not be NULL", NULL);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		fail_run(ERRCODE_CF_INVALID_ARGUMENT, "merge_branches needs at least one branch name", NULL);
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		fail_run(ERRCODE_CF_INVALID_ARGUMENT, "merge_branches intervals must not be NULL", NULL);
	min_interval = PG_GETARG_INTERVAL_P(1);
	max_interval = PG_GETARG_INTERVAL_P(2);
	check_merge_intervals(min_interval, max_interval);
	if (PG_NARGS() > 3)
		policy = child_failure_parse(text_arg(fcinfo, 3));
	sorted = sorted_branch_names(elems, nulls, n);

	/* Already merged: nothing to check (as the gem). */
	step = merge_step_name(sorted, n);
	ensure_registry();
	if (cf_step_completed(step, &ignored))
	{
		for (int i = 0; i < n; i++)
		{
			OpenBranch *b = find_branch(sorted[i]);

			if (b != NULL)
				b->merged = true;
		}
		cf_pass.outcome = CF_OUTCOME_NONE;
		PG_RETURN_VOID();
	}
	branches = branches_to_merge(sorted, n, &m);
	cf_pass.outcome = CF_OUTCOME_NONE;
	merge(branches, m, min_interval, max_interval, policy);
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * Hooks of the pass (executor.c)
 * ---------------------------------------------------------------------
 */

/*
 * The body returned and the run is about to complete: refuse if a branch
 * was never merged, and note the run's branch (if it is a child) for the
 * nudge after the completion commits (the claim read the run's parent
 * reference).
 */
void
cf_branch_before_complete(void)
{
	nudge_log_id = 0;
	if (registry_cxt == cf_pass.cxt && open_branches != NULL)
	{
		StringInfoData names;
		int			n = 0;
		int			total = 0;
		int			i;
		OpenBranch **order;

		/* The registry is newest first: name them in opening order. */
		for (OpenBranch *b = open_branches; b != NULL; b = b->next)
			total++;
		order = palloc(sizeof(OpenBranch *) * total);
		i = total;
		for (OpenBranch *b = open_branches; b != NULL; b = b->next)
			order[--i] = b;
		initStringInfo(&names);
		for (i = 0; i < total; i++)
			if (!order[i]->merged)
				appendStringInfo(&names, "%s%s", n++ > 0 ? ", " : "", order[i]->name);
		if (n > 0)
		{
			cf_fail_now();
			ereport(ERROR,
					(errcode(ERRCODE_CF_UNMERGED_BRANCH),
					 errmsg("unmerged branch: branch%s %s %s opened but never merged",
							n > 1 ? "es" : "", names.data, n > 1 ? "were" : "was"),
					 errhint("Add CALL chrono_forge.merge_branches(ARRAY[...]) before the workflow ends, "
							 "or open the branch with automerge => true.")));
		}
	}
	nudge_log_id = cf_pass.parent_log_id;
}

/*
 * The branch log the completing run must nudge after its completion
 * commits (0: none), handed over to the caller, who then calls
 * cf_branch_nudge() after that commit (the executor's shared commits).
 */
int64
cf_branch_take_nudge(void)
{
	int64		log_id = nudge_log_id;

	nudge_log_id = 0;
	return log_id;
}

/* After the pass's last commit: the nudge of a child that completed. */
void
cf_branch_after_pass(bool completed)
{
	int64		log_id = cf_branch_take_nudge();

	if (completed && log_id != 0)
		cf_branch_nudge(log_id);
}

/*
 * A child of branch log_id completed and committed: look whether the
 * branch is now done and, if its parent waits on a merge of it, wake the
 * parent; if only failed, stalled or cancelled children are left, make
 * the merge's poll due now (its policy decides: 'ignore' merges).  Looking after the commit means that of two last children
 * completing at once, at least the later looker sees both; a crash in
 * between is covered by the poller.  Caller: in a transaction, connected
 * to SPI non-atomically.
 */
void
cf_branch_nudge(int64 log_id)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	TimestampTz now;
	bool		isnull;
	bool		woken;

	/* The common case: siblings still to run, a few index probes. */
	if (cf_branch_children_live(log_id, 1) > 0)
		return;
	if (cf_branch_children_pending(log_id, 1, NULL, NULL, NULL) > 0)
	{
		/* Only failed, stalled or cancelled ones left: the merge's policy decides. */
		if (cf_merge_poll_due_now(log_id))
			SPI_commit();
		return;
	}
	now = cf_clock_now();
	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT p.id FROM chrono_forge.execution_logs l"
			" JOIN chrono_forge.workflows p ON p.id = l.workflow_id"
			" WHERE l.id = $1 AND l.state = 'completed' AND l.metadata ? 'poll_token'"
			"  AND p.state IN ('idle', 'running')"
			"  AND EXISTS (SELECT 1 FROM chrono_forge.merge_polls m WHERE m.workflow_id = p.id)",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(log_id)}, NULL, false, 1);
	woken = SPI_processed == 1 &&
		cf_wakeup_add(DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
					  now, "merge", CF_WAKEUP_UNLESS_DUE);
	cf_internal_end(&st);
	if (woken)
		SPI_commit();
}
