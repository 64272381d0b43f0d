"""The dashboard against a real cluster (workers on), through Flask's test
client: sign-in and who sees what, the cookie, CSRF, every action, filters
and paging, hostile input, single-user mode, escaping, idle sessions."""

from __future__ import annotations

import base64
import re
import time
import zlib
from typing import Any

import pytest
from conftest import A, ADMIN, B, BYPASS, Db, csrf_of, sign_in
from flask import Flask
from flask.testing import FlaskClient
from psycopg.conninfo import make_conninfo

from chrono_forge_dashboard import create_app, shutdown


def text(r: Any) -> str:
    return r.get_data(as_text=True)


def run_ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr data-run-id="(\d+)"', html)]


def hook(html: str, name: str) -> str:
    m = re.search(r'data-testid="%s"[^>]*>(.*?)</' % re.escape(name), html, re.S)
    assert m, f"no [data-testid={name}]"
    return re.sub(r"\s+", " ", m.group(1)).strip()


def post_action(c: FlaskClient, url: str, **fields: str) -> Any:
    """GET the confirmation page, then POST it with its CSRF token."""
    page = c.get(url)
    assert page.status_code == 200, text(page)
    assert 'data-testid="confirm"' in text(page)
    return c.post(url, data={"csrf_token": csrf_of(text(page)), "confirm": "yes", **fields})


def offered(html: str) -> set[str]:
    """The actions a run's page offers."""
    return set(re.findall(r'data-action="([a-z-]+)"', html))


def follow(c: FlaskClient, r: Any) -> str:
    assert r.status_code == 303, text(r)
    return text(c.get(r.headers["Location"]))


# --- formats -----------------------------------------------------------------

def test_templates_compiled_at_start() -> None:
    """No request pays for compiling its page's template."""
    app = create_app({"SINGLE_USER_DSN": "dbname=unused"})
    try:
        cache = app.jinja_env.cache
        assert cache is not None
        compiled = {key[1] for key in cache.keys()}
        assert set(app.jinja_env.list_templates()) <= compiled
        assert "overview.html" in compiled and "run.html" in compiled
    finally:
        shutdown(app)


def test_one_duration_format() -> None:
    from datetime import timedelta
    from chrono_forge_dashboard.pages import duration
    cases = {0.004: "4 ms", 0.0: "0 ms", 1.23: "1.2 s", 12.4: "12 s", 64: "1 min 4 s",
             120: "2 min", 7500: "2 h 5 min", 90000: "1 d 1 h", -3.2: "-3.2 s"}
    assert {k: duration(k) for k in cases} == cases
    assert duration(timedelta(minutes=1, seconds=4)) == "1 min 4 s" and duration(None) == ""


def test_outcomes_chart_follows_the_window(db: Db, client_a: FlaskClient, tag: str) -> None:
    """A bar slot per day of the chosen window (empty days too), whatever
    days had runs; the default window is the issue's 30 days."""
    db.wait_state(db.start(A, "cf_dash.ok", f"{tag}-day"), "completed")
    for query, n in (("", 30), ("?window=7d", 7), ("?window=1d", 1), ("?window=30d", 30)):
        html = text(client_a.get("/failures" + query))
        chart = re.search(r'<svg data-testid="outcomes-chart".*?</svg>', html, re.S).group(0)
        assert chart.count('class="slot"') == n, (query, chart.count('class="slot"'))
        assert f"last {n} day" in chart and "runs/day" in chart


# --- who sees what ----------------------------------------------------------

def test_tenants_see_only_their_runs_admin_sees_all(db: Db, client_a: FlaskClient,
                                                   client_b: FlaskClient,
                                                   client_admin: FlaskClient, tag: str) -> None:
    ra = [db.start(A, "cf_dash.ok", f"{tag}-{i}") for i in range(3)]
    rb = db.start(B, "cf_dash.ok", f"{tag}-b")
    for r in ra + [rb]:
        db.wait_state(r, "completed")
    a = text(client_a.get(f"/runs?key={tag}"))
    assert set(run_ids(a)) == set(ra)
    assert hook(a, "whoami") == A
    assert run_ids(text(client_b.get(f"/runs?key={tag}"))) == [rb]
    assert set(run_ids(text(client_admin.get(f"/runs?key={tag}")))) == set(ra) | {rb}
    # another tenant's run by its id looks missing, on its page and its sub-pages
    for url in (f"/runs/{ra[0]}", f"/runs/{ra[0]}/branches", f"/runs/{ra[0]}/cancel"):
        r = client_b.get(url)
        assert r.status_code == 404 and "CF014" in text(r), url
    assert client_admin.get(f"/runs/{ra[0]}").status_code == 200
    # the overview counts only the role's own runs
    ov_b = text(client_b.get("/"))
    assert "cf_dash.ok" in ov_b and "throughput-chart" in ov_b


def test_wrong_password_refused(app: Flask, db: Db) -> None:
    c, r = sign_in(app, db, A, password="not-the-password")
    assert r.status_code == 401
    assert 'data-testid="flash-error"' in text(r)
    assert 'name="password"' in text(r)
    r = c.get("/")
    assert r.status_code == 303 and "/login" in r.headers["Location"]


def test_bypassrls_role_refused(app: Flask, db: Db) -> None:
    _, r = sign_in(app, db, BYPASS)
    assert r.status_code == 401 and "BYPASSRLS" in text(r)


def test_cookie_holds_no_password(app: Flask, db: Db) -> None:
    c, r = sign_in(app, db, A)
    assert r.status_code == 303
    set_cookie = r.headers.get("Set-Cookie", "")
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    raw = next(ck.value for ck in c.cookie_jar if ck.name == "cf_dashboard")
    pw = db.passwords[A]
    payload = raw.lstrip(".").split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    if raw.startswith("."):
        decoded = zlib.decompress(decoded)
    assert pw not in raw and pw.encode() not in decoded
    data = app.session_interface.get_signing_serializer(app).loads(raw)
    assert set(data) <= {"sid", "csrf", "_flashes"}
    assert pw not in repr(data)
    # a forged cookie (bad signature) is no session
    c2 = app.test_client()
    c2.set_cookie("localhost", "cf_dashboard", raw[:-2] + "xx")
    assert c2.get("/").status_code == 303


def test_sessions_are_capped(db: Db) -> None:
    app = create_app({"DATABASE": db.base, "MAX_SESSIONS": 1})
    try:
        assert sign_in(app, db, A)[1].status_code == 303
        _, r = sign_in(app, db, B)
        assert r.status_code == 401 and "Too many sessions" in text(r)
        assert app.extensions["cf_sessions"].count() == 1
    finally:
        shutdown(app)


def test_sign_out_closes_the_connection(app: Flask, db: Db) -> None:
    c, _ = sign_in(app, db, A)
    store = app.extensions["cf_sessions"]
    data = app.session_interface.get_signing_serializer(app).loads(
        next(ck.value for ck in c.cookie_jar if ck.name == "cf_dashboard"))
    conn = store.get(data["sid"]).conn
    r = c.post("/logout", data={"csrf_token": csrf_of(text(c.get("/")))})
    assert r.status_code == 303
    assert conn.closed and store.get(data["sid"]) is None
    assert c.get("/").status_code == 303


def test_idle_session_expires_and_closes(db: Db) -> None:
    app = create_app({"DATABASE": db.base, "IDLE_SECONDS": 1})
    try:
        c, r = sign_in(app, db, A)
        assert r.status_code == 303
        store = app.extensions["cf_sessions"]
        (sess,) = store._sessions.values()
        pid = sess.conn.info.backend_pid
        db.wait(lambda: sess.conn.closed, "idle session closed by the sweeper")
        db.wait(lambda: not db.val("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                   (pid,)), "its backend gone")
        r = c.get("/")
        assert r.status_code == 303 and "/login" in r.headers["Location"]
    finally:
        shutdown(app)


# --- CSRF -------------------------------------------------------------------

def test_post_without_or_with_wrong_csrf_refused(db: Db, client_a: FlaskClient, tag: str) -> None:
    rid = db.start(A, "cf_dash.on_event", f"{tag}-csrf")
    db.wait_step(rid, "await_event$go")
    url = f"/runs/{rid}/cancel"
    for data in ({"confirm": "yes"}, {"confirm": "yes", "csrf_token": "forged"}):
        r = client_a.post(url, data=data)
        assert r.status_code == 400 and "CSRF" in text(r)
        # the refusal page still knows who is signed in (no "Sign in" link)
        assert hook(text(r), "whoami") == A and 'href="/login"' not in text(r)
    r = client_a.post(f"/runs/{rid}/event", data={"confirm": "yes", "name": "go", "payload": "1"})
    assert r.status_code == 400
    assert client_a.post("/logout", data={}).status_code == 400
    time.sleep(0.3)
    assert db.state(rid) == "idle"
    assert db.val("SELECT count(*) FROM chrono_forge.events WHERE workflow_id = %s", (rid,)) == 0
    # a valid token but no confirmation: the confirmation page again, nothing done
    tok = csrf_of(text(client_a.get(url)))
    r = client_a.post(url, data={"csrf_token": tok})
    assert r.status_code == 400 and 'data-testid="confirm"' in text(r)
    assert db.state(rid) == "idle"


# --- actions ----------------------------------------------------------------

def test_retry_of_a_stalled_run_then_completes(db: Db, client_a: FlaskClient, tag: str) -> None:
    flag = f"{tag}-flag"
    rid = db.start(A, "cf_dash.flaky", f"{tag}-stall", {"flag": flag})
    db.wait_state(rid, "stalled")
    page = text(client_a.get(f"/runs/{rid}"))
    assert hook(page, "run-state") == "stalled"
    assert 'data-action="retry"' in page and "not yet" in page
    assert offered(page) == {"retry", "event", "cancel"}
    db.q("INSERT INTO cf_dash.flags VALUES (%s)", (flag,))
    html = follow(client_a, post_action(client_a, f"/runs/{rid}/retry"))
    assert 'data-testid="flash"' in html
    db.wait_state(rid, "completed")
    assert hook(text(client_a.get(f"/runs/{rid}")), "run-state") == "completed"


def test_retry_refused_shows_sqlstate(db: Db, client_a: FlaskClient, tag: str) -> None:
    rid = db.start(A, "cf_dash.ok", f"{tag}-done")
    db.wait_state(rid, "completed")
    page = text(client_a.get(f"/runs/{rid}"))
    assert offered(page) == set() and "completed" in hook(page, "no-actions")
    # not offered, but the POST still goes to the database, which refuses it
    html = follow(client_a, post_action(client_a, f"/runs/{rid}/retry"))
    assert "CF004" in hook(html, "flash-error")
    assert "Traceback" not in html


def test_deadline_shown_and_its_end_in_the_timeline(db: Db, client_a: FlaskClient, tag: str) -> None:
    with db.su.transaction():
        db.q("SET LOCAL ROLE " + A)
        rid = int(db.val("SELECT chrono_forge.start('cf_dash.gate', %s, '{}', '{\"timeout\": \"1 second\"}')",
                         (f"{tag}-deadline",)))
    db.wait_state(rid, "failed")
    page = text(client_a.get(f"/runs/{rid}"))
    assert hook(page, "run-state") == "failed"
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", hook(page, "run-deadline"))
    assert "CF029" in page and "$workflow_deadline$" in page
    # A run without one shows no deadline row.
    other = db.start(A, "cf_dash.ok", f"{tag}-no-deadline")
    db.wait_state(other, "completed")
    assert 'data-testid="run-deadline"' not in text(client_a.get(f"/runs/{other}"))


def test_priority_shown(db: Db, client_a: FlaskClient, tag: str) -> None:
    with db.su.transaction():
        db.q("SET LOCAL ROLE " + A)
        rid = int(db.val("SELECT chrono_forge.start('cf_dash.ok', %s, '{}', '{\"priority\": 7}')",
                         (f"{tag}-priority",)))
    db.wait_state(rid, "completed")
    assert hook(text(client_a.get(f"/runs/{rid}")), "run-priority") == "7"
    # A run without one shows no priority row.
    other = db.start(A, "cf_dash.ok", f"{tag}-no-priority")
    db.wait_state(other, "completed")
    assert 'data-testid="run-priority"' not in text(client_a.get(f"/runs/{other}"))


def test_compensated_run_its_undo_steps_and_filter(db: Db, client_a: FlaskClient, tag: str) -> None:
    rid = db.start(A, "cf_dash.saga", f"{tag}-saga")
    db.wait_state(rid, "compensated")
    page = text(client_a.get(f"/runs/{rid}"))
    assert hook(page, "run-state") == "compensated"
    assert "compensate$durably_execute$cf_dash.charge" in page
    assert "$workflow_compensating$" in page and "$workflow_compensated$" in page
    assert "out of stock" in page and "refunded" in page     # why, and the undo's result
    assert "<summary>undo</summary>" in page and "cf_dash.refund" in page   # the registered undo
    assert offered(page) == set()           # an ended run: nothing to act on
    listed = text(client_a.get("/runs?state=compensated&workflow=cf_dash.saga"))
    assert rid in run_ids(listed)
    other = db.start(A, "cf_dash.ok", f"{tag}-not-saga")
    db.wait_state(other, "completed")
    assert other not in run_ids(text(client_a.get("/runs?state=compensated")))
    assert "compensated" in text(client_a.get("/"))


def test_wake(db: Db, client_a: FlaskClient, tag: str) -> None:
    flag = f"{tag}-gate"
    rid = db.start(A, "cf_dash.gate", f"{tag}-gate", {"flag": flag})
    db.wait_step(rid, "continue_if$gate")
    db.q("INSERT INTO cf_dash.flags VALUES (%s)", (flag,))
    time.sleep(0.3)
    assert db.state(rid) == "idle"          # continue_if never polls: only a wake moves it
    assert offered(text(client_a.get(f"/runs/{rid}"))) == {"wake", "event", "cancel"}
    html = follow(client_a, post_action(client_a, f"/runs/{rid}/wake"))
    assert "Woken" in hook(html, "flash")
    db.wait_state(rid, "completed")


def test_send_event(db: Db, client_a: FlaskClient, tag: str) -> None:
    rid = db.start(A, "cf_dash.on_event", f"{tag}-ev")
    db.wait_step(rid, "await_event$go")
    url = f"/runs/{rid}/event"
    bad = client_a.post(url, data={"csrf_token": csrf_of(text(client_a.get(url))),
                                   "confirm": "yes", "name": "go", "payload": "{nope"})
    assert bad.status_code == 400 and "not valid JSON" in text(bad)
    html = follow(client_a, post_action(client_a, url, name="go", payload='{"n": 7}'))
    assert "delivered" in hook(html, "flash")
    db.wait_state(rid, "completed")
    assert db.val("SELECT context->'payload' FROM chrono_forge.workflows WHERE id = %s",
                  (rid,)) == {"n": 7}


def test_cancel_with_children(db: Db, client_a: FlaskClient, tag: str) -> None:
    pid = db.start(A, "cf_dash.fan", f"{tag}-fan", {"n": 3})
    kids = "SELECT w.id FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l " \
           "ON l.id = w.parent_execution_log_id WHERE l.workflow_id = %s"
    db.wait(lambda: len(db.q(kids, (pid,))) == 3, "three children")
    html = follow(client_a, post_action(client_a, f"/runs/{pid}/cancel", children="yes"))
    assert "Cancelled 4 runs" in hook(html, "flash")
    assert db.state(pid) == "cancelled"
    assert {db.state(k) for (k,) in db.q(kids, (pid,))} == {"cancelled"}


def test_cancel_without_children_leaves_them(db: Db, client_a: FlaskClient, tag: str) -> None:
    pid = db.start(A, "cf_dash.fan", f"{tag}-fan1", {"n": 1})
    kids = "SELECT w.id FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l " \
           "ON l.id = w.parent_execution_log_id WHERE l.workflow_id = %s"
    db.wait(lambda: len(db.q(kids, (pid,))) == 1, "one child")
    html = follow(client_a, post_action(client_a, f"/runs/{pid}/cancel"))
    assert "Cancelled 1 run." in hook(html, "flash")
    (kid,) = db.q(kids, (pid,))[0]
    assert db.state(kid) != "cancelled"


def test_force_unlock(db: Db, client_a: FlaskClient, tag: str) -> None:
    rid = db.start(A, "cf_dash.on_event", f"{tag}-lock")
    db.wait_step(rid, "await_event$go")
    # a pass whose worker died: running, locked by nobody alive
    db.q("UPDATE chrono_forge.workflows SET state = 'running', locked_by = 'w:dead', "
         "locked_at = chrono_forge.now() - interval '10 minutes' WHERE id = %s", (rid,))
    page = text(client_a.get(f"/runs/{rid}"))
    assert hook(page, "run-state") == "running" and "w:dead" in page
    assert offered(page) == {"force-unlock", "event", "cancel"}
    html = follow(client_a, post_action(client_a, f"/runs/{rid}/force-unlock"))
    assert "Unlocked" in hook(html, "flash")
    assert db.q("SELECT state::text, locked_by FROM chrono_forge.workflows WHERE id = %s",
                (rid,))[0] == ("idle", None)


def test_tenant_cannot_act_on_another_tenants_run(db: Db, client_a: FlaskClient,
                                                 client_b: FlaskClient, tag: str) -> None:
    rid = db.start(A, "cf_dash.on_event", f"{tag}-mine")
    db.wait_step(rid, "await_event$go")
    tok_b = csrf_of(text(client_b.get("/")))
    for action, extra in (("cancel", {"children": "yes"}), ("retry", {}), ("wake", {}),
                          ("force-unlock", {}), ("event", {"name": "go", "payload": "1"})):
        r = client_b.post(f"/runs/{rid}/{action}",
                          data={"csrf_token": tok_b, "confirm": "yes", **extra})
        assert r.status_code == 404 and "CF014" in text(r), action
    r = client_b.post(f"/runs/{rid}/branches/a/retry-blocked",
                      data={"csrf_token": tok_b, "confirm": "yes"})
    assert r.status_code == 404
    time.sleep(0.3)
    assert db.state(rid) == "idle"
    assert db.val("SELECT count(*) FROM chrono_forge.events WHERE workflow_id = %s", (rid,)) == 0


# --- branches -----------------------------------------------------------------

def test_branch_counts_paging_and_retry_blocked(db: Db, client_a: FlaskClient, tag: str) -> None:
    pid = db.start(A, "cf_dash.fan", f"{tag}-big", {"n": 120})
    kids = "SELECT count(*) FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l " \
           "ON l.id = w.parent_execution_log_id JOIN chrono_forge.execution_logs e " \
           "ON e.workflow_id = w.id AND e.step_name = 'await_event$go' " \
           "WHERE l.workflow_id = %s AND w.state = 'idle'"
    db.wait(lambda: db.val(kids, (pid,)) == 120, "120 children parked")
    # two children blocked: they come first
    blocked = [r[0] for r in db.q(
        "SELECT w.id FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l "
        "ON l.id = w.parent_execution_log_id WHERE l.workflow_id = %s ORDER BY w.id DESC LIMIT 2",
        (pid,))]
    db.q("UPDATE chrono_forge.workflows SET state = 'stalled' WHERE id = ANY(%s)", (blocked,))
    # the overview links straight to the branch (two clicks to any page)
    assert f'href="/runs/{pid}/branches/a"' in text(client_a.get("/"))
    listed = text(client_a.get(f"/runs/{pid}/branches"))
    assert 'href="/runs/%d/branches/a"' % pid in listed
    url = f"/runs/{pid}/branches/a"
    p1 = text(client_a.get(url))
    assert hook(p1, "branch-count-idle") == "118"
    assert hook(p1, "branch-count-stalled") == "2"
    ids1 = run_ids(p1)
    assert len(ids1) == 50 and ids1[:2] == sorted(blocked)
    assert 'rel="prev"' not in p1
    nxt = re.search(r'href="([^"]+)" rel="next"', p1).group(1).replace("&amp;", "&")
    p2 = text(client_a.get(nxt))
    ids2 = run_ids(p2)
    nxt = re.search(r'href="([^"]+)" rel="next"', p2).group(1).replace("&amp;", "&")
    p3 = text(client_a.get(nxt))
    ids3 = run_ids(p3)
    assert len(ids2) == 50 and len(ids3) == 20 and 'rel="next"' not in p3
    assert len(set(ids1 + ids2 + ids3)) == 120
    assert ids2 == sorted(ids2) and ids3 == sorted(ids3) and ids1[2:] == sorted(ids1[2:])
    prev = re.search(r'href="([^"]+)" rel="prev"', p3).group(1).replace("&amp;", "&")
    assert run_ids(text(client_a.get(prev))) == ids2
    prev = re.search(r'href="([^"]+)" rel="prev"', p2).group(1).replace("&amp;", "&")
    back1 = text(client_a.get(prev))
    # paged back to the start: the first page again, with no way further back
    assert run_ids(back1) == ids1 and 'rel="prev"' not in back1 and 'rel="next"' in back1
    html = follow(client_a, post_action(client_a, f"{url}/retry-blocked"))
    assert "Retried 2 blocked child runs" in hook(html, "flash")
    assert {db.state(b) for b in blocked} <= {"idle", "running"}
    assert client_a.get(f"/runs/{pid}/branches/nope").status_code == 404
    db.as_role(A, "SELECT chrono_forge.cancel('cf_dash.fan', %s, 'test done', true)", (f"{tag}-big",))


# --- filters and paging -------------------------------------------------------

def test_runs_filters_and_keyset_paging(db: Db, client_a: FlaskClient, tag: str) -> None:
    ids = [db.start(A, "cf_dash.ok", f"{tag}-{i:03d}") for i in range(120)]
    other = db.start(A, "cf_dash.gate", f"{tag}-gate", {"flag": "never"})
    db.wait(lambda: db.val("SELECT count(*) FROM chrono_forge.workflows WHERE id = ANY(%s) "
                           "AND state = 'completed'", (ids,)) == 120, "120 runs completed")
    seen: list[int] = []
    url = f"/runs?key={tag}-&state=completed&workflow=cf_dash.ok"
    pages = 0
    while url:
        html = text(client_a.get(url))
        page = run_ids(html)
        assert page == sorted(page, reverse=True)          # newest first
        assert set(re.findall(r'data-state="(\w+)"', html)) <= {"completed"}
        seen += page
        pages += 1
        m = re.search(r'href="([^"]+)" rel="next"', html)
        url = m.group(1).replace("&amp;", "&") if m else None
    assert pages == 3 and seen == sorted(ids, reverse=True)
    assert run_ids(text(client_a.get(f"/runs?key={tag}-gate"))) == [other]
    assert run_ids(text(client_a.get(f"/runs?key={tag}-&state=in_flight"))) == [other]
    assert run_ids(text(client_a.get(f"/runs?key={tag}-&workflow=cf_dash.gate"))) == [other]
    # time range: everything created from a minute ago, nothing before
    assert other in run_ids(text(client_a.get(
        f"/runs?key={tag}-&from={time.strftime('%Y-%m-%dT%H:%M', time.gmtime(time.time() - 60))}")))
    assert run_ids(text(client_a.get(f"/runs?key={tag}-&to=2001-01-01"))) == []


HOSTILE = {
    "percent": "key=%25", "or_1_1": "key=%27%20OR%201%3D1%20--", "underscore": "key=_%25",
    "drop_table": "workflow=%27%3B%20DROP%20TABLE%20x%3B--", "long_workflow": "workflow=" + "w" * 5000,
    "long_key": "key=" + "k" * 5000, "state_quote": "state=%27%20OR%20%27%27%3D%27",
    "bad_date": "from=2030-13-45", "word_date": "to=yesterday", "bad_cursor": "before=12abc",
    "huge_cursor": "before=" + "9" * 40, "nul": "workflow=%00", "rtl_script": "key=%E2%80%AE%3Cscript%3E",
}


@pytest.mark.parametrize("query", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_filters(db: Db, client_a: FlaskClient, query: str) -> None:
    r = client_a.get("/runs?" + query)
    html = text(r)
    assert r.status_code in (200, 400, 404), html
    assert "Traceback" not in html and "<script>" not in html
    if r.status_code == 200:
        assert run_ids(html) == []        # a prefix, not a pattern: '%' matches nothing
    else:
        assert 'data-testid="flash-error"' in html
    assert db.val("SELECT to_regclass('cf_dash.flags') IS NOT NULL")


def test_hostile_paths(client_a: FlaskClient) -> None:
    for url in ("/runs/0", "/runs/99999999999", "/runs/1/branches/%27%3Cx%3E",
                "/runs/1/branches/a?after=zz", "/runs/1/nope", "/failures?class=%27%3Cb%3E",
                "/failures?window=%27"):
        r = client_a.get(url)
        assert r.status_code in (200, 400, 404), url
        assert "Traceback" not in text(r) and "<x>" not in text(r) and "<b>" not in text(r)


# --- every page ---------------------------------------------------------------

def test_every_page_renders_with_its_hooks(db: Db, client_admin: FlaskClient) -> None:
    hooks = {"/": ["overview-completed", "throughput-chart"], "/runs": ["runs-table"],
             "/waiting": ["waiting-table"], "/stranded": ["stranded-table"],
             "/periodic": ["periodic-table"], "/failures": ["failures-table", "outcomes-chart"],
             "/tasks": ["tasks-table"]}
    for url, ids in hooks.items():
        r = client_admin.get(url)
        html = text(r)
        assert r.status_code == 200, url
        assert re.search(r'<nav>.*href="/runs".*href="/waiting".*href="/stranded".*'
                         r'href="/periodic".*href="/failures".*href="/tasks"', html, re.S), url
        assert hook(html, "whoami") == ADMIN
        for i in ids:
            assert f'data-testid="{i}"' in html, (url, i)
        assert "Server-Timing" in r.headers
    assert "<svg" in text(client_admin.get("/failures"))


def test_waiting_and_stranded_lists(db: Db, client_a: FlaskClient, client_b: FlaskClient,
                                   tag: str) -> None:
    rid = db.start(A, "cf_dash.on_event", f"{tag}-w")
    db.wait_step(rid, "await_event$go")
    assert rid in run_ids(text(client_a.get("/waiting")))
    assert rid not in run_ids(text(client_b.get("/waiting")))
    db.q("UPDATE chrono_forge.workflows SET state = 'running', locked_by = 'w:gone', "
         "locked_at = chrono_forge.now() - interval '2 hours' WHERE id = %s", (rid,))
    try:
        html = text(client_a.get("/stranded"))
        assert rid in run_ids(html) and "w:gone" in html
        assert rid not in run_ids(text(client_b.get("/stranded")))
    finally:
        db.q("UPDATE chrono_forge.workflows SET state = 'idle', locked_by = NULL, "
             "locked_at = NULL WHERE id = %s AND state = 'running'", (rid,))


# --- the cluster page -------------------------------------------------------------

def test_cluster_page_absent_without_citus(client_admin: FlaskClient) -> None:
    """Not a distributed cluster: /cluster is missing, and so is its link."""
    r = client_admin.get("/cluster")
    assert r.status_code == 404 and 'data-testid="flash-error"' in text(r)
    assert "not a distributed chrono_forge cluster" in hook(text(r), "flash-error")
    for html in (text(r), text(client_admin.get("/"))):
        assert 'href="/cluster"' not in html and hook(html, "whoami") == ADMIN


def test_cluster_page_renders_nodes_errors_and_runs(app: Flask, db: Db,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The page over fixed rows of cluster_overview() and cluster_runs():
    two nodes' grids, a node's error, the runs with their node."""
    from datetime import datetime, timedelta, timezone
    from chrono_forge_dashboard import queries
    t = datetime(2030, 1, 31, 12, tzinfo=timezone.utc)
    node = {"capped": False, "error": None}
    overview = [
        {**node, "node_group": 1, "node": "w1:5433", "workflow": "app.ship", "state": "completed",
         "runs": "12"},
        {**node, "node_group": 1, "node": "w1:5433", "workflow": "app.ship", "state": "failed",
         "runs": "1000+", "capped": True},
        {**node, "node_group": 2, "node": "w2:5434", "workflow": "app.bill", "state": "idle",
         "runs": "3"},
        {"node_group": 3, "node": "w3:5435", "workflow": None, "state": None, "runs": None,
         "capped": None, "error": "connection to w3 failed <b>refused</b>"},
        {**node, "node_group": 4, "node": "w4:5436", "workflow": None, "state": None, "runs": None},
    ]
    run = {"owner": A, "started_at": t, "ended_at": t + timedelta(seconds=2),
           "duration": timedelta(seconds=2), "locked_by": None, "stranded": False,
           "parent_execution_log_id": None, "created_at": t}
    runs = [{**run, "node_group": 2, "node": "w2:5434", "id": (2 << 48) + 7, "workflow": "app.bill",
             "key": "<script>k2</script>", "state": "completed"},
            {**run, "node_group": 1, "node": "w1:5433", "id": (1 << 48) + 5, "workflow": "app.ship",
             "key": "k1", "state": "failed"}]
    asked: list[tuple[Any, ...]] = []

    def cluster_runs(conn: Any, state: str, workflow: str | None, key: str | None) -> list[Any]:
        asked.append((state, workflow, key))
        return [r for r in runs if state in ("all", r["state"])]

    monkeypatch.setattr(queries, "is_cluster", lambda conn: True)
    monkeypatch.setattr(queries, "cluster_overview", lambda conn: overview)
    monkeypatch.setattr(queries, "cluster_runs", cluster_runs)
    c, r = sign_in(app, db, A)       # its own session: the nav's answer is kept per session
    assert r.status_code == 303
    r = c.get("/cluster")
    html = text(r)
    assert r.status_code == 200, html
    assert 'href="/cluster"' in html and hook(html, "whoami") == A
    groups = re.findall(r'<tbody data-testid="cluster-node" data-node-group="(\d+)"', html)
    assert groups == ["1", "2", "3", "4"]
    assert "w1:5433" in html and "w2:5434" in html and "1,000+" in html
    assert hook(html, "node-error") == "connection to w3 failed &lt;b&gt;refused&lt;/b&gt;"
    assert 'class="node-error"' in html and "<b>" not in html
    assert "No runs." in html.split('data-node-group="4"')[1].split("</tbody>")[0]
    rows = re.findall(r'<tr data-run-id="(\d+)" data-state="(\w+)" data-node-group="(\d+)">\s*'
                      r'<td class="num">(\d+)</td><td class="nowrap">([^<]*)</td>', html)
    assert rows == [(str((2 << 48) + 7), "completed", "2", "2", "w2:5434"),
                    (str((1 << 48) + 5), "failed", "1", "1", "w1:5433")]
    assert "&lt;script&gt;k2" in html and "<script>k2" not in html
    assert 'href="/runs/' + str((2 << 48) + 7) not in html      # a run lives on its node
    assert asked == [("all", None, None)]
    # the filters go to cluster_runs(); the state filter keeps only its runs
    html = text(c.get("/cluster?state=completed&workflow=app.bill&key=%3Cs"))
    assert asked[-1] == ("completed", "app.bill", "<s")
    assert set(re.findall(r'data-state="(\w+)" data-node-group', html)) == {"completed"}
    r = c.get("/cluster?state=nope")
    assert r.status_code == 400 and "state: one of" in hook(text(r), "flash-error")
    assert len(asked) == 2


# --- single-user mode, escaping ---------------------------------------------------

def test_single_user_mode(db: Db, tag: str) -> None:
    ra = db.start(A, "cf_dash.ok", f"{tag}-su")
    rb = db.start(B, "cf_dash.ok", f"{tag}-su")
    app = create_app({"SINGLE_USER_DSN": make_conninfo(db.base, user=A,
                                                       password=db.passwords[A])})
    try:
        c = app.test_client()
        r = c.get("/")
        assert r.status_code == 200 and hook(text(r), "whoami") == A
        assert "Sign out" not in text(r)
        assert c.get("/login").status_code == 303
        ids = run_ids(text(c.get(f"/runs?key={tag}-su")))
        assert ra in ids and rb not in ids
        # every browser (and every cookieless request) shares one connection
        for _ in range(3):
            assert app.test_client().get("/tasks").status_code == 200
        assert app.extensions["cf_sessions"].count() == 0
        pid = app.extensions["cf_single"].conn.info.backend_pid
        assert db.val("SELECT count(*) FROM pg_stat_activity WHERE usename = %s "
                      "AND application_name = 'chrono_forge dashboard'", (A,)) >= 1
        assert pid
    finally:
        shutdown(app)


def test_context_and_errors_rendered_escaped(db: Db, client_a: FlaskClient, tag: str) -> None:
    evil = "<script>alert('x')</script>"
    rid = db.start(A, "cf_dash.flaky", f"{tag}-{evil}",
                   {"flag": "never", "message": f"boom {evil}", "context": {evil: evil}})
    db.wait_state(rid, "stalled")
    for url in (f"/runs/{rid}", f"/runs?key={tag}", f"/runs/{rid}/retry", "/failures",
                "/failures?class=P0001"):
        html = text(client_a.get(url))
        assert "<script>" not in html, url
    html = text(client_a.get(f"/runs/{rid}"))
    assert "&lt;script&gt;" in hook(html, "run-context")
    assert "boom &lt;script&gt;" in html
    assert "&lt;script&gt;" in hook(html, "run-key")
