// A worker process SIGKILLed with tasks in flight: the tasks are re-offered
// once their lease expires, another worker completes them, and each
// result is recorded once.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Worker } from '../src/index.js';
import {
  setupDatabase, conn, uniq, createTaskWorkflow, startRuns, waitRuns, effects, counter, guard, testLogger,
} from './lib.js';

before(setupDatabase);

test('SIGKILL of a worker holding tasks: re-offered after the lease, each result recorded once', async (t) => {
  const wf = uniq('nt_kill');
  const n = 6;
  await createTaskWorkflow(wf, {
    step: 'hold', queue: wf, lease: '2 seconds',
    policy: "chrono_forge.retry_policy(max_attempts => 5, base => '100 milliseconds', cap => '200 milliseconds')",
  });
  const child = spawn(process.execPath, [new URL('./fixtures/hold-worker.mjs', import.meta.url).pathname, wf, 'hold'],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => child.kill('SIGKILL'));
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal)));
  const ready = counter(1);
  const held = counter(n);
  createInterface({ input: child.stdout }).on('line', (line) => {
    const m = JSON.parse(line);
    if (m.ready) ready.push(m);
    else held.push(m);
  });
  await guard(ready.done, 60000, 'the child worker to listen');
  await startRuns(wf, n);
  const started = await guard(held.done, 60000, `the child to hold ${n} tasks`);
  assert.ok(started.every((s) => s.attempt === 1));
  child.kill('SIGKILL');
  assert.equal(await guard(exited, 60000, 'the child to die'), 'SIGKILL');

  const calls = [];
  const w = new Worker(conn({ queues: [wf], concurrency: 8, logger: testLogger }))
    .task('hold', async (task) => {
      calls.push(task.key);
      return { key: task.key, attempt: task.attempt, by: 'second' };
    });
  await w.start();
  t.after(() => w.stop({ grace: 0 }));
  const runs = await waitRuns(wf, n, ['completed'], 120000);
  for (const r of runs) {
    assert.equal(r.context.result.by, 'second');
    assert.ok(r.context.result.attempt >= 2, 're-offered as a new attempt');
  }
  assert.equal(calls.length, n, 'each task handled once by the second worker');
  const eff = await effects(wf);
  assert.deepEqual(eff.map((e) => e.run_key), runs.map((r) => r.key), 'one recorded result per run');
});
