"""Fixtures for the Python client's tests: a real cluster with chrono_forge
workers on (PGHOST/PGPORT/PGUSER from the environment, PGUSER a superuser).

The tests use their own database, CF_TEST_DATABASE, default the one the
cluster's workers serve (chrono_forge.database): created if missing, with
the extension.  Roles (cluster-wide): cf_pytest_owner starts the runs and
owns schema cf_pytest (the workflow procedures, the effects table);
cf_pytest_member is a member of it; cf_pytest_stranger is not.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))

from chrono_forge import Client, Worker  # noqa: E402

OWNER, MEMBER, STRANGER = "cf_pytest_owner", "cf_pytest_member", "cf_pytest_stranger"
HANG = 90.0     # seconds: a hang guard, never a timing assertion

SCHEMA_SQL = """
CREATE SCHEMA cf_pytest AUTHORIZATION cf_pytest_owner;
SET ROLE cf_pytest_owner;
-- What handlers did: one row per (idempotency key, attempt).
CREATE TABLE cf_pytest.effects (
    idempotency_key text NOT NULL,
    attempt integer NOT NULL,
    worker text NOT NULL,
    PRIMARY KEY (idempotency_key, attempt));
GRANT ALL ON cf_pytest.effects TO PUBLIC;
-- One task step, its step and queue names from the args; its result
-- (the INOUT one) kept in the context under "result".
CREATE PROCEDURE cf_pytest.one_task(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.run_task(step => args->>'step', queue => args->>'queue',
        result => r, args => COALESCE(args->'task_args', '{}'),
        retry_policy => args->'retry_policy',
        lease => COALESCE(args->>'lease', '30 seconds')::interval);
    PERFORM chrono_forge.context_set('result', r);
END $$;
-- Waits for event "go", keeps its payload; its result: the payload's n doubled.
CREATE PROCEDURE cf_pytest.on_event(args jsonb) LANGUAGE plpgsql AS $$
DECLARE p jsonb;
BEGIN
    CALL chrono_forge.await_event('go', p, timeout => '1 hour');
    PERFORM chrono_forge.context_set('payload', p);
    CALL chrono_forge.set_result(jsonb_build_object('doubled', (p->>'n')::int * 2));
END $$;
RESET ROLE;
"""


def _conninfo(dbname: str, user: str | None = None) -> str:
    parts = [f"dbname={dbname}"]
    if user:
        parts.append(f"user={user}")
    return " ".join(parts)


@dataclass
class Db:
    """The test database: conninfo strings and a superuser connection."""
    name: str
    admin: psycopg.Connection[Any]

    def dsn(self, user: str | None = OWNER) -> str:
        return _conninfo(self.name, user)

    def one(self, query: str, *params: Any) -> Any:
        row = self.admin.execute(query, params).fetchone()
        return None if row is None else row[0]

    def wait_until(self, what: str, cond: Callable[[], bool], timeout: float = HANG) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def run_state(self, workflow: str, key: str) -> str | None:
        state = self.one("SELECT state::text FROM chrono_forge.workflows"
                         " WHERE workflow = %s AND key = %s", workflow, key)
        return None if state is None else str(state)

    def count(self, query: str, *params: Any) -> int:
        return int(self.one(query, *params))

    def wait_state(self, workflow: str, key: str, *states: str) -> str:
        self.wait_until(f"run {key} in {states}",
                        lambda: self.run_state(workflow, key) in states)
        state = self.run_state(workflow, key)
        assert state is not None
        return state

    def run_id(self, workflow: str, key: str) -> int:
        return int(self.one("SELECT id FROM chrono_forge.workflows"
                            " WHERE workflow = %s AND key = %s", workflow, key))


def _ensure_database(name: str) -> None:
    with psycopg.connect(_conninfo("postgres"), autocommit=True) as c:
        if c.execute("SELECT FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _reset(admin: psycopg.Connection[Any]) -> None:
    admin.execute("SET client_min_messages = warning")
    admin.execute("CREATE EXTENSION IF NOT EXISTS chrono_forge")
    admin.execute("DROP SCHEMA IF EXISTS cf_pytest CASCADE")
    for role in (MEMBER, STRANGER, OWNER):
        if admin.execute("SELECT FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None:
            admin.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        # pg_virtualenv clusters ask TCP clients for a password: the
        # superuser's one (PGPASSWORD) serves the test roles too.
        password = os.environ.get("PGPASSWORD")
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
    admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(OWNER), sql.Identifier(MEMBER)))
    admin.execute(SCHEMA_SQL)


@pytest.fixture(scope="session")
def db() -> Iterator[Db]:
    with psycopg.connect(_conninfo("postgres"), autocommit=True) as c:
        served = c.execute("SHOW chrono_forge.database").fetchone()
    assert served is not None, "chrono_forge is not loaded (shared_preload_libraries)"
    name = os.environ.get("CF_TEST_DATABASE") or str(served[0])
    _ensure_database(name)
    with psycopg.connect(_conninfo(name), autocommit=True) as admin:
        _reset(admin)
        d = Db(name, admin)
        d.wait_until("the chrono_forge workers", lambda: bool(d.one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'"
            " AND datname = current_database()")))
        yield d
        # Leave no run of these tests to the workers.
        admin.execute("SELECT chrono_forge.cancel(workflow, key) FROM chrono_forge.workflows"
                      " WHERE workflow LIKE 'cf\\_pytest.%%'"
                      " AND state::text IN ('idle', 'running', 'stalled')")


@pytest.fixture
def names(request: pytest.FixtureRequest) -> dict[str, str]:
    """Per-test queue, step and key prefix, so tests never see each other's tasks."""
    tag = f"{request.node.name[5:25]}_{uuid.uuid4().hex[:6]}"
    return {"queue": f"q_{tag}", "step": f"s_{tag}", "key": f"k_{tag}"}


@pytest.fixture
def client(db: Db) -> Iterator[Client]:
    with Client(db.dsn(OWNER)) as c:
        yield c


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """The worker's run() in a thread for the with block; stopped and
    joined at its end."""
    t = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False},
                         daemon=True)
    t.start()
    try:
        yield worker
    finally:
        worker.stop()
        t.join(HANG)
        assert not t.is_alive(), "the worker did not stop"


def start_one(client: Client, names: dict[str, str], key: str, **args: Any) -> None:
    """Start a cf_pytest.one_task run for the test's step and queue."""
    client.start("cf_pytest.one_task", key,
                 {"step": names["step"], "queue": names["queue"], **args})
