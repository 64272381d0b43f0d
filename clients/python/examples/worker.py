import logging
import os

from chrono_forge import NonRetryable, Task, Worker

logging.basicConfig(level=logging.INFO)
# An empty conninfo takes the PG* environment variables.
worker = Worker(os.environ.get("DATABASE_URL", ""), ["payments"], concurrency=8)


class CardDeclined(NonRetryable):
    """A permanent failure: the step fails at once, the run stalls."""


@worker.task("charge_card")
def charge_card(task: Task) -> dict[str, object]:
    cents = task.args["amount_cents"]
    if cents > 100_000:
        raise CardDeclined(f"{cents} cents is over the limit")
    # Same key on every attempt: the payment API charges once.
    return {"charge": f"ch_{task.idempotency_key}", "amount_cents": cents}


worker.run()  # until SIGTERM or SIGINT
