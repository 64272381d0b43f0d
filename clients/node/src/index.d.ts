// Type declarations of @chrono-forge/client (hand-written; test/types.test.js
// compiles test/types-check.ts against them with the typescript devDependency).
// AbortSignal comes from @types/node or the DOM library.

/** A pg connection config (passed to pg's Client and Pool as it is). */
export interface ConnectionConfig {
  connectionString?: string;
  host?: string;
  port?: number;
  user?: string;
  password?: string | (() => string | Promise<string>);
  database?: string;
  ssl?: any;
  application_name?: string;
  [option: string]: unknown;
}

export interface QueryResult {
  rows: any[];
  rowCount: number | null;
}

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A claimed task, as the handler sees it. */
export interface Task {
  readonly id: number;
  readonly queue: string;
  /** The step (task) name; it chose the handler. */
  readonly step: string;
  readonly workflow: string;
  readonly key: string;
  readonly args: any;
  /** 1 on the first claim of the task, then one more per attempt. */
  readonly attempt: number;
  readonly leaseUntil: Date;
  /** When the task's overall timeout stalls the run (null: no timeout). */
  readonly timeoutAt: Date | null;
  /** Stable across attempts (e.g. '<run id>:<step>'): pass it to outside APIs. */
  readonly idempotencyKey: string;
}

export type HeartbeatAnswer = 'ok' | 'cancelled' | 'lost';

export interface HandlerContext {
  /** Aborted when a heartbeat answers 'cancelled' or 'lost', the timeout passes, or shutdown's grace ends. */
  readonly signal: AbortSignal;
  /** Sends a heartbeat now (they are also sent automatically, every half lease). */
  heartbeat(): Promise<HeartbeatAnswer | null>;
}

export type Handler<R = unknown> = (task: Task, ctx: HandlerContext) => R | Promise<R>;

export interface Logger {
  debug?(msg: string): void;
  info?(msg: string): void;
  warn?(msg: string): void;
  error?(msg: string): void;
}

export interface WorkerOptions extends ConnectionConfig {
  /** The queues to claim from. */
  queues: string[];
  /** Most handlers running at once (default 10); a slot frees when its handler returns. */
  concurrency?: number;
  /** Fallback poll, ms without a claim before one is made (default 5000). */
  pollInterval?: number;
  /** ms between heartbeats of a task (default: half its lease). */
  heartbeatInterval?: number | null;
  /** ms a heartbeat extends the lease by (default: the task's lease). */
  extendLease?: number | null;
  /** ms stop() waits for tasks in flight (default 30000). */
  shutdownGrace?: number;
  /** Stop gracefully on SIGTERM/SIGINT (a second signal exits at once). Default false. */
  handleSignals?: boolean;
  /** Default console for warn/error only; null: silent. */
  logger?: Logger | null;
  /** Name recorded by claim_tasks (default host:pid). */
  workerName?: string;
  /** Connections for heartbeats and outcomes (default min(concurrency, 10) + 1). */
  poolSize?: number;
  /** Completions that wait for one in flight share one statement (default true). */
  batchCompletions?: boolean;
  /** Milliseconds a claim waits while fewer than half the handlers are free, so claims batch up (default 5; 0: none). */
  claimDelay?: number;
}

export interface TaskCompleteEvent { task: Task; result: unknown; recorded: boolean }
export interface TaskFailEvent { task: Task; error: unknown; retryable: boolean; recorded: boolean }
export interface TaskAbortEvent { task: Task; reason: AbortReason }

export declare const CHANNEL: 'chrono_forge_tasks';

/** Also a node:events EventEmitter (on, once, off, emit). */
export declare class Worker {
  constructor(options: WorkerOptions);
  task<R = unknown>(step: string, handler: Handler<R>): this;
  start(): Promise<this>;
  stop(options?: { grace?: number }): Promise<void>;
  /** Tasks claimed and not yet recorded (handlers running, or outcomes being recorded). */
  readonly inFlight: number;
  readonly name: string;
  on(event: 'task:start', listener: (task: Task) => void): this;
  on(event: 'task:complete', listener: (e: TaskCompleteEvent) => void): this;
  on(event: 'task:fail', listener: (e: TaskFailEvent) => void): this;
  on(event: 'task:abort', listener: (e: TaskAbortEvent) => void): this;
  on(event: 'stopped', listener: () => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
  off(event: string | symbol, listener: (...args: any[]) => void): this;
}

export interface RunOutcome {
  state: 'idle' | 'running' | 'completed' | 'failed' | 'stalled' | 'cancelled' | 'compensated';
  context: any;
  errorClass: string | null;
  errorMessage: string | null;
  /** What a completed run set with set_result() (null otherwise, and before chrono_forge 0.10.0). */
  result: any;
}

export declare class Client {
  constructor(config?: string | ConnectionConfig);
  start(workflow: string, key: string, args?: Json, options?: Json): Promise<number>;
  sendEvent(workflow: string, key: string, name: string, payload?: Json): Promise<boolean>;
  cancel(workflow: string, key: string, reason?: string | null, options?: { withChildren?: boolean }): Promise<number>;
  /** timeout in ms; null waits until the run ends or stalls. */
  waitForRun(workflow: string, key: string, options?: { timeout?: number | null }): Promise<RunOutcome>;
  query(text: string, params?: unknown[]): Promise<QueryResult>;
  end(): Promise<void>;
}

/** Throw it for a failure no retry fixes: the run stalls with its class. */
export declare class NonRetryableError extends Error {
  constructor(message?: string, options?: { cause?: unknown });
}

export type AbortReason = 'cancelled' | 'lost' | 'timeout' | 'shutdown';

/** The AbortSignal's reason. */
export declare class TaskAbortedError extends Error {
  readonly reason: AbortReason;
}

export declare class UnknownTaskError extends Error {
  constructor(step: string);
}
