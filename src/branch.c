/*-------------------------------------------------------------------------
 *
 * branch.c
 *	  Fan-out: branch, seal_branch, merge_branches, the unmerged-branch gate
 *	  and the child-to-parent nudge at completion (spawning is spawn.c's,
 *	  the branch probes probes.c's, the merge poller merge.c's).
 *
 * Owns the per-pass registry of opened branches.  A branch is the step
 * branch$<name> (pending while it dispatches, completed once sealed, its
 * result {"log_id": id}); children are runs owned by the parent's owner
 * whose parent_execution_log_id is that log's id.
 *
 * This file must never scan a branch's completed children: probes read
 * spawn_batches and the non-completed states of workflows_children_idx
 * only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "branch.h"
#include "clock.h"
#include "internal.h"
#include "journal.h"
#include "merge.h"
#include "pass.h"
#include "probes.h"
#include "replay.h"
#include "results.h"
#include "shmem.h"
#include "step.h"
#include "steplog.h"
#include "util.h"
#include "wakeups.h"

PG_FUNCTION_INFO_V1(cf_branch);
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


static int64
jsonb_int64(Jsonb *object, const char *key)
{
	Jsonb	   *v = cf_jsonb_get(object, key);
	JsonbValue	scalar;

	if (v == NULL || !JsonbExtractScalar(&v->root, &scalar) || scalar.type != jbvNumeric)
		return 0;
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(scalar.val.numeric)));
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
	name = cf_optional_text(fcinfo, 0);
	cf_validate_name_segment("branch name", name);
	ensure_registry();
	if (current_branch != NULL)
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
				 psprintf("branch \"%s\" opened inside branch \"%s\"", name, current_branch->name),
				 "Branches do not nest in one workflow: seal the first with chrono_forge.seal_branch(), "
				 "or open the inner branch in a child workflow.");
	if (find_branch(name) != NULL)
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
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
			cf_commit_step();
		}
		SPI_finish();
	}
	b->next = open_branches;
	open_branches = b;
	current_branch = b;
	PG_RETURN_VOID();
}

static Jsonb *merge(OpenBranch **branches, int n, Interval *min_interval,
					Interval *max_interval, CfMergeRules *rules, bool want_results);

/* seal_branch(): the current branch dispatched everything. */
Datum
cf_seal_branch(PG_FUNCTION_ARGS)
{
	OpenBranch *b;

	cf_require_pass(fcinfo, "seal_branch");
	cf_fail_now();
	ensure_registry();
	if (current_branch == NULL)
		cf_fail_run(ERRCODE_CF_NOT_IN_BRANCH, "chrono_forge.seal_branch() called outside a branch",
				 "Open one first with CALL chrono_forge.branch('name').");
	cf_pass.outcome = CF_OUTCOME_NONE;
	b = current_branch;
	if (!b->sealed)
	{
		char	   *step_name = psprintf("branch$%s", b->name);
		Jsonb	   *result = cf_jsonb_parse(psprintf("{\"log_id\": %lld}", (long long) b->log_id));

		cf_spi_connect();
		cf_step_log_write(step_name, "completed", 1, NULL, result, NULL);
		cf_commit_step();
		SPI_finish();
		cf_step_remember(step_name, result);
		b->sealed = true;
	}
	current_branch = NULL;
	if (b->automerge)
	{
		Interval	min_interval = {5 * USECS_PER_SEC, 0, 0};
		Interval	max_interval = {300 * USECS_PER_SEC, 0, 0};
		CfMergeRules rules = {CF_CHILD_FAILURE_WAIT, 0, NULL, DT_NOEND, false};

		merge(&b, 1, &min_interval, &max_interval, &rules, false);
	}
	PG_RETURN_VOID();
}

/*
 * The branch a spawn dispatches into: the current one (opened by branch()
 * and not yet sealed in this body); outside a branch the run fails.
 */
CfBranchRef
cf_branch_current(const char *primitive)
{
	CfBranchRef ref;

	ensure_registry();
	if (current_branch == NULL)
		cf_fail_run(ERRCODE_CF_NOT_IN_BRANCH,
					psprintf("chrono_forge.%s() called outside a branch", primitive),
					"Call it between CALL chrono_forge.branch('name') and CALL chrono_forge.seal_branch().");
	ref.name = current_branch->name;
	ref.log_id = current_branch->log_id;
	ref.sealed = current_branch->sealed;
	return ref;
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
	cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
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
			" WHERE parent_execution_log_id = ANY ($1) AND state_code IN (4, 5, 6, 7) ORDER BY id LIMIT 5",
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

/* The branches' completed children, counted up to cap (an index range each). */
static int64
completed_children(OpenBranch **branches, int n, int64 cap)
{
	static SPIPlanPtr plan = NULL;
	ArrayBuildState *ids = initArrayResult(INT8OID, CurrentMemoryContext, false);
	CfInternal	st;
	bool		isnull;
	int64		count;

	for (int i = 0; i < n; i++)
		accumArrayResult(ids, Int64GetDatum(branches[i]->log_id), false, INT8OID, CurrentMemoryContext);
	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT count(*) FROM (SELECT 1 FROM chrono_forge.workflows"
			"  WHERE parent_execution_log_id OPERATOR(pg_catalog.=) ANY ($1)"
			"   AND state_code OPERATOR(pg_catalog.=) 3 LIMIT $2) c",
			2, (Oid[]) {INT8ARRAYOID, INT8OID},
			(Datum[]) {makeArrayResult(ids, CurrentMemoryContext), Int64GetDatum(cap)},
			NULL, true, 1);
	count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	cf_internal_end(&st);
	return count;
}

/*
 * May the merge complete?  Every branch sealed, and every child completed
 * (under 'ignore', every child ended: completed, failed, stalled or
 * cancelled) or, with a quorum, that many completed.  Under 'fail' a
 * blocked child fails the run.
 */
static bool
merge_ready(const char *step_name, OpenBranch **branches, int n, const CfMergeRules *rules)
{
	bool		all_ended = true;

	if (rules->policy == CF_CHILD_FAILURE_FAIL)
		fail_on_blocked(step_name, branches, n);
	for (int i = 0; i < n; i++)
	{
		int64		log_id = branches[i]->log_id;

		if (!cf_branch_is_sealed(log_id))
			return false;
		if (all_ended &&
			(rules->policy == CF_CHILD_FAILURE_IGNORE ? cf_branch_children_live(log_id, 1) > 0 :
			 cf_branch_children_pending(log_id, 1, NULL, NULL, NULL) > 0))
			all_ended = false;
	}
	return all_ended ||
		(rules->quorum > 0 && completed_children(branches, n, rules->quorum) >= rules->quorum);
}

/*
 * The merge's rules, on its log (the poller reads them there): its
 * policy, quorum and deadline; when it completes under 'ignore', the
 * children it counted as ended.
 */
static Jsonb *
merge_metadata(const CfMergeRules *rules, int64 ignored)
{
	StringInfoData m;

	initStringInfo(&m);
	appendStringInfo(&m, "{\"on_child_failure\": \"%s\"", child_failure_names[rules->policy]);
	if (rules->quorum > 0)
		appendStringInfo(&m, ", \"quorum\": " INT64_FORMAT, rules->quorum);
	if (rules->deadline != DT_NOEND)
		appendStringInfo(&m, ", \"deadline\": %s, \"on_timeout\": \"%s\"",
						 cf_json_timestamp(rules->deadline), rules->fail_on_timeout ? "fail" : "stall");
	if (ignored >= 0)
		appendStringInfo(&m, ", \"ignored_children\": " INT64_FORMAT, ignored);
	appendStringInfoChar(&m, '}');
	return cf_jsonb_parse(m.data);
}

/*
 * The merge ran out of time before its children were done: the step
 * fails with CF010 and the run stalls (retry() waits again), or, under
 * on_timeout => 'fail', the run fails.
 */
static void
merge_timed_out(const char *step_name, int attempts, const CfMergeRules *rules)
{
	const char *message = "the merge's timeout passed before its children were done";

	if (rules->fail_on_timeout)
		cf_fail_run(ERRCODE_CF_WAIT_CONDITION_NOT_MET, psprintf("%s: %s", step_name, message),
					"Its children go on; cancel the run with its children to stop them.");
	cf_timeout_step(step_name, attempts, merge_metadata(rules, -1), message);
}

/* The results of the branches' completed children (cf_merge_results()). */
static Jsonb *
branch_results(OpenBranch **branches, int n)
{
	int64	   *log_ids = palloc(sizeof(int64) * n);
	char	  **names = palloc(sizeof(char *) * n);
	int			m = 0;

	for (int i = 0; i < n; i++)
		if (branches[i] != NULL)
		{
			log_ids[m] = branches[i]->log_id;
			names[m++] = branches[i]->name;
		}
	return cf_merge_results(log_ids, names, m);
}

/*
 * The merge is complete: log it (with its results, if wanted: a replay
 * hands back the same ones), drop its poll, commit, remember.
 */
static Jsonb *
complete_merge(const char *step_name, OpenBranch **branches, int n, int attempts,
			   const CfMergeRules *rules, bool want_results)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	Jsonb	   *results = want_results ? branch_results(branches, n) : NULL;

	cf_step_log_write(step_name, "completed", attempts,
					  merge_metadata(rules, rules->policy == CF_CHILD_FAILURE_IGNORE ?
									 blocked_children(branches, n) : -1),
					  results, NULL);
	cf_internal_begin(&st);
	cf_exec(&plan,
			"DELETE FROM chrono_forge.merge_polls WHERE workflow_id = $1 AND merge_step = $2",
			2, (Oid[]) {INT8OID, TEXTOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(step_name)},
			NULL, false, 0);
	cf_internal_end(&st);
	cf_commit_step();
	cf_step_remember(step_name, results);
	for (int i = 0; i < n; i++)
		branches[i]->merged = true;
	return results;
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
 * child is completed (with their results, if wanted); otherwise parks the
 * run (no continuation) behind a poll, fenced by a new token stamped on
 * every branch log.  The run is not replayed while it waits: the poller or
 * a child's completion wakes it.
 */
static Jsonb *
merge(OpenBranch **branches, int n, Interval *min_interval, Interval *max_interval,
	  CfMergeRules *rules, bool want_results)
{
	static SPIPlanPtr stamp_plan = NULL;
	StringInfoData step;
	Jsonb	   *recorded;
	Jsonb	   *results;
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
	if (cf_step_completed(step.data, &recorded))
	{
		for (int i = 0; i < n; i++)
			branches[i]->merged = true;
		return recorded;
	}

	cf_spi_connect();
	log = cf_step_log_read(step.data);
	if (merge_ready(step.data, branches, n, rules))
	{
		results = complete_merge(step.data, branches, n, log.attempts + 1, rules, want_results);
		results = cf_jsonb_transfer(results);	/* out of the connection's memory */
		SPI_finish();
		return results;
	}
	rules->deadline = cf_pending_deadline(&log, rules->timeout);
	if (cf_clock_now() >= rules->deadline)
		merge_timed_out(step.data, log.attempts + 1, rules);

	/* Park behind a poll: stamp the token, schedule the first visit. */
	token = random_token();
	due = Min(cf_timestamp_plus(cf_clock_now(), min_interval), rules->deadline);
	ids = initArrayResult(INT8OID, CurrentMemoryContext, false);
	for (int i = 0; i < n; i++)
		accumArrayResult(ids, Int64GetDatum(branches[i]->log_id), false, INT8OID, CurrentMemoryContext);
	cf_step_log_write(step.data, "pending", log.attempts + 1, merge_metadata(rules, -1), NULL, NULL);
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
	cf_commit_step();

	/*
	 * A last child that completed before the token was visible did not
	 * nudge us: look once more now that it is.  Either it sees the token
	 * or we see its completion.
	 */
	if (merge_ready(step.data, branches, n, rules))
	{
		results = complete_merge(step.data, branches, n, log.attempts + 1, rules, want_results);
		results = cf_jsonb_transfer(results);	/* out of the connection's memory */
		SPI_finish();
		return results;
	}
	SPI_finish();
	cf_halt(step.data);
}

/* merge_branches' intervals; a bad one fails the run (CF012). */
static void
check_merge_intervals(Interval *min_interval, Interval *max_interval)
{
	if (cf_interval_seconds(min_interval) <= 0)
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT, "merge_branches min_interval must be positive", NULL);
	if (cf_interval_seconds(min_interval) > cf_interval_seconds(max_interval))
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
				 "merge_branches min_interval must not exceed max_interval", NULL);
	/* The poller adds it to now in microseconds: bound it. */
	if (cf_interval_seconds(max_interval) > CF_POLICY_MAX_SECONDS)
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
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
			cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
					 psprintf("branch \"%s\" cannot be merged before it is sealed", b->name),
					 "Call chrono_forge.seal_branch() first.");
		branches[(*m)++] = b;
	}
	return branches;
}

/*
 * A merge logged without results (by merge_branches without them, or at
 * seal_branch() under automerge) read by the overload with results: read
 * them now.  The branches the run has not opened are passed over.
 */
static Jsonb *
results_of_merged(char **sorted, int n)
{
	OpenBranch **branches = palloc(sizeof(OpenBranch *) * n);
	Jsonb	   *results;

	for (int i = 0; i < n; i++)
		branches[i] = (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0) ? NULL : find_branch(sorted[i]);
	cf_spi_connect();
	results = cf_jsonb_transfer(branch_results(branches, n));
	SPI_finish();
	return results;
}

/*
 * merge_branches' rules from its arguments after the intervals (from
 * position a + 3): on_child_failure (0.6.0), quorum, timeout and
 * on_timeout (0.10.0).  A bad value fails the run (CF012).
 */
static CfMergeRules
merge_rules_parse(FunctionCallInfo fcinfo, int a)
{
	CfMergeRules r = {CF_CHILD_FAILURE_WAIT, 0, NULL, DT_NOEND, false};
	char	   *on_timeout;

	if (PG_NARGS() > 3 + a)
		r.policy = child_failure_parse(cf_optional_text(fcinfo, 3 + a));
	if (PG_NARGS() > 4 + a && !PG_ARGISNULL(4 + a))
	{
		r.quorum = PG_GETARG_INT32(4 + a);
		if (r.quorum < 1)
			cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT, "merge_branches quorum must be at least 1", NULL);
	}
	if (PG_NARGS() > 5 + a && !PG_ARGISNULL(5 + a))
	{
		r.timeout = PG_GETARG_INTERVAL_P(5 + a);
		if (cf_interval_is_negative(r.timeout) || cf_interval_seconds(r.timeout) <= 0 ||
			cf_interval_seconds(r.timeout) > CF_POLICY_MAX_SECONDS)
			cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
						psprintf("merge_branches timeout must be positive and at most %d seconds",
								 CF_POLICY_MAX_SECONDS), NULL);
	}
	if (PG_NARGS() > 6 + a)
	{
		on_timeout = cf_optional_text(fcinfo, 6 + a);
		if (on_timeout == NULL || (strcmp(on_timeout, "stall") != 0 && strcmp(on_timeout, "fail") != 0))
			cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
						psprintf("merge_branches on_timeout must be 'stall' or 'fail', not %s",
								 on_timeout ? quote_literal_cstr(on_timeout) : "NULL"), NULL);
		r.fail_on_timeout = strcmp(on_timeout, "fail") == 0;
	}
	return r;
}

/*
 * merge_branches(names text[], min_interval interval, max_interval
 * interval, on_child_failure text, quorum int, timeout interval,
 * on_timeout text) (0.10.0; 0.6.0's ends at on_child_failure, 0.5.0's at
 * max_interval) and merge_branches(INOUT results jsonb, names, ...)
 * (0.10.0): the results first, so that no call of the other, by
 * position, becomes ambiguous.
 */
Datum
cf_merge_branches(PG_FUNCTION_ARGS)
{
	bool		has_results = (PG_NARGS() == 8);
	int			a = has_results ? 1 : 0;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	Interval   *min_interval;
	Interval   *max_interval;
	OpenBranch **branches;
	int			m;
	char	   *step;
	Jsonb	   *results;
	char	  **sorted;
	CfMergeRules rules;

	cf_require_pass(fcinfo, "merge_branches");
	cf_fail_now();
	if (PG_ARGISNULL(a))
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT, "merge_branches names must not be NULL", NULL);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(a), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT, "merge_branches needs at least one branch name", NULL);
	if (PG_ARGISNULL(1 + a) || PG_ARGISNULL(2 + a))
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT, "merge_branches intervals must not be NULL", NULL);
	min_interval = PG_GETARG_INTERVAL_P(1 + a);
	max_interval = PG_GETARG_INTERVAL_P(2 + a);
	check_merge_intervals(min_interval, max_interval);
	rules = merge_rules_parse(fcinfo, a);
	sorted = sorted_branch_names(elems, nulls, n);

	/* Already merged: nothing to check (as the gem). */
	step = merge_step_name(sorted, n);
	ensure_registry();
	if (cf_step_completed(step, &results))
	{
		for (int i = 0; i < n; i++)
		{
			OpenBranch *b = find_branch(sorted[i]);

			if (b != NULL)
				b->merged = true;
		}
		cf_pass.outcome = CF_OUTCOME_NONE;
		if (has_results && results == NULL)
			results = results_of_merged(sorted, n);
		return cf_return_result(fcinfo, has_results, results);
	}
	branches = branches_to_merge(sorted, n, &m);
	cf_pass.outcome = CF_OUTCOME_NONE;
	results = merge(branches, m, min_interval, max_interval, &rules, has_results);
	return cf_return_result(fcinfo, has_results, results);
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
