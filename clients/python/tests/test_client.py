"""The Client (start, send_event, cancel, wait_for_run) and the README's
worker example, run as printed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
from conftest import HANG, OWNER, SRC, Db

from chrono_forge import Client

HERE = Path(__file__).resolve().parent.parent


def test_start_is_idempotent(db: Db, client: Client) -> None:
    key = f"k_{uuid.uuid4().hex[:8]}"
    run_id = client.start("cf_pytest.on_event", key)
    assert client.start("cf_pytest.on_event", key, {"ignored": True}) == run_id
    assert db.run_id("cf_pytest.on_event", key) == run_id
    assert client.cancel("cf_pytest.on_event", key, reason="test over") == 1


def test_send_event_and_wait(db: Db, client: Client) -> None:
    key = f"k_{uuid.uuid4().hex[:8]}"
    client.start("cf_pytest.on_event", key)
    # A short wait returns the live state (no result yet); the event then
    # completes the run, with the result it set.
    early = client.wait_for_run("cf_pytest.on_event", key, timeout=0.2)
    assert early.state in ("idle", "running")
    assert early.result is None
    assert client.send_event("cf_pytest.on_event", key, "go", {"n": 7})
    r = client.wait_for_run("cf_pytest.on_event", key, timeout=HANG)
    assert r.state == "completed"
    assert r.context["payload"] == {"n": 7}
    assert r.error_class is None
    assert r.result == {"doubled": 14}


def test_wait_for_a_cancelled_run(client: Client) -> None:
    key = f"k_{uuid.uuid4().hex[:8]}"
    client.start("cf_pytest.on_event", key)
    client.cancel("cf_pytest.on_event", key)
    assert client.wait_for_run("cf_pytest.on_event", key, timeout=HANG).state == "cancelled"


def readme_block(lang: str) -> str:
    text = (HERE / "README.md").read_text()
    m = re.search(rf"```{lang}\n(.*?)```", text, re.S)
    assert m, f"no {lang} block in the README"
    return m.group(1)


def test_readme_example_as_printed(db: Db) -> None:
    example = HERE / "examples" / "worker.py"
    assert readme_block("python") == example.read_text()
    key = f"order-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db.dsn(OWNER), autocommit=True) as c:
        c.execute("SET search_path = cf_pytest")
        c.execute(readme_block("sql").replace("order-1001", key))
    env = dict(os.environ, DATABASE_URL=db.dsn(OWNER), PYTHONPATH=str(SRC))
    proc = subprocess.Popen([sys.executable, str(example)], env=env)
    try:
        with Client(db.dsn(OWNER)) as client:
            r = client.wait_for_run("cf_pytest.checkout", key, timeout=HANG)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(HANG) == 0
    assert r.state == "completed"
    charge = r.context["charge"]
    assert charge["amount_cents"] == 1250
    assert charge["charge"].startswith("ch_")
