"""The dashboard's read-only pages: overview, runs, a run, its branches,
waiting, stranded, periodic, failures, tasks and, on a Citus cluster, the
cluster."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from typing import Any

from flask import Flask, abort, g, render_template, request, url_for

from . import charts, queries

STATE_FILTERS = ("all", "in_flight", "blocked") + queries.STATES
WINDOWS = {"1d": "1 day", "7d": "7 days", "30d": "30 days"}
MAX_FILTER = 200     # longer filter input is refused before it reaches the database
SHOWN = 200          # waiting runs listed (of the oldest 500 counted)


class BadInput(Exception):
    """A filter the page refuses (shown in the page, status 400)."""


def register(app: Flask) -> None:
    _filters(app)
    for rule, view in (("/", overview), ("/runs", runs), ("/runs/<int:run_id>", run),
                       ("/runs/<int:run_id>/branches", branches),
                       ("/runs/<int:run_id>/branches/<path:branch>", branch),
                       ("/waiting", waiting), ("/stranded", stranded),
                       ("/periodic", periodic), ("/failures", failures), ("/tasks", tasks),
                       ("/cluster", cluster)):
        app.add_url_rule(rule, view.__name__, view)


def _filters(app: Flask) -> None:
    @app.template_filter("num")
    def num(v: Any) -> str:
        """1234 -> '1,234'; a capped count '1000+' -> '1,000+'."""
        if v is None:
            return ""
        s = str(v)
        plus = s.endswith("+")
        try:
            return f"{int(s.rstrip('+')):,}" + ("+" if plus else "")
        except ValueError:
            return s

    @app.template_filter("ts")
    def ts(v: datetime | None) -> str:
        return v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if v else ""

    @app.template_filter("dur")
    def dur(v: timedelta | float | None) -> str:
        return duration(v)

    @app.template_filter("pretty")
    def pretty(v: Any) -> str:
        return json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def duration(v: timedelta | float | None) -> str:
    """One format for every duration (a timedelta or seconds), two units at
    most: '4 ms', '1.2 s', '12 s', '1 min 4 s', '2 h 5 min', '3 d 4 h'."""
    if v is None:
        return ""
    secs = v.total_seconds() if isinstance(v, timedelta) else float(v)
    sign, secs = ("-" if secs < 0 else ""), abs(secs)
    if round(secs * 1000) < 1000:
        return f"{sign}{secs * 1000:.0f} ms"
    if round(secs, 1) < 10:
        return f"{sign}{secs:.1f} s"
    n = int(round(secs))
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "min", 60),
                                     ("min", 60, "s", 1)):
        if n >= size:
            big, rest = divmod(n, size)
            small = rest // subsize
            return f"{sign}{big} {unit}" + (f" {small} {sub}" if small else "")
    return f"{sign}{n} s"


def capped(n: int, cap: int) -> str:
    return f"{cap}+" if n > cap else str(n)


def _text(name: str) -> str | None:
    v = request.args.get(name, "").strip()
    if len(v) > MAX_FILTER:
        raise BadInput(f"{name}: at most {MAX_FILTER} characters")
    return v or None


def _time(name: str) -> datetime | None:
    v = _text(name)
    if v is None:
        return None
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise BadInput(f"{name}: not a date and time (use 2030-01-31 or 2030-01-31T12:00)")
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _int(name: str) -> int | None:
    v = _text(name)
    if v is None:
        return None
    if not v.isdigit() or len(v) > 18:
        raise BadInput(f"{name}: not a run id")
    return int(v)


def overview() -> Any:
    conn = g.sess.conn
    grid = queries.overview(conn)
    totals = {s: [0, False] for s in queries.STATES}
    workflows: dict[str, dict[str, str]] = {}
    for r in grid:
        t = totals[r["state"]]
        t[0] += int(r["runs"].rstrip("+"))
        t[1] = t[1] or r["capped"]
        workflows.setdefault(r["workflow"], {})[r["state"]] = r["runs"]
    tp = queries.throughput(conn)
    labels = sorted({r["minute"] for r in tp})
    series = {s: [0] * len(labels) for s in ("completed", "failed", "cancelled", "compensated")}
    index = {m: i for i, m in enumerate(labels)}
    for r in tp:
        series[r["state"]][index[r["minute"]]] = r["n"]
    chart = charts.stacked_bars("throughput-chart", "Runs ended per minute, last hour",
                                [m.astimezone(timezone.utc).strftime("%H:%M") for m in labels],
                                series, capped=True)
    return render_template("overview.html", title="Overview", totals=totals,
                           workflows=workflows, states=queries.STATES, chart=chart,
                           legend=charts.legend(list(series)), health=queries.health(conn),
                           cap=queries.CAP, tp_total=sum(map(sum, series.values())),
                           fanouts=queries.fanouts(conn), recent=queries.RECENT)


def runs() -> Any:
    args = {k: request.args.get(k, "") for k in ("workflow", "state", "key", "from", "to")}
    args["children"] = request.args.get("children", "")
    try:
        state = _text("state") or "all"
        if state not in STATE_FILTERS:
            raise BadInput("state: one of " + ", ".join(STATE_FILTERS))
        page = queries.runs(g.sess.conn, state, _text("workflow"), _text("key"),
                            _time("from"), _time("to"), bool(args["children"]), _int("before"))
    except BadInput as e:
        return render_template("runs.html", title="Runs", rows=[], args=args, error=str(e),
                               states=STATE_FILTERS, next_url=None, first_url=None), 400
    more = len(page) > queries.PAGE
    page = page[:queries.PAGE]
    keep = {k: v for k, v in args.items() if v}
    next_url = url_for("runs", **keep, before=page[-1]["id"]) if more else None
    first_url = url_for("runs", **keep) if request.args.get("before") else None
    return render_template("runs.html", title="Runs", rows=page, args=args, error=None,
                           states=STATE_FILTERS, next_url=next_url, first_url=first_url)


def load_run(run_id: int) -> dict[str, Any]:
    """The run of this id the role may see (404 otherwise, as CF014)."""
    r = queries.run(g.sess.conn, run_id)
    if r is None:
        abort(404, description=f"CF014: run {run_id} does not exist (or is not yours to see).")
    return r


def run(run_id: int) -> Any:
    conn = g.sess.conn
    r = load_run(run_id)
    shadowed = queries.resolves_to(conn, r["workflow"], r["key"]) != run_id
    timeline = [] if shadowed else queries.timeline(conn, r["workflow"], r["key"])
    chain = [] if shadowed else queries.parent_chain(conn, r["workflow"], r["key"])
    brs = [] if shadowed else queries.branches(conn, r["workflow"], r["key"])
    periodic = [] if shadowed else queries.run_periodic(conn, r["workflow"], r["key"])
    return render_template("run.html", title=f"Run {run_id}", run=r, timeline=timeline,
                           chain=chain, branches=brs, periodic=periodic, shadowed=shadowed,
                           events=queries.events(conn, run_id))


def branches(run_id: int) -> Any:
    r = load_run(run_id)
    return render_template("branches.html", title=f"Branches of run {run_id}", run=r,
                           branches=queries.branches(g.sess.conn, r["workflow"], r["key"]))


def _cursor(name: str) -> tuple[bool, int] | None:
    v = _text(name)
    if v is None:
        return None
    b, _, i = v.partition(":")
    if b not in ("b", "n") or not i.isdigit() or len(i) > 18:
        raise BadInput(f"{name}: not a page cursor")
    return (b == "b", int(i))


def _cur(row: dict[str, Any]) -> str:
    return ("b:" if row["blocked"] else "n:") + str(row["id"])


def branch(run_id: int, branch: str) -> Any:
    conn = g.sess.conn
    r = load_run(run_id)
    br = next((b for b in queries.branches(conn, r["workflow"], r["key"])
               if b["branch"] == branch), None)
    if br is None:
        abort(404, description=f"CF008: run {run_id} has no branch {branch!r}.")
    state = request.args.get("state", "all")
    try:
        if state not in STATE_FILTERS:
            raise BadInput("state: one of " + ", ".join(STATE_FILTERS))
        after, before = _cursor("after"), _cursor("before")
    except BadInput as e:
        abort(400, description=str(e))
    page, has_prev, has_next = _children_page(conn, r, br, state, after, before)
    base = {"run_id": run_id, "branch": branch} | ({"state": state} if state != "all" else {})
    next_url = url_for("branch", **base, after=_cur(page[-1])) if has_next and page else None
    prev_url = url_for("branch", **base, before=_cur(page[0])) if has_prev and page else None
    counts = queries.branch_counts(conn, br["branch_log_id"])
    return render_template("branch.html", title=f"Branch {branch} of run {run_id}", run=r,
                           br=br, children=page, counts=counts, cap=queries.BRANCH_CAP,
                           state=state, states=STATE_FILTERS, next_url=next_url,
                           prev_url=prev_url, capped=capped)


def _children_page(conn: Any, r: dict[str, Any], br: dict[str, Any], state: str,
                   after: tuple[bool, int] | None, before: tuple[bool, int] | None
                   ) -> tuple[list[dict[str, Any]], bool, bool]:
    """A page of a branch's children and whether a page lies before and
    after it: each read looks one row beyond its page, and the row next to
    the page's other end is probed, so no link leads to an empty page.
    Paging back to the start gives the first page itself (full)."""
    def fwd(cur: tuple[bool, int] | None, n: int = queries.PAGE + 1) -> list[dict[str, Any]]:
        return queries.children_after(conn, r["workflow"], r["key"], br["branch"], state, cur, n)

    if before is not None:
        page = queries.children_before(conn, br["branch_log_id"], state, before)
        if len(page) > queries.PAGE:
            page = page[:queries.PAGE][::-1]
            return page, True, bool(fwd((page[-1]["blocked"], page[-1]["id"]), 1))
        after = None        # reached the start: the first page
    page = fwd(after)
    has_next = len(page) > queries.PAGE
    page = page[:queries.PAGE]
    has_prev = bool(page) and after is not None and bool(queries.children_before(
        conn, br["branch_log_id"], state, (page[0]["blocked"], page[0]["id"]), 1))
    return page, has_prev, has_next


def waiting() -> Any:
    conn = g.sess.conn
    rows = queries.waiting(conn)
    kinds = {"wait_until": 0, "continue_if": 0, "await_event": 0}
    for w in rows:
        kinds[w["kind"]] = kinds.get(w["kind"], 0) + 1
    return render_template("waiting.html", title="Waiting", rows=rows[:SHOWN], kinds=kinds,
                           total=len(rows), shown=SHOWN,
                           other=queries.waiting_kinds(conn), cap=queries.CAP, capped=capped)


def stranded() -> Any:
    conn = g.sess.conn
    return render_template("stranded.html", title="Stranded", rows=queries.stranded(conn),
                           overdue=queries.overdue_wakeups(conn))


def periodic() -> Any:
    conn = g.sess.conn
    return render_template("periodic.html", title="Periodic", rows=queries.periodic(conn),
                           schedules=queries.schedules(conn))


def failures() -> Any:
    conn = g.sess.conn
    win = request.args.get("window", "30d")
    if win not in WINDOWS:
        win = "30d"
    cls = request.args.get("class", "")[:MAX_FILTER] or None
    wf = request.args.get("workflow", "").strip()[:MAX_FILTER] or None
    days = queries.daily_outcomes(conn, WINDOWS[win], wf)
    span = _day_span(queries.today(conn), int(win[:-1]), days)
    by_day = {d["day"]: d for d in days}
    series = {k: [by_day[d][k] if d in by_day else 0 for d in span]
              for k in ("completed", "failed", "cancelled")}
    chart = charts.stacked_bars("outcomes-chart", f"Runs ended per day (UTC), last {WINDOWS[win]}",
                                [d.strftime("%m-%d") for d in span], series, unit="runs/day",
                                width=1140)
    return render_template("failures.html", title="Failures", window=win, windows=WINDOWS,
                           errors=queries.top_errors(conn, WINDOWS[win]), days=days,
                           by_workflow=queries.errors_by_workflow(conn, WINDOWS[win], wf),
                           workflow=wf or "",
                           chart=chart, legend=charts.legend(list(series)), cls=cls,
                           class_runs=queries.error_runs(conn, cls) if cls else [])


def _day_span(today: date, n: int, days: list[dict[str, Any]]) -> list[date]:
    """Every day of the window, oldest first, days without a run included
    (from the first day daily_outcomes() gave, if earlier)."""
    first = min([today - timedelta(days=n - 1)] + [d["day"] for d in days])
    return [first + timedelta(days=i) for i in range((today - first).days + 1)]


def tasks() -> Any:
    return render_template("tasks.html", title="Tasks", rows=queries.task_queues(g.sess.conn))


def cluster() -> Any:
    """Every node's overview grid (or its error) and the newest runs across
    the nodes; 404 unless the database is a distributed cluster.  A run
    lives on its node: the run page (on this node) cannot show it, so runs
    are not linked."""
    conn = g.sess.conn
    g.sess.cluster = queries.is_cluster(conn)     # the navigation follows
    if not g.sess.cluster:
        abort(404, description="This database is not a distributed chrono_forge cluster "
                               "(Citus and chrono_forge.distribute()).")
    nodes: dict[tuple[int, str], dict[str, Any]] = {}
    for r in queries.cluster_overview(conn):
        n = nodes.setdefault((r["node_group"], r["node"]), {
            "group": r["node_group"], "node": r["node"], "error": None, "workflows": {}})
        n["error"] = n["error"] or r["error"]
        if r["workflow"] is not None:
            n["workflows"].setdefault(r["workflow"], {})[r["state"]] = r["runs"]
    args = {k: request.args.get(k, "") for k in ("workflow", "state", "key")}
    page = dict(title="Cluster", nodes=list(nodes.values()), states=queries.STATES,
                filters=STATE_FILTERS, args=args, cap=queries.CAP, page=queries.PAGE)
    try:
        state = _text("state") or "all"
        if state not in STATE_FILTERS:
            raise BadInput("state: one of " + ", ".join(STATE_FILTERS))
        rows = queries.cluster_runs(conn, state, _text("workflow"), _text("key"))
    except BadInput as e:
        return render_template("cluster.html", rows=[], error=str(e), **page), 400
    return render_template("cluster.html", rows=rows, error=None, **page)
