// Errors of @chrono-forge/client: the one a handler throws for a permanent
// failure, the reasons an AbortSignal gives, and how a thrown value is named
// in fail_task's error_class.

/**
 * Thrown by a handler for a failure no retry can fix: the task fails at
 * once (fail_task with retryable = false) and its run stalls with this
 * error's class (its `name`, so a subclass records its own name).
 */
export class NonRetryableError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * The reason of a handler's AbortSignal: `reason` is 'cancelled' (the run
 * was cancelled), 'lost' (the claim went stale: lease expired and the task
 * re-offered, or the task is done), 'timeout' (the task's overall timeout
 * passed) or 'shutdown' (the worker's grace period ended).
 */
export class TaskAbortedError extends Error {
  constructor(reason, task) {
    super(`task ${task.id} (${task.step}) aborted: ${reason}`);
    this.name = 'TaskAbortedError';
    this.reason = reason;
  }
}

/** The error class recorded for a thrown value: its name, else its constructor's. */
export function errorClass(err) {
  if (err instanceof Error) {
    if (err.name && err.name !== 'Error') return err.name;
    return err.constructor?.name || 'Error';
  }
  return 'Error';
}

/** The message recorded for a thrown value. */
export function errorMessage(err) {
  if (err instanceof Error) return err.message || String(err);
  try {
    return typeof err === 'string' ? err : JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}

/**
 * Whether an error from pg means the connection (or server) went away, so
 * the call may be retried on a new connection; a SQL error (an SQLSTATE
 * outside classes 08 and 57P) is an answer and is not retried.
 */
export function isConnectionError(err) {
  const code = err?.code;
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) {
    return code.startsWith('08') || code.startsWith('57P');
  }
  return true;
}

/** SQLSTATEs that no reconnect fixes (bad password, missing database or role). */
export function isFatalConnectError(err) {
  return ['28000', '28P01', '3D000'].includes(err?.code);
}
