// The README's client: starts run order-1 of order_flow and waits for it.
//   node examples/start.mjs      (with examples/worker.mjs running)
import { Client } from '@chrono-forge/client';

const client = new Client(process.env.DATABASE_URL);
await client.start('order_flow', 'order-1', { order_id: 1, email: 'ann@example.com' });
const run = await client.waitForRun('order_flow', 'order-1', { timeout: 60000 });
console.log(run.state, run.context.receipt); // completed { sent_to: 'ann@example.com', receipt_id: '…' }
await client.end();
