/*-------------------------------------------------------------------------
 *
 * deadlines.c
 *	  Run deadlines: the start() options that set one, set_deadline(), and
 *	  the sweep that ends the runs past theirs.
 *
 * A run past its deadline fails with CF029 whatever it was doing: parked
 * on a timer, an event, a task or a merge, stalled, or in a pass.  The
 * sweep (the launcher's, and run_pending()'s for its caller) turns each
 * such run into a cancel request of kind 'deadline' and applies the
 * requests as cancel() would (pass_timer.c): a run no pass holds ends at
 * once, a pass holding one is told to stop and ends it.  Its children are
 * cancelled too unless its options say "deadline_children": "keep".
 * Nothing here runs user code; the checks happen before anything is
 * written.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "access.h"
#include "citus.h"
#include "clock.h"
#include "compensation.h"
#include "deadlines.h"
#include "internal.h"
#include "operations.h"
#include "pass_timer.h"
#include "shmem.h"
#include "util.h"

PG_FUNCTION_INFO_V1(cf_set_deadline);

#define CF_TIMEOUT_MAX_SECONDS (100.0 * 366 * 86400)

static void
invalid_deadline(const char *msg, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_CF_INVALID_ARGUMENT),
			 errmsg("%s", msg),
			 detail ? errdetail("%s", detail) : 0,
			 errhint("Give \"deadline\" as a timestamp with time zone, or \"timeout\" as an interval, as JSON strings.")));
}

/* A JSON string option's text, or NULL if absent; anything else is refused. */
static char *
string_option(Jsonb *options, const char *name)
{
	char	   *text;

	if (!cf_jsonb_string_field(options, name, &text))
		invalid_deadline(psprintf("option \"%s\" must be a JSON string", name), NULL);
	return text;
}

/*
 * The value of a datetime input function, or CF012 naming the option:
 * its own error (22007, 22008) says nothing of where the text came from.
 * The input functions are pure, so their error is caught and replaced.
 */
static Datum
parse_option(PGFunction input, const char *name, const char *text)
{
	MemoryContext cxt = CurrentMemoryContext;
	Datum		value = (Datum) 0;

	PG_TRY();
	{
		value = DirectFunctionCall3(input, CStringGetDatum(text),
									ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		invalid_deadline(psprintf("option \"%s\" is not valid: \"%s\"", name, text),
						 edata->message);
	}
	PG_END_TRY();
	return value;
}

/*
 * The deadline start() options give (false: none): "deadline", a
 * timestamp, or "timeout", an interval from now; never both, and never
 * one already past.  "deadline_children" is "cancel" (the default) or
 * "keep".  Raises CF012 for anything else, before anything is written.
 */
bool
cf_deadline_from_options(Jsonb *options, TimestampTz now, TimestampTz *deadline)
{
	char	   *at = string_option(options, "deadline");
	char	   *timeout = string_option(options, "timeout");
	char	   *children = string_option(options, "deadline_children");

	if (children != NULL && strcmp(children, "cancel") != 0 && strcmp(children, "keep") != 0)
		invalid_deadline("option \"deadline_children\" must be \"cancel\" or \"keep\"", NULL);
	if (at == NULL && timeout == NULL)
		return false;
	if (at != NULL && timeout != NULL)
		invalid_deadline("options \"deadline\" and \"timeout\" cannot both be given", NULL);
	if (at != NULL)
		*deadline = DatumGetTimestampTz(parse_option(timestamptz_in, "deadline", at));
	else
	{
		Interval   *span = DatumGetIntervalP(parse_option(interval_in, "timeout", timeout));

		if (cf_interval_is_negative(span) || cf_interval_seconds(span) <= 0)
			invalid_deadline("option \"timeout\" must be a positive interval", NULL);
		/* (Past it, adding it to now overflows the timestamp range.) */
		if (cf_interval_seconds(span) > CF_TIMEOUT_MAX_SECONDS)
			invalid_deadline("option \"timeout\" must be at most 100 years", NULL);
		*deadline = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
															TimestampTzGetDatum(now),
															IntervalPGetDatum(span)));
	}
	if (TIMESTAMP_NOT_FINITE(*deadline))
		invalid_deadline("a run's deadline must be finite", NULL);
	if (*deadline <= now)
		invalid_deadline("a run's deadline must be in the future",
						 psprintf("It is %s; the engine clock says %s.",
								  timestamptz_to_str(*deadline), timestamptz_to_str(now)));
	/* The launcher must look then, whatever it had planned. */
	cf_queue_launcher_timer(*deadline);
	return true;
}

/*
 * The runs past their deadline (at most a batch, oldest deadline first)
 * become cancel requests of kind 'deadline', unless one is there already.
 * Returns the ones whose children go too (their owners, in the same
 * order, in *owners) and, in *requested, all of them: after commit, a pass running one is told to stop (a step in
 * progress holds no lock on its run and would run on to its commit), and
 * the launcher applies the requests left.
 */
static Datum
request_overdue(Oid only_owner, TimestampTz now, int *n, Datum *requested, Datum *owners)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	Datum		with_children;

	cf_exec(&plan,
			"WITH o AS (SELECT w.id, w.owner, w.state, w.options FROM chrono_forge.workflows w"
			"  WHERE w.deadline IS NOT NULL AND w.ended_at IS NULL AND w.deadline <= $1"
			"   AND ($2 = 0 OR w.owner::oid = $2)"
			"   AND NOT EXISTS (SELECT FROM chrono_forge.cancel_requests q WHERE q.workflow_id = w.id)"
			"  ORDER BY w.deadline LIMIT $3),"
			" q AS (INSERT INTO chrono_forge.cancel_requests"
			"  (workflow_id, reason, requested_by, cancelled_run, requested_at, kind)"
			"  SELECT o.id, 'deadline', o.owner, o.id, $1, 'deadline' FROM o"
			"  ON CONFLICT (workflow_id) DO NOTHING)"
			" SELECT (SELECT count(*) FROM o)::int,"
			"  (SELECT array_agg(o.id) FROM o),"
			"  (SELECT array_agg(o.id ORDER BY o.id) FROM o"
			"   WHERE o.options->>'deadline_children' IS DISTINCT FROM 'keep'),"
			"  (SELECT array_agg(o.owner::oid ORDER BY o.id) FROM o"
			"   WHERE o.options->>'deadline_children' IS DISTINCT FROM 'keep')",
			3, (Oid[]) {TIMESTAMPTZOID, OIDOID, INT4OID},
			(Datum[]) {TimestampTzGetDatum(now), ObjectIdGetDatum(only_owner),
			Int32GetDatum(CF_DEADLINE_SWEEP_BATCH)},
			NULL, false, 0);
	*n = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*requested = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
		*requested = PointerGetDatum(PG_DETOAST_DATUM_COPY(*requested));
	with_children = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	if (isnull)
		return (Datum) 0;
	*owners = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(SPI_tuptable->vals[0],
																  SPI_tuptable->tupdesc, 4, &isnull)));
	return PointerGetDatum(PG_DETOAST_DATUM_COPY(with_children));
}

/*
 * Cancel the descendants of a run past its deadline, as cancel(...,
 * with_children => true) would: their children not started yet are
 * dropped first, so that none becomes a run after the look.  Each
 * child's marker names the parent's owner and the parent.
 */
static void
cancel_children_of(int64 parent, Oid owner)
{
	Datum		children;
	bool		allowed;
	Datum		tree = cf_run_tree(parent, true, true, owner, &children, &allowed);

	/* A second look only if children not started yet were dropped. */
	if (cf_drop_unstarted_children(tree) > 0)
		(void) cf_run_tree(parent, true, true, owner, &children, &allowed);
	if (children != (Datum) 0)
		(void) cf_cancel_runs(children, CStringGetTextDatum(psprintf("deadline of workflow run %lld",
																	 (long long) parent)),
							  false, owner, parent);
}

/*
 * End the runs past their deadline (only_owner's, or all if InvalidOid):
 * each fails with CF029 (or, held by a pass, is stopped and then fails),
 * and its children are cancelled unless kept.  Returns how many runs were
 * past it; CF_DEADLINE_SWEEP_BATCH means there may be more.  *next, if
 * given, gets the next deadline to come (DT_NOEND: none).  Connects to
 * SPI itself; the caller commits.
 */
int
cf_deadlines_enforce(Oid only_owner, TimestampTz *next)
{
	static SPIPlanPtr next_plan = NULL;
	CfInternal	st;
	TimestampTz now = cf_clock_now();
	Datum		requested;
	Datum		with_children;
	Datum		owners = (Datum) 0;
	bool		isnull;
	int			n;

	if (next != NULL)
		*next = DT_NOEND;
	cf_spi_connect();
	if (!cf_schema_at_least(CF_SCHEMA(0, 11, 0)))	/* no deadlines yet */
	{
		SPI_finish();
		return 0;
	}
	cf_internal_begin(&st);
	with_children = request_overdue(only_owner, now, &n, &requested, &owners);
	if (n > 0)
		cf_queue_cancel_signals(requested);

	/*
	 * The launcher applies the requests left by a sweep (held runs) when
	 * it sees cancels pending; without workers, run_pending() is what
	 * applies them.
	 */
	if (n > 0 || OidIsValid(only_owner))
		(void) cf_apply_cancel_requests(0, false);
	if (with_children != (Datum) 0)
	{
		Datum	   *ids;
		Datum	   *roles;
		int			nparents;

		deconstruct_array(DatumGetArrayTypeP(with_children), INT8OID, sizeof(int64),
						  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &ids, NULL, &nparents);
		deconstruct_array(DatumGetArrayTypeP(owners), OIDOID, sizeof(Oid), true,
						  TYPALIGN_INT, &roles, NULL, &nparents);
		for (int i = 0; i < nparents; i++)
			cancel_children_of(DatumGetInt64(ids[i]), DatumGetObjectId(roles[i]));
	}
	if (next != NULL)
	{
		cf_exec(&next_plan,
				"SELECT min(deadline) FROM chrono_forge.workflows"
				" WHERE deadline IS NOT NULL AND ended_at IS NULL AND deadline > $1",
				1, (Oid[]) {TIMESTAMPTZOID}, (Datum[]) {TimestampTzGetDatum(now)}, NULL, true, 1);
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				*next = DatumGetTimestampTz(d);
		}
	}
	cf_internal_end(&st);
	SPI_finish();
	return n;
}

/*
 * set_deadline(workflow, key, deadline) -> boolean.  Moves (NULL: removes)
 * the deadline of the caller's run that has not completed and was not
 * cancelled: true.  A completed or cancelled run keeps what it has:
 * false.  A deadline already past ends a run in flight at the next look;
 * a failed run keeps its state (retry() refuses it while its deadline is
 * past).
 */
Datum
cf_set_deadline(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	char	   *workflow = cf_required_text(fcinfo, 0, "workflow");
	char	   *key = cf_required_text(fcinfo, 1, "key");
	bool		clear = PG_ARGISNULL(2);
	TimestampTz deadline = clear ? 0 : PG_GETARG_TIMESTAMPTZ(2);
	Oid			caller = GetUserId();	/* before the engine's identity */
	CfInternal	st;
	CfRunRef	run;
	bool		set = false;
	bool		isnull;

	cf_citus_check_key(key);
	if (!clear && TIMESTAMP_NOT_FINITE(deadline))
		invalid_deadline("a run's deadline must be finite", NULL);
	SPI_connect();
	cf_internal_begin(&st);
	run = cf_find_own_run(caller, workflow, key, true);
	if (strcmp(run.state, "completed") != 0 && strcmp(run.state, "cancelled") != 0 &&
		strcmp(run.state, "compensated") != 0)
	{
		/*
		 * A request of a run held when its old deadline passed goes too.
		 * A compensating run has no deadline (0.12.0): it keeps none.
		 */
		cf_exec(&plan,
				"WITH w AS (UPDATE chrono_forge.workflows w SET deadline = $2 WHERE id = $1"
				"  AND NOT " CF_COMPENSATING_SQL("w.id") " RETURNING id),"
				" d AS (DELETE FROM chrono_forge.cancel_requests"
				"  WHERE workflow_id = $1 AND kind = 'deadline' AND ($2 IS NULL OR $2 > $3))"
				" SELECT count(*) FROM w",
				3, (Oid[]) {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID},
				(Datum[]) {Int64GetDatum(run.id), TimestampTzGetDatum(deadline),
				TimestampTzGetDatum(cf_clock_now())},
				clear ? " n " : NULL, false, 0);
		set = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) > 0;
		if (set && !clear)
			cf_queue_launcher_timer(deadline);
	}
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_BOOL(set);
}

/*
 * retry() of the run: CF029 if its deadline has passed (it would fail
 * again at once).  Caller is connected to SPI, in the engine's identity.
 */
void
cf_deadline_check_retry(int64 run, const char *workflow, const char *key, TimestampTz now)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	Datum		deadline;

	if (!cf_schema_at_least(CF_SCHEMA(0, 11, 0)))
		return;
	cf_exec(&plan, "SELECT deadline FROM chrono_forge.workflows WHERE id = $1",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(run)}, NULL, true, 1);
	if (SPI_processed != 1)
		return;
	deadline = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull && DatumGetTimestampTz(deadline) <= now)
		ereport(ERROR,
				(errcode(ERRCODE_CF_DEADLINE_EXCEEDED),
				 errmsg("workflow run (%s, %s) is past its deadline", workflow, key),
				 errdetail("Its deadline was %s.", timestamptz_to_str(DatumGetTimestampTz(deadline))),
				 errhint("Move it with chrono_forge.set_deadline() (NULL removes it), then retry().")));
}
