"""Fixtures for the dashboard's browser tests (run by test/browser/run).

Owns: the headless Chromium driven by Selenium through Debian's
/usr/bin/chromedriver (window 1366x900, one browser per test), the page
helper that signs in, follows the contract's markup hooks, checks each page
for a server error and saves a PNG screenshot of every page a test visits
to test/results/screenshots/, and a superuser connection to the test
database for what the tests check behind the browser.

Environment (from the runner): CF_DASHBOARD_URL, CF_TEST_DATABASE,
CF_BROWSER_PASSWORD_BASE (a role's password is BASE-role), PG* (superuser).
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

HANG = 90.0     # seconds: a hang bound, never a timing assertion
SHOTS = Path(__file__).resolve().parent.parent / "results" / "screenshots"
SERVER_ERROR = re.compile(r"Internal Server Error|Traceback \(most recent call last\)|"
                          r"werkzeug\.exceptions|jinja2\.exceptions")


def wait_until(what: str, cond: Callable[[], Any], timeout: float = HANG) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


class Db:
    """The test database, as a superuser (row-level security bypassed)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def one(self, query: str, *params: Any) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    def run_id(self, key: str) -> int:
        return int(self.one("SELECT id FROM chrono_forge.workflows WHERE key = %s", key))

    def state(self, key: str) -> str:
        return str(self.one("SELECT state::text FROM chrono_forge.workflows WHERE key = %s", key))

    def ids(self, where: str, *params: Any) -> set[int]:
        rows = self.conn.execute(f"SELECT id FROM chrono_forge.workflows WHERE {where}", params)
        return {int(r[0]) for r in rows}

    def children(self, parent_key: str, branch: str) -> dict[str, str]:
        """A top-level run's children in one branch: key -> state."""
        pid = self.run_id(parent_key)
        prefix = f"${pid}${parent_key}${branch}$"
        rows = self.conn.execute(
            "SELECT key, state::text FROM chrono_forge.workflows"
            " WHERE left(key, length(%s)) = %s", (prefix, prefix))
        return {str(k): str(s) for k, s in rows}


@pytest.fixture(scope="session")
def db() -> Iterator[Db]:
    with psycopg.connect(f"dbname={os.environ['CF_TEST_DATABASE']}", autocommit=True) as c:
        yield Db(c)


class Page:
    """One browser on the dashboard: navigation by the contract's hooks."""

    def __init__(self, driver: webdriver.Chrome, base: str, test: str) -> None:
        self.d = driver
        self.base = base.rstrip("/")
        self.test = test
        self.shots = 0

    # -- looking -------------------------------------------------------
    def css(self, selector: str) -> list[WebElement]:
        return self.d.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector: str) -> WebElement:
        found = self.css(selector)
        assert found, f"{self.path()}: no element matches {selector!r}"
        return found[0]

    def text(self, selector: str) -> str:
        return self.one(selector).text.strip()

    def source(self) -> str:
        return self.d.page_source

    def path(self) -> str:
        return urllib.parse.urlsplit(self.d.current_url).path

    def run_rows(self, table: str | None = None) -> dict[int, str]:
        """Run rows (tr[data-run-id]) on the page, or in one table: id -> state."""
        scope = f"[data-testid={table}] " if table else ""
        return {int(tr.get_attribute("data-run-id")): tr.get_attribute("data-state")
                for tr in self.css(f"{scope}tr[data-run-id]")}

    def shot(self, label: str, full: bool = False, height: int = 2400) -> Path:
        """A PNG of the page; full: the whole page, up to height px."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        name = re.sub(r"[^a-z0-9_-]+", "-", f"{self.test}-{self.shots:02d}-{label}".lower())
        out = SHOTS / f"{name}.png"
        if full:
            page = self.d.execute_script(
                "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
            self.d.set_window_size(1366, min(max(int(page) + 140, 900), height))
        self.d.save_screenshot(str(out))
        if full:
            self.d.set_window_size(1366, 900)
        return out

    def open_details(self) -> None:
        """Unfold every <details> (errors, results) for a screenshot."""
        self.d.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")

    def check(self, label: str | None = None, signed_in: bool = True) -> None:
        """No server error on the page; the nav and whoami when signed in."""
        src = self.source()
        assert not SERVER_ERROR.search(src), f"{self.path()}: a server error:\n{self.d.find_element(By.TAG_NAME, 'body').text[:2000]}"
        if signed_in:
            assert self.css("nav"), f"{self.path()}: no <nav>"
            assert self.css("[data-testid=whoami]"), f"{self.path()}: no [data-testid=whoami]"
        if label:
            self.shot(label)

    # -- moving --------------------------------------------------------
    def get(self, path: str, label: str | None = None, signed_in: bool = True) -> None:
        self.d.get(self.base + path)
        self.check(label, signed_in)

    def follow(self, element: WebElement) -> None:
        """Click what loads another page (a link, a form's button) and wait
        until it has loaded: the click may return while the browser still
        shows part of the old page or none of the new one, and a check
        then finds no <nav>."""
        old = self.d.find_element(By.TAG_NAME, "html")

        def loaded() -> bool:
            try:
                old.tag_name
                return False
            except StaleElementReferenceException:
                pass
            except WebDriverException as e:
                # Chromium may say so in its own words while it swaps the
                # documents: the old page is gone all the same.
                if "does not belong to the document" not in str(e):
                    raise
            return self.d.execute_script("return document.readyState") == "complete"
        element.click()
        wait_until("the next page to load", loaded)

    def click(self, selector: str, label: str | None = None, signed_in: bool = True) -> None:
        self.follow(self.one(selector))
        self.check(label, signed_in)

    def sign_in(self, role: str, password: str | None = None) -> None:
        if password is None:
            password = f"{os.environ['CF_BROWSER_PASSWORD_BASE']}-{role}"
        self.d.get(self.base + "/login")
        self.check(signed_in=False)
        self.one("input[name=role]").send_keys(role)
        self.one("input[name=password]").send_keys(password)
        self.follow(self.one("form button[type=submit]"))

    def signed_in_as(self, role: str) -> None:
        self.check()
        assert role in self.text("[data-testid=whoami]")

    def confirm(self, label: str, tick: str | None = None) -> None:
        """On a confirmation page: tick a checkbox if asked, then confirm."""
        self.check(f"{label}-confirm")
        if tick:
            box = self.one(f"input[name={tick}]")
            if not box.is_selected():
                box.click()
        self.follow(self.one("form button[data-testid=confirm]"))
        self.check(label)

    def post_raw(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        """POST as this browser's session (its cookies) but outside its
        forms: the status and body text."""
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in self.d.get_cookies())
        req = urllib.request.Request(self.base + path, method="POST",
                                     data=urllib.parse.urlencode(fields).encode(),
                                     headers={"Cookie": cookie,
                                              "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(req, timeout=HANG) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def reload_until(self, what: str, cond: Callable[[], Any]) -> Any:
        def look() -> Any:
            self.d.refresh()
            self.check()
            return cond()
        return wait_until(what, look)


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[webdriver.Chrome]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1366,900", "--hide-scrollbars", "--force-device-scale-factor=1",
              "--no-first-run", "--disable-extensions", "--lang=en-US"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.set_window_size(1366, 900)
    driver.set_page_load_timeout(HANG)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: webdriver.Chrome, request: pytest.FixtureRequest) -> Page:
    test = request.node.name.removeprefix("test_")
    return Page(browser, os.environ["CF_DASHBOARD_URL"], test)
