"""Server-side sessions of the dashboard: one database connection per
browser session, kept in this process's memory only.

The browser's signed cookie holds a random session id and the CSRF token,
nothing else.  The password typed at sign-in is used once to open the
connection and then dropped: it is not kept here, in the cookie, on disk
or in any log.  A session idle longer than the idle timeout is closed
(its connection too) by a sweeper thread and on its next use.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg


@dataclass
class Session:
    """One signed-in browser: its role and its own connection."""
    sid: str
    role: str
    conn: psycopg.Connection[Any]
    last_used: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    cluster: bool | None = None     # a distributed cluster? (asked once, for the navigation)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # closing a broken connection must not fail a sign-out
            pass


class SessionStore:
    """Sessions by id; every access is under one lock, connections are used
    under their session's own lock (one query at a time per browser)."""

    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def add(self, role: str, conn: psycopg.Connection[Any]) -> Session:
        s = Session(secrets.token_urlsafe(32), role, conn, self.clock())
        with self._lock:
            self._sessions[s.sid] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session of this id (its idle clock restarted), else None."""
        if not sid:
            return None
        now = self.clock()
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                return None
            if now - s.last_used > self.idle_seconds:
                del self._sessions[sid]
                expired = s
            else:
                s.last_used = now
                return s
        expired.close()
        return None

    def remove(self, sid: str | None) -> None:
        with self._lock:
            s = self._sessions.pop(sid, None) if sid else None
        if s is not None:
            s.close()

    def sweep(self) -> int:
        """Close every idle session; returns how many."""
        now = self.clock()
        with self._lock:
            # (a session in a request right now holds its lock: left alone)
            old = [s for s in self._sessions.values()
                   if now - s.last_used > self.idle_seconds and not s.lock.locked()]
            for s in old:
                del self._sessions[s.sid]
        for s in old:
            s.close()
        return len(old)

    def count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def start_sweeper(self, every: float = 30.0) -> None:
        if self._sweeper is not None:
            return

        def loop() -> None:
            while not self._stop.wait(every):
                self.sweep()

        self._sweeper = threading.Thread(target=loop, name="cf-dashboard-sweeper", daemon=True)
        self._sweeper.start()

    def close_all(self) -> None:
        self._stop.set()
        with self._lock:
            all_ = list(self._sessions.values())
            self._sessions.clear()
        for s in all_:
            s.close()
