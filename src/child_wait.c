/*-------------------------------------------------------------------------
 *
 * child_wait.c
 *	  await_child: a parent waits for one of its children and receives its
 *	  result.
 *
 * The step await_child$<branch>$<child> completes with the child's result
 * once the child completed; a child that failed, stalled or was cancelled
 * fails the parent (CF025), as a merge under 'fail' does.  While the child
 * runs, the parent polls it every check_interval (nothing of the child's
 * own passes pays for a waiting parent); past the timeout the parent
 * stalls (CF010).  The child's run id, found once by its key among the
 * branch's children, is kept on the step's log, so later polls read it by
 * id.  This file must never write another run than the current pass's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "chrono_forge.h"
#include "clock.h"
#include "internal.h"
#include "journal.h"
#include "pass.h"
#include "replay.h"
#include "step.h"
#include "steplog.h"
#include "util.h"

PG_FUNCTION_INFO_V1(cf_await_child);

/* The awaited child as one look saw it. */
typedef struct ChildSeen
{
	bool		branch_exists;
	bool		branch_sealed;
	bool		unstarted_left; /* the branch has children not started yet */
	int64		child_id;		/* 0: not a run (yet) */
	char	   *state;
	Jsonb	   *result;
} ChildSeen;

/*
 * Look at the child: by its id once known (child_id), else by its key
 * among the branch's children.  Caller is connected to SPI.
 */
static ChildSeen
look_at_child(const char *branch, const char *child, int64 child_id)
{
	static SPIPlanPtr plan = NULL;
	ChildSeen	seen = {0};
	CfInternal	st;
	bool		isnull;
	Datum		d;
	char	   *key = cf_child_key(branch, child);

	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT b.state = 'completed', w.id, w.state::text, l.result,"
			"  w.id IS NULL AND EXISTS (SELECT 1 FROM chrono_forge.spawn_batches s"
			"   WHERE s.branch_log_id = b.id AND s.taken < s.n)"
			" FROM chrono_forge.execution_logs b"
			" LEFT JOIN chrono_forge.workflows w ON CASE WHEN $4 > 0 THEN w.id = $4"
			"   ELSE w.parent_execution_log_id = b.id AND w.key = $3 END"
			" LEFT JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id"
			"  AND l.step_name = '$workflow_completion$'"
			" WHERE b.workflow_id = $1 AND b.step_name = $2",
			4, (Oid[]) {INT8OID, TEXTOID, TEXTOID, INT8OID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id),
				CStringGetTextDatum(psprintf("branch$%s", branch)), CStringGetTextDatum(key),
			Int64GetDatum(child_id)},
			NULL, true, 1);
	cf_internal_end(&st);
	if (SPI_processed != 1)
		return seen;
	seen.branch_exists = true;
	seen.branch_sealed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	seen.child_id = isnull ? 0 : DatumGetInt64(d);
	seen.state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
	seen.result = isnull ? NULL : DatumGetJsonbPCopy(d);
	seen.unstarted_left = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	return seen;
}

/* The child's run id kept on the step's log once found; 0 if none. */
static int64
kept_child_id(const CfStepLog *log)
{
	JsonbValue	v;

	if (!log->exists ||
		!getKeyJsonValueFromContainer(&log->metadata->root, "child_id", 8, &v) ||
		v.type != jbvNumeric)
		return 0;
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v.val.numeric)));
}

/* The child ended other than completed, or is not there: the run fails. */
static void
refuse_child(const char *branch, const char *child, const ChildSeen *seen)
{
	if (!seen->branch_exists)
		cf_fail_run(ERRCODE_CF_UNKNOWN_BRANCH, psprintf("unknown branch \"%s\"", branch),
					"await_child names a branch the workflow opens before it.");
	if (seen->child_id == 0)
		cf_fail_run(ERRCODE_CF_INVALID_ARGUMENT,
					psprintf("branch \"%s\" has no child \"%s\"", branch, child),
					"A child is named by its spawn, or <spawn>_<item key> for spawn_each.");
	cf_fail_run(ERRCODE_CF_CHILD_FAILED,
				psprintf("child failed: child \"%s\" of branch \"%s\" is %s", child, branch, seen->state),
				"Retry the child, then retry this run.");
}

/* Has the child ended, or can it never be found?  (Then it is refused.) */
static bool
child_refused(const ChildSeen *seen)
{
	if (!seen->branch_exists)
		return true;
	if (seen->child_id == 0)
		return seen->branch_sealed && !seen->unstarted_left;
	return strcmp(seen->state, "failed") == 0 || strcmp(seen->state, "stalled") == 0 ||
		strcmp(seen->state, "cancelled") == 0 || strcmp(seen->state, "compensated") == 0;
}

/*
 * await_child(branch text, child text, INOUT result jsonb, timeout
 * interval DEFAULT NULL, check_interval interval DEFAULT '1 second')
 */
Datum
cf_await_child(PG_FUNCTION_ARGS)
{
	char	   *branch;
	char	   *child;
	char	   *step_name;
	Jsonb	   *result;
	CfStepLog	log;
	ChildSeen	seen;
	TimestampTz now;
	TimestampTz deadline;
	Interval   *check_interval;

	cf_require_pass(fcinfo, "await_child");
	cf_fail_now();
	branch = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	cf_validate_name_segment("branch name", branch);
	child = cf_required_text(fcinfo, 1, "child");
	cf_check_length("child name", child, CF_NAME_MAX_BYTES);
	if (!PG_ARGISNULL(3) && (cf_interval_is_negative(PG_GETARG_INTERVAL_P(3)) ||
							 cf_interval_seconds(PG_GETARG_INTERVAL_P(3)) > CF_POLICY_MAX_SECONDS))
		cf_primitive_invalid_argument("await_child timeout must not be negative or over 365 days");
	if (PG_ARGISNULL(4) || cf_interval_is_negative(PG_GETARG_INTERVAL_P(4)) ||
		cf_interval_seconds(PG_GETARG_INTERVAL_P(4)) <= 0)
		cf_primitive_invalid_argument("await_child check_interval must be positive");
	check_interval = PG_GETARG_INTERVAL_P(4);
	cf_pass.outcome = CF_OUTCOME_NONE;

	step_name = psprintf("await_child$%s$%s", branch, child);
	if (cf_step_completed(step_name, &result))
		return cf_return_result(fcinfo, true, result);

	cf_spi_connect();
	log = cf_step_log_read(step_name);
	seen = look_at_child(branch, child, kept_child_id(&log));
	if (seen.child_id != 0 && strcmp(seen.state, "completed") == 0)
	{
		cf_step_log_write_owned(step_name, "completed", log.attempts + 1, NULL, seen.result, NULL);
		cf_commit();
		cf_step_remember(step_name, seen.result);
		result = cf_jsonb_transfer(seen.result);	/* out of the connection's memory */
		SPI_finish();
		return cf_return_result(fcinfo, true, result);
	}
	if (child_refused(&seen))
		refuse_child(branch, child, &seen);

	now = cf_clock_now();
	deadline = cf_pending_deadline(&log, PG_ARGISNULL(3) ? NULL : PG_GETARG_INTERVAL_P(3));
	if (now >= deadline)
		cf_timeout_step(step_name, log.attempts + 1, NULL, "the child did not end before the timeout");
	cf_set_continuation(Min(cf_timestamp_plus(now, check_interval), deadline), "poll");
	cf_step_log_write_owned(step_name, "pending", log.attempts + 1,
							cf_jsonb_parse(psprintf("{\"child_id\": " INT64_FORMAT ", \"deadline\": %s}",
													seen.child_id,
													deadline == DT_NOEND ? "null" : cf_json_timestamp(deadline))),
							NULL, NULL);
	cf_park(step_name, false);
	PG_RETURN_VOID();			/* not reached */
}
