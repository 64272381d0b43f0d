// The Client: start (idempotent), sendEvent, cancel, waitForRun (a timeout
// that passes; a run that completes; a run that stalls).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { Client, Worker, NonRetryableError } from '../src/index.js';
import { setupDatabase, conn, sql, uniq, createTaskWorkflow, guard, testLogger } from './lib.js';

before(setupDatabase);

test('start, sendEvent and waitForRun', async (t) => {
  const wf = uniq('nt_client');
  await sql(`CREATE PROCEDURE ${wf}(args jsonb) LANGUAGE plpgsql AS $$
    DECLARE p jsonb;
    BEGIN
      CALL chrono_forge.await_event('go', p);
      PERFORM chrono_forge.context_set('got', p);
      CALL chrono_forge.set_result(jsonb_build_object('doubled', (p->>'n')::int * 2));
    END $$`);
  const client = new Client(conn());
  t.after(() => client.end());
  const id = await client.start(wf, 'c1', { a: 1 });
  assert.equal(typeof id, 'number');
  assert.equal(await client.start(wf, 'c1', { a: 1 }), id, 'start is idempotent');
  const early = await guard(client.waitForRun(wf, 'c1', { timeout: 300 }), 60000, 'waitForRun with a timeout');
  assert.ok(['idle', 'running'].includes(early.state), `not terminal yet: ${early.state}`);
  assert.equal(early.result, null, 'no result before the run ends');
  assert.equal(await client.sendEvent(wf, 'c1', 'go', { n: 7 }), true);
  const done = await guard(client.waitForRun(wf, 'c1'), 60000, 'waitForRun');
  assert.equal(done.state, 'completed');
  assert.deepEqual(done.context.got, { n: 7 });
  assert.equal(done.errorClass, null);
  assert.deepEqual(done.result, { doubled: 14 }, 'the result the run set');
});

test('waitForRun returns a stalled run with its error class', async (t) => {
  const wf = uniq('nt_client_stall');
  await createTaskWorkflow(wf, { step: 'refuse', queue: wf });
  const w = new Worker(conn({ queues: [wf], logger: testLogger }))
    .task('refuse', async () => { throw new NonRetryableError('no'); });
  await w.start();
  t.after(() => w.stop({ grace: 0 }));
  const client = new Client(conn());
  t.after(() => client.end());
  await client.start(wf, 's1');
  const out = await guard(client.waitForRun(wf, 's1'), 60000, 'waitForRun');
  assert.equal(out.state, 'stalled');
  // A worker's class that is not a SQLSTATE: CF027, the class leading the message.
  assert.equal(out.errorClass, 'CF027');
  assert.equal(out.errorMessage, 'NonRetryableError: no');
});
