// The task worker: claims chrono_forge tasks of some queues (SQL protocol:
// claim_tasks, heartbeat_task, complete_task, fail_task), runs each by the
// handler registered for its step name, heartbeats while it runs, and
// records its outcome.
//
// Connections: one listener connection LISTENs on chrono_forge_tasks and
// runs the claims (one at a time, so claims batch up while one is in
// flight); a small pool runs heartbeats, completions and failures.  Idle,
// the worker sends nothing but the fallback poll (a claim when no claim has
// run for pollInterval); a claim happens only on a notification for one of
// its queues, on that poll, or when a full claim suggests more are due, and
// only for the capacity that is free.
import { EventEmitter } from 'node:events';
import os from 'node:os';
import pg from 'pg';
import {
  NonRetryableError, TaskAbortedError, errorClass, errorMessage,
  isConnectionError, isFatalConnectError,
} from './errors.js';
import { Backoff, Logger, sleep, splitConfig } from './util.js';

export const CHANNEL = 'chrono_forge_tasks';

const CLAIM_SQL = `SELECT t.*, pg_catalog.now() AS claimed_at
  FROM chrono_forge.claim_tasks($1::text[], $2::integer, $3::text) t`;
const HEARTBEAT_SQL = 'SELECT chrono_forge.heartbeat_task($1::bigint, $2::uuid, $3::interval) AS answer';
const COMPLETE_SQL = 'SELECT chrono_forge.complete_task($1::bigint, $2::uuid, $3::jsonb) AS recorded';
// Completions waiting while one is in flight go together in one statement
// (one transaction, one commit); each complete_task is fenced by its own
// token as when called alone.
const COMPLETE_MANY_SQL = `SELECT c.ord, chrono_forge.complete_task(c.id, c.token, c.result) AS recorded
  FROM ROWS FROM (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::uuid[]), pg_catalog.unnest($3::jsonb[]))
       WITH ORDINALITY AS c(id, token, result, ord)`;
const COMPLETION_BATCH_MAX = 200;
const FAIL_SQL = `SELECT chrono_forge.fail_task($1::bigint, $2::uuid, $3::text, $4::text, $5::boolean)
  AS recorded`;

const WORKER_KEYS = [
  'queues', 'concurrency', 'pollInterval', 'heartbeatInterval', 'extendLease',
  'shutdownGrace', 'handleSignals', 'logger', 'workerName', 'poolSize', 'batchCompletions',
  'claimDelay',
];

const DEFAULTS = {
  concurrency: 10,
  pollInterval: 5000,
  heartbeatInterval: null,   // null: half the task's lease
  extendLease: null,         // null: heartbeats extend by the task's own lease
  shutdownGrace: 30000,
  handleSignals: false,
  workerName: null,
  poolSize: null,            // null: min(concurrency, 10) + 1
  batchCompletions: true,    // completions that wait for one in flight share a statement
  claimDelay: 5,             // ms a claim waits while tasks are in flight (0: none)
};

export class Worker extends EventEmitter {
  #opts;
  #pgConfig;
  #log;
  #handlers = new Map();
  #inFlight = new Map();     // task id -> entry, until its outcome is recorded
  #running = 0;              // of those, handlers not yet returned
  #pool = null;
  #listener = null;
  #started = false;
  #stopping = false;
  #stopPromise = null;
  #wantClaim = false;
  #claiming = null;          // the running claim loop's promise
  #pollTimer = null;
  #drained = null;           // resolves when #inFlight empties during stop
  #signalHandler = null;
  #reconnect = new Backoff();
  #completions = [];         // waiting: { entry, json, resolve, reject }
  #completing = false;

  constructor(options = {}) {
    super();
    const { own, pgConfig } = splitConfig(options, WORKER_KEYS);
    this.#opts = { ...DEFAULTS, ...own };
    const q = this.#opts.queues;
    if (!Array.isArray(q) || q.length === 0 || !q.every((x) => typeof x === 'string' && x)) {
      throw new TypeError('Worker: queues must be a non-empty array of queue names');
    }
    if (!Number.isInteger(this.#opts.concurrency) || this.#opts.concurrency < 1) {
      throw new TypeError('Worker: concurrency must be a positive integer');
    }
    if (typeof this.#opts.claimDelay !== 'number' || !(this.#opts.claimDelay >= 0)) {
      throw new TypeError('Worker: claimDelay must be a number of milliseconds, 0 or more');
    }
    this.#opts.workerName ??= `${os.hostname()}:${process.pid}`;
    this.#opts.poolSize ??= Math.min(this.#opts.concurrency, 10) + 1;
    this.#pgConfig = { application_name: 'chrono_forge node worker', ...pgConfig };
    this.#log = new Logger(this.#opts.logger);
  }

  /** Registers the handler of the tasks whose step is `step`. */
  task(step, handler) {
    if (typeof step !== 'string' || !step) throw new TypeError('task: step must be a non-empty string');
    if (typeof handler !== 'function') throw new TypeError('task: handler must be a function');
    this.#handlers.set(step, handler);
    return this;
  }

  /** Tasks claimed and not yet recorded (handlers running, or outcomes being recorded). */
  get inFlight() {
    return this.#inFlight.size;
  }

  /** The name passed to claim_tasks (default host:pid). */
  get name() {
    return this.#opts.workerName;
  }

  /**
   * Connects and starts claiming; resolves once it listens.  A refused
   * login (bad password, missing role or database) rejects; other
   * connection failures are retried with backoff.
   */
  async start() {
    if (this.#started) throw new Error('Worker: already started');
    this.#started = true;
    this.#pool = new pg.Pool({ ...this.#pgConfig, max: this.#opts.poolSize });
    this.#pool.on('error', (err) => this.#log.warn(`pool connection lost: ${err.message}`));
    if (this.#opts.handleSignals) this.#installSignals();
    try {
      await this.#connectListener(true);
    } catch (err) {
      await this.stop({ grace: 0 });
      throw err;
    }
    return this;
  }

  /**
   * Graceful shutdown: stops claiming, waits up to `grace` ms (default
   * shutdownGrace) for the tasks in flight, then aborts the rest (reason
   * 'shutdown') and leaves them to their leases; closes the connections.
   */
  stop({ grace = this.#opts.shutdownGrace } = {}) {
    this.#stopPromise ??= this.#shutdown(grace);
    return this.#stopPromise;
  }

  async #shutdown(grace) {
    this.#stopping = true;
    clearTimeout(this.#pollTimer);
    this.#log.info(`stopping: ${this.#inFlight.size} task(s) in flight`);
    await this.#claiming;
    await this.#closeListener();
    if (this.#inFlight.size > 0) {
      const drained = new Promise((resolve) => { this.#drained = resolve; });
      const timer = sleep(grace);
      await Promise.race([drained, timer.promise]);
      timer.cancel();
    }
    for (const entry of this.#inFlight.values()) {
      this.#log.warn(`task ${entry.task.id} (${entry.task.step}) still running after the grace period: left to its lease`);
      this.#abort(entry, 'shutdown');
    }
    this.#inFlight.clear();
    this.#removeSignals();
    if (this.#pool) await this.#pool.end().catch(() => {});
    this.emit('stopped');
  }

  // --- the listener connection -------------------------------------------

  async #connectListener(first) {
    for (;;) {
      if (this.#stopping) return;
      const client = new pg.Client(this.#pgConfig);
      client.on('error', (err) => this.#listenerLost(client, err));
      client.on('end', () => this.#listenerLost(client, null));
      client.on('notification', (msg) => this.#onNotification(msg));
      try {
        await client.connect();
        await client.query(`LISTEN ${CHANNEL}`);
      } catch (err) {
        client.removeAllListeners('end');
        client.end().catch(() => {});
        if (first && isFatalConnectError(err)) throw err;
        const delay = this.#reconnect.next();
        this.#log.warn(`cannot connect (${err.message}); retrying in ${delay} ms`);
        await sleep(delay).promise;
        continue;
      }
      if (this.#stopping) {
        await client.end().catch(() => {});
        return;
      }
      this.#reconnect.reset();
      this.#listener = client;
      this.#log.info(`listening on ${CHANNEL} for queues ${this.#opts.queues.join(', ')}`);
      // Notifications may have been missed while disconnected: claim now.
      this.#requestClaim();
      return;
    }
  }

  #listenerLost(client, err) {
    if (this.#listener !== client) return;
    this.#listener = null;
    client.removeAllListeners('end');
    client.end().catch(() => {});
    if (this.#stopping) return;
    this.#log.warn(`listener connection lost${err ? `: ${err.message}` : ''}; reconnecting`);
    this.#connectListener(false);
  }

  async #closeListener() {
    const client = this.#listener;
    this.#listener = null;
    if (!client) return;
    client.removeAllListeners('end');
    await client.end().catch(() => {});
  }

  #onNotification(msg) {
    if (msg.channel !== CHANNEL) return;
    if (msg.payload && !this.#opts.queues.includes(msg.payload)) return;
    this.#requestClaim();
  }

  // --- claiming ------------------------------------------------------------

  // Claims are for handlers free to start.  A handler's slot frees when
  // it returns, not when its outcome is recorded: recording waits for a
  // statement and a commit, and a busy worker would otherwise spend that
  // time idle.  Outcomes being recorded are bounded by the concurrency too,
  // so a worker holds at most twice as many claims as it runs handlers.
  #free() {
    const c = this.#opts.concurrency;
    return Math.max(0, Math.min(c - this.#running, 2 * c - this.#inFlight.size));
  }

  #requestClaim() {
    this.#wantClaim = true;
    if (this.#claiming || this.#stopping) return;
    // Deferred a turn so completions and notifications of the same moment
    // share one claim; while most handlers are busy, claimDelay ms more, so
    // that a stream of notifications (one per task made due) and of
    // handlers returning makes a few larger claims rather than many of one
    // task each, whose cost the server would take from the passes making
    // tasks due.  A worker with half its handlers or more free claims at
    // once: waiting would not make that claim much larger.
    const delay = 2 * this.#free() < this.#opts.concurrency ? this.#opts.claimDelay : 0;
    this.#claiming = new Promise((resolve) => (delay > 0 ? setTimeout(resolve, delay) : setImmediate(resolve)))
      .then(() => this.#claimLoop())
      .finally(() => { this.#claiming = null; });
  }

  async #claimLoop() {
    while (this.#wantClaim && !this.#stopping && this.#listener && this.#free() > 0) {
      this.#wantClaim = false;
      const want = this.#free();
      let rows;
      try {
        rows = (await this.#listener.query(CLAIM_SQL, [this.#opts.queues, want, this.#opts.workerName])).rows;
      } catch (err) {
        // A lost connection reconnects (and claims then); a SQL error waits
        // for the next poll rather than looping.
        if (!isConnectionError(err)) this.#log.error(`claim_tasks failed: ${err.message}`);
        this.#armPoll();
        return;
      }
      this.#armPoll();
      if (rows.length === want) this.#wantClaim = true;
      for (const row of rows) this.#startTask(row);
    }
  }

  #armPoll() {
    clearTimeout(this.#pollTimer);
    if (this.#stopping) return;
    this.#pollTimer = setTimeout(() => this.#requestClaim(), this.#opts.pollInterval);
  }

  // --- running a task ------------------------------------------------------

  #startTask(row) {
    const task = taskFromRow(row);
    const entry = { task, token: row.claim_token, rawId: row.task_id, controller: new AbortController(),
      heartbeat: null, heartbeatBusy: false, timeout: null, finished: false, returned: false, leaseMs: 0,
      deadline: 0 };
    this.#inFlight.set(task.id, entry);
    this.#running += 1;
    const leaseMs = Math.max(row.lease_until - row.claimed_at, 100);
    entry.leaseMs = leaseMs;
    entry.deadline = Date.now() + leaseMs;
    const every = this.#opts.heartbeatInterval ?? Math.max(Math.floor(leaseMs / 2), 50);
    entry.heartbeat = setInterval(() => this.#heartbeat(entry), every);
    if (row.timeout_at) {
      const ms = Math.max(row.timeout_at - row.claimed_at, 0);
      entry.timeout = setTimeout(() => this.#abort(entry, 'timeout'), Math.min(ms, 2 ** 31 - 1));
    }
    this.emit('task:start', task);
    this.#execute(entry).finally(() => this.#taskDone(entry));
  }

  // The handler returned or threw: its slot is free for the next claim.
  #handlerReturned(entry) {
    if (entry.returned) return;
    entry.returned = true;
    this.#running -= 1;
    if (this.#wantClaim && !this.#stopping) this.#requestClaim();
  }

  #taskDone(entry) {
    this.#stopHeartbeats(entry);
    if (this.#inFlight.get(entry.task.id) !== entry) return;
    this.#inFlight.delete(entry.task.id);
    if (this.#stopping) {
      if (this.#inFlight.size === 0 && this.#drained) this.#drained();
    } else if (this.#wantClaim) {
      this.#requestClaim();
    }
  }

  #abort(entry, reason) {
    clearInterval(entry.heartbeat);
    clearTimeout(entry.timeout);
    if (!entry.controller.signal.aborted) {
      entry.controller.abort(new TaskAbortedError(reason, entry.task));
      this.emit('task:abort', { task: entry.task, reason });
    }
  }

  async #execute(entry) {
    const { task, controller } = entry;
    const handler = this.#handlers.get(task.step);
    let result;
    try {
      if (!handler) throw new UnknownTaskError(task.step);
      result = await handler(task, { signal: controller.signal, heartbeat: () => this.#heartbeat(entry, true) });
    } catch (err) {
      this.#handlerReturned(entry);
      if (this.#staleAfterAbort(entry, err)) return;
      this.#stopHeartbeats(entry);
      await this.#recordFailure(entry, err);
      return;
    }
    this.#handlerReturned(entry);
    this.#stopHeartbeats(entry);
    if (this.#staleAfterAbort(entry, null)) return;
    await this.#recordResult(entry, result);
  }

  // No heartbeat races the outcome (it would answer 'lost' once recorded).
  #stopHeartbeats(entry) {
    clearInterval(entry.heartbeat);
    clearTimeout(entry.timeout);
    entry.finished = true;
  }

  // After 'cancelled' or 'lost' the claim is stale: nothing may be recorded.
  // After 'shutdown' the task is left to its lease; after 'timeout' the run
  // has stalled.  None of them records.
  #staleAfterAbort(entry, err) {
    const signal = entry.controller.signal;
    if (!signal.aborted) return false;
    const reason = signal.reason?.reason;
    this.#log.info(`task ${entry.task.id} (${entry.task.step}) ended after abort (${reason})` +
      (err && err !== signal.reason ? `: ${errorMessage(err)}` : ''));
    return true;
  }

  async #recordResult(entry, result) {
    let json;
    try {
      json = result === undefined ? null : JSON.stringify(result) ?? null;
    } catch (err) {
      await this.#recordFailure(entry, new NonRetryableError(`result is not JSON: ${err.message}`));
      return;
    }
    let recorded;
    try {
      recorded = this.#opts.batchCompletions
        ? await this.#queueCompletion(entry, json)
        : await this.#completeOne(entry, json);
    } catch (err) {
      if (isConnectionError(err)) {
        this.#log.error(`task ${entry.task.id}: completion not recorded (${err.message}): left to its lease`);
        return;
      }
      // The server refused the result itself (too large: CF012): a failure
      // no retry fixes.
      const failure = new NonRetryableError(err.message);
      failure.name = err.code ?? 'Error';
      await this.#recordFailure(entry, failure);
      return;
    }
    if (!recorded) this.#log.warn(`task ${entry.task.id} (${entry.task.step}): completion refused (stale claim or cancelled)`);
    this.emit('task:complete', { task: entry.task, result, recorded });
  }

  #completeOne(entry, json) {
    return this.#call(COMPLETE_SQL, [entry.rawId, entry.token, json], entry);
  }

  #queueCompletion(entry, json) {
    return new Promise((resolve, reject) => {
      this.#completions.push({ entry, json, resolve, reject });
      if (!this.#completing) this.#flushCompletions();
    });
  }

  // One completion statement in flight at a time; those queued meanwhile go
  // in the next (as group commit does), so a busy worker commits many
  // results at once and an idle one sends each at once.
  async #flushCompletions() {
    this.#completing = true;
    try {
      while (this.#completions.length > 0) {
        const batch = this.#completions.splice(0, COMPLETION_BATCH_MAX);
        if (batch.length === 1) await this.#settle(batch[0]);
        else await this.#completeBatch(batch);
      }
    } finally {
      this.#completing = false;
    }
  }

  #settle(c) {
    return this.#completeOne(c.entry, c.json).then(c.resolve, c.reject);
  }

  async #completeBatch(batch) {
    let rows;
    try {
      rows = (await this.#pool.query(COMPLETE_MANY_SQL, [
        batch.map((c) => c.entry.rawId), batch.map((c) => c.entry.token), batch.map((c) => c.json)])).rows;
    } catch (err) {
      // A result the server refuses fails the whole statement, and a lost
      // connection may have lost it: each goes on its own (fenced, so one
      // already recorded answers false).
      this.#log.debug(`batched completion failed (${err.message}); completing one by one`);
      await Promise.all(batch.map((c) => this.#settle(c)));
      return;
    }
    for (const r of rows) batch[Number(r.ord) - 1].resolve(r.recorded);
  }

  async #recordFailure(entry, err) {
    const retryable = !(err instanceof NonRetryableError) && err?.retryable !== false;
    const cls = errorClass(err);
    const msg = errorMessage(err);
    this.#log.info(`task ${entry.task.id} (${entry.task.step}) failed: ${cls}: ${msg}`);
    let recorded = false;
    try {
      recorded = await this.#call(FAIL_SQL, [entry.rawId, entry.token, cls, msg, retryable], entry);
      if (!recorded) this.#log.warn(`task ${entry.task.id}: failure refused (stale claim or cancelled)`);
    } catch (e) {
      this.#log.error(`task ${entry.task.id}: failure not recorded (${e.message}): left to its lease`);
    }
    this.emit('task:fail', { task: entry.task, error: err, retryable, recorded });
  }

  // One protocol call on the pool, retried over lost connections while the
  // claim can still be valid (before lease_until) and the worker runs.
  async #call(sql, params, entry) {
    const backoff = new Backoff(50, 2000);
    for (;;) {
      try {
        const res = await this.#pool.query(sql, params);
        return Object.values(res.rows[0])[0];
      } catch (err) {
        const delay = backoff.next();
        if (!isConnectionError(err) || this.#pool.ending || Date.now() + delay > entry.deadline) throw err;
        this.#log.warn(`task ${entry.task.id}: ${err.message}; retrying in ${delay} ms`);
        await sleep(delay).promise;
      }
    }
  }

  async #heartbeat(entry, explicit = false) {
    if (entry.finished || entry.heartbeatBusy || entry.controller.signal.aborted) {
      return entry.controller.signal.aborted ? entry.controller.signal.reason.reason : 'ok';
    }
    entry.heartbeatBusy = true;
    try {
      const extend = this.#opts.extendLease == null ? null : `${this.#opts.extendLease} milliseconds`;
      const res = await this.#pool.query(HEARTBEAT_SQL, [entry.rawId, entry.token, extend]);
      const answer = res.rows[0].answer;
      if (answer === 'ok') entry.deadline = Date.now() + (this.#opts.extendLease ?? entry.leaseMs);
      if (answer !== 'ok' && !entry.finished) this.#abort(entry, answer);
      return answer;
    } catch (err) {
      this.#log.warn(`task ${entry.task.id}: heartbeat failed: ${err.message}`);
      if (explicit) throw err;
      return null;
    } finally {
      entry.heartbeatBusy = false;
    }
  }

  // --- signals -------------------------------------------------------------

  #installSignals() {
    let count = 0;
    this.#signalHandler = (sig) => {
      count += 1;
      if (count > 1) {
        this.#log.warn(`${sig} again: exiting now`);
        process.exit(1);
      }
      this.#log.info(`${sig}: shutting down gracefully`);
      this.stop();
    };
    process.on('SIGTERM', this.#signalHandler);
    process.on('SIGINT', this.#signalHandler);
  }

  #removeSignals() {
    if (!this.#signalHandler) return;
    process.off('SIGTERM', this.#signalHandler);
    process.off('SIGINT', this.#signalHandler);
    this.#signalHandler = null;
  }
}

/** A task whose step has no handler in this worker (retryable: another may have it). */
export class UnknownTaskError extends Error {
  constructor(step) {
    super(`no handler registered for step "${step}"`);
    this.name = 'UnknownTaskError';
  }
}

function taskFromRow(row) {
  return Object.freeze({
    id: Number(row.task_id),
    queue: row.queue,
    step: row.step,
    workflow: row.workflow,
    key: row.key,
    args: row.args,
    attempt: row.attempt,
    leaseUntil: row.lease_until,
    timeoutAt: row.timeout_at,
    idempotencyKey: row.idempotency_key,
  });
}
