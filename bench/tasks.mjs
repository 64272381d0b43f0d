// The driver of bench/tasks (issue 17's benchmarks of external tasks), run
// inside one cluster (PG* set; chrono_forge's workers serve CF_BENCH_DB,
// default postgres).  Prints one JSON line per figure:
//   throughput  N one-step runs whose step is a no-op task, Node worker
//               (concurrency 24); runs/s from the commit that starts them
//               all to the last run's completion
//   graphile    graphile-worker 0.18 draining N no-op jobs, its defaults and
//               its batched settings (peers' bench.mjs, same cluster)
//   python      the Python worker's figure (clients/python), if present
//   ratios      chrono_forge / graphile default, / graphile batched
//   latency     pickup latency p50/p99 (method: see pickupLatency())
//   recovery    SIGKILL of a worker holding 24 tasks (see recovery())
//   idle        statements an idle worker sends in 10 s (see idleCost())
// Options: --n 20000 --rounds 3 (Node and graphile alternate) --claim-delay MS (the Node worker's claimDelay) --concurrency 24 --latency-runs 200 --lease 5
//          --idle-secs 10 --peers DIR (a copy of shared/peers with graphile's
//          node_modules installed; none: graphile skipped) --only a,b,...
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const require = createRequire(new URL('../clients/node/package.json', import.meta.url));
const pg = require('pg');
const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(HERE);
const DB = process.env.CF_BENCH_DB ?? 'postgres';

const o = { n: 20000, rounds: 3, 'claim-delay': -1, concurrency: 24, 'latency-runs': 200, lease: 5, 'idle-secs': 10, peers: '', only: '' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const k = argv[i].replace(/^--/, '');
  o[k] = typeof o[k] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
}
const wanted = (name) => !o.only || o.only.split(',').includes(name);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const emit = (x) => console.log(JSON.stringify(x));

const db = new pg.Client({ database: DB, application_name: 'bench tasks driver' });
await db.connect();
const q = async (text, params) => (await db.query(text, params)).rows;
const one = async (text, params) => Object.values((await q(text, params))[0])[0];

async function waitFor(what, secs, fn, every = 250) {
  const end = Date.now() + secs * 1000;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error(`timed out after ${secs} s waiting for ${what}`);
    await sleep(every);
  }
}

// A child process printing JSON lines; `lines` collects them, `waitLine`
// resolves on the first one matching.
function child(cmd, args, opts = {}) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], ...opts });
  const lines = [];
  const waiters = [];
  createInterface({ input: p.stdout }).on('line', (l) => {
    let m;
    try { m = JSON.parse(l); } catch { return; }
    lines.push(m);
    for (const w of waiters.splice(0)) if (!w.test(m)) waiters.push(w); else w.resolve(m);
  });
  let gone = null;
  const exited = new Promise((r) => p.once('exit', (code, sig) => {
    gone = new Error(`${cmd} ${args[0]} exited (${sig ?? code})`);
    for (const w of waiters.splice(0)) w.reject(gone);
    r({ code, sig });
  }));
  const waitLine = (test, secs = 120) => {
    const found = lines.find(test);
    if (found) return Promise.resolve(found);
    if (gone) return Promise.reject(gone);
    return new Promise((resolve, reject) => {
      const w = { test, resolve, reject };
      waiters.push(w);
      setTimeout(() => reject(new Error(`no line from ${args.join(' ')} in ${secs} s`)), secs * 1000).unref();
    });
  };
  return { p, lines, exited, waitLine };
}

function nodeWorker(args) {
  const c = child(process.execPath, [path.join(HERE, 'tasks-worker.mjs'), ...args],
    { env: { ...process.env, CF_BENCH_DB: DB } });
  return c;
}

async function setup() {
  await q('CREATE EXTENSION IF NOT EXISTS chrono_forge');
  await q(`CREATE TABLE IF NOT EXISTS bench_effects (run text, key text, at timestamptz DEFAULT clock_timestamp())`);
  await q(`CREATE OR REPLACE FUNCTION bench_record(args jsonb) RETURNS void LANGUAGE sql AS $$
             INSERT INTO bench_effects (run, key) VALUES (args->>'run', chrono_forge.key()) $$`);
  // The measured workflow: one step, a no-op task on the queue in args.
  await q(`CREATE OR REPLACE PROCEDURE bench_task(args jsonb) LANGUAGE plpgsql AS $$
           BEGIN CALL chrono_forge.run_task('noop', args->>'queue'); END $$`);
  // Recovery: a task with a known lease and an immediate retry, then a SQL
  // step recording the run (twice recorded = two rows).
  await q(`CREATE OR REPLACE PROCEDURE bench_recover(args jsonb) LANGUAGE plpgsql AS $$
           BEGIN
             CALL chrono_forge.run_task('hold', 'bench_rec',
               retry_policy => chrono_forge.retry_policy(max_attempts => 5, base => '0.1 seconds',
                                                         cap => '0.1 seconds', jitter => false),
               lease => (args->>'lease')::interval);
             CALL chrono_forge.durably_execute('bench_record', 'record', args);
           END $$`);
}

async function nextXid() {
  return Number(await one('SELECT pg_snapshot_xmax(pg_current_snapshot())::text'));
}

// CPU seconds (user + system, from /proc: the cluster runs on this
// machine) by process: the engine's launcher and workers, the task
// worker's process (pid) and its backends, the rest of the server's
// processes; and the machine's busy share of its cores over the round.
function procCpu(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch { return 0; /* gone meanwhile */ }
}
function machineTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: f[3] + f[4], total: f.reduce((a, b) => a + b, 0) };
}
async function cpuSample(workerPid) {
  const rows = await q(`SELECT pid, backend_type, application_name FROM pg_stat_activity WHERE pid <> pg_backend_pid()`);
  const cpu = { launcher: 0, workers: 0, task_worker: procCpu(workerPid), task_worker_backends: 0, server_other: 0 };
  for (const r of rows) {
    const k = r.backend_type === 'chrono_forge launcher' ? 'launcher'
      : r.backend_type === 'chrono_forge worker' ? 'workers'
        : r.application_name.startsWith('bench tasks') ? 'task_worker_backends' : 'server_other';
    cpu[k] += procCpu(r.pid);
  }
  return { cpu, ticks: machineTicks() };
}
function cpuDelta(a, b) {
  const d = Object.fromEntries(Object.keys(a.cpu).map((k) => [`${k}_cpu_s`, +(b.cpu[k] - a.cpu[k]).toFixed(2)]));
  d.machine_busy = +(1 - (b.ticks.idle - a.ticks.idle) / (b.ticks.total - a.ticks.total)).toFixed(3);
  return d;
}

// N runs started in one transaction; the time is taken from that commit
// (all become due at once, as graphile's jobs do after addJobs()) to the
// last run's ended_at; start_secs is what starting them took.
async function throughput(label, queue, spawnWorker) {
  const n = o.n;
  await q("DELETE FROM chrono_forge.workflows WHERE workflow = 'public.bench_task'");
  // Each round from the same state: the last round's rows gone for good.
  await q('VACUUM ANALYZE chrono_forge.workflows, chrono_forge.execution_logs, chrono_forge.tasks, chrono_forge.wakeups');
  await q('CHECKPOINT');
  const w = spawnWorker();
  await w.waitLine((m) => m.ready);
  const x0 = await nextXid();
  const c0 = await cpuSample(w.p.pid);
  await q('BEGIN');
  const s0 = await one('SELECT clock_timestamp()');
  await q(`SELECT count(chrono_forge.start('bench_task', 'k' || i, jsonb_build_object('queue', $1::text)))
             FROM generate_series(1, $2::int) i`, [queue, n]);
  const s1 = await one('SELECT clock_timestamp()');
  await q('COMMIT');
  await waitFor(`${n} runs (${label})`, 1800, async () => Number(await one(
    "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.bench_task' AND state = 'completed'")) === n, 500);
  const last = await one("SELECT max(ended_at) FROM chrono_forge.workflows WHERE workflow = 'public.bench_task'");
  const x1 = await nextXid();
  const c1 = await cpuSample(w.p.pid);
  w.p.kill('SIGTERM');
  await w.exited;
  const secs = (last - s1) / 1000;
  const res = { bench: 'throughput', label, n, concurrency: o.concurrency, secs: +secs.toFixed(3),
    runs_per_s: +(n / secs).toFixed(1), start_secs: +((s1 - s0) / 1000).toFixed(3),
    write_xacts_per_run: +((x1 - x0) / n).toFixed(3), ...cpuDelta(c0, c1) };
  emit(res);
  return res;
}

function graphile(label, extra) {
  const dir = path.join(o.peers, 'graphile');
  const c = child(process.execPath, ['bench.mjs', '--n', String(o.n), '--concurrency', String(o.concurrency),
    '--label', label, ...extra], { cwd: dir });
  return c.exited.then(({ code }) => {
    const res = c.lines.at(-1);
    if (!res) throw new Error(`graphile bench ${label} printed nothing (exit ${code})`);
    emit({ bench: 'graphile', ...res });
    return res;
  });
}

function pythonWorker() {
  const src = path.join(ROOT, 'clients/python/src');
  const code = `
import json, sys
from chrono_forge import Worker
w = Worker("dbname=${DB} application_name='bench tasks python worker'", ["bench_py"], concurrency=${o.concurrency})
w.register("noop", lambda task: None)
print(json.dumps({"ready": True}), flush=True)
w.run()
`;
  // Run from clients/python: python -c puts the working directory first on
  // sys.path, and the repository's root holds the extension's chrono_forge.so.
  // Debian's python3 (python3-psycopg), as the Python client's tests use.
  const py = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  return child(py, ['-c', code], { cwd: path.join(ROOT, 'clients/python'),
    env: { ...process.env, PYTHONPATH: src } });
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil(p / 100 * sorted.length) - 1)];

// Pickup latency, idle worker: one run at a time.  The commit that makes a
// task due is the pass that writes its row (it NOTIFYs at that commit); a
// trigger on the tasks table (added for this measure only) keeps that
// transaction's id, and with track_commit_timestamp = on,
// pg_xact_commit_timestamp() gives the commit's time.  The handler writes
// the wall-clock time it starts (the same system clock, sub-millisecond).
// Latency = handler start - commit; the worker is idle before each run
// (the previous run has completed, 50 ms passed).
async function pickupLatency() {
  if ((await one('SHOW track_commit_timestamp')) !== 'on') {
    emit({ bench: 'latency', skipped: 'track_commit_timestamp is off' });
    return;
  }
  await q('CREATE TABLE IF NOT EXISTS bench_task_xids (task_id bigint PRIMARY KEY, xid xid8)');
  await q('TRUNCATE bench_task_xids');
  await q("DELETE FROM chrono_forge.workflows WHERE workflow = 'public.bench_task'");
  await q(`CREATE OR REPLACE FUNCTION bench_task_xid() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO public.bench_task_xids VALUES (NEW.id, pg_current_xact_id()) ON CONFLICT DO NOTHING;
           RETURN NULL; END $$`);
  await q(`CREATE OR REPLACE TRIGGER bench_task_xid AFTER INSERT ON chrono_forge.tasks
           FOR EACH ROW EXECUTE FUNCTION bench_task_xid()`);
  const w = nodeWorker(['--queue', 'bench_lat', '--mode', 'stamp', '--concurrency', String(o.concurrency)]);
  try {
    await w.waitLine((m) => m.ready);
    for (let i = 1; i <= o['latency-runs']; i++) {
      const before = w.lines.length;
      const key = `lat${i}`;
      await q("SELECT chrono_forge.start('bench_task', $1, '{\"queue\": \"bench_lat\"}')", [`lat${i}`]);
      await w.waitLine((m) => m.task && w.lines.indexOf(m) >= before, 60);
      await waitFor(`run ${key}`, 60, async () => (await one(
        "SELECT state::text FROM chrono_forge.workflows WHERE workflow = 'public.bench_task' AND key = $1", [key])) === 'completed', 10);
      await sleep(50);
    }
  } finally {
    await q('DROP TRIGGER IF EXISTS bench_task_xid ON chrono_forge.tasks');
    w.p.kill('SIGTERM');
    await w.exited;
  }
  const commits = new Map((await q(`SELECT task_id::text AS id,
      extract(epoch FROM pg_xact_commit_timestamp(xid::text::xid)) * 1000 AS ms FROM bench_task_xids`))
    .map((r) => [Number(r.id), Number(r.ms)]));
  const lat = w.lines.filter((m) => m.task && commits.has(m.task)).map((m) => m.t - commits.get(m.task))
    .sort((a, b) => a - b);
  emit({ bench: 'latency', runs: lat.length, p50_ms: +pct(lat, 50).toFixed(2), p99_ms: +pct(lat, 99).toFixed(2),
    max_ms: +lat.at(-1).toFixed(2), min_ms: +lat[0].toFixed(2) });
}

// Recovery: a worker holds 24 tasks whose lease is --lease seconds; it is
// SIGKILLed and a new worker started at once.  The time is from the kill to
// the last run's completion, against lease + 1 s (the lease began at the
// claim, before the kill, so that bound is generous by the holding time);
// each run's SQL step after the task must have recorded one row.
async function recovery() {
  const n = 24;
  await q("DELETE FROM chrono_forge.workflows WHERE workflow = 'public.bench_recover'");
  await q("DELETE FROM bench_effects WHERE run = 'recover'");
  const holder = nodeWorker(['--queue', 'bench_rec', '--step', 'hold', '--mode', 'hold', '--concurrency', String(n)]);
  await holder.waitLine((m) => m.ready);
  await q(`SELECT count(chrono_forge.start('bench_recover', 'r' || i,
             jsonb_build_object('lease', $1::text, 'run', 'recover'))) FROM generate_series(1, $2::int) i`,
  [`${o.lease} seconds`, n]);
  await waitFor(`the holder to hold ${n} tasks`, 120, async () => holder.lines.filter((m) => m.held).length === n, 50);
  holder.p.kill('SIGKILL');
  const killedAt = Date.now();
  await holder.exited;
  const w = nodeWorker(['--queue', 'bench_rec', '--step', 'hold', '--mode', 'noop', '--concurrency', String(n)]);
  await waitFor('the recovered runs', 120, async () => Number(await one(
    "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.bench_recover' AND state = 'completed'")) === n, 50);
  const last = await one("SELECT max(ended_at) FROM chrono_forge.workflows WHERE workflow = 'public.bench_recover'");
  const rows = (await q(`SELECT count(*)::int AS rows, count(DISTINCT key)::int AS runs FROM bench_effects
                          WHERE run = 'recover'`))[0];
  w.p.kill('SIGTERM');
  await w.exited;
  const secs = (last - killedAt) / 1000;
  emit({ bench: 'recovery', tasks: n, lease_s: o.lease, secs_after_kill: +secs.toFixed(3),
    bound_s: o.lease + 1, within_bound: secs <= o.lease + 1, results_recorded: rows.rows,
    runs_recorded: rows.runs, each_once: rows.rows === n && rows.runs === n });
}

// Idle cost: a worker with its own role (so pg_stat_statements, keyed by
// role, shows its statements and nobody else's) idles for --idle-secs with
// the default 5 s fallback poll; every statement it sent in that time is
// counted.  Expected: only claim_tasks polls, about idle / 5 s of them.
async function idleCost() {
  try {
    await q('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    await q('SELECT count(*) FROM pg_stat_statements');
  } catch (e) {
    emit({ bench: 'idle', skipped: `pg_stat_statements unavailable: ${e.message}` });
    return;
  }
  await q(`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_idle')
           THEN CREATE ROLE bench_idle; END IF; END $$`);
  const oid = await one("SELECT oid FROM pg_roles WHERE rolname = 'bench_idle'");
  const w = nodeWorker(['--queue', 'bench_idle', '--mode', 'noop', '--role', 'bench_idle', '--poll', '5000']);
  await w.waitLine((m) => m.ready);
  await sleep(500); // the claim it makes on connecting
  await q('SELECT pg_stat_statements_reset($1::oid)', [oid]);
  await sleep(o['idle-secs'] * 1000);
  const rows = await q('SELECT query, calls::int FROM pg_stat_statements WHERE userid = $1::oid', [oid]);
  w.p.kill('SIGTERM');
  await w.exited;
  const total = rows.reduce((s, r) => s + r.calls, 0);
  const polls = rows.filter((r) => r.query.includes('claim_tasks')).reduce((s, r) => s + r.calls, 0);
  const expected = Math.floor(o['idle-secs'] / 5);
  emit({ bench: 'idle', idle_s: o['idle-secs'], statements: total, polls, expected_polls: expected,
    only_polls: total === polls && Math.abs(polls - expected) <= 1,
    queries: rows.map((r) => `${r.calls}× ${r.query.replace(/\s+/g, ' ').slice(0, 80)}`) });
}

await setup();
emit({ bench: 'settings', ...Object.fromEntries((await q(`SELECT name, setting FROM pg_settings WHERE name IN
  ('fsync', 'synchronous_commit', 'chrono_forge.workers', 'chrono_forge.commit_batch', 'track_commit_timestamp',
   'shared_preload_libraries')`)).map((r) => [r.name, r.setting])), load: (await import('node:os')).loadavg() });
// The Node worker and graphile's defaults alternate, round by round (a
// shared machine's load drifts): each round's ratio, and their median.
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const haveGraphile = o.peers && existsSync(path.join(o.peers, 'graphile/node_modules'));
const rounds = [];
let gwBatched = null;
let py = null;
if (wanted('graphile') && !haveGraphile) emit({ bench: 'graphile', skipped: 'no --peers directory with graphile installed' });
for (let r = 0; r < o.rounds; r++) {
  const cf = wanted('throughput') ? await throughput('node-c24', 'bench_node',
    () => nodeWorker(['--queue', 'bench_node', '--mode', 'noop', '--concurrency', String(o.concurrency),
      ...(o['claim-delay'] >= 0 ? ['--claim-delay', String(o['claim-delay'])] : [])])) : null;
  const gw = wanted('graphile') && haveGraphile ? await graphile('default-c24', []) : null;
  rounds.push({ cf, gw });
  if (!cf && !gw) break;
}
if (wanted('graphile') && haveGraphile) gwBatched = await graphile('batched', ['--localqueue', '500', '--batchdelay', '0']);
if (wanted('python') && existsSync(path.join(ROOT, 'clients/python/src/chrono_forge'))) {
  py = await throughput('python-c24', 'bench_py', pythonWorker);
}
const cfRate = median(rounds.filter((x) => x.cf).map((x) => x.cf.runs_per_s));
const gwRate = median(rounds.filter((x) => x.gw).map((x) => x.gw.jobs_per_s));
if (cfRate && (gwRate || py)) {
  const paired = rounds.filter((x) => x.cf && x.gw).map((x) => +(x.cf.runs_per_s / x.gw.jobs_per_s).toFixed(3));
  emit({ bench: 'ratios', node_runs_per_s: cfRate, graphile_default_jobs_per_s: gwRate ?? null,
    vs_graphile_default: paired.length ? median(paired) : null, vs_graphile_default_rounds: paired,
    vs_graphile_batched: gwBatched ? +(cfRate / gwBatched.jobs_per_s).toFixed(3) : null,
    python_vs_graphile_default: py && gwRate ? +(py.runs_per_s / gwRate).toFixed(3) : null });
}
if (wanted('latency')) await pickupLatency();
if (wanted('recovery')) await recovery();
if (wanted('idle')) await idleCost();
await db.end();
