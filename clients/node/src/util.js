// Small helpers of @chrono-forge/client: backoff, a cancellable sleep, the
// logger adapter and the split of an options object into ours and pg's.

/** Exponential backoff with jitter: base, 2·base, … up to cap (ms). */
export class Backoff {
  #n = 0;
  constructor(base = 100, cap = 30000) {
    this.base = base;
    this.cap = cap;
  }

  next() {
    const d = Math.min(this.cap, this.base * 2 ** this.#n);
    this.#n = Math.min(this.#n + 1, 30);
    return Math.round(d / 2 + Math.random() * d / 2);
  }

  reset() {
    this.#n = 0;
  }
}

/** A sleep whose timer can be cancelled (so it never holds the process open). */
export function sleep(ms) {
  let timer;
  let done;
  const promise = new Promise((resolve) => {
    done = resolve;
    timer = setTimeout(resolve, ms);
  });
  return { promise, cancel: () => { clearTimeout(timer); done(); } };
}

const LEVELS = ['debug', 'info', 'warn', 'error'];

/**
 * Wraps a user logger (any object with some of debug/info/warn/error, such
 * as console or pino); the default writes warnings and errors to stderr.
 */
export class Logger {
  constructor(target) {
    const t = target === undefined
      ? { warn: (m) => console.warn(m), error: (m) => console.error(m) }
      : (target ?? {});
    for (const level of LEVELS) {
      const fn = typeof t[level] === 'function' ? t[level].bind(t) : null;
      this[level] = fn ? (msg) => fn(`chrono_forge worker: ${msg}`) : () => {};
    }
  }
}

/** Splits options into the keys in `own` and the rest (a pg config). */
export function splitConfig(options, ownKeys) {
  const own = {};
  const pgConfig = {};
  for (const [k, v] of Object.entries(options ?? {})) {
    if (v === undefined) continue;
    if (ownKeys.includes(k)) own[k] = v;
    else pgConfig[k] = v;
  }
  return { own, pgConfig };
}
