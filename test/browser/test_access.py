"""Who sees what, sign-in, CSRF and reaching every page: the dashboard in
headless Chromium against the data of test/browser/setup.sql."""

from __future__ import annotations

import re

from conftest import Db, Page

A_KEYS = ("a-order-", "a-stalled-", "a-doomed", "a-fanout", "a-holder")
STATES = ("idle", "running", "completed", "failed", "stalled", "cancelled")
NAV = ("/", "/runs", "/waiting", "/stranded", "/periodic", "/failures", "/tasks")
TABLES = {"/runs": "runs-table", "/waiting": "waiting-table", "/stranded": "stranded-table",
          "/periodic": "periodic-table", "/failures": "failures-table", "/tasks": "tasks-table"}


def top_level(db: Db, role: str) -> set[int]:
    return db.ids("owner = %s::regrole AND left(key, 1) <> '$'", role)


def number(text: str) -> int:
    digits = re.sub(r"[^0-9]", "", text)
    assert digits, f"no number in {text!r}"
    return int(digits)


def test_wrong_password_shows_the_form_again(page: Page) -> None:
    page.sign_in("tenant_a", password="not-the-password")
    page.check("refused", signed_in=False)
    assert page.css("[data-testid=flash-error]"), "no [data-testid=flash-error] after a wrong password"
    assert page.css("input[name=password]"), "the sign-in form is not shown again"
    page.get("/runs", signed_in=False)
    assert page.css("input[name=password]"), "/runs without signing in does not ask for a sign-in"
    assert not page.css("tr[data-run-id]")


def test_tenant_a_sees_only_its_runs(page: Page, db: Db) -> None:
    page.sign_in("tenant_a")
    page.signed_in_as("tenant_a")
    mine, everyone = top_level(db, "tenant_a"), db.ids("owner = 'tenant_a'::regrole")
    page.get("/runs", "runs")
    shown = page.run_rows("runs-table")
    assert shown and set(shown) <= everyone, f"runs not tenant_a's: {set(shown) - everyone}"
    page.get("/runs?key=a-", "runs-key-a")
    assert set(page.run_rows("runs-table")) == mine
    page.get("/runs?key=b-", "runs-key-b")
    assert not page.run_rows(), "tenant_a sees runs keyed b-"
    page.get(f"/runs/{db.run_id('a-doomed')}", "run-a-doomed")
    assert page.text("[data-testid=run-state]") == "failed"
    assert "warehouse is on fire" in page.source(), "the failed run's error is not on its page"
    for path in NAV:
        page.get(path)
        assert "tenant_b" not in page.source() and "b-order-" not in page.source(), \
            f"{path} shows something of tenant_b"


def test_tenant_b_sees_nothing_of_tenant_a(page: Page, db: Db) -> None:
    page.sign_in("tenant_b")
    page.signed_in_as("tenant_b")
    theirs = db.ids("owner = 'tenant_a'::regrole")
    page.get("/", "overview")
    counts = [number(e.text) for state in STATES for e in page.css(f"[data-testid=overview-{state}]")]
    assert sum(counts) == 3, f"tenant_b's overview counts {counts}, it has 3 runs"
    page.get("/runs", "runs")
    assert set(page.run_rows()) == top_level(db, "tenant_b")
    for path in NAV + ("/runs?key=a-", "/runs?state=stalled", "/runs?workflow=tenant_a.gated"):
        page.get(path)
        src = page.source()
        assert not set(page.run_rows()) & theirs, f"{path} lists tenant_a's runs"
        for secret in ("tenant_a", "a-order-", "a-stalled", "a-doomed", "a-fanout", "warehouse is on fire"):
            # (a filter's own value is echoed in its form: not a leak)
            assert secret not in src or secret in path, f"{path} shows {secret!r}"
    for key in ("a-stalled-1", "a-fanout"):
        rid = db.run_id(key)
        for path in (f"/runs/{rid}", f"/runs/{rid}/branches", f"/runs/{rid}/branches/items"):
            page.d.get(page.base + path)
            page.check(f"foreign-{key}" if path.endswith(str(rid)) else None, signed_in=False)
            src = page.source()
            assert not page.css("[data-testid=run-state]"), f"{path}: tenant_b sees a run state"
            for secret in ("tenant_a", key, "is closed", "item_"):
                assert secret not in src, f"{path} shows {secret!r} to tenant_b"


def test_tenant_b_cannot_act_on_tenant_a_run(page: Page, db: Db) -> None:
    """A valid CSRF token of tenant_b's own session does not reach tenant_a's run."""
    page.sign_in("tenant_b")
    page.signed_in_as("tenant_b")
    own = db.run_id("b-order-1")
    page.get(f"/runs/{own}/cancel", "own-cancel-confirm")
    token = page.one("input[name=csrf_token]").get_attribute("value")
    victim = db.run_id("a-stalled-2")
    for action in ("cancel", "retry", "wake", "force-unlock"):
        status, body = page.post_raw(f"/runs/{victim}/{action}", {"csrf_token": token, "confirm": "yes"})
        assert "tenant_a" not in body and "a-stalled-2" not in body
    assert db.state("a-stalled-2") == "stalled"
    assert db.one("SELECT count(*) FROM chrono_forge.execution_logs WHERE workflow_id = %s"
                  " AND (step_name LIKE '$workflow_cancelled$%%' OR step_name LIKE '$workflow_retry$%%')",
                  victim) == 0


def test_admin_sees_all(page: Page, db: Db) -> None:
    page.sign_in("dash_admin")
    page.signed_in_as("dash_admin")
    page.get("/runs?key=a-", "runs-key-a")
    assert set(page.run_rows("runs-table")) == top_level(db, "tenant_a")
    page.get("/runs?key=b-", "runs-key-b")
    assert set(page.run_rows("runs-table")) == top_level(db, "tenant_b")
    rid = db.run_id("b-order-1")
    page.get(f"/runs/{rid}", "run-b-order-1")
    assert page.text("[data-testid=run-key]") == "b-order-1"
    assert "tenant_b.invoice" in page.text("[data-testid=run-workflow]")
    assert page.text("[data-testid=run-state]") == "completed"
    rid = db.run_id("a-doomed")
    page.get(f"/runs/{rid}", "run-a-doomed")
    assert page.text("[data-testid=run-state]") == "failed"
    assert "tenant_a.doomed" in page.text("[data-testid=run-workflow]")


def test_admin_sees_a_tenant_run_timeline_and_actions(page: Page, db: Db) -> None:
    """chrono_forge_admin is all an admin needs (operations.md): no USAGE
    on the tenant's schema, where its procedures live."""
    page.sign_in("dash_admin")
    rid = db.run_id("a-doomed")
    page.get(f"/runs/{rid}", "run-a-doomed")
    assert "warehouse is on fire" in page.source(), "the admin does not see the failed run's error"
    assert page.css("a[data-action=retry]"), "the admin is offered no retry of tenant_a's failed run"


def test_post_without_csrf_token_is_refused(page: Page, db: Db) -> None:
    page.sign_in("tenant_a")
    page.signed_in_as("tenant_a")
    rid = db.run_id("a-stalled-2")
    page.get(f"/runs/{rid}", "run")
    assert page.text("[data-testid=run-state]") == "stalled"
    for action, fields in (("cancel", {"confirm": "yes", "children": "on"}),
                           ("retry", {"confirm": "yes"}),
                           ("event", {"confirm": "yes", "name": "go", "payload": "{}"}),
                           ("cancel", {"confirm": "yes", "csrf_token": "forged"})):
        status, body = page.post_raw(f"/runs/{rid}/{action}", fields)
        assert status == 400, f"POST /runs/{rid}/{action} {sorted(fields)}: HTTP {status}"
        assert "CSRF" in body
    # The same from a form the page did not make, submitted by the browser.
    page.d.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "const i = document.createElement('input'); i.name = 'confirm'; i.value = 'yes'; f.appendChild(i);"
        "document.body.appendChild(f); f.submit();", f"/runs/{rid}/cancel")
    page.check("refused", signed_in=False)
    assert "CSRF" in page.d.find_element("tag name", "body").text
    assert db.state("a-stalled-2") == "stalled"
    assert db.one("SELECT count(*) FROM chrono_forge.execution_logs WHERE workflow_id = %s"
                  " AND (step_name LIKE '$workflow_cancelled$%%' OR step_name LIKE '$workflow_retry$%%')",
                  rid) == 0
    assert db.one("SELECT count(*) FROM chrono_forge.events WHERE workflow_id = %s", rid) == 0


def test_every_page_within_two_clicks_of_the_overview(page: Page) -> None:
    page.sign_in("dash_admin")
    page.get("/")
    page.shot("overview", full=True)
    assert page.css("[data-testid=throughput-chart] svg, svg[data-testid=throughput-chart]"), \
        "no inline SVG throughput chart on the overview"
    assert any(page.css(f"[data-testid=overview-{state}]") for state in STATES)
    hrefs = {a.get_attribute("href") for a in page.css("nav a")}
    paths = {re.sub(r"^https?://[^/]+", "", h).split("?")[0] for h in hrefs if h}
    assert set(NAV) <= paths, f"the nav lacks {set(NAV) - paths}"
    for path in NAV[1:]:
        page.get("/")
        page.click(f"nav a[href='{path}'], nav a[href='{page.base}{path}']", path.strip("/"))
        assert page.path() == path
        assert page.css(f"[data-testid={TABLES[path]}]"), f"{path}: no [data-testid={TABLES[path]}]"
        if path == "/waiting":
            tile = page.text("[data-testid=waiting-task]")
            assert len(tile.splitlines()) == 2, f"the task tile reads {tile!r}: number and label run together"
        if path == "/failures":
            assert page.css("[data-testid=outcomes-chart] svg, svg[data-testid=outcomes-chart]"), \
                "no inline SVG outcomes chart on /failures"
            page.shot("failures-full", full=True)
    # Second click: a run from the list.
    page.get("/")
    page.click("nav a[href='/runs']")
    page.click("[data-testid=runs-table] tr[data-run-id] a[href^='/runs/']", "a-run")
    assert page.css("[data-testid=run-state]")
    # Signing out ends the session.
    page.click("form[action$='/logout'] [type=submit]", signed_in=False)
    page.get("/runs", signed_in=False)
    assert page.css("input[name=password]") and not page.css("tr[data-run-id]")


def test_branch_two_clicks_from_the_overview(page: Page, db: Db) -> None:
    """The overview's fan-outs link each branch: its children in one click."""
    page.sign_in("tenant_a")
    page.get("/")
    rid = db.run_id("a-fanout")
    page.click(f"[data-testid=fanouts-table] a[href='/runs/{rid}/branches/items']", "fanout-branch")
    assert page.path() == f"/runs/{rid}/branches/items"
    assert page.css("[data-testid=children-table] tr[data-run-id]")
    assert page.css("[data-testid=branch-count-completed]")
