"""A worker process for the tests that kill or signal it:
    python3 worker_proc.py CONNINFO QUEUE STEP MODE
MODE "hang": the handler records its attempt, then waits (for SIGKILL);
MODE "ok": it records its attempt and returns {"attempt": n};
MODE "gate:PATH": it records its attempt, waits for file PATH, returns.
Effects go to cf_pytest.effects, one row per (idempotency key, attempt).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import psycopg  # noqa: E402

from chrono_forge import Task, Worker  # noqa: E402


def main() -> None:
    conninfo, queue, step, mode = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"worker_proc {os.getpid()}: %(levelname)s %(message)s")
    worker = Worker(conninfo, [queue], concurrency=4, poll_interval=0.5, grace_period=60)

    @worker.task(step)
    def handle(task: Task) -> dict[str, int]:
        with psycopg.connect(conninfo, autocommit=True) as c:
            c.execute("INSERT INTO cf_pytest.effects VALUES (%s, %s, %s)",
                      (task.idempotency_key, task.attempt, f"{mode}:{os.getpid()}"))
        if mode == "hang":
            time.sleep(3600)
        elif mode.startswith("gate:"):
            gate = Path(mode[5:])
            while not gate.exists():
                time.sleep(0.05)
        return {"attempt": task.attempt}

    worker.run()


if __name__ == "__main__":
    main()
