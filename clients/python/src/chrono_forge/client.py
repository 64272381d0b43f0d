"""Client: start runs, send events, cancel, retry and wait for runs.

Each call is one autocommitted statement on one connection (opened on first
use, reopened after it is lost), so a run started here is due to the
workers as soon as the call returns.  Calls are serialized by a lock: use
one Client per thread that waits with wait_for_run() while others start.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class RunResult:
    """What wait_for_run() returns: the run's state ('completed', 'failed',
    'cancelled', 'compensated' (chrono_forge 0.12.0), 'stalled', or a live
    state when the timeout passed), its
    context, its last error if any, and the result a completed run set
    with set_result() (None before chrono_forge 0.10.0)."""

    state: str
    context: Any
    error_class: str | None
    error_message: str | None
    result: Any = None


def _interval(seconds: float | timedelta | None) -> timedelta | None:
    if seconds is None or isinstance(seconds, timedelta):
        return seconds
    return timedelta(seconds=seconds)


class Client:
    """A connection to a chrono_forge database for starting and watching runs."""

    def __init__(self, conninfo: str = "") -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._conninfo, autocommit=True)
            try:
                return self._conn.execute(sql, params).fetchone()
            except psycopg.OperationalError:
                # The connection may be gone: the next call opens a new one.
                self._conn.close()
                self._conn = None
                raise

    def start(self, workflow: str, key: str, args: Any = None,
              options: dict[str, Any] | None = None) -> int:
        """chrono_forge.start(): returns the run's id."""
        row = self._one("SELECT chrono_forge.start(%s, %s, %s, %s)",
                        (workflow, key, Jsonb({} if args is None else args),
                         Jsonb(options or {})))
        assert row is not None
        return int(row[0])

    def send_event(self, workflow: str, key: str, name: str,
                   payload: Any = None) -> bool:
        """chrono_forge.send_event(): true if the event was recorded."""
        row = self._one("SELECT chrono_forge.send_event(%s, %s, %s, %s)",
                        (workflow, key, name,
                         None if payload is None else Jsonb(payload)))
        assert row is not None
        return bool(row[0])

    def cancel(self, workflow: str, key: str, reason: str | None = None,
               with_children: bool = False) -> int:
        """chrono_forge.cancel(): the number of runs cancelled; their open
        tasks are cancelled too (a running handler sees it at its next
        heartbeat)."""
        row = self._one("SELECT chrono_forge.cancel(%s, %s, %s, %s)",
                        (workflow, key, reason, with_children))
        assert row is not None
        return int(row[0])

    def retry(self, workflow: str, key: str) -> None:
        """chrono_forge.retry() of a stalled or failed run."""
        self._one("SELECT chrono_forge.retry(%s, %s)", (workflow, key))

    def wait_for_run(self, workflow: str, key: str,
                     timeout: float | timedelta | None = None) -> RunResult:
        """chrono_forge.wait_for_run(): blocks in the server (no polling)
        until the run is terminal or stalls, or the timeout (seconds)
        passes; returns its state then."""
        # Every column: the result column exists from 0.10.0 on.
        row = self._one("SELECT * FROM chrono_forge.wait_for_run(%s, %s, %s)",
                        (workflow, key, _interval(timeout)))
        assert row is not None
        return RunResult(state=row[0], context=row[1], error_class=row[2],
                         error_message=row[3], result=row[4] if len(row) > 4 else None)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
