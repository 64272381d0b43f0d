"""The dashboard's SQL: every read and action it sends, parameterised and
schema-qualified, on the extension's own views and functions.

Each function takes the session's connection (autocommit: every statement
is its own transaction, run as the signed-in role, so row-level security
decides what it returns).  Counts are capped; lists are keyset-paged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Row = dict[str, Any]
STATES = ("idle", "running", "completed", "failed", "stalled", "cancelled", "compensated")
CAP = 1000              # overview and list counts stop here ("1,000+")
BRANCH_CAP = 5000       # a branch's children per state
PAGE = 50
RECENT = 500            # the overview's fan-outs: parents among the newest runs


def rows(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def one(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Row | None:
    r = rows(conn, sql, params)
    return r[0] if r else None


def whoami(conn: psycopg.Connection[Any]) -> Row:
    r = one(conn, """
        SELECT current_user AS role,
               pg_catalog.pg_has_role(current_user, 'chrono_forge_admin', 'MEMBER') AS admin,
               r.rolsuper OR r.rolbypassrls AS privileged
          FROM pg_catalog.pg_roles r WHERE r.rolname = current_user""")
    assert r is not None
    return r


# --- overview -------------------------------------------------------------

def overview(conn: psycopg.Connection[Any]) -> list[Row]:
    return rows(conn, """
        SELECT o.workflow, o.state::text AS state, o.runs, o.capped
          FROM chrono_forge.overview(%s) o ORDER BY o.workflow, o.state""", (CAP,))


def throughput(conn: psycopg.Connection[Any]) -> list[Row]:
    """Runs ended per minute over the last hour, by outcome, each minute's
    count capped (an index range of (state_code, ended_at) per cell; the
    bounds are plain values, so that under row-level security they stay
    index conditions: `+` on timestamps is not leakproof)."""
    return rows(conn, """
        WITH m AS MATERIALIZED (
            SELECT t AS lo, t + interval '1 minute' AS hi
              FROM pg_catalog.generate_series(
                       pg_catalog.date_trunc('minute', chrono_forge.now()) - interval '59 minutes',
                       pg_catalog.date_trunc('minute', chrono_forge.now()),
                       interval '1 minute') AS g(t))
        SELECT m.lo AS minute, s.state,
               (SELECT pg_catalog.count(*) FROM (
                    SELECT 1 FROM chrono_forge.workflows w
                     WHERE w.state_code = s.code AND w.ended_at > m.lo AND w.ended_at <= m.hi
                     LIMIT %(cap)s + 1) x) AS n
          FROM m, (VALUES (3::smallint, 'completed'), (4::smallint, 'failed'),
                          (6::smallint, 'cancelled'), (7::smallint, 'compensated')) AS s(code, state)
         ORDER BY 1, 2""", {"cap": CAP})


def health(conn: psycopg.Connection[Any]) -> Row:
    r = one(conn, """
        SELECT (SELECT pg_catalog.count(*) FROM (
                    SELECT 1 FROM chrono_forge.wakeups k WHERE k.due_at <= chrono_forge.now()
                     LIMIT %(cap)s + 1) x) AS wakeups_due,
               (SELECT k.due_at FROM chrono_forge.wakeups k WHERE k.due_at <= chrono_forge.now()
                 ORDER BY k.due_at LIMIT 1) AS oldest_due,
               (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a
                 WHERE a.backend_type = 'chrono_forge worker') AS workers,
               (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a
                 WHERE a.backend_type = 'chrono_forge launcher') AS launchers,
               (SELECT pg_catalog.count(*) FROM chrono_forge.stranded(NULL, %(cap)s + 1)) AS stranded,
               -- other roles' backends show their type only to these
               pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') AS sees_workers,
               chrono_forge.now() AS now""", {"cap": CAP})
    assert r is not None
    return r


def fanouts(conn: psycopg.Connection[Any], limit: int = 8) -> list[Row]:
    """Runs with branches for the overview, at most `limit`: those with a
    branch still dispatching (spawn_batches) or waiting on its merge
    (merge_polls) first, both small tables of work in flight; then the
    parents among the newest RECENT runs (runs(), children included: an
    index range per state).  Each parent's branches from its branch logs (by
    primary key); nothing here counts a large table."""
    return rows(conn, """
        WITH active AS MATERIALIZED (
            SELECT b.branch_log_id AS log_id FROM chrono_forge.spawn_batches b
             WHERE b.taken < b.n
            UNION
            SELECT pg_catalog.unnest(m.branch_log_ids) FROM chrono_forge.merge_polls m),
        recent AS MATERIALIZED (
            SELECT DISTINCT r.parent_execution_log_id AS log_id
              FROM chrono_forge.runs(include_children => true, page_size => %(recent)s) r
             WHERE r.parent_execution_log_id IS NOT NULL),
        parents AS (
            SELECT l.workflow_id AS id, pg_catalog.bool_or(a.log_id IS NOT NULL) AS active
              FROM (SELECT log_id FROM active UNION SELECT log_id FROM recent) x
              JOIN chrono_forge.execution_logs l ON l.id = x.log_id
              LEFT JOIN active a ON a.log_id = x.log_id
             GROUP BY 1
             ORDER BY 2 DESC, 1 DESC LIMIT %(limit)s)
        SELECT p.id, w.workflow, w.key, w.state::text AS state, w.created_at, p.active,
               pg_catalog.array_agg(pg_catalog.substr(l.step_name, 8) ORDER BY l.id)
                   AS branch_names,
               pg_catalog.array_agg(l.state::text = 'completed' ORDER BY l.id) AS sealed
          FROM parents p
          JOIN chrono_forge.workflows w ON w.id = p.id
          JOIN chrono_forge.execution_logs l
            ON l.workflow_id = p.id AND l.step_name LIKE 'branch$%%'
         GROUP BY p.id, w.workflow, w.key, w.state, w.created_at, p.active
         ORDER BY p.active DESC, p.id DESC""", {"limit": limit, "recent": RECENT})


# --- runs -----------------------------------------------------------------

RUN_COLS = """r.id, r.workflow, r.key, r.state::text AS state, r.owner::text AS owner,
    r.created_at, r.started_at, r.ended_at, r.duration, r.locked_by, r.stranded,
    r.parent_execution_log_id"""


def runs(conn: psycopg.Connection[Any], state: str | None, workflow: str | None,
         key: str | None, created_from: datetime | None, created_to: datetime | None,
         children: bool, before: int | None) -> list[Row]:
    """One page (and one row more, to know whether there is a next page)."""
    return rows(conn, f"""
        SELECT {RUN_COLS}
          FROM chrono_forge.runs(state => %s, workflow => %s, key_prefix => %s,
                                 created_from => %s, created_to => %s,
                                 include_children => %s, before_id => %s, page_size => %s) r""",
                (state, workflow, key, created_from, created_to, children, before, PAGE + 1))


def run(conn: psycopg.Connection[Any], run_id: int) -> Row | None:
    return one(conn, """
        SELECT w.id, w.workflow, w.key, w.procedure, w.state::text AS state, w.owner::text AS owner,
               w.args, w.options, w.context, w.locked_by, w.locked_at, w.started_at,
               w.completed_at, w.ended_at, w.created_at, w.updated_at, w.attempt,
               w.recoveries, w.parent_execution_log_id,
               (pg_catalog.to_jsonb(w) ->> 'deadline')::timestamptz AS deadline,
               (pg_catalog.to_jsonb(w) ->> 'priority')::integer AS priority
          FROM chrono_forge.workflows w WHERE w.id = %s""", (run_id,))


def resolves_to(conn: psycopg.Connection[Any], workflow: str, key: str) -> int | None:
    """The id the (workflow, key) functions act on for this role: another
    run than the page's when the role owns a run of the same key (its own
    comes first), None when ambiguous or missing."""
    try:
        r = one(conn, "SELECT (chrono_forge.visible_run(%s, %s)).id", (workflow, key))
    except psycopg.Error:
        return None
    return r["id"] if r else None


def timeline(conn: psycopg.Connection[Any], workflow: str, key: str) -> list[Row]:
    return rows(conn, "SELECT * FROM chrono_forge.timeline(%s, %s, 20)", (workflow, key))


def parent_chain(conn: psycopg.Connection[Any], workflow: str, key: str) -> list[Row]:
    return rows(conn, """
        SELECT p.depth, p.id, p.workflow, p.key, p.state::text AS state, p.branch
          FROM chrono_forge.parent_chain(%s, %s) p ORDER BY p.depth DESC""", (workflow, key))


def branches(conn: psycopg.Connection[Any], workflow: str, key: str) -> list[Row]:
    return rows(conn, "SELECT * FROM chrono_forge.branches(%s, %s)", (workflow, key))


def events(conn: psycopg.Connection[Any], run_id: int) -> list[Row]:
    return rows(conn, """
        SELECT e.id, e.name, e.payload, e.sent_at, e.consumed_at, e.consumed_by_step
          FROM chrono_forge.events e WHERE e.workflow_id = %s ORDER BY e.id DESC LIMIT 50""",
                (run_id,))


def run_periodic(conn: psycopg.Connection[Any], workflow: str, key: str) -> list[Row]:
    return rows(conn, "SELECT * FROM chrono_forge.periodic_health(%s, %s)", (workflow, key))


def branch_counts(conn: psycopg.Connection[Any], branch_log_id: int) -> list[Row]:
    """A branch's children per state, each count capped (the children index)."""
    return rows(conn, """
        SELECT s.state, (SELECT pg_catalog.count(*) FROM (
                   SELECT 1 FROM chrono_forge.workflows w
                    WHERE w.parent_execution_log_id = %(log)s AND w.state_code = s.code
                    LIMIT %(cap)s + 1) x) AS n
          FROM pg_catalog.unnest(%(states)s::text[]) WITH ORDINALITY AS s(state, code)""",
                {"log": branch_log_id, "cap": BRANCH_CAP, "states": list(STATES)})


CHILD_COLS = """c.id, c.workflow, c.key, c.state::text AS state, c.owner::text AS owner,
    c.created_at, c.started_at, c.ended_at, c.locked_by"""


def children_after(conn: psycopg.Connection[Any], workflow: str, key: str, branch: str,
                   state: str, after: tuple[bool, int] | None, n: int = PAGE + 1) -> list[Row]:
    """Up to n children, blocked first then by id, after a cursor (a page
    and one row more, to know whether there is a next page)."""
    ab, ai = after if after else (None, None)
    return rows(conn, f"""
        SELECT c.blocked, {CHILD_COLS}
          FROM chrono_forge.branch_children(%s, %s, %s, %s, %s, %s, %s) c""",
                (workflow, key, branch, state, ab, ai, n))


def children_before(conn: psycopg.Connection[Any], branch_log_id: int, state: str,
                    before: tuple[bool, int], n: int = PAGE + 1) -> list[Row]:
    """Up to n children before a cursor in branch_children()'s order
    (blocked first, then id), read backwards on the children index, nearest
    first (a page and one row more, to know whether there is a previous
    page)."""
    bb, bi = before
    return rows(conn, f"""
        SELECT c.code IN (4, 5, 6) AS blocked, {CHILD_COLS}
          FROM pg_catalog.unnest(chrono_forge.state_codes(%(state)s)) AS s(code)
         CROSS JOIN LATERAL (
            SELECT t.*, s.code FROM chrono_forge.workflows t
             WHERE t.parent_execution_log_id = %(log)s AND t.state_code = s.code
               AND ((s.code IN (4, 5, 6)) > %(bb)s
                    OR ((s.code IN (4, 5, 6)) = %(bb)s AND t.id < %(bi)s))
             ORDER BY t.id DESC LIMIT %(n)s) c
         ORDER BY 1, c.id DESC LIMIT %(n)s""",
               {"state": state, "log": branch_log_id, "bb": bb, "bi": bi, "n": n})


# --- waiting, stranded, periodic, failures, tasks --------------------------

def waiting(conn: psycopg.Connection[Any]) -> list[Row]:
    return rows(conn, """
        SELECT w.*, r.state::text AS state
          FROM chrono_forge.waiting(%s) w
          JOIN chrono_forge.workflows r ON r.id = w.id
         ORDER BY w.waiting_since, w.id""", (500,))


def waiting_kinds(conn: psycopg.Connection[Any]) -> Row:
    """Capped counts of what parked runs wait on besides conditions and
    events: timers (future wake-ups of idle runs), merges, tasks."""
    r = one(conn, """
        SELECT (SELECT pg_catalog.count(*) FROM (
                    SELECT 1 FROM chrono_forge.wakeups k WHERE k.due_at > chrono_forge.now()
                     LIMIT %(cap)s + 1) x) AS timer,
               (SELECT pg_catalog.count(*) FROM (
                    SELECT 1 FROM chrono_forge.merge_polls m LIMIT %(cap)s + 1) x) AS merge,
               (SELECT pg_catalog.count(*) FROM (
                    SELECT 1 FROM chrono_forge.tasks t
                     WHERE t.state IN ('pending', 'claimed') LIMIT %(cap)s + 1) x) AS task""",
            {"cap": CAP})
    assert r is not None
    return r


def stranded(conn: psycopg.Connection[Any]) -> list[Row]:
    return rows(conn, """
        SELECT s.id, s.workflow, s.key, s.owner::text AS owner, s.locked_by, s.locked_at,
               s.lock_age, 'running' AS state
          FROM chrono_forge.stranded(NULL, %s) s""", (500,))


def overdue_wakeups(conn: psycopg.Connection[Any]) -> list[Row]:
    """Wake-ups due over a minute ago that no worker has taken: oldest first."""
    return rows(conn, """
        SELECT k.workflow_id AS id, r.workflow, r.key, r.state::text AS state, k.due_at,
               k.reason, chrono_forge.now() - k.due_at AS overdue_by
          FROM chrono_forge.wakeups k JOIN chrono_forge.workflows r ON r.id = k.workflow_id
         WHERE k.due_at < chrono_forge.now() - interval '1 minute'
         ORDER BY k.due_at LIMIT 100""")


def periodic(conn: psycopg.Connection[Any]) -> list[Row]:
    return rows(conn, """
        SELECT p.*, r.state::text AS run_state
          FROM chrono_forge.periodic_health(NULL, NULL, %s) p
          JOIN chrono_forge.workflows r ON r.id = p.id""", (500,))


def schedules(conn: psycopg.Connection[Any]) -> list[Row]:
    return rows(conn, """
        SELECT s.name, s.cron, s.workflow, s.catch_up, s.owner::text AS owner, s.last_tick,
               s.next_tick, s.last_fired_at, s.runs_started, s.last_run_id,
               s.last_run_state::text AS last_run_state
          FROM chrono_forge.schedule_status s ORDER BY s.owner::text, s.name LIMIT 500""")


def top_errors(conn: psycopg.Connection[Any], window: str) -> list[Row]:
    return rows(conn, "SELECT * FROM chrono_forge.top_errors(%s::interval, NULL, 20)", (window,))


def errors_by_workflow(conn: psycopg.Connection[Any], window: str,
                       workflow: str | None) -> list[Row]:
    """Error classes per workflow among the window's latest 2,000 error logs
    (top_errors()' sample; with its workflow filter, top_errors() would
    read every error log of the window)."""
    return rows(conn, """
        WITH sample AS (
            SELECT e.id, e.workflow_id, e.error_class, e.error_message, e.created_at
              FROM chrono_forge.error_logs e
             WHERE e.created_at > chrono_forge.now() - %(window)s::interval
             ORDER BY e.created_at DESC LIMIT 2000)
        SELECT s.error_class, r.workflow, pg_catalog.count(*) AS errors,
               pg_catalog.count(DISTINCT s.workflow_id) AS runs,
               pg_catalog.max(s.created_at) AS last_seen,
               (pg_catalog.array_agg(s.error_message ORDER BY s.id DESC))[1] AS example_message
          FROM sample s JOIN chrono_forge.workflows r ON r.id = s.workflow_id
         WHERE %(wf)s::text IS NULL OR r.workflow = %(wf)s
         GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 20""", {"window": window, "wf": workflow})


def error_runs(conn: psycopg.Connection[Any], error_class: str) -> list[Row]:
    """Runs hit by one error class among the latest 2,000 error logs (the
    sample top_errors() reads)."""
    return rows(conn, """
        WITH sample AS (
            SELECT e.workflow_id, e.error_class, e.error_message, e.created_at
              FROM chrono_forge.error_logs e ORDER BY e.created_at DESC LIMIT 2000)
        SELECT DISTINCT ON (r.id) r.id, r.workflow, r.key, r.state::text AS state,
               s.error_message, s.created_at
          FROM sample s JOIN chrono_forge.workflows r ON r.id = s.workflow_id
         WHERE s.error_class = %s
         ORDER BY r.id DESC, s.created_at DESC LIMIT 50""", (error_class,))


def daily_outcomes(conn: psycopg.Connection[Any], window: str,
                   workflow: str | None) -> list[Row]:
    return rows(conn, "SELECT * FROM chrono_forge.daily_outcomes(%s::interval, %s) ORDER BY day",
                (window, workflow))


def today(conn: psycopg.Connection[Any]) -> Any:
    """The database's day (UTC), which daily_outcomes() counts up to."""
    r = one(conn, "SELECT (chrono_forge.now() AT TIME ZONE 'UTC')::date AS d")
    assert r is not None
    return r["d"]


def task_queues(conn: psycopg.Connection[Any]) -> list[Row]:
    return rows(conn, "SELECT * FROM chrono_forge.task_queues ORDER BY queue LIMIT 500")


# --- cluster (Citus, after chrono_forge.distribute()) ------------------------

def is_cluster(conn: psycopg.Connection[Any]) -> bool:
    """Whether this database is a distributed chrono_forge cluster: Citus
    installed here and distribute() run (its routing anchor exists)."""
    r = one(conn, """
        SELECT CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_extension e
                                  WHERE e.extname = 'citus')
                    THEN pg_catalog.to_regclass('chrono_forge_routing.keys') IS NOT NULL
                    ELSE false END AS cluster""")
    return bool(r and r["cluster"])


def cluster_overview(conn: psycopg.Connection[Any]) -> list[Row]:
    """overview() of every node, by Citus group; a node that could not
    answer is one row with its error (and no workflow)."""
    return rows(conn, """
        SELECT o.node_group, o.node, o.workflow, o.state::text AS state, o.runs, o.capped, o.error
          FROM chrono_forge.cluster_overview(%s) o""", (CAP,))


def cluster_runs(conn: psycopg.Connection[Any], state: str | None, workflow: str | None,
                 key: str | None) -> list[Row]:
    """The newest runs of every node (runs()' filters), newest first."""
    return rows(conn, f"""
        SELECT c.node_group, c.node, {RUN_COLS}
          FROM chrono_forge.cluster_runs(state => %s, workflow => %s, key_prefix => %s,
                                         page_size => %s)
               WITH ORDINALITY AS c(node_group, node, run, n)
         CROSS JOIN LATERAL (SELECT (c.run).*) r
         ORDER BY c.n""", (state, workflow, key, PAGE))


# --- actions --------------------------------------------------------------

def act(conn: psycopg.Connection[Any], action: str, workflow: str, key: str,
        **kw: Any) -> Any:
    """Run one action; returns the function's value."""
    sql = {
        "retry": "SELECT chrono_forge.retry(%(w)s, %(k)s)::text AS v",
        "wake": "SELECT chrono_forge.wake(%(w)s, %(k)s) AS v",
        "cancel": "SELECT chrono_forge.cancel(%(w)s, %(k)s, %(reason)s, %(children)s) AS v",
        "force-unlock": "SELECT chrono_forge.force_unlock(%(w)s, %(k)s) AS v",
        "event": "SELECT chrono_forge.send_event(%(w)s, %(k)s, %(name)s, %(payload)s) AS v",
        "retry-blocked": "SELECT chrono_forge.retry_blocked_children(%(w)s, %(k)s, %(branch)s) AS v",
    }[action]
    params = {"w": workflow, "k": key, **kw}
    if "payload" in params and params["payload"] is not None:
        params["payload"] = Jsonb(params["payload"])
    r = one(conn, sql, params)
    return r["v"] if r else None
