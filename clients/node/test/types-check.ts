// Compiled (never run) by test/types.test.js: the README's uses of the
// API must type-check against src/index.d.ts.
import { Worker, Client, NonRetryableError, TaskAbortedError, type Task } from '../src/index.js';

const worker = new Worker({ connectionString: 'postgresql://localhost/app', queues: ['mail'], concurrency: 24 });
worker.task('send_receipt', async (task: Task, { signal }) => {
  if (signal.aborted) throw signal.reason as TaskAbortedError;
  if (task.attempt > 3) throw new NonRetryableError('gave up');
  return { sent: task.args.to as string, key: task.idempotencyKey };
});
worker.on('task:complete', ({ task, recorded }) => { const n: number = task.id; void n; void recorded; });
await worker.start();
await worker.stop({ grace: 1000 });

const client = new Client({ host: '/tmp', port: 5432 });
const id: number = await client.start('orders', 'o-1', { total: 5 });
const sent: boolean = await client.sendEvent('orders', 'o-1', 'paid', { ok: true });
const out = await client.waitForRun('orders', 'o-1', { timeout: 5000 });
const state: 'completed' | 'failed' | 'stalled' | 'cancelled' | 'compensated' | 'idle' | 'running' = out.state;
void id; void sent; void state;
await client.end();
