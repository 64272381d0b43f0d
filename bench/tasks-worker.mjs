// A Node task worker process for bench/tasks.mjs (clients/node's Worker).
//   node bench/tasks-worker.mjs --queue Q --step S --concurrency N --mode noop|stamp|hold [--role R]
//        [--claim-delay MS] (the Worker's claimDelay; default: the client's)
// noop:  the handler returns at once.
// stamp: the handler returns at once and first writes one JSON line
//        {"task": id, "t": wall-clock ms} (performance.timeOrigin + now():
//        sub-millisecond, the system clock the server's timestamps use).
// hold:  the handler never returns; one JSON line {"held": id} per task.
// Prints {"ready": true} once it listens; SIGTERM stops it gracefully.
import { Worker } from '../clients/node/src/index.js';

const o = { queue: 'bench', step: 'noop', concurrency: 24, mode: 'noop', role: '', poll: 5000, 'claim-delay': -1 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const k = argv[i].replace(/^--/, '');
  o[k] = typeof o[k] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
}
const out = (x) => process.stdout.write(JSON.stringify(x) + '\n');
const worker = new Worker({
  database: process.env.CF_BENCH_DB ?? 'postgres',
  queues: [o.queue],
  concurrency: o.concurrency,
  pollInterval: o.poll,
  ...(o['claim-delay'] >= 0 ? { claimDelay: o['claim-delay'] } : {}),
  handleSignals: true,
  logger: { warn: console.error, error: console.error },
  application_name: `bench tasks worker ${o.mode}`,
  ...(o.role ? { options: `-c role=${o.role}` } : {}),
});
const handlers = {
  noop: async () => null,
  stamp: async (task) => {
    out({ task: task.id, t: performance.timeOrigin + performance.now() });
    return null;
  },
  hold: (task) => {
    out({ held: task.id });
    return new Promise(() => {});
  },
};
worker.task(o.step, handlers[o.mode]);
await worker.start();
out({ ready: true });
