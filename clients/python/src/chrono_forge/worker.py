"""Worker: claims the tasks of some queues and runs their handlers.

Threads and connections:
- the thread calling run() owns the LISTEN connection: idle, it blocks in
  select() on that socket (and on a wake-up pipe), so an idle worker sends
  nothing but the fallback poll every poll_interval seconds;
- claims and failures share one "ops" connection under a lock;
- a completer thread with its own connection records the handlers'
  results, those that finished while a statement was in flight together
  in the next one (one commit; each still fenced by its claim token);
- a heartbeat thread with its own connection extends the leases of the
  tasks in flight, at half the lease, and sets a task's ``cancelled`` event
  when the server answers 'cancelled' or 'lost';
- ``concurrency`` daemon threads run the handlers.  Daemon threads, so a
  handler still running after the grace period does not hold the process:
  its task is left to its lease.  A handler thread takes the next task
  once its handler returns, while the completer records the result: at
  most ``concurrency`` handlers run at once, and at most twice as many
  claimed tasks are held.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from queue import Empty, SimpleQueue
from types import FrameType
from typing import Any, TypeVar

import psycopg

from chrono_forge.task import NonRetryable, Task

CHANNEL = "chrono_forge_tasks"
MESSAGE_MAX = 10_000     # characters of an exception's text sent to fail_task

Handler = Callable[[Task], Any]
H = TypeVar("H", bound=Handler)

_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)

_CLAIM_SQL = (
    "SELECT task_id, claim_token, queue, step, workflow, key, args, attempt,"
    " lease_until, timeout_at, idempotency_key,"
    " extract(epoch FROM lease_until - now())::float8"
    " FROM chrono_forge.claim_tasks(%s::text[], %s, %s)")
_COMPLETE_SQL = "SELECT chrono_forge.complete_task(%s, %s, %s::jsonb)"
_FAIL_SQL = "SELECT chrono_forge.fail_task(%s, %s, %s, %s, %s)"
# Results that finished while a statement was in flight go in the next one.
_COMPLETE_MANY_SQL = (
    "SELECT c.ord, chrono_forge.complete_task(c.id, c.token, c.result)"
    " FROM ROWS FROM (pg_catalog.unnest(%s::bigint[]), pg_catalog.unnest(%s::uuid[]),"
    " pg_catalog.unnest(%s::jsonb[])) WITH ORDINALITY AS c(id, token, result, ord)")
_COMPLETION_BATCH_MAX = 200


@dataclass
class _InFlight:
    task: Task
    next_heartbeat: float       # time.monotonic() of the next heartbeat
    interval: float             # seconds between heartbeats
    returned: bool = False      # the handler returned: no more heartbeats


class _Backoff:
    """Delays between reconnection attempts: 0.5 s doubling up to a cap."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.delay = 0.5

    def reset(self) -> None:
        self.delay = 0.5

    def next(self) -> float:
        d = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return d


class Worker:
    """Runs the handlers of the steps of ``queues``.

    conninfo: a libpq connection string (the worker's role must be the
      owner of the runs, or a member of it, to see their tasks).
    concurrency: most handlers running at once; only free capacity is
      claimed.  A handler's slot frees when it returns, while its result
      is recorded (at most twice as many claimed tasks are held).
    lease: seconds a heartbeat extends a lease by (None: the task's own
      lease, as given to run_task).
    heartbeat_interval: seconds between heartbeats of a task (None: half
      its lease).
    poll_interval: seconds between fallback polls while idle (notifications
      wake the worker at once; the poll covers lost ones).
    grace_period: seconds in-flight handlers get to finish after a stop.
    """

    def __init__(self, conninfo: str, queues: Iterable[str], *,
                 concurrency: int = 10, lease: float | None = None,
                 heartbeat_interval: float | None = None,
                 poll_interval: float = 5.0, grace_period: float = 30.0,
                 max_reconnect_delay: float = 30.0, name: str | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.queues = list(queues)
        if not self.queues:
            raise ValueError("a Worker needs at least one queue")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.conninfo = conninfo
        self.concurrency = concurrency
        self.lease = lease
        self.heartbeat_interval = heartbeat_interval
        self.poll_interval = poll_interval
        self.grace_period = grace_period
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.log = logger or logging.getLogger("chrono_forge.worker")
        self._max_reconnect_delay = max_reconnect_delay
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # in-flight set changed
        self._inflight: dict[uuid.UUID, _InFlight] = {}     # claimed, outcome not recorded
        self._running = 0                                    # of those, handlers not returned
        self._jobs: SimpleQueue[Task | None] = SimpleQueue()
        self._results: SimpleQueue[tuple[Task, str] | None] = SimpleQueue()
        self._stopping = threading.Event()
        self._abort = threading.Event()      # a second signal: skip the grace
        self._closed = False
        self._ops: psycopg.Connection[Any] | None = None
        self._ops_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # Closed only with the Worker: a handler left running after the
        # grace period may still write its wake-up.
        weakref.finalize(self, os.close, self._wake_r)
        weakref.finalize(self, os.close, self._wake_w)

    # -- registration -------------------------------------------------------

    def task(self, step: str) -> Callable[[H], H]:
        """Decorator: ``@worker.task("charge_card")`` makes the function the
        handler of step "charge_card".  It gets a Task; its return value
        (JSON-serializable) becomes the step's result."""
        def register(fn: H) -> H:
            self.register(step, fn)
            return fn
        return register

    def register(self, step: str, handler: Handler) -> None:
        if step in self._handlers:
            raise ValueError(f"step {step!r} already has a handler")
        self._handlers[step] = handler

    # -- lifecycle ----------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; run() returns once in-flight handlers finish (or
        the grace period passes).  Safe from any thread or signal handler;
        a second call skips the rest of the grace period."""
        if self._stopping.is_set():
            self._abort.set()
        self._stopping.set()
        self._wake()

    def run(self, install_signal_handlers: bool = True) -> None:
        """Work until stop() (or SIGTERM/SIGINT, when called in the main
        thread with install_signal_handlers)."""
        restore = self._install_signals() if install_signal_handlers else {}
        threads = [threading.Thread(target=self._pool_loop, daemon=True,
                                    name=f"chrono_forge-handler-{i}")
                   for i in range(self.concurrency)]
        threads.append(threading.Thread(target=self._heartbeat_loop, daemon=True,
                                        name="chrono_forge-heartbeat"))
        threads.append(threading.Thread(target=self._complete_loop, daemon=True,
                                        name="chrono_forge-completer"))
        for t in threads:
            t.start()
        self.log.info("worker %s: queues %s, concurrency %d",
                      self.name, ", ".join(self.queues), self.concurrency)
        try:
            self._listen_loop()
            self._drain()
        finally:
            self._shutdown()
            for sig, old in restore.items():
                signal.signal(sig, old)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.log.info("worker %s: signal %d, stopping", self.name, signum)
            self.stop()
        return {sig: signal.signal(sig, on_signal)
                for sig in (signal.SIGTERM, signal.SIGINT)}

    def _drain(self) -> None:
        """Wait for the handlers in flight, at most grace_period seconds."""
        deadline = time.monotonic() + self.grace_period
        with self._lock:
            while self._inflight and not self._abort.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, 0.2))
            left_over = [f.task for f in self._inflight.values()]
        for task in left_over:
            self.log.warning("task %d (%s) still running at shutdown: left to its lease",
                             task.id, task.step)
            task.cancelled.set()

    def _shutdown(self) -> None:
        with self._lock:
            self._closed = True
            self._changed.notify_all()
        for _ in range(self.concurrency):
            self._jobs.put(None)
        self._results.put(None)
        with self._ops_lock:
            if self._ops is not None:
                self._ops.close()
                self._ops = None
        self.log.info("worker %s: stopped", self.name)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass    # the pipe is full (a wake-up is pending) or closed

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    # -- the listen loop ----------------------------------------------------

    def _listen_loop(self) -> None:
        backoff = _Backoff(self._max_reconnect_delay)
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    backoff.reset()
                    self._serve(conn)
            except _CONNECTION_ERRORS as e:
                delay = backoff.next()
                self.log.warning("worker %s: connection lost (%s); reconnecting in %.1f s",
                                 self.name, str(e).strip(), delay)
                self._sleep(delay)
            except psycopg.Error as e:
                # Not the connection: a missing extension, a revoked grant.
                # Keep trying, slowly, rather than die.
                delay = backoff.next()
                self.log.error("worker %s: claim failed (%s: %s); again in %.1f s",
                               self.name, type(e).__name__, str(e).strip(), delay)
                self._sleep(delay)

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        """Claim while there is work and capacity; otherwise block on the
        notifications, the wake-up pipe and the fallback poll's deadline."""
        want = True         # claim at once: notifications may have been missed
        next_poll = time.monotonic() + self.poll_interval
        sock = conn.pgconn.socket
        while not self._stopping.is_set():
            if time.monotonic() >= next_poll:
                want = True
            free = self._free()
            if want and free > 0:
                # A full batch means more may be due: claim again once
                # capacity frees.  Every claim counts as the poll.
                want = self._claim(free) == free
                next_poll = time.monotonic() + self.poll_interval
            timeout = max(0.0, next_poll - time.monotonic())
            ready, _, _ = select.select([sock, self._wake_r], [], [], timeout)
            if self._wake_r in ready:
                self._drain_pipe()
            if sock in ready:
                conn.pgconn.consume_input()     # raises if the server went away
                while (n := conn.pgconn.notifies()) is not None:
                    if n.extra.decode() in self.queues:
                        want = True

    def _drain_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _free(self) -> int:
        c = self.concurrency
        with self._lock:
            return max(0, min(c - self._running, 2 * c - len(self._inflight)))

    # -- the ops connection ---------------------------------------------------

    def _ops_query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """One autocommitted statement on the shared ops connection; on a
        connection error the connection is dropped (the next call opens a
        new one) and the error raised."""
        with self._ops_lock:
            if self._ops is None or self._ops.closed:
                self._ops = psycopg.connect(self.conninfo, autocommit=True)
            try:
                return self._ops.execute(sql, params).fetchall()
            except _CONNECTION_ERRORS:
                self._ops.close()
                self._ops = None
                raise

    def _claim(self, n: int) -> int:
        params = (self.queues, n, self.name)
        try:
            rows = self._ops_query(_CLAIM_SQL, params)
        except _CONNECTION_ERRORS:
            # The ops connection may have died while the LISTEN one lives
            # (terminated alone, or both and the LISTEN one is already
            # new): once more on a new connection before giving up.
            rows = self._ops_query(_CLAIM_SQL, params)
        now = time.monotonic()
        for r in rows:
            task = Task(id=r[0], claim_token=r[1], queue=r[2], step=r[3],
                        workflow=r[4], key=r[5], args=r[6], attempt=r[7],
                        lease_until=r[8], timeout_at=r[9], idempotency_key=r[10])
            lease = max(float(r[11]), 0.2)
            every = self.heartbeat_interval or lease / 2
            with self._lock:
                self._inflight[task.claim_token] = _InFlight(task, now + every, every)
                self._running += 1
                self._changed.notify_all()
            self.log.debug("claimed task %d (%s, attempt %d)", task.id, task.step, task.attempt)
            self._jobs.put(task)
        return len(rows)

    # -- handlers -------------------------------------------------------------

    def _pool_loop(self) -> None:
        while (task := self._jobs.get()) is not None:
            handed_over = False
            try:
                handed_over = self._execute(task)
            except Exception:   # never let a pool thread die
                self.log.exception("task %d: unexpected error in the worker", task.id)
            finally:
                if not handed_over:
                    self._finished(task)

    def _handler_returned(self, task: Task) -> None:
        """The handler's slot is free for the next claim (once per task);
        no heartbeat races its outcome."""
        with self._lock:
            f = self._inflight.get(task.claim_token)
            if f is None or f.returned:
                return
            f.returned = True
            f.next_heartbeat = float("inf")
            self._running -= 1
            self._changed.notify_all()
        self._wake()

    def _finished(self, task: Task) -> None:
        """The task's outcome is recorded (or left to its lease)."""
        with self._lock:
            self._inflight.pop(task.claim_token, None)
            self._changed.notify_all()
        self._wake()

    def _execute(self, task: Task) -> bool:
        """Runs the handler.  True if its result went to the completer,
        which finishes the task; false if the task ended here (a failure)."""
        handler = self._handlers.get(task.step)
        try:
            if handler is None:
                raise UnknownStep(f"no handler for step {task.step!r} in worker {self.name}")
            result = json.dumps(handler(task))
        except BaseException as e:  # SystemExit in a handler too: the thread lives on
            self._handler_returned(task)
            retryable = not isinstance(e, NonRetryable)
            self.log.warning("task %d (%s, attempt %d) failed: %s: %s", task.id,
                             task.step, task.attempt, type(e).__name__, e)
            self._report(task, _FAIL_SQL, (task.id, task.claim_token, type(e).__name__,
                                           _message(e), retryable))
            return False
        self._handler_returned(task)
        self._results.put((task, result))
        return True

    # -- the completer --------------------------------------------------------

    def _complete_loop(self) -> None:
        """Records the results the handlers returned: all those waiting in
        one statement, on the completer's own connection."""
        conn: psycopg.Connection[Any] | None = None
        try:
            while (batch := self._next_results()) is not None:
                try:
                    conn = self._complete_batch(conn, batch)
                except Exception:   # never let the completer die
                    self.log.exception("results of tasks %s: unexpected error in the worker;"
                                       " left to their leases", [t.id for t, _ in batch])
                finally:
                    for task, _ in batch:
                        self._finished(task)
        finally:
            if conn is not None:
                conn.close()

    def _next_results(self) -> list[tuple[Task, str]] | None:
        """The results waiting (blocking for the first); None once closed."""
        first = self._results.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < _COMPLETION_BATCH_MAX:
            try:
                item = self._results.get_nowait()
            except Empty:
                break
            if item is None:
                self._results.put(None)     # seen again after this batch
                break
            batch.append(item)
        return batch

    def _complete_batch(self, conn: psycopg.Connection[Any] | None,
                        batch: list[tuple[Task, str]]) -> psycopg.Connection[Any] | None:
        """One statement for the batch (of one, too); each on its own
        (self._report, on the ops connection) if that fails: a refused
        result fails that task alone, and a lost connection may have lost
        the statement (each is fenced, so one already recorded answers
        false).  Returns the connection to keep."""
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(self.conninfo, autocommit=True)
            rows = conn.execute(_COMPLETE_MANY_SQL, (
                [t.id for t, _ in batch], [t.claim_token for t, _ in batch],
                [r for _, r in batch])).fetchall()
            for ord_, recorded in rows:
                if not recorded:
                    self._stale(batch[ord_ - 1][0])
            return conn
        except psycopg.Error as e:
            self.log.debug("batched completion failed (%s); completing one by one", e)
            if isinstance(e, _CONNECTION_ERRORS) and conn is not None:
                conn.close()
                conn = None
        for task, result in batch:
            self._complete_one(task, result)
        return conn

    def _complete_one(self, task: Task, result: str) -> None:
        try:
            self._report(task, _COMPLETE_SQL, (task.id, task.claim_token, result))
        except psycopg.Error as e:     # e.g. a result over the size cap (CF012)
            self.log.warning("task %d: result refused: %s", task.id, e)
            self._report(task, _FAIL_SQL, (task.id, task.claim_token, type(e).__name__,
                                           _message(e), False))

    def _stale(self, task: Task) -> None:
        self.log.info("task %d: claim stale (lease lost or run cancelled): not recorded",
                      task.id)

    def _report(self, task: Task, sql: str, params: tuple[Any, ...]) -> None:
        """complete_task or fail_task, retried over lost connections while
        the claim may still be valid; 'false' means the claim was stale."""
        backoff = _Backoff(5.0)
        deadline = time.monotonic() + 60.0
        while True:
            with self._lock:
                if self._closed:
                    self.log.warning("task %d finished after shutdown: left to its lease", task.id)
                    return
            try:
                rows = self._ops_query(sql, params)
                break
            except _CONNECTION_ERRORS as e:
                if time.monotonic() > deadline or task.cancelled.is_set():
                    self.log.warning("task %d: could not report (%s): left to its lease", task.id, e)
                    return
                time.sleep(backoff.next())
        if not rows[0][0]:
            self._stale(task)

    # -- heartbeats -----------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        backoff = _Backoff(5.0)
        while True:
            with self._lock:
                due = self._due_heartbeats()
                if due is None:
                    break
            try:
                if due and conn is None:
                    conn = psycopg.connect(self.conninfo, autocommit=True)
                for f in due:
                    assert conn is not None
                    self._heartbeat(conn, f)
                backoff.reset()
            except _CONNECTION_ERRORS as e:
                self.log.warning("heartbeat connection lost (%s)", str(e).strip())
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(backoff.next())
        if conn is not None:
            conn.close()

    def _due_heartbeats(self) -> list[_InFlight] | None:
        """Waits (holding the condition) until a heartbeat is due; None once
        the worker is closed."""
        while not self._closed:
            now = time.monotonic()
            due = [f for f in self._inflight.values() if f.next_heartbeat <= now]
            if due:
                return due
            nexts = [f.next_heartbeat for f in self._inflight.values()
                     if f.next_heartbeat != float("inf")]
            self._changed.wait(min(nexts) - now if nexts else None)
        return None

    def _heartbeat(self, conn: psycopg.Connection[Any], f: _InFlight) -> None:
        extend = None if self.lease is None else timedelta(seconds=self.lease)
        try:
            row = conn.execute("SELECT chrono_forge.heartbeat_task(%s, %s, %s)",
                               (f.task.id, f.task.claim_token, extend)).fetchone()
            status = row[0] if row else None
        except _CONNECTION_ERRORS:
            raise
        except psycopg.Error as e:     # e.g. a bad extend: try again later
            self.log.error("task %d: heartbeat failed: %s", f.task.id, e)
            status = "ok"
        with self._lock:
            if f.task.claim_token not in self._inflight or f.returned:
                return      # finished meanwhile
            if self.lease is not None and self.heartbeat_interval is None:
                f.interval = self.lease / 2
            f.next_heartbeat = time.monotonic() + f.interval
            if status != "ok":
                f.next_heartbeat = float("inf")    # nothing more to extend
        if status != "ok":
            self.log.info("task %d (%s): heartbeat says %s", f.task.id, f.task.step, status)
            f.task.cancelled.set()


def _message(e: BaseException) -> str:
    """The failure's message as recorded: its text (the class name if it
    has none), cut to MESSAGE_MAX characters."""
    text = str(e) or type(e).__name__
    return text if len(text) <= MESSAGE_MAX else text[:MESSAGE_MAX] + "..."


class UnknownStep(NonRetryable):
    """A task whose step has no handler in this worker: it fails at once."""
