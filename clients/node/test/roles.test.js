// Ownership: a task belongs to its run's owner; a worker whose role is not
// a member of the owner claims nothing, a member's worker claims and
// completes it.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from '../src/index.js';
import {
  setupDatabase, asRole, sql, uniq, createTaskWorkflow, startRuns, waitRuns, effects, pendingTasks,
  waitFor, sleep, testLogger,
} from './lib.js';

before(setupDatabase);

test('a role that is not a member of the owner claims nothing; a member does', async (t) => {
  const wf = uniq('nt_roles');
  const owner = `${wf}_owner`;
  const member = `${wf}_member`;
  const stranger = `${wf}_stranger`;
  for (const r of [owner, member, stranger]) await sql(`CREATE ROLE ${r}`);
  await sql(`GRANT ${owner} TO ${member}`);
  await createTaskWorkflow(wf, { step: 'owned', queue: wf });
  await startRuns(wf, 2, asRole(owner));
  await waitFor(async () => (await pendingTasks(wf)).length === 2, { what: 'two pending tasks' });

  // Direct protocol call as the stranger: nothing.
  const direct = await sql('SELECT * FROM chrono_forge.claim_tasks($1, 10)', [[wf]], asRole(stranger));
  assert.equal(direct.rowCount, 0);

  const strangerCalls = [];
  const ws = new Worker(asRole(stranger, { queues: [wf], pollInterval: 200, logger: testLogger }))
    .task('owned', async (task) => { strangerCalls.push(task.key); return { by: 'stranger' }; });
  await ws.start();
  t.after(() => ws.stop({ grace: 0 }));
  // Its claims on start and on several polls find nothing.
  await sleep(1500);
  assert.deepEqual(strangerCalls, []);
  assert.equal((await pendingTasks(wf)).length, 2);

  const wm = new Worker(asRole(member, { queues: [wf], logger: testLogger }))
    .task('owned', async (task) => ({ by: 'member', key: task.key }));
  await wm.start();
  t.after(() => wm.stop({ grace: 0 }));
  const runs = await waitRuns(wf, 2);
  for (const r of runs) assert.equal(r.context.result.by, 'member');
  assert.deepEqual(strangerCalls, []);
  assert.equal((await effects(wf)).length, 2);
});
