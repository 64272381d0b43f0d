// Test fixtures of @chrono-forge/client: the test database (a real cluster
// from PGHOST/PGPORT/PGUSER, with chrono_forge's workers serving
// CF_NODE_TEST_DB, default cf_node_test), SQL helpers, unique names, and
// hang guards (generous bounds only: no test asserts a duration).
import pg from 'pg';
import { randomBytes } from 'node:crypto';

export const DB = process.env.CF_NODE_TEST_DB ?? 'cf_node_test';

/** A pg config for the test database (extra keys: role via `options`, etc.). */
export function conn(extra = {}) {
  return { database: DB, ...extra };
}

/** A pg config whose session acts as `role` (the login stays the superuser). */
export function asRole(role, extra = {}) {
  return conn({ options: `-c role=${role}`, ...extra });
}

let setupDone = null;

/** Creates the database and the extension if missing; checks the workers serve it. */
export function setupDatabase() {
  setupDone ??= (async () => {
    const admin = new pg.Client({ database: 'postgres' });
    await admin.connect();
    try {
      const served = (await admin.query("SELECT current_setting('chrono_forge.database', true) AS d")).rows[0].d;
      if (served !== DB) {
        throw new Error(`chrono_forge.database is '${served}': run the tests in a cluster whose workers serve '${DB}'`);
      }
      const exists = (await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [DB])).rowCount;
      if (!exists) await admin.query(`CREATE DATABASE ${DB}`);
    } finally {
      await admin.end();
    }
    await sql('CREATE EXTENSION IF NOT EXISTS chrono_forge');
    await waitFor(async () => (await sql(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' AND datname = $1",
      [DB])).rows[0].n > 0, { what: 'chrono_forge workers in the test database' });
  })();
  return setupDone;
}

/** One statement on a fresh superuser connection to the test database. */
export async function sql(text, params = [], config = conn()) {
  const c = new pg.Client(config);
  await c.connect();
  try {
    return await c.query(text, params);
  } finally {
    await c.end();
  }
}

/** The single value of a one-row, one-column query. */
export async function value(text, params = []) {
  const res = await sql(text, params);
  return Object.values(res.rows[0])[0];
}

/** A fresh name for this test's procedures, queues and keys. */
export function uniq(prefix) {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns truthy; a hang guard, not a timing assertion. */
export async function waitFor(fn, { timeout = 60000, interval = 100, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(interval);
  }
}

/** Waits until every run of `workflow` is in one of `states`; returns the runs. */
export async function waitRuns(workflow, n, states = ['completed'], timeout = 60000) {
  return waitFor(async () => {
    const rows = (await sql(
      'SELECT id, key, state::text AS state, context FROM chrono_forge.workflows WHERE workflow = $1 ORDER BY key',
      [canonical(workflow)])).rows;
    return rows.length === n && rows.every((r) => states.includes(r.state)) ? rows : null;
  }, { timeout, what: `${n} run(s) of ${workflow} in ${states.join('/')}` });
}

/**
 * Creates a workflow procedure `name` (in public) whose one step is the task
 * `step` on `queue`; its result goes to context key 'result' and, through a
 * SQL step, one row per run into table `effects` (created here if missing):
 * so a result recorded twice would show as two rows.
 */
export async function createTaskWorkflow(name, { step, queue, policy = 'NULL', lease = '30 seconds', timeout = 'NULL' }) {
  await sql(`CREATE TABLE IF NOT EXISTS effects (run_key text, workflow text, result jsonb)`);
  await sql(`
    CREATE OR REPLACE FUNCTION ${name}_record(args jsonb) RETURNS void LANGUAGE sql AS $f$
      INSERT INTO effects VALUES (chrono_forge.key(), '${name}', args) $f$`);
  await sql(`
    CREATE OR REPLACE PROCEDURE ${name}(args jsonb) LANGUAGE plpgsql AS $p$
    DECLARE r jsonb;
    BEGIN
      CALL chrono_forge.run_task('${step}', '${queue}', r, args, ${policy}::jsonb, ${timeout}::interval, '${lease}'::interval);
      PERFORM chrono_forge.context_set('result', r);
      CALL chrono_forge.durably_execute('${name}_record', 'record', r);
    END $p$`);
  await sql(`GRANT EXECUTE ON PROCEDURE ${name}(jsonb) TO PUBLIC`);
  await sql(`GRANT EXECUTE ON FUNCTION ${name}_record(jsonb) TO PUBLIC`);
  await sql('GRANT INSERT, SELECT ON effects TO PUBLIC');
}

/** Starts runs k1..kn of `workflow` (args {i}) in one transaction, as `config`'s role. */
export async function startRuns(workflow, n, config = conn()) {
  await sql(`SELECT count(chrono_forge.start($1, 'k' || i, jsonb_build_object('i', i)))
               FROM generate_series(1, $2::int) i`, [workflow, n], config);
}

/** The stored (canonical) name of a workflow procedure created in public. */
export function canonical(workflow) {
  return workflow.includes('.') ? workflow : `public.${workflow}`;
}

/**
 * The error classes recorded for the runs of a workflow, oldest first: a
 * worker's class that is not a SQLSTATE is logged as CF027 with the class
 * leading the message ("FlakyError: attempt 1"), so that prefix is taken.
 */
export async function errorClasses(workflow) {
  return (await sql(`SELECT CASE WHEN e.error_class = 'CF027' THEN split_part(e.error_message, ':', 1)
                                 ELSE e.error_class END AS cls
      FROM chrono_forge.error_logs e
      JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.workflow = $1 ORDER BY e.id`,
  [canonical(workflow)])).rows.map((r) => r.cls);
}

/** The last failure each task of a workflow recorded: [key, error_class, retryable]. */
export async function taskErrors(workflow) {
  return (await sql(`SELECT w.key, t.error_class, t.retryable FROM chrono_forge.tasks t
      JOIN chrono_forge.workflows w ON w.id = t.workflow_id WHERE w.workflow = $1 ORDER BY w.key`,
  [canonical(workflow)])).rows.map((r) => [r.key, r.error_class, r.retryable]);
}

/** A promise with its resolve function outside (a gate a test opens). */
export function deferred() {
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  return { promise, resolve };
}

/** Resolves when `n` values have been pushed with `push`. */
export function counter(n) {
  const items = [];
  const d = deferred();
  return {
    items,
    done: d.promise,
    push(x) {
      items.push(x);
      if (items.length === n) d.resolve(items);
    },
  };
}

/** Rejects if `promise` has not settled after `ms` (a hang guard). */
export function guard(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

/** The effects rows of a workflow, by key. */
export async function effects(workflow) {
  return (await sql('SELECT run_key, result FROM effects WHERE workflow = $1 ORDER BY run_key', [workflow])).rows;
}

/** A logger for workers under test that keeps warnings and errors quiet unless CF_NODE_TEST_LOG is set. */
export const testLogger = process.env.CF_NODE_TEST_LOG ? console : null;

/** Keys of the runs of `workflow` whose task is waiting to be claimed. */
export async function pendingTasks(workflow) {
  return (await sql(`SELECT w.key FROM chrono_forge.tasks t JOIN chrono_forge.workflows w ON w.id = t.workflow_id
      WHERE w.workflow = $1 AND t.state = 'pending' ORDER BY w.key`, [canonical(workflow)])).rows.map((r) => r.key);
}
