// The README's worker: handles the send_receipt steps of queue 'mail'.
//   node examples/worker.mjs      (PGHOST, PGPORT, PGUSER, PGDATABASE from the environment)
// Stop it with Ctrl-C (or SIGTERM): tasks in flight finish first.
import { Worker, NonRetryableError } from '@chrono-forge/client';

const worker = new Worker({
  connectionString: process.env.DATABASE_URL, // unset: the PG* environment variables
  queues: ['mail'],
  concurrency: 24,
  handleSignals: true,                        // SIGTERM/SIGINT: stop claiming, finish, exit
  logger: console,
});

worker.task('send_receipt', async (task, { signal }) => {
  const { order_id, email } = task.args;
  if (!email) throw new NonRetryableError(`order ${order_id} has no email`); // the run stalls now
  await new Promise((resolve) => setTimeout(resolve, 100));                 // the outside call
  signal.throwIfAborted();                    // the run was cancelled meanwhile
  return { sent_to: email, receipt_id: task.idempotencyKey };              // recorded once
});

await worker.start();
