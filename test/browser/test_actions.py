"""The dashboard's actions and its branch view in headless Chromium: a
stalled run retried from its page, a branch of 1,000 children paged
through, a parent cancelled with its children (data: test/browser/setup.sql)."""

from __future__ import annotations

import re

from conftest import Db, Page, wait_until

MAX_PAGES = 100     # a bound on paging loops, not an expectation


def test_stalled_run_retried_from_its_page_completes(page: Page, db: Db) -> None:
    page.sign_in("tenant_a")
    page.signed_in_as("tenant_a")
    rid = db.run_id("a-stalled-1")
    page.get(f"/runs/{rid}")
    assert page.text("[data-testid=run-state]") == "stalled"
    assert "a-stalled-1" in page.text("[data-testid=run-key]")
    assert "gate a-stalled-1 is closed" in page.source(), "the timeline does not show the step's error"
    page.open_details()
    page.shot("timeline-stalled", full=True)
    # With the details open, every step name still sits on one line.
    lines = page.d.execute_script(
        "return [...document.querySelectorAll('[data-testid=timeline-table] tbody td:nth-child(2)')]"
        ".map(td => { const r = document.createRange(); r.selectNodeContents(td);"
        " return [td.textContent.trim(), new Set([...r.getClientRects()].map(x => Math.round(x.top))).size]; })")
    assert lines and all(n == 1 for _, n in lines), f"step names broken over lines: {lines}"
    # The operator's fix, then the retry through the page.
    db.conn.execute("UPDATE tenant_a.gates SET open = true WHERE name = 'a-stalled-1'")
    page.click("a[data-action=retry]")
    assert page.path() == f"/runs/{rid}/retry"
    page.confirm("retry")
    assert page.path() == f"/runs/{rid}"
    assert page.css("[data-testid=flash]"), "no [data-testid=flash] after the retry"
    assert not page.css("[data-testid=flash-error]"), page.text("[data-testid=flash-error]")
    page.reload_until("a-stalled-1 completed on its page",
                      lambda: page.text("[data-testid=run-state]") == "completed")
    page.shot("timeline-completed", full=True)
    assert db.state("a-stalled-1") == "completed"


def children_page(page: Page) -> list[tuple[int, str]]:
    rows = page.css("[data-testid=children-table] tr[data-run-id]")
    assert rows, f"{page.d.current_url}: no children rows"
    return [(int(r.get_attribute("data-run-id")), r.get_attribute("data-state")) for r in rows]


def test_branch_of_1000_children_counts_and_pages(page: Page, db: Db) -> None:
    page.sign_in("tenant_a")
    rid = db.run_id("a-fanout")
    children = db.children("a-fanout", "items")
    assert len(children) == 1000
    page.get(f"/runs/{rid}", "run")
    page.shot("run-full", full=True)
    page.get(f"/runs/{rid}/branches", "branches")
    assert "items" in page.source()
    # From the run's page, one click to the branch.
    page.get(f"/runs/{rid}")
    page.click(f"a[href$='/runs/{rid}/branches/items']")
    assert page.path() == f"/runs/{rid}/branches/items"
    page.shot("branch", full=True, height=1250)
    counts = {s: page.text(f"[data-testid=branch-count-{s}]") for s in ("completed", "stalled")}
    assert "990" in counts["completed"].replace(",", ""), counts
    assert re.search(r"\b10\b", counts["stalled"]), counts
    # Blocked children first, then forward to the last page, then back.
    pages = [children_page(page)]
    assert [s for _, s in pages[0][:10]] == ["stalled"] * 10, pages[0][:12]
    while page.css("a[rel=next]") and len(pages) < MAX_PAGES:
        page.click("a[rel=next]", f"next-{len(pages) + 1}" if len(pages) < 3 else None)
        pages.append(children_page(page))
    seen = [i for p in pages for i, _ in p]
    assert len(seen) == len(set(seen)), "a child is listed on two pages"
    assert set(seen) == db.ids("key = ANY(%s)", list(children)), "paging forward misses children"
    assert len(pages) > 1
    for back in range(len(pages) - 2, -1, -1):
        page.click("a[rel=prev]", "prev-1" if back == 0 else None)
        assert children_page(page) == pages[back], f"page {back + 1} differs going back"


def test_branch_first_page_reached_back_has_no_empty_previous(page: Page, db: Db) -> None:
    """Back on the first page, a previous-page link (if any) must not lead
    to an empty page with no way on."""
    page.sign_in("tenant_a")
    page.get(f"/runs/{db.run_id('a-fanout')}/branches/items")
    first = children_page(page)
    page.click("a[rel=next]")
    page.click("a[rel=prev]")
    assert children_page(page) == first
    if page.css("a[rel=prev]"):
        page.click("a[rel=prev]", "before-first")
        assert page.css("[data-testid=children-table] tr[data-run-id]"), \
            "the first page, reached back, offers a previous page, and it is empty"


def test_cancel_with_children(page: Page, db: Db) -> None:
    page.sign_in("tenant_a")
    rid = db.run_id("a-holder")
    kids = db.children("a-holder", "kids")
    assert len(kids) == 3 and set(kids.values()) <= {"idle", "running"}, kids
    page.get(f"/runs/{rid}", "run")
    page.click("a[data-action=cancel]")
    assert page.path() == f"/runs/{rid}/cancel"
    page.confirm("cancel", tick="children")
    assert page.path() == f"/runs/{rid}"
    assert page.css("[data-testid=flash]"), "no [data-testid=flash] after the cancel"
    page.reload_until("a-holder cancelled on its page",
                      lambda: page.text("[data-testid=run-state]") == "cancelled")
    wait_until("a-holder's children cancelled",
               lambda: set(db.children("a-holder", "kids").values()) == {"cancelled"})
    page.get(f"/runs/{rid}/branches/kids", "branch")
    assert "3" in page.text("[data-testid=branch-count-cancelled]")
    assert {s for _, s in children_page(page)} == {"cancelled"}


def test_send_event_wake_and_force_unlock(page: Page, db: Db) -> None:
    page.sign_in("tenant_a")
    rid = db.run_id("a-waiter")
    page.get(f"/runs/{rid}", "run")
    # An idle run: wake, send an event, cancel; nothing else applies.
    offered = {a.get_attribute("data-action") for a in page.css("a[data-action]")}
    assert offered == {"wake", "event", "cancel"}, offered
    page.click("a[data-action=wake]")
    assert page.path() == f"/runs/{rid}/wake"
    page.confirm("wake")
    assert page.path() == f"/runs/{rid}"
    assert page.css("[data-testid=flash]") and not page.css("[data-testid=flash-error]"), "wake"
    # Force unlock is not offered on an idle run; its URL still answers,
    # and the database declines (the run holds no lock).
    page.get(f"/runs/{rid}/force-unlock")
    page.confirm("force-unlock")
    assert "Not unlocked" in page.text("[data-testid=flash]")
    page.click("a[data-action=event]")
    assert page.path() == f"/runs/{rid}/event"
    page.one("[name=name]").send_keys("go")
    payload = page.one("[name=payload]")
    payload.clear()
    payload.send_keys('{"by": "the browser test"}')
    page.confirm("event")
    assert page.css("[data-testid=flash]"), "no [data-testid=flash] after the event"
    page.reload_until("a-waiter completed on its page",
                      lambda: page.text("[data-testid=run-state]") == "completed")
    page.shot("completed", full=True)
    assert db.one("SELECT context->'got'->>'by' FROM chrono_forge.workflows WHERE id = %s",
                  rid) == "the browser test"


def test_retry_blocked_children(page: Page, db: Db) -> None:
    """Last: the fan-out's ten stalled children run again (and stall again)."""
    page.sign_in("tenant_a")
    rid = db.run_id("a-fanout")
    page.get(f"/runs/{rid}/branches/items")
    page.click("a[href$='/retry-blocked'], form[action$='/retry-blocked'] [type=submit]")
    assert page.path() == f"/runs/{rid}/branches/items/retry-blocked"
    page.confirm("retry-blocked")
    assert page.css("[data-testid=flash]") and not page.css("[data-testid=flash-error]")
    assert "10" in page.text("[data-testid=flash]")
    pid = db.run_id("a-fanout")
    wait_until("ten children retried", lambda: db.one(
        "SELECT count(DISTINCT l.workflow_id) FROM chrono_forge.execution_logs l"
        " JOIN chrono_forge.workflows c ON c.id = l.workflow_id"
        " WHERE left(c.key, length(%s)) = %s AND l.step_name LIKE '$workflow_retry$%%'",
        f"${pid}$a-fanout$items$", f"${pid}$a-fanout$items$") == 10)
