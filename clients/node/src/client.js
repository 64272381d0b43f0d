// The application side of @chrono-forge/client: start runs, send events,
// cancel runs and wait for a run to end (chrono_forge.wait_for_run, which
// blocks on the server without polling), over a small pg pool.
import pg from 'pg';

export class Client {
  #pool;

  /** `config`: a connection string, or a pg config ({ connectionString } or host/port/...). */
  constructor(config = {}) {
    const c = typeof config === 'string' ? { connectionString: config } : config;
    this.#pool = new pg.Pool({ application_name: 'chrono_forge node client', ...c });
    this.#pool.on('error', () => {}); // an idle connection lost: the pool replaces it
  }

  /** Starts (or finds: idempotent on workflow and key) a run; returns its id. */
  async start(workflow, key, args = {}, options = {}) {
    const res = await this.#pool.query(
      'SELECT chrono_forge.start($1::text, $2::text, $3::jsonb, $4::jsonb) AS id',
      [workflow, key, JSON.stringify(args ?? {}), JSON.stringify(options ?? {})]);
    return Number(res.rows[0].id);
  }

  /** Delivers a durable event to a run; false if the run is terminal. */
  async sendEvent(workflow, key, name, payload = null) {
    const res = await this.#pool.query(
      'SELECT chrono_forge.send_event($1::text, $2::text, $3::text, $4::jsonb) AS sent',
      [workflow, key, name, payload === null || payload === undefined ? null : JSON.stringify(payload)]);
    return res.rows[0].sent;
  }

  /** Cancels a run (and its open tasks); returns how many runs were cancelled. */
  async cancel(workflow, key, reason = null, { withChildren = false } = {}) {
    const res = await this.#pool.query(
      'SELECT chrono_forge.cancel($1::text, $2::text, $3::text, $4::boolean) AS n',
      [workflow, key, reason, withChildren]);
    return Number(res.rows[0].n);
  }

  /**
   * Waits until the run is completed, failed, cancelled or stalled, or
   * until `timeout` ms pass (then returns its state at that moment), with
   * the result a completed run set (set_result()).
   * Holds one connection while it waits.
   */
  async waitForRun(workflow, key, { timeout = null } = {}) {
    const res = await this.#pool.query(
      'SELECT * FROM chrono_forge.wait_for_run($1::text, $2::text, $3::interval)',
      [workflow, key, timeout == null ? null : `${timeout} milliseconds`]);
    const r = res.rows[0];
    // result: from chrono_forge 0.10.0 on (set_result()); null before.
    return {
      state: r.state, context: r.context, errorClass: r.error_class, errorMessage: r.error_message,
      result: r.result ?? null,
    };
  }

  /** Runs any SQL on the client's pool (for what the methods above do not cover). */
  query(text, params) {
    return this.#pool.query(text, params);
  }

  /** Closes the pool. */
  end() {
    return this.#pool.end();
  }
}
