"""The task a handler receives, and the exception for permanent failures."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class NonRetryable(Exception):
    """Raise it (or a subclass) from a handler for a failure that no retry
    can fix: the step fails at once, whatever its retry policy, and the run
    stalls with this exception's class name as its error class."""


@dataclass
class Task:
    """One claimed attempt of an external step.

    ``idempotency_key`` is the same on every attempt of the task: pass it to
    outside APIs so a handler that runs twice (at-least-once) has its effect
    once.  ``cancelled`` is set when a heartbeat finds the run cancelled or
    the claim lost (the lease expired and the task was offered again): the
    handler should stop; whatever it returns then is not recorded.
    """

    id: int
    claim_token: uuid.UUID
    queue: str
    step: str
    workflow: str
    key: str
    args: Any
    attempt: int
    lease_until: datetime
    timeout_at: datetime | None
    idempotency_key: str
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    def is_cancelled(self) -> bool:
        """True once the run was cancelled or this claim was lost."""
        return self.cancelled.is_set()
