// The Worker against a real cluster: success, retries by policy, a
// non-retryable error, cancellation through the AbortSignal, graceful
// shutdown (draining, and a grace period that ends).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { Worker, Client, NonRetryableError, TaskAbortedError } from '../src/index.js';
import {
  setupDatabase, conn, sql, uniq, createTaskWorkflow, startRuns, waitRuns, effects, errorClasses, taskErrors,
  counter, deferred, guard, pendingTasks, waitFor, testLogger, sleep,
} from './lib.js';

before(setupDatabase);

function worker(queue, opts = {}) {
  return new Worker(conn({ queues: [queue], concurrency: 4, logger: testLogger, ...opts }));
}

const fastPolicy = (n) =>
  `chrono_forge.retry_policy(max_attempts => ${n}, base => '100 milliseconds', cap => '200 milliseconds', jitter => false)`;

test('a handler that succeeds: each run gets its result once', async (t) => {
  const wf = uniq('nt_ok');
  await createTaskWorkflow(wf, { step: 'echo', queue: wf });
  const seen = [];
  // All five finish together, so their completions share statements.
  const all = counter(5);
  const logged = [];
  const logger = { debug: (m) => logged.push(m), warn: (m) => logged.push(m), error: (m) => logged.push(m) };
  const w = worker(wf, { concurrency: 5, logger }).task('echo', async (task, { signal }) => {
    assert.ok(signal instanceof AbortSignal);
    seen.push(task);
    all.push(task);
    await all.done;
    return { i: task.args.i, attempt: task.attempt };
  });
  const recorded = [];
  w.on('task:complete', (e) => recorded.push(e.recorded));
  await w.start();
  t.after(() => w.stop({ grace: 0 }));
  await startRuns(wf, 5);
  const runs = await waitRuns(wf, 5);
  for (const r of runs) {
    assert.deepEqual(r.context.result, { i: Number(r.key.slice(1)), attempt: 1 });
  }
  assert.equal(seen.length, 5);
  assert.equal(new Set(seen.map((x) => x.idempotencyKey)).size, 5);
  for (const task of seen) {
    assert.equal(task.queue, wf);
    assert.equal(task.step, 'echo');
    assert.equal(typeof task.idempotencyKey, 'string');
    assert.ok(task.leaseUntil instanceof Date);
  }
  assert.deepEqual((await effects(wf)).map((e) => e.run_key), ['k1', 'k2', 'k3', 'k4', 'k5']);
  assert.deepEqual(recorded, [true, true, true, true, true]);
  assert.deepEqual(logged, [], 'no batched completion fell back, nothing warned');
});

test('a failing handler is retried by the step policy, with its error class recorded', async (t) => {
  const wf = uniq('nt_retry');
  await createTaskWorkflow(wf, { step: 'flaky', queue: wf, policy: fastPolicy(3) });
  class FlakyError extends Error {
    name = 'FlakyError';
  }
  const attempts = [];
  const w = worker(wf).task('flaky', async (task) => {
    attempts.push(task.attempt);
    if (task.attempt < 3) throw new FlakyError(`attempt ${task.attempt}`);
    return { attempt: task.attempt };
  });
  await w.start();
  t.after(() => w.stop({ grace: 0 }));
  await startRuns(wf, 1);
  const [run] = await waitRuns(wf, 1);
  assert.deepEqual(run.context.result, { attempt: 3 });
  assert.deepEqual(attempts, [1, 2, 3]);
  assert.deepEqual(await errorClasses(wf), ['FlakyError', 'FlakyError']);
  assert.equal((await effects(wf)).length, 1);
});

test('a handler that keeps failing exhausts its policy: the run stalls', async (t) => {
  const wf = uniq('nt_exhaust');
  await createTaskWorkflow(wf, { step: 'broken', queue: wf, policy: fastPolicy(2) });
  const attempts = [];
  const w = worker(wf).task('broken', async (task) => {
    attempts.push(task.attempt);
    throw new TypeError('always');
  });
  await w.start();
  t.after(() => w.stop({ grace: 0 }));
  await startRuns(wf, 1);
  await waitRuns(wf, 1, ['stalled']);
  assert.deepEqual(attempts, [1, 2]);
  assert.deepEqual((await errorClasses(wf)).slice(0, 2), ['TypeError', 'TypeError']);
  assert.deepEqual(await taskErrors(wf), [['k1', 'TypeError', true]]);
  assert.equal((await effects(wf)).length, 0);
});

test('NonRetryableError fails the step at once: the run stalls with its class', async (t) => {
  const wf = uniq('nt_nonretry');
  await createTaskWorkflow(wf, { step: 'charge', queue: wf, policy: fastPolicy(5) });
  class CardDeclined extends NonRetryableError {}
  const attempts = [];
  const w = worker(wf).task('charge', async (task) => {
    attempts.push(task.attempt);
    throw new CardDeclined('card declined');
  });
  await w.start();
  t.after(() => w.stop({ grace: 0 }));
  await startRuns(wf, 1);
  await waitRuns(wf, 1, ['stalled']);
  assert.deepEqual(attempts, [1]);
  assert.equal((await errorClasses(wf))[0], 'CardDeclined');
  assert.deepEqual(await taskErrors(wf), [['k1', 'CardDeclined', false]]);
  assert.equal((await effects(wf)).length, 0);
});

test('cancelling the run aborts the running handler through its AbortSignal', async (t) => {
  const wf = uniq('nt_cancel');
  await createTaskWorkflow(wf, { step: 'slow', queue: wf, lease: '2 seconds' });
  const started = deferred();
  const aborted = deferred();
  const w = worker(wf).task('slow', (task, { signal }) => new Promise((resolve, reject) => {
    started.resolve(task);
    signal.addEventListener('abort', () => {
      aborted.resolve(signal.reason);
      reject(signal.reason);
    });
  }));
  await w.start();
  t.after(() => w.stop({ grace: 0 }));
  await startRuns(wf, 1);
  await guard(started.promise, 60000, 'the handler to start');
  const client = new Client(conn());
  t.after(() => client.end());
  assert.equal(await client.cancel(wf, 'k1', 'test'), 1);
  const reason = await guard(aborted.promise, 60000, 'the abort');
  assert.ok(reason instanceof TaskAbortedError);
  assert.equal(reason.reason, 'cancelled');
  await waitRuns(wf, 1, ['cancelled']);
  assert.equal((await effects(wf)).length, 0);
});

test('stop() stops claiming and lets the tasks in flight finish', async (t) => {
  const wf = uniq('nt_drain');
  await createTaskWorkflow(wf, { step: 'gated', queue: wf });
  const gate = deferred();
  const started = counter(3);
  const w = worker(wf, { concurrency: 3 }).task('gated', async (task) => {
    started.push(task.key);
    await gate.promise;
    return { key: task.key };
  });
  const completed = [];
  w.on('task:complete', (e) => completed.push(e));
  await w.start();
  await startRuns(wf, 3);
  await guard(started.done, 60000, 'three tasks to start');
  const stopping = w.stop({ grace: 120000 });
  // A task that becomes due while the worker drains: it must not take it.
  await sql("SELECT chrono_forge.start($1, 'k9')", [wf]);
  await waitFor(async () => (await pendingTasks(wf)).includes('k9'), { what: 'the task of k9' });
  gate.resolve();
  await guard(stopping, 120000, 'stop()');
  assert.equal(completed.filter((e) => e.recorded).length, 3);
  assert.deepEqual(started.items.sort(), ['k1', 'k2', 'k3']);
  await waitRuns(wf, 4, ['completed', 'idle']);
  assert.deepEqual(await pendingTasks(wf), ['k9']);
  // A new worker takes it.
  const w2 = worker(wf).task('gated', async (task) => ({ key: task.key }));
  await w2.start();
  t.after(() => w2.stop({ grace: 0 }));
  await waitRuns(wf, 4);
  assert.equal((await effects(wf)).length, 4);
});

test('concurrency bounds the handlers running at once; a slot frees when its handler returns, before its result is recorded', async (t) => {
  const wf = uniq('nt_slots');
  await createTaskWorkflow(wf, { step: 'slot', queue: wf });
  // A transaction holding k1's task row: recording k1's result waits for
  // it, and so does every completion queued behind that statement.
  const holder = new pg.Client(conn());
  await holder.connect();
  t.after(() => holder.end());
  let running = 0;
  let most = 0;
  const started = [];
  // What happened, for a failure's message: outcomes recorded meanwhile
  // would explain a third claim.
  const events = [];
  const w = worker(wf, { concurrency: 1, claimDelay: 0 }).task('slot', async (task) => {
    running += 1;
    most = Math.max(most, running);
    started.push(task.key);
    if (task.key === 'k1') {
      await holder.query('BEGIN');
      const locked = await holder.query('SELECT 1 FROM chrono_forge.tasks WHERE id = $1 FOR UPDATE', [task.id]);
      events.push(`k1's task row locked: ${locked.rowCount} row`);
    }
    await sleep(20);
    running -= 1;
    return { key: task.key };
  });
  w.on('task:complete', (e) => events.push(`${e.task.key} recorded: ${e.recorded}`));
  w.on('task:fail', (e) => events.push(`${e.task.key} failed: ${e.error?.message}`));
  await w.start();
  t.after(() => w.stop({ grace: 0 }));
  await startRuns(wf, 1);
  await waitFor(async () => started.length === 1, { what: "k1's handler" });
  await startRuns(wf, 3);
  // k1's result waits for the holder, yet its slot is free again: k2's or
  // k3's handler runs (0.9.0: no claim until k1's result was recorded).
  // The engine makes their tasks due in either order.
  await waitFor(async () => started.length === 2, { what: "a second handler while k1's result waits" });
  // Two outcomes being recorded (twice the concurrency): no third claim.
  await sleep(1000);
  assert.equal(started.length, 2, `handlers started: ${started.join(', ')}; ${events.join('; ')}`);
  assert.equal(started[0], 'k1');
  await holder.query('COMMIT');
  await waitRuns(wf, 3);
  assert.deepEqual(started.sort(), ['k1', 'k2', 'k3']);
  assert.equal(most, 1, 'never more handlers at once than the concurrency');
  assert.equal((await effects(wf)).length, 3);
});

test('a grace period that ends aborts the handler (shutdown) and leaves its task to its lease', async (t) => {
  const wf = uniq('nt_grace');
  await createTaskWorkflow(wf, { step: 'stuck', queue: wf, lease: '2 seconds', policy: fastPolicy(3) });
  const started = deferred();
  const w = worker(wf).task('stuck', (task, { signal }) => new Promise((_, reject) => {
    started.resolve(task);
    signal.addEventListener('abort', () => reject(signal.reason));
  }));
  const aborts = [];
  w.on('task:abort', (e) => aborts.push(e.reason));
  await w.start();
  await startRuns(wf, 1);
  await guard(started.promise, 60000, 'the handler to start');
  await guard(w.stop({ grace: 100 }), 60000, 'stop()');
  assert.deepEqual(aborts, ['shutdown']);
  const w2 = worker(wf).task('stuck', async (task) => ({ attempt: task.attempt, by: 'second' }));
  await w2.start();
  t.after(() => w2.stop({ grace: 0 }));
  const [run] = await waitRuns(wf, 1);
  assert.equal(run.context.result.by, 'second');
  assert.ok(run.context.result.attempt >= 2);
  assert.equal((await effects(wf)).length, 1);
});

test('a worker whose connections are terminated reconnects and goes on claiming', async (t) => {
  const wf = uniq('nt_reconnect');
  await createTaskWorkflow(wf, { step: 'echo', queue: wf });
  const app = `nt worker ${wf}`;
  const w = worker(wf, { application_name: app }).task('echo', async (task) => ({ key: task.key }));
  await w.start();
  t.after(() => w.stop({ grace: 0 }));
  await startRuns(wf, 1);
  await waitRuns(wf, 1);
  const killed = (await sql(`SELECT array_agg(pid) AS pids, bool_and(pg_terminate_backend(pid)) AS ok
                              FROM pg_stat_activity WHERE application_name = $1`, [app])).rows[0];
  assert.ok(killed.pids?.length >= 1 && killed.ok, 'the listener was there to terminate');
  await waitFor(async () => (await sql(`SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE application_name = $1 AND pid <> ALL ($2::int[])`, [app, killed.pids])).rows[0].n >= 1,
  { what: 'the worker to connect again' });
  await sql("SELECT chrono_forge.start($1, 'k2')", [wf]);
  await waitRuns(wf, 2);
  assert.equal((await effects(wf)).length, 2);
});

test('heartbeats keep a handler that outlives its lease on its first attempt', async (t) => {
  const wf = uniq('nt_heartbeat');
  await createTaskWorkflow(wf, { step: 'long', queue: wf, lease: '1 second' });
  const attempts = [];
  const w = worker(wf).task('long', async (task, { signal }) => {
    attempts.push(task.attempt);
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.equal(signal.aborted, false);
    return { attempt: task.attempt };
  });
  await w.start();
  t.after(() => w.stop({ grace: 0 }));
  await startRuns(wf, 1);
  const [run] = await waitRuns(wf, 1);
  assert.deepEqual(run.context.result, { attempt: 1 });
  assert.deepEqual(attempts, [1]);
  assert.deepEqual(await errorClasses(wf), [], 'no lease expired');
});

test('claimDelay is a number of milliseconds, 0 or more', () => {
  for (const bad of [-1, '5', Number.NaN, null]) {
    assert.throws(() => worker('q_delay', { claimDelay: bad }), /claimDelay must be a number/);
  }
  assert.doesNotThrow(() => worker('q_delay', { claimDelay: 0 }));
});
