/*-------------------------------------------------------------------------
 *
 * merge.c
 *	  The merge poller: visits parked merges (chrono_forge.merge_polls),
 *	  wakes the parent once every child of its branches completed, paces
 *	  itself by the measured drain rate, re-dispatches children that were
 *	  never picked up, and stamps its state on the branch logs.
 *
 * A merge waits for every child to complete, but under its policy
 * (on_child_failure, on the merge step's log) a failed, stalled or
 * cancelled child fails the parent ('fail': the parent is woken and its
 * merge raises) or counts as ended ('ignore'); with a quorum (0.10.0) that
 * many completed children are enough, and past its deadline the parent is
 * woken to time out.  Such a child makes its
 * merge's poll due at once (cf_merge_poll_due_now(), from the runs'
 * trigger), so the policy acts without waiting for max_interval.
 * branch_done() (0.12.0) answers by the same test, for the merge parked
 * on the branch.
 *
 * Owns merge_polls after merge_branches() (branch.c) created the row.
 * Polls run in the launcher, one transaction each, so they never queue
 * behind the passes of the fan-out they watch; run_pending() runs the
 * caller's own.  This file must never run user code, never replay a
 * parent (it only inserts the parent's wake-up), and never write for a
 * superseded chain: a poll whose token differs from the poll_token stamped
 * on any of its branch logs deletes its own row and writes nothing else.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "internal.h"
#include "merge.h"
#include "probes.h"
#include "shmem.h"
#include "util.h"
#include "wakeups.h"

PG_FUNCTION_INFO_V1(cf_branch_done);

#define ETA_FRACTION 0.5
#define REKICK_AFTER "5 minutes"
#define REKICK_BATCH 200
#define LAUNCHER_POLLS_PER_ROUND 100
#define FAILED_POLL_RETRY "1 minute"

/* The poll being run (for the launcher's error path). */
static int64 current_poll_id = 0;


typedef struct BranchSample
{
	int64		log_id;
	bool		sealed;
	/* this poll */
	int64		pending;
	int64		never_started;
	int64		running;
	int64		blocked;		/* failed, stalled, cancelled */
	int64		spawned;		/* -1: unknown */
	int64		rekicked;
	double		rate;
	/* the previous poll, if any */
	bool		has_prior;
	int64		prior_pending;
	bool		has_prior_never_started;
	int64		prior_never_started;
	TimestampTz prior_at;
	double		prior_interval; /* < 0: none */
	int64		prior_spawned;	/* -1: none */
} BranchSample;

static double
clamp(double v, double lo, double hi)
{
	return v < lo ? lo : (v > hi ? hi : v);
}

static double
seconds_between(TimestampTz a, TimestampTz b)
{
	return (double) (b - a) / USECS_PER_SEC;
}

static int64
get_int64(int col, int64 dflt)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? dflt : DatumGetInt64(d);
}

/* Count one branch's unfinished children (never its completed ones). */
static void
sample_children(BranchSample *s)
{
	static SPIPlanPtr spawned_plan = NULL;
	static SPIPlanPtr spawned_batches_plan = NULL;

	s->pending = cf_branch_children_pending(s->log_id, 0, &s->never_started, &s->running,
											&s->blocked);

	/*
	 * Spawned is counted once, when sealed, then carried forward: runs and
	 * children not started yet (0.4.0) in one statement, so that a child
	 * becoming a run meanwhile is counted once.
	 */
	if (s->prior_spawned >= 0 && s->sealed)
		s->spawned = s->prior_spawned;
	else if (s->sealed && cf_schema_at_least(CF_SCHEMA(0, 4, 0)))
	{
		cf_exec(&spawned_batches_plan,
				"SELECT (SELECT count(*) FROM chrono_forge.workflows WHERE parent_execution_log_id = $1)"
				" + (SELECT coalesce(sum(n - taken), 0) FROM chrono_forge.spawn_batches WHERE branch_log_id = $1)",
				1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(s->log_id)}, NULL, true, 1);
		s->spawned = get_int64(1, 0);
	}
	else if (s->sealed)
	{
		cf_exec(&spawned_plan,
				"SELECT count(*) FROM chrono_forge.workflows WHERE parent_execution_log_id = $1",
				1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(s->log_id)}, NULL, true, 1);
		s->spawned = get_int64(1, 0);
	}
	else
		s->spawned = -1;
}

/*
 * Children never picked up: idle, never started, untouched for five
 * minutes and with no wake-up, at most REKICK_BATCH, each touched so that
 * the next poll leaves it alone for another window.
 */
static int64
rekick(BranchSample *s, TimestampTz now)
{
	static SPIPlanPtr plan = NULL;

	cf_exec(&plan,
			"WITH k AS (SELECT w.id FROM chrono_forge.workflows w"
			"  WHERE w.parent_execution_log_id = $1 AND w.state = 'idle' AND w.started_at IS NULL"
			"   AND w.updated_at < $2 - interval '" REKICK_AFTER "'"
			"   AND NOT EXISTS (SELECT 1 FROM chrono_forge.wakeups x WHERE x.workflow_id = w.id)"
			"  LIMIT " CppAsString2(REKICK_BATCH) " FOR NO KEY UPDATE SKIP LOCKED),"
			" t AS (UPDATE chrono_forge.workflows w SET updated_at = $2 FROM k WHERE w.id = k.id)"
			" SELECT id FROM k",
			2, (Oid[]) {INT8OID, TIMESTAMPTZOID},
			(Datum[]) {Int64GetDatum(s->log_id), TimestampTzGetDatum(now)}, NULL, false, 0);
	if (SPI_processed == 0)
		return 0;
	return (int64) cf_wakeups_add(cf_spi_ids(1), now, "rekick", CF_WAKEUP_ALWAYS);
}

/* A due poll as picked: its row, its parent, its merge's policy. */
typedef struct DuePoll
{
	int64		poll_id;
	int64		parent_id;
	Datum		ids;			/* int8[] of branch log ids */
	double		min_s;
	double		max_s;
	char	   *token;
	bool		parent_active;
	CfChildFailure policy;
	int64		quorum;			/* 0: every child (0.10.0) */
	TimestampTz deadline;		/* DT_NOEND: none (0.10.0) */
} DuePoll;

/*
 * Stamp this poll on the branch log (only under p's token), with the
 * merge's rules when it has them (0.10.0: its quorum with the branch's
 * completed children, its deadline), as branches() shows them.
 */
static void
record_poll(BranchSample *s, const DuePoll *p, TimestampTz now, bool final,
			TimestampTz next, double interval, double eta)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[17];
	char		nulls[18] = "                 ";

	values[0] = Int64GetDatum(s->log_id);
	values[1] = TimestampTzGetDatum(now);
	values[2] = TimestampTzGetDatum(next);
	values[3] = Float8GetDatum(interval);
	if (final)
		nulls[2] = nulls[3] = 'n';
	values[4] = Int64GetDatum(s->pending);
	values[5] = Int64GetDatum(s->never_started);
	values[6] = Int64GetDatum(s->spawned);
	if (s->spawned < 0)
		nulls[6] = 'n';
	values[7] = BoolGetDatum(s->sealed);
	values[8] = Float8GetDatum(s->rate);
	values[9] = Float8GetDatum(eta);
	if (eta < 0)
		nulls[9] = 'n';
	values[10] = Int64GetDatum(s->rekicked);
	values[11] = CStringGetTextDatum(p->token);
	values[12] = Int64GetDatum(s->running);
	values[13] = Int64GetDatum(s->blocked);
	values[14] = Int64GetDatum(p->quorum);
	values[15] = Int64GetDatum(s->spawned - s->pending);
	/* The deadline as the merge log keeps it (UTC), not in the session's zone. */
	if (p->deadline != DT_NOEND)
	{
		char	   *quoted = cf_json_timestamp(p->deadline);

		values[16] = CStringGetTextDatum(pnstrdup(quoted + 1, strlen(quoted) - 2));
	}
	if (p->quorum <= 0)
		nulls[14] = nulls[15] = 'n';
	if (s->spawned < 0)
		nulls[15] = 'n';
	if (p->deadline == DT_NOEND)
		nulls[16] = 'n';
	cf_exec(&plan,
			"UPDATE chrono_forge.execution_logs l SET metadata = coalesce(l.metadata, '{}')"
			" || jsonb_build_object('poll', jsonb_build_object("
			"  'last_polled_at', $2, 'next_poll_at', $3, 'interval', round($4::numeric, 3),"
			"  'pending', $5, 'never_started', $6, 'running', $13, 'blocked', $14, 'spawned', $7, 'sealed', $8,"
			"  'rate', round($9::numeric, 3), 'eta_seconds', round($10::numeric, 1),"
			"  'polls', coalesce((l.metadata->'poll'->>'polls')::bigint, 0) + 1,"
			"  'rekicked', $11,"
			"  'rekick_total', coalesce((l.metadata->'poll'->>'rekick_total')::bigint, 0) + $11,"
			"  'last_rekick_at', CASE WHEN $11 > 0 THEN to_jsonb($2) ELSE l.metadata->'poll'->'last_rekick_at' END)"
			"  || jsonb_strip_nulls(jsonb_build_object('quorum', $15, 'completed', $16, 'deadline', $17))),"
			" updated_at = $2"
			" WHERE l.id = $1 AND l.metadata->>'poll_token' = $12",
			17, (Oid[]) {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, FLOAT8OID, INT8OID, INT8OID,
				INT8OID, BOOLOID, FLOAT8OID, FLOAT8OID, INT8OID, TEXTOID, INT8OID, INT8OID,
			INT8OID, INT8OID, TEXTOID},
			values, nulls, false, 0);
}

static void
delete_poll(int64 poll_id)
{
	static SPIPlanPtr plan = NULL;

	cf_exec(&plan, "DELETE FROM chrono_forge.merge_polls WHERE id = $1",
			1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(poll_id)}, NULL, false, 0);
}


/* The branches of one poll summed up. */
typedef struct PollTotals
{
	bool		all_sealed;
	bool		all_prior;
	int64		pending;
	int64		prior_pending;
	int64		never_started;
	int64		running;
	int64		blocked;
	int64		spawned;		/* -1: unknown */
	TimestampTz earliest_prior;
	double		prev_delay;
} PollTotals;

/* A poll's row with its merge's rules, as read_poll() reads it. */
#define POLL_ROW_SQL \
	"SELECT p.id, p.workflow_id, p.branch_log_ids," \
	"  extract(epoch FROM p.min_interval)::float8, extract(epoch FROM p.max_interval)::float8," \
	"  p.token, w.state IN ('idle', 'running')," \
	"  x.m->>'on_child_failure', (x.m->>'quorum')::bigint, (x.m->>'deadline')::timestamptz" \
	" FROM chrono_forge.merge_polls p JOIN chrono_forge.workflows w ON w.id = p.workflow_id" \
	" CROSS JOIN LATERAL (SELECT (SELECT m.metadata FROM chrono_forge.execution_logs m" \
	"   WHERE m.workflow_id = p.workflow_id AND m.step_name = p.merge_step) AS m) x"

/* The poll row the last statement returned (POLL_ROW_SQL's columns). */
static void
read_poll(DuePoll *p)
{
	HeapTuple	tup = SPI_tuptable->vals[0];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool		isnull;
	char	   *policy_name;
	Datum		d;

	p->poll_id = get_int64(1, 0);
	p->parent_id = get_int64(2, 0);
	p->ids = SPI_getbinval(tup, desc, 3, &isnull);
	p->ids = PointerGetDatum(PG_DETOAST_DATUM_COPY(p->ids));
	p->min_s = DatumGetFloat8(SPI_getbinval(tup, desc, 4, &isnull));
	p->max_s = DatumGetFloat8(SPI_getbinval(tup, desc, 5, &isnull));
	p->token = SPI_getvalue(tup, desc, 6);
	p->parent_active = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
	/* Merges parked before 0.6.0 have no policy: 'wait', as they were. */
	policy_name = SPI_getvalue(tup, desc, 8);
	p->policy = CF_CHILD_FAILURE_WAIT;
	if (policy_name != NULL && strcmp(policy_name, "fail") == 0)
		p->policy = CF_CHILD_FAILURE_FAIL;
	else if (policy_name != NULL && strcmp(policy_name, "ignore") == 0)
		p->policy = CF_CHILD_FAILURE_IGNORE;
	p->quorum = get_int64(9, 0);
	d = SPI_getbinval(tup, desc, 10, &isnull);
	p->deadline = isnull ? DT_NOEND : DatumGetTimestampTz(d);
}

/* Lock the earliest due poll (of only_owner's runs, if set).  False if none. */
static bool
pick_due_poll(Oid only_owner, TimestampTz now, DuePoll *p)
{
	static SPIPlanPtr plan = NULL;

	cf_exec(&plan,
			POLL_ROW_SQL
			" WHERE p.due_at <= $1 AND ($2 = 0 OR w.owner::oid = $2)"
			" ORDER BY p.due_at LIMIT 1 FOR UPDATE OF p SKIP LOCKED",
			2, (Oid[]) {TIMESTAMPTZOID, OIDOID},
			(Datum[]) {TimestampTzGetDatum(now), ObjectIdGetDatum(only_owner)}, NULL, false, 1);
	if (SPI_processed == 0)
		return false;
	read_poll(p);
	return true;
}

#define BRANCH_SAMPLES_SQL \
	"SELECT l.id, l.state = 'completed', l.metadata->>'poll_token' IS NOT DISTINCT FROM $2," \
	"  (l.metadata->'poll'->>'pending')::bigint," \
	"  (l.metadata->'poll'->>'never_started')::bigint," \
	"  (l.metadata->'poll'->>'last_polled_at')::timestamptz," \
	"  (l.metadata->'poll'->>'interval')::float8," \
	"  (l.metadata->'poll'->>'spawned')::bigint" \
	" FROM chrono_forge.execution_logs l WHERE l.id = ANY ($1) ORDER BY l.id"

/*
 * The poll's branch logs with what the previous poll stamped on them,
 * locked against a concurrent re-stamp of the token (unless only looked
 * at: a probe).  NULL if the poll is superseded (a log carries another
 * token) or its logs are gone.
 */
static BranchSample *
load_branch_samples(const DuePoll *p, bool lock, int *n_out)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr look_plan = NULL;
	ArrayType  *ids = DatumGetArrayTypeP(p->ids);
	bool		fenced = false;
	bool		isnull;
	int			n;
	BranchSample *samples;

	cf_exec(lock ? &plan : &look_plan,
			lock ? BRANCH_SAMPLES_SQL " FOR NO KEY UPDATE" : BRANCH_SAMPLES_SQL,
			2, (Oid[]) {INT8ARRAYOID, TEXTOID}, (Datum[]) {p->ids, CStringGetTextDatum(p->token)},
			NULL, !lock, 0);
	n = (int) SPI_processed;
	samples = palloc0(sizeof(BranchSample) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		BranchSample *s = &samples[i];
		Datum		d;

		s->log_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		s->sealed = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
		if (!DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)))
			fenced = true;
		d = SPI_getbinval(tup, desc, 4, &isnull);
		s->has_prior = !isnull;
		s->prior_pending = isnull ? 0 : DatumGetInt64(d);
		d = SPI_getbinval(tup, desc, 5, &isnull);
		s->has_prior_never_started = !isnull;
		s->prior_never_started = isnull ? 0 : DatumGetInt64(d);
		d = SPI_getbinval(tup, desc, 6, &isnull);
		if (isnull)
			s->has_prior = false;
		else
			s->prior_at = DatumGetTimestampTz(d);
		d = SPI_getbinval(tup, desc, 7, &isnull);
		s->prior_interval = isnull ? -1 : DatumGetFloat8(d);
		d = SPI_getbinval(tup, desc, 8, &isnull);
		s->prior_spawned = isnull ? -1 : DatumGetInt64(d);
	}
	if (n == 0 || n != ArrayGetNItems(ARR_NDIM(ids), ARR_DIMS(ids)) || fenced)
		return NULL;
	*n_out = n;
	return samples;
}

/* Count each branch's children now, and sum the branches up. */
static void
sample_branches(BranchSample *samples, int n, TimestampTz now, PollTotals *t)
{
	memset(t, 0, sizeof(*t));
	t->all_sealed = true;
	t->all_prior = true;
	t->earliest_prior = DT_NOEND;
	t->prev_delay = -1;
	for (int i = 0; i < n; i++)
	{
		BranchSample *s = &samples[i];

		sample_children(s);
		t->all_sealed &= s->sealed;
		t->spawned = (i > 0 && t->spawned < 0) || s->spawned < 0 ? -1 : t->spawned + s->spawned;
		t->pending += s->pending;
		t->never_started += s->never_started;
		t->running += s->running;
		t->blocked += s->blocked;
		if (s->has_prior)
		{
			t->prior_pending += s->prior_pending;
			t->earliest_prior = Min(t->earliest_prior, s->prior_at);
		}
		else
			t->all_prior = false;
		if (s->prior_interval > t->prev_delay)
			t->prev_delay = s->prior_interval;
		if (s->has_prior && s->pending < s->prior_pending && now > s->prior_at)
			s->rate = (s->prior_pending - s->pending) / seconds_between(s->prior_at, now);
	}
}

/*
 * Done, or done as far as the merge's rules go ('ignore': only ended
 * children left; 'fail': one failed, the parent's merge will raise; a
 * quorum of children completed; the deadline passed, the parent's merge
 * times out).
 */
static bool
merge_is_done(const PollTotals *t, const DuePoll *p, TimestampTz now)
{
	return (t->all_sealed && (t->pending == 0 ||
							  (p->policy == CF_CHILD_FAILURE_IGNORE && t->pending == t->blocked) ||
							  (p->quorum > 0 && t->spawned >= 0 && t->spawned - t->pending >= p->quorum))) ||
		(p->policy == CF_CHILD_FAILURE_FAIL && t->blocked > 0) ||
		now >= p->deadline;
}

/* The last poll: stamp it, wake the parent, end the chain. */
static void
finish_polling(const DuePoll *p, BranchSample *samples, int n, TimestampTz now)
{
	for (int i = 0; i < n; i++)
	{
		samples[i].rate = 0;
		record_poll(&samples[i], p, now, true, 0, 0, -1);
	}
	cf_wakeup_add(p->parent_id, now, "merge", CF_WAKEUP_UNLESS_DUE);
	delete_poll(p->poll_id);
}

/* Children never picked up, unless the never-started count still falls. */
static void
rekick_stalled(BranchSample *samples, int n, TimestampTz now)
{
	for (int i = 0; i < n; i++)
	{
		BranchSample *s = &samples[i];

		if (s->never_started == 0 ||
			(s->has_prior_never_started && s->never_started < s->prior_never_started))
			continue;
		s->rekicked = rekick(s, now);
	}
}

/*
 * Cadence: half the estimated time to drain (or to reach the quorum), else
 * by motion.  Returns the delay to the next poll, in seconds.
 */
static double
next_poll_delay(const DuePoll *p, const PollTotals *t, TimestampTz now)
{
	double		rate = 0;
	double		left = t->pending;	/* children to complete: all, or up to the quorum */

	if (p->quorum > 0 && t->spawned >= 0)
		left = Min(left, Max(0, p->quorum - (t->spawned - t->pending)));
	if (t->all_prior && t->pending < t->prior_pending && now > t->earliest_prior)
		rate = (t->prior_pending - t->pending) / seconds_between(t->earliest_prior, now);
	if (rate > 0)
		return clamp(left / rate * ETA_FRACTION, p->min_s, p->max_s);
	if (t->running > 0)
		return p->min_s;
	if (t->never_started > 0)
		return t->prev_delay > 0 ? clamp(2 * t->prev_delay, p->min_s, p->max_s) : p->min_s;
	return p->max_s;
}

/* Stamp this poll on every branch and move the poll to next. */
static void
schedule_next_poll(const DuePoll *p, BranchSample *samples, int n, TimestampTz now,
				   TimestampTz next, double delay)
{
	static SPIPlanPtr plan = NULL;

	for (int i = 0; i < n; i++)
	{
		BranchSample *s = &samples[i];
		double		branch_eta = s->rate > 0 ? s->pending / s->rate : -1;

		record_poll(s, p, now, false, next, delay, branch_eta);
	}
	cf_exec(&plan, "UPDATE chrono_forge.merge_polls SET due_at = $2 WHERE id = $1",
			2, (Oid[]) {INT8OID, TIMESTAMPTZOID},
			(Datum[]) {Int64GetDatum(p->poll_id), TimestampTzGetDatum(next)}, NULL, false, 0);
}

/*
 * One due poll, in the caller's transaction (the caller commits).  Returns
 * false if none was due.  Caller is connected to SPI.
 */
static bool
poll_one(Oid only_owner)
{
	TimestampTz now = cf_clock_now();
	CfInternal	st;
	DuePoll		p;
	BranchSample *samples;
	int			n = 0;
	PollTotals	t;
	double		delay;
	TimestampTz next;

	cf_internal_begin(&st);
	if (!pick_due_poll(only_owner, now, &p))
	{
		cf_internal_end(&st);
		return false;
	}
	current_poll_id = p.poll_id;
	/* The parent ended (cancelled, failed): the chain ends with it. */
	if (!p.parent_active)
	{
		delete_poll(p.poll_id);
		cf_internal_end(&st);
		return true;
	}
	samples = load_branch_samples(&p, true, &n);
	/* Superseded (or its logs are gone): stop, writing nothing. */
	if (samples == NULL)
	{
		delete_poll(p.poll_id);
		cf_internal_end(&st);
		return true;
	}

	sample_branches(samples, n, now, &t);
	if (merge_is_done(&t, &p, now))
	{
		finish_polling(&p, samples, n, now);
		cf_internal_end(&st);
		cf_queue_wakeup(now);
		return true;
	}
	rekick_stalled(samples, n, now);
	delay = next_poll_delay(&p, &t, now);
	next = Min(TimestampTzPlusMilliseconds(now, (int64) (delay * 1000)), p.deadline);
	schedule_next_poll(&p, samples, n, now, next, delay);
	cf_internal_end(&st);
	cf_queue_wakeup(next);
	return true;
}

/*
 * A child of branch log branch_log_id failed, stalled or was cancelled
 * (or the last of its live siblings completed with such ones left): if a
 * merge of that branch is parked, its poll is due now, so that the merge's
 * policy acts at once (and branches() shows the child blocked).  True if a
 * poll moved; the launcher hears of it at commit.  Caller is connected to
 * SPI and commits.
 */
bool
cf_merge_poll_due_now(int64 branch_log_id)
{
	static SPIPlanPtr plan = NULL;
	TimestampTz now = cf_clock_now();
	CfInternal	st;
	bool		moved;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"UPDATE chrono_forge.merge_polls p SET due_at = $2 FROM chrono_forge.execution_logs l"
			" WHERE l.id = $1 AND p.workflow_id = l.workflow_id AND $1 = ANY (p.branch_log_ids)"
			"  AND p.due_at > $2",
			2, (Oid[]) {INT8OID, TIMESTAMPTZOID},
			(Datum[]) {Int64GetDatum(branch_log_id), TimestampTzGetDatum(now)}, NULL, false, 0);
	moved = SPI_processed > 0;
	cf_internal_end(&st);
	if (moved)
		cf_queue_wakeup(now);
	return moved;
}

/* Installed at 0.2.0 or later?  (The library also serves 0.1.0 schemas.) */
static bool
polls_installed(void)
{
	Oid			ns = get_namespace_oid("chrono_forge", true);

	return OidIsValid(ns) && OidIsValid(get_relname_relid("merge_polls", ns));
}

/*
 * branch_done(branch_log_id): the branch is sealed and none of its
 * children is pending; or, while a merge of the branch is parked, that
 * merge would go on now by its rules (0.12.0): a quorum of its children
 * completed, only blocked children left under 'ignore', a blocked child
 * under 'fail' (the merge raises), its timeout passed.  The same test as
 * the merge's next poll, over all of that merge's branches, read-only.
 */
Datum
cf_branch_done(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64		log_id = PG_GETARG_INT64(0);
	TimestampTz now = cf_clock_now();
	CfInternal	st;
	DuePoll		p;
	BranchSample *samples = NULL;
	PollTotals	t;
	int			n = 0;
	bool		done;

	SPI_connect();
	(void) cf_probe_check(log_id);
	cf_internal_begin(&st);
	if (polls_installed())
	{
		cf_exec(&plan, POLL_ROW_SQL " WHERE $1 = ANY (p.branch_log_ids) LIMIT 1",
				1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(log_id)}, NULL, true, 1);
		if (SPI_processed == 1)
		{
			read_poll(&p);
			samples = load_branch_samples(&p, false, &n);
		}
	}
	if (samples != NULL)
	{
		sample_branches(samples, n, now, &t);
		done = merge_is_done(&t, &p, now);
	}
	else
		done = cf_branch_is_sealed(log_id) &&
			cf_branch_children_pending(log_id, 1, NULL, NULL, NULL) == 0;
	cf_internal_end(&st);
	SPI_finish();
	PG_RETURN_BOOL(done);
}

/*
 * run_pending(): every due poll of the caller's runs, each committed on
 * its own.  Caller is connected to SPI non-atomically.  Returns how many
 * polls ran.
 */
int
cf_merge_run_due_polls(Oid only_owner)
{
	int			n = 0;

	if (!polls_installed())
		return 0;
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (!poll_one(only_owner))
			break;
		SPI_commit();
		n++;
	}
	return n;
}

/*
 * The launcher: one due poll in its own transaction; false if none was
 * due.  A poll that fails must not take the launcher down with it (nor
 * loop): it is logged and that merge is looked at again later.
 */
static bool
launcher_poll_one(void)
{
	volatile bool more = false;
	MemoryContext cxt = CurrentMemoryContext;

	CHECK_FOR_INTERRUPTS();
	current_poll_id = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		pgstat_report_activity(STATE_RUNNING, "chrono_forge merge poll");
		more = poll_one(InvalidOid);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		int64		failed = current_poll_id;

		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		if (failed != 0)
		{
			StartTransactionCommand();
			PushActiveSnapshot(GetTransactionSnapshot());
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			SPI_execute_with_args("UPDATE chrono_forge.merge_polls SET due_at = pg_catalog.now()"
								  " + interval '" FAILED_POLL_RETRY "' WHERE id = $1",
								  1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(failed)},
								  NULL, false, 0);
			SPI_finish();
			PopActiveSnapshot();
			CommitTransactionCommand();
		}
		more = true;
	}
	PG_END_TRY();
	return more;
}

/*
 * The launcher: run due polls (a bounded round), each in its own
 * transaction; return when the next one is due (DT_NOEND: none, now:
 * more are due already).
 */
TimestampTz
cf_merge_launcher_polls(void)
{
	static SPIPlanPtr next_plan = NULL;
	TimestampTz next = DT_NOEND;
	bool		more = true;
	CfInternal	st;
	bool		isnull;
	bool		installed;

	StartTransactionCommand();
	installed = polls_installed();
	CommitTransactionCommand();
	if (!installed)
		return DT_NOEND;
	for (int i = 0; i < LAUNCHER_POLLS_PER_ROUND && more; i++)
		more = launcher_poll_one();
	if (more)
		next = GetCurrentTimestamp();
	else
	{
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		cf_internal_begin(&st);
		cf_exec(&next_plan, "SELECT min(due_at) FROM chrono_forge.merge_polls",
				0, NULL, NULL, NULL, true, 1);
		if (SPI_processed == 1)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				next = DatumGetTimestampTz(d);
		}
		cf_internal_end(&st);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	pgstat_report_activity(STATE_IDLE, NULL);
	return next;
}
