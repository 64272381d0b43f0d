"""Fixtures for the dashboard's tests: the Flask test client against a real
cluster with chrono_forge workers on (PGHOST/PGPORT/PGUSER from the
environment, PGUSER a superuser).

The database is CF_TEST_DATABASE, default the one the workers serve
(chrono_forge.database): created if missing, with the extension.  Roles
(cluster-wide, LOGIN with a random password per test session):
cf_dash_tenant_a and cf_dash_tenant_b start runs; cf_dash_admin is a member
of chrono_forge_admin; cf_dash_bypass has BYPASSRLS (refused at sign-in).
The server must ask these roles for a password (pg_hba.conf scram-sha-256
or md5: pg_virtualenv's clusters do over TCP), or sign-in is refused.
"""

from __future__ import annotations

import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import psycopg.types.json
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrono_forge_dashboard import create_app, shutdown  # noqa: E402

A, B, ADMIN, BYPASS = "cf_dash_tenant_a", "cf_dash_tenant_b", "cf_dash_admin", "cf_dash_bypass"
HANG = 90.0     # seconds: a hang guard, never a timing assertion

SCHEMA_SQL = """
CREATE SCHEMA cf_dash;
GRANT USAGE ON SCHEMA cf_dash TO PUBLIC;
CREATE TABLE cf_dash.flags (flag text PRIMARY KEY);
GRANT ALL ON cf_dash.flags TO PUBLIC;
CREATE FUNCTION cf_dash.flag_set(args jsonb) RETURNS boolean LANGUAGE sql AS
  $$ SELECT EXISTS (SELECT 1 FROM cf_dash.flags WHERE flag = args->>'flag') $$;
-- Fails (with args->>'message') until its flag is set.
CREATE FUNCTION cf_dash.flaky_step(args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF NOT cf_dash.flag_set(args) THEN
        RAISE EXCEPTION '%', COALESCE(args->>'message', 'not yet');
    END IF;
    RETURN '{"ok": true}';
END $$;
-- Completes at once; its context is its args' "context" object.
CREATE PROCEDURE cf_dash.ok(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM chrono_forge.context_merge(COALESCE(args->'context', '{}'));
END $$;
CREATE PROCEDURE cf_dash.flaky(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    PERFORM chrono_forge.context_merge(COALESCE(args->'context', '{}'));
    CALL chrono_forge.durably_execute('cf_dash.flaky_step', r, name => 'flaky',
        retry_policy => chrono_forge.retry_policy(max_attempts => 1));
END $$;
CREATE PROCEDURE cf_dash.gate(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.continue_if('cf_dash.flag_set', name => 'gate');
END $$;
CREATE PROCEDURE cf_dash.on_event(args jsonb) LANGUAGE plpgsql AS $$
DECLARE p jsonb;
BEGIN
    CALL chrono_forge.await_event('go', p, timeout => '1 hour');
    PERFORM chrono_forge.context_set('payload', p);
END $$;
-- A saga that undoes its charge (0.12.0).
CREATE FUNCTION cf_dash.charge() RETURNS jsonb LANGUAGE sql AS $$ SELECT '{"charge": "ch_1"}'::jsonb $$;
CREATE FUNCTION cf_dash.refund(a jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_build_object('refunded', a->'result'->'charge') $$;
CREATE PROCEDURE cf_dash.saga(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cf_dash.charge', compensate => 'cf_dash.refund');
    CALL chrono_forge.compensate('out of stock');
END $$;
CREATE PROCEDURE cf_dash.fan(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('a');
    CALL chrono_forge.spawn_each('c', 'cf_dash.on_event', pg_catalog.format(
        'SELECT g AS item_key FROM pg_catalog.generate_series(1, %s) g', (args->>'n')::int));
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['a']);
END $$;
"""


@dataclass
class Db:
    name: str
    base: str                                 # conninfo of the database, no role
    su: psycopg.Connection[Any]               # superuser, autocommit
    passwords: dict[str, str] = field(default_factory=dict)

    def q(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.su.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def val(self, query: str, params: Any = None) -> Any:
        r = self.q(query, params)
        return r[0][0] if r else None

    def start(self, role: str, workflow: str, key: str, args: dict[str, Any] | None = None) -> int:
        """Start a run as role (its owner)."""
        with self.su.transaction():
            self.q(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)).as_string(self.su))
            rid = self.val("SELECT chrono_forge.start(%s, %s, %s)",
                           (workflow, key, psycopg.types.json.Jsonb(args or {})))
        return int(rid)

    def as_role(self, role: str, query: str, params: Any = None) -> Any:
        """One value of a query run as role."""
        with self.su.transaction():
            self.q(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)).as_string(self.su))
            return self.val(query, params)

    def state(self, run_id: int) -> str:
        return self.val("SELECT state::text FROM chrono_forge.workflows WHERE id = %s", (run_id,))

    def wait(self, cond: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + HANG
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"hang guard: {what} not reached in {HANG:.0f} s")
            time.sleep(0.05)

    def wait_state(self, run_id: int, *states: str) -> None:
        self.wait(lambda: self.state(run_id) in states, f"run {run_id} in {states}")

    def wait_step(self, run_id: int, step: str) -> None:
        """Until the run is parked (idle) with that step logged."""
        self.wait(lambda: bool(self.val(
            "SELECT w.state = 'idle' AND EXISTS (SELECT 1 FROM chrono_forge.execution_logs l "
            " WHERE l.workflow_id = w.id AND l.step_name = %s) "
            "FROM chrono_forge.workflows w WHERE w.id = %s", (step, run_id))),
            f"run {run_id} parked at {step}")


def _setup(su: psycopg.Connection[Any], passwords: dict[str, str]) -> None:
    for role, pw in passwords.items():
        ident = sql.Identifier(role)
        exists = su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        su.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(pw)))
    su.execute(sql.SQL("GRANT chrono_forge_admin TO {}").format(sql.Identifier(ADMIN)))
    su.execute(sql.SQL("ALTER ROLE {} BYPASSRLS").format(sql.Identifier(BYPASS)))


@pytest.fixture(scope="session")
def db() -> Iterator[Db]:
    import os
    with psycopg.connect("", autocommit=True) as boot:
        name = os.environ.get("CF_TEST_DATABASE") or \
            boot.execute("SELECT current_setting('chrono_forge.database')").fetchone()[0]
        if not boot.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            boot.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    su = psycopg.connect(make_conninfo("", dbname=name), autocommit=True)
    su.execute("CREATE EXTENSION IF NOT EXISTS chrono_forge")
    # an earlier session's runs (parked on events) would crowd the lists
    su.execute("DELETE FROM chrono_forge.workflows WHERE procedure LIKE 'cf\\_dash.%%'")
    su.execute("DROP SCHEMA IF EXISTS cf_dash CASCADE")
    passwords = {r: secrets.token_urlsafe(16) for r in (A, B, ADMIN, BYPASS)}
    _setup(su, passwords)
    su.execute(SCHEMA_SQL)
    d = Db(name, make_conninfo("", dbname=name), su, passwords)
    try:
        yield d
    finally:
        su.close()


@pytest.fixture(scope="session")
def app(db: Db) -> Iterator[Flask]:
    a = create_app({"DATABASE": db.base, "TESTING": True})
    yield a
    shutdown(a)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def sign_in(app: Flask, db: Db, role: str, password: str | None = None) -> tuple[FlaskClient, Any]:
    c = app.test_client()
    tok = csrf_of(c.get("/login").get_data(as_text=True))
    r = c.post("/login", data={"csrf_token": tok, "role": role,
                               "password": db.passwords[role] if password is None else password})
    return c, r


@pytest.fixture
def tag() -> str:
    """A key prefix of this test's own runs."""
    return "t" + secrets.token_hex(4)


@pytest.fixture(scope="session")
def client_a(app: Flask, db: Db) -> FlaskClient:
    c, r = sign_in(app, db, A)
    assert r.status_code == 303, r.get_data(as_text=True)
    return c


@pytest.fixture(scope="session")
def client_b(app: Flask, db: Db) -> FlaskClient:
    c, r = sign_in(app, db, B)
    assert r.status_code == 303, r.get_data(as_text=True)
    return c


@pytest.fixture(scope="session")
def client_admin(app: Flask, db: Db) -> FlaskClient:
    c, r = sign_in(app, db, ADMIN)
    assert r.status_code == 303, r.get_data(as_text=True)
    return c
