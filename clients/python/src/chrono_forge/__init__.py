"""chrono_forge: task workers and a run client for chrono_forge, the
PostgreSQL extension that runs durable workflows inside the database.

A workflow step written with ``CALL chrono_forge.run_task(step, queue, ...)``
is worked by a :class:`Worker` in any process that can reach the database;
:class:`Client` starts runs, sends events and waits for runs.
"""

from chrono_forge.client import Client, RunResult
from chrono_forge.task import NonRetryable, Task
from chrono_forge.worker import Handler, Worker

__all__ = ["Client", "Handler", "NonRetryable", "RunResult", "Task", "Worker"]
__version__ = "0.7.0"
