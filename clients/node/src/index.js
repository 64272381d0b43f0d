// @chrono-forge/client: the Node client of chrono_forge's external tasks
// (a Worker that runs workflow steps outside the database) and a Client
// that starts runs, sends events and waits for runs.
export { Worker, UnknownTaskError, CHANNEL } from './worker.js';
export { Client } from './client.js';
export { NonRetryableError, TaskAbortedError } from './errors.js';
