"""The Worker against a real cluster: success, retries by policy,
non-retryable failures, a SIGKILLed worker, graceful shutdown,
cancellation, and who may claim."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from conftest import HANG, MEMBER, OWNER, STRANGER, Db, running, start_one

from chrono_forge import Client, NonRetryable, Task, Worker

WF = "cf_pytest.one_task"
FAST_RETRY = {"max_attempts": 3, "base": 0, "cap": 0, "jitter": False}
WORKER_PROC = Path(__file__).resolve().parent / "worker_proc.py"


def fast_worker(db: Db, names: dict[str, str], user: str = OWNER, **kw: Any) -> Worker:
    kw.setdefault("poll_interval", 0.5)
    return Worker(db.dsn(user), [names["queue"]], **kw)


def step_results(db: Db, workflow: str, key: str, step: str) -> list[Any]:
    """The recorded results of the run's step (one row per step record)."""
    rows = db.admin.execute(
        "SELECT result FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w"
        " ON w.id = l.workflow_id WHERE w.workflow = %s AND w.key = %s"
        " AND l.step_name LIKE %s AND l.state::text = 'completed'",
        (workflow, key, "%" + step)).fetchall()
    return [r[0] for r in rows]


def task_pending(db: Db, workflow: str, key: str) -> bool:
    """The run's first pass wrote its task, not claimed yet."""
    return bool(db.one(
        "SELECT EXISTS (SELECT FROM chrono_forge.tasks t JOIN chrono_forge.workflows w"
        " ON w.id = t.workflow_id WHERE w.workflow = %s AND w.key = %s"
        " AND t.state = 'pending')", workflow, key))


def error_classes(db: Db, workflow: str, key: str) -> list[str]:
    """The classes of the run's failed attempts, as recorded: a worker's
    class that is not a SQLSTATE is recorded as CF027, leading the message."""
    rows = db.admin.execute(
        "SELECT CASE WHEN e.error_class = 'CF027' THEN split_part(e.error_message, ':', 1)"
        " ELSE e.error_class END FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w"
        " ON w.id = e.workflow_id WHERE w.workflow = %s AND w.key = %s"
        " AND e.step_name LIKE 'run\\_task$%%' ORDER BY e.id",
        (workflow, key)).fetchall()
    return [r[0] for r in rows]


def task_error(db: Db, workflow: str, key: str) -> tuple[str, str]:
    """The task's state and its last error class."""
    row = db.admin.execute(
        "SELECT t.state, t.error_class FROM chrono_forge.tasks t JOIN chrono_forge.workflows w"
        " ON w.id = t.workflow_id WHERE w.workflow = %s AND w.key = %s",
        (workflow, key)).fetchone()
    assert row is not None
    return row[0], row[1]


class Proc:
    """A worker_proc.py subprocess whose log lines are collected."""

    def __init__(self, db: Db, names: dict[str, str], mode: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, str(WORKER_PROC), db.dsn(OWNER), names["queue"], names["step"], mode],
            stderr=subprocess.PIPE, text=True)
        self.pid = self.popen.pid
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)
            sys.stderr.write(line)

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def stop(self, sig: int) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        rc = self.popen.wait(HANG)
        self._reader.join(HANG)
        return rc


def spawn(db: Db, names: dict[str, str], mode: str) -> Proc:
    return Proc(db, names, mode)


def test_success(db: Db, client: Client, names: dict[str, str]) -> None:
    key = names["key"]
    seen: list[Task] = []
    worker = fast_worker(db, names)

    @worker.task(names["step"])
    def charge(task: Task) -> dict[str, Any]:
        seen.append(task)
        return {"charged": task.args["amount"], "key": task.idempotency_key}

    with running(worker):
        start_one(client, names, key, task_args={"amount": 42})
        assert db.wait_state(WF, key, "completed", "failed", "stalled") == "completed"
    assert len(seen) == 1
    t = seen[0]
    assert (t.workflow, t.key, t.step, t.queue, t.attempt) == (WF, key, names["step"], names["queue"], 1)
    assert not t.is_cancelled()
    expected = {"charged": 42, "key": t.idempotency_key}
    context = db.one("SELECT context FROM chrono_forge.workflows WHERE workflow = %s AND key = %s",
                     WF, key)
    assert context["result"] == expected            # the INOUT result
    assert step_results(db, WF, key, names["step"]) == [expected]


def test_retry_by_policy(db: Db, client: Client, names: dict[str, str]) -> None:
    key = names["key"]
    attempts: list[tuple[int, str]] = []
    worker = fast_worker(db, names)

    @worker.task(names["step"])
    def flaky(task: Task) -> str:
        attempts.append((task.attempt, task.idempotency_key))
        if task.attempt < 3:
            raise ConnectionResetError(f"gateway reset (attempt {task.attempt})")
        return "ok"

    with running(worker):
        start_one(client, names, key, retry_policy=FAST_RETRY)
        assert db.wait_state(WF, key, "completed", "failed", "stalled") == "completed"
    assert [a for a, _ in attempts] == [1, 2, 3]
    assert len({k for _, k in attempts}) == 1       # one idempotency key for all attempts
    assert error_classes(db, WF, key) == ["ConnectionResetError"] * 2
    assert step_results(db, WF, key, names["step"]) == ["ok"]


class CardDeclined(NonRetryable):
    pass


def test_non_retryable(db: Db, client: Client, names: dict[str, str]) -> None:
    key = names["key"]
    calls: list[int] = []
    worker = fast_worker(db, names)

    @worker.task(names["step"])
    def charge(task: Task) -> None:
        calls.append(task.attempt)
        raise CardDeclined("insufficient funds")

    with running(worker):
        start_one(client, names, key, retry_policy=FAST_RETRY)
        assert db.wait_state(WF, key, "completed", "failed", "stalled") == "stalled"
    assert calls == [1]                             # no retry despite 3 attempts allowed
    assert error_classes(db, WF, key) == ["CardDeclined"]
    assert task_error(db, WF, key) == ("failed", "CardDeclined")
    assert step_results(db, WF, key, names["step"]) == []


def test_unknown_step_fails_at_once(db: Db, client: Client, names: dict[str, str]) -> None:
    key = names["key"]
    worker = fast_worker(db, names)      # no handler for the step
    with running(worker):
        start_one(client, names, key, retry_policy=FAST_RETRY)
        assert db.wait_state(WF, key, "completed", "failed", "stalled") == "stalled"
    assert error_classes(db, WF, key) == ["UnknownStep"]


def test_sigkill_in_flight(db: Db, client: Client, names: dict[str, str]) -> None:
    """Tasks held by a SIGKILLed worker are offered again after their lease;
    each handler attempt ran once and each step result is recorded once."""
    keys = [f"{names['key']}_{i}" for i in range(4)]
    victim = spawn(db, names, "hang")
    try:
        for k in keys:
            start_one(client, names, k, lease="2 seconds", retry_policy=FAST_RETRY)
        db.wait_until("4 tasks in flight in the victim", lambda:
                      db.count("SELECT count(*) FROM cf_pytest.effects WHERE worker = %s",
                             f"hang:{victim.pid}") == 4)
    finally:
        victim.stop(signal.SIGKILL)
    rescuer = spawn(db, names, "ok")
    try:
        for k in keys:
            assert db.wait_state(WF, k, "completed", "failed", "stalled") == "completed"
    finally:
        assert rescuer.stop(signal.SIGTERM) == 0
    ids = {db.run_id(WF, k) for k in keys}
    rows = db.admin.execute(
        "SELECT idempotency_key, attempt, worker FROM cf_pytest.effects"
        " WHERE worker IN (%s, %s) ORDER BY 1, 2",
        (f"hang:{victim.pid}", f"ok:{rescuer.pid}")).fetchall()
    by_key: dict[str, list[tuple[int, str]]] = {}
    for ik, attempt, w in rows:
        by_key.setdefault(ik, []).append((attempt, w.split(":")[0]))
    assert len(by_key) == 4
    for attempts in by_key.values():
        assert attempts == [(1, "hang"), (2, "ok")]     # the lease expiry was attempt 1
    for k in keys:
        assert step_results(db, WF, k, names["step"]) == [{"attempt": 2}]
    assert len(ids) == 4


def test_graceful_shutdown(db: Db, client: Client, names: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM while a handler runs: it finishes and its result is recorded;
    the worker claims nothing more (though it has capacity) and exits 0."""
    gate = tmp_path / "gate"
    first, second = f"{names['key']}_1", f"{names['key']}_2"
    proc = spawn(db, names, f"gate:{gate}")
    try:
        start_one(client, names, first)
        db.wait_until("the handler running",
                      lambda: db.count("SELECT count(*) FROM cf_pytest.effects WHERE worker = %s",
                                     f"gate:{gate}:{proc.pid}") == 1)
        proc.popen.send_signal(signal.SIGTERM)
        db.wait_until("the worker stopping", lambda: proc.logged("stopping"))
        start_one(client, names, second)      # due while the worker stops
        gate.touch()
        # It exits by itself once the handler's result is recorded (a second
        # signal now would skip the rest of the grace period).
        proc.popen.wait(HANG)
        assert proc.stop(signal.SIGTERM) == 0
    finally:
        if proc.popen.poll() is None:
            proc.stop(signal.SIGKILL)
    assert db.wait_state(WF, first, "completed", "failed", "stalled") == "completed"
    assert step_results(db, WF, first, names["step"]) == [{"attempt": 1}]
    assert db.one("SELECT count(*) FROM cf_pytest.effects WHERE worker = %s",
                  f"gate:{gate}:{proc.pid}") == 1           # only the first task ran
    assert db.run_state(WF, second) == "idle"
    client.cancel(WF, second)


def test_slot_frees_when_the_handler_returns(db: Db, client: Client,
                                             names: dict[str, str]) -> None:
    """A handler's slot frees when it returns, while its result is still
    being recorded; at most `concurrency` handlers run at once, and no more
    than twice as many claimed tasks are held."""
    k1, k2, k3 = (f"{names['key']}_{i}" for i in (1, 2, 3))
    # A transaction holding k1's task row: recording k1's result waits for
    # it, and so does every result queued behind that statement.
    holder = psycopg.connect(db.dsn(None))
    started: list[str] = []
    busy, most = 0, 0
    lock = threading.Lock()
    worker = fast_worker(db, names, concurrency=1)

    @worker.task(names["step"])
    def slot(task: Task) -> dict[str, Any]:
        nonlocal busy, most
        with lock:
            busy += 1
            most = max(most, busy)
            started.append(task.key)
        if task.key == k1:
            holder.execute("SELECT 1 FROM chrono_forge.tasks WHERE id = %s FOR UPDATE", (task.id,))
        with lock:
            busy -= 1
        return {"key": task.key}

    with running(worker):
        try:
            start_one(client, names, k1)
            db.wait_until("k1's handler", lambda: len(started) == 1)
            start_one(client, names, k2)
            start_one(client, names, k3)
            # k1's result waits for the holder, yet its slot is free: k2's
            # (or k3's: the engine makes their tasks due in either order)
            # handler runs (0.9.0: no claim until k1's result was recorded).
            db.wait_until("a second handler while k1's result waits", lambda: len(started) == 2)
            # Two results being recorded (twice the concurrency): no third claim.
            time.sleep(1.0)
            assert len(started) == 2 and started[0] == k1, started
        finally:
            holder.close()      # k1's row is free again, whatever happened
        for k in (k1, k2, k3):
            assert db.wait_state(WF, k, "completed", "failed", "stalled") == "completed"
    assert sorted(started) == [k1, k2, k3]
    assert most == 1


def test_cancel_seen_by_handler(db: Db, client: Client, names: dict[str, str]) -> None:
    key = names["key"]
    started, saw_cancel = threading.Event(), threading.Event()
    worker = fast_worker(db, names)

    @worker.task(names["step"])
    def long_job(task: Task) -> str:
        started.set()
        if task.cancelled.wait(HANG):
            saw_cancel.set()
            return "stopped"
        return "ran to the end"

    with running(worker):
        start_one(client, names, key, lease="2 seconds")
        assert started.wait(HANG)
        assert client.cancel(WF, key) == 1
        assert saw_cancel.wait(HANG), "the handler never saw the cancellation"
        assert db.wait_state(WF, key, "cancelled", "completed") == "cancelled"
    assert step_results(db, WF, key, names["step"]) == []


def test_only_members_of_the_owner_claim(db: Db, client: Client, names: dict[str, str]) -> None:
    key = names["key"]
    start_one(client, names, key)
    db.wait_until("the task written", lambda: task_pending(db, WF, key))
    # Asked directly, the stranger's claim comes back empty.
    with psycopg.connect(db.dsn(STRANGER), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM chrono_forge.claim_tasks(%s::text[], 10)",
                         ([names["queue"]],)).fetchone() == (0,)
    by: list[str] = []
    stranger, member = fast_worker(db, names, STRANGER), fast_worker(db, names, MEMBER)
    stranger.register(names["step"], lambda t: by.append(STRANGER))
    member.register(names["step"], lambda t: by.append(MEMBER))
    with running(stranger), running(member):
        assert db.wait_state(WF, key, "completed", "failed", "stalled") == "completed"
    assert by == [MEMBER]


def test_reconnects_after_lost_connections(db: Db, client: Client, names: dict[str, str]) -> None:
    """Every connection of an idle worker terminated: it reconnects (with
    backoff) and works the next task."""
    key = names["key"]
    app = f"cf_pytest_{names['queue']}"[:63]
    worker = Worker(f"{db.dsn(OWNER)} application_name={app}", [names["queue"]],
                    poll_interval=0.5, max_reconnect_delay=1.0)
    worker.register(names["step"], lambda t: "after reconnect")
    listening = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                 " AND query LIKE 'LISTEN%%'")
    with running(worker):
        db.wait_until("the worker listening", lambda: db.count(listening, app) == 1)
        db.admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE application_name = %s", (app,))
        db.wait_until("the worker listening again", lambda: db.count(listening, app) == 1)
        start_one(client, names, key)
        assert db.wait_state(WF, key, "completed", "failed", "stalled") == "completed"
    assert step_results(db, WF, key, names["step"]) == ["after reconnect"]
