/* chrono_forge 0.6.0 -> 0.7.0: steps outside the database (tasks worked by
 * any process that speaks SQL), waiting for a run from a client, and the
 * house.  See CHANGELOG.md.
 * A fresh CREATE EXTENSION runs chrono_forge--0.7.0.sql, built from
 * chrono_forge.sql, which holds everything this script makes; the catalog
 * test (test/integration/t_catalog_match.sh) checks that both agree. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.7.0'" to load this file. \quit

-- =====================================================================
-- External tasks (issue 17)
-- =====================================================================

-- ---------------------------------------------------------------------
-- tasks: steps worked outside the database.  run_task() writes one row
-- per (run, step) and parks the run; a worker that speaks SQL claims it
-- (claim_tasks(): a lease and a claim token), heartbeats, and completes
-- or fails it; the run's next pass records the outcome on the step.  The
-- row is re-offered in place (a retry, an expired lease, retry()), so a
-- step has one task whatever its attempts.  owner is the run's owner:
-- only that role and its members may see or work the task.  Written by
-- the engine only.
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.tasks (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id   bigint NOT NULL REFERENCES chrono_forge.workflows ON DELETE CASCADE,
    step          text NOT NULL,          -- the step's name (the task's name), without run_task$
    queue         text NOT NULL,
    args          jsonb,
    state         text NOT NULL,
    attempt       integer NOT NULL,       -- 1-based; the attempt offered or in flight
    available_at  timestamptz NOT NULL,   -- due from (a retry's backoff ends)
    lease         interval NOT NULL,      -- a claim's length
    claim_token   uuid,                   -- the current (or last) claim's; fences stale workers
    claimed_by    text,                   -- the worker's name, as it gave it
    claimed_at    timestamptz,
    lease_until   timestamptz,            -- the claim's lease ends (heartbeats move it)
    timeout_at    timestamptz,            -- the step's overall timeout
    result        jsonb,
    error_class   text,                   -- the last failure's
    error_message text,
    retryable     boolean,
    owner         regrole NOT NULL,       -- the run's owner
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    completed_at  timestamptz,
    CONSTRAINT tasks_workflow_id_step_key UNIQUE (workflow_id, step),
    CONSTRAINT tasks_state_check
        CHECK (state IN ('pending', 'claimed', 'completed', 'failed', 'cancelled'))
);
-- The claim: due pending tasks of a queue, oldest first.
CREATE INDEX tasks_pending_idx ON chrono_forge.tasks (queue, available_at, id)
    WHERE state = 'pending';
-- In flight, by when their leases end (task_queues).
CREATE INDEX tasks_claimed_idx ON chrono_forge.tasks (queue, lease_until)
    WHERE state = 'claimed';
ALTER TABLE chrono_forge.tasks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tasks_owner ON chrono_forge.tasks FOR SELECT
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));
CREATE POLICY tasks_admin ON chrono_forge.tasks FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.tasks TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.tasks', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.tasks_id_seq', '');

-- run_task: the step primitive (two overloads, as durably_execute).  A
-- third positional argument would match both: name it (args => ...,
-- result => ...).
CREATE PROCEDURE chrono_forge.run_task(step text, queue text, args jsonb DEFAULT '{}',
    retry_policy jsonb DEFAULT NULL, timeout interval DEFAULT NULL,
    lease interval DEFAULT '30 seconds')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_run_task';

CREATE PROCEDURE chrono_forge.run_task(step text, queue text, INOUT result jsonb,
    args jsonb DEFAULT '{}', retry_policy jsonb DEFAULT NULL,
    timeout interval DEFAULT NULL, lease interval DEFAULT '30 seconds')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_run_task';

-- The worker protocol: each call one short statement, as the caller's
-- identity decides (the run's owner or a member of it).
CREATE FUNCTION chrono_forge.claim_tasks(queues text[], max_tasks integer DEFAULT 1,
    worker text DEFAULT NULL)
    RETURNS TABLE (task_id bigint, claim_token uuid, queue text, step text, workflow text,
                   key text, args jsonb, attempt integer, lease_until timestamptz,
                   timeout_at timestamptz, idempotency_key text)
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_claim_tasks';

CREATE FUNCTION chrono_forge.heartbeat_task(task_id bigint, claim_token uuid,
    extend interval DEFAULT NULL)
    RETURNS text
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_heartbeat_task';

CREATE FUNCTION chrono_forge.complete_task(task_id bigint, claim_token uuid,
    result jsonb DEFAULT NULL)
    RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_complete_task';

CREATE FUNCTION chrono_forge.fail_task(task_id bigint, claim_token uuid, error_class text,
    message text, retryable boolean DEFAULT true)
    RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_fail_task';

-- Queues as the caller sees them (its own and its roles' tasks; admins
-- all): due now, the oldest due, waiting for a backoff, in flight, leases
-- ending within 10 seconds, failed attempts in the last hour.  No args
-- or results.
CREATE VIEW chrono_forge.task_queues WITH (security_invoker = true) AS
WITH open AS (
    SELECT t.queue,
           pg_catalog.count(*) FILTER (WHERE t.state = 'pending'
                                         AND t.available_at <= chrono_forge.now()) AS due,
           pg_catalog.min(t.available_at) FILTER (WHERE t.state = 'pending'
                                         AND t.available_at <= chrono_forge.now()) AS oldest_due_at,
           pg_catalog.count(*) FILTER (WHERE t.state = 'pending'
                                         AND t.available_at > chrono_forge.now()) AS backing_off,
           pg_catalog.count(*) FILTER (WHERE t.state = 'claimed') AS in_flight,
           pg_catalog.count(*) FILTER (WHERE t.state = 'claimed'
                                         AND t.lease_until <= chrono_forge.now() + interval '10 seconds')
               AS leases_expiring
      FROM chrono_forge.tasks t
     WHERE t.state IN ('pending', 'claimed')
     GROUP BY t.queue),
failures AS (
    SELECT t.queue, pg_catalog.count(*) AS failed_last_hour
      FROM chrono_forge.error_logs e
      JOIN chrono_forge.tasks t
        ON t.workflow_id = e.workflow_id AND t.step = pg_catalog.substr(e.step_name, 10)
     WHERE e.created_at > chrono_forge.now() - interval '1 hour'
       AND e.step_name LIKE 'run\_task$%'
     GROUP BY t.queue)
SELECT coalesce(o.queue, f.queue) AS queue,
       coalesce(o.due, 0) AS due, o.oldest_due_at,
       coalesce(o.backing_off, 0) AS backing_off,
       coalesce(o.in_flight, 0) AS in_flight,
       coalesce(o.leases_expiring, 0) AS leases_expiring,
       coalesce(f.failed_last_hour, 0) AS failed_last_hour
  FROM open o FULL JOIN failures f ON f.queue = o.queue;
GRANT SELECT ON chrono_forge.task_queues TO PUBLIC;

-- timeline() gains a last column, task: a run_task step's task as it
-- stands (queue, state, attempt, claim, lease, timeout, last error; no
-- args or result).  A new result column needs the function dropped.
DROP FUNCTION chrono_forge.timeline(text, text, integer);
CREATE FUNCTION chrono_forge.timeline(workflow text, key text, max_errors integer DEFAULT 20)
    RETURNS TABLE (seq bigint, step_name text, kind text, state text, attempts integer,
                   started_at timestamptz, completed_at timestamptz, duration interval,
                   result jsonb, metadata jsonb, error_class text, error_message text,
                   errors jsonb, repetitions jsonb, task jsonb)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    run chrono_forge.workflows := chrono_forge.visible_run(workflow, key);
BEGIN
    RETURN QUERY
    WITH steps AS (
        SELECT l.* FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = run.id AND l.step_name NOT LIKE 'durably\_repeat$%$%')
    SELECT pg_catalog.row_number() OVER (ORDER BY l.started_at, l.id),
           l.step_name,
           CASE WHEN l.step_name LIKE '$%' THEN pg_catalog.split_part(l.step_name, '$', 2)
                ELSE pg_catalog.split_part(l.step_name, '$', 1) END,
           l.state::text, l.attempts, l.started_at, l.completed_at,
           l.completed_at - l.started_at, l.result, l.metadata, l.error_class, l.error_message,
           (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                       'id', e.id, 'attempt', e.attempt, 'error_class', e.error_class,
                       'error_message', e.error_message, 'at', e.created_at)
                       || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                              'error_detail', e.error_detail, 'error_hint', e.error_hint,
                              'error_context', e.error_context)) ORDER BY e.id)
              FROM (SELECT * FROM chrono_forge.error_logs e
                     WHERE e.workflow_id = run.id
                       AND (e.step_name = l.step_name
                            OR (l.step_name LIKE '$workflow\_failure$%'
                                AND e.id::text = pg_catalog.substr(l.step_name, 19)))
                     ORDER BY e.id DESC LIMIT max_errors) e),
           CASE WHEN l.step_name LIKE 'durably\_repeat$%' THEN
               (SELECT pg_catalog.jsonb_build_object(
                           'completed', pg_catalog.count(*) FILTER (WHERE t.state = 'completed'),
                           'failed', pg_catalog.count(*) FILTER (WHERE t.state = 'failed'),
                           'pending', pg_catalog.count(*) FILTER (WHERE t.state = 'pending'),
                           'fast_forwarded', coalesce(pg_catalog.sum((t.metadata->>'fast_forwarded')::bigint), 0),
                           'last_tick', pg_catalog.max(t.metadata->>'scheduled_for'))
                  FROM chrono_forge.execution_logs t
                 WHERE t.workflow_id = run.id
                   AND pg_catalog.starts_with(t.step_name, l.step_name || '$')) END,
           CASE WHEN l.step_name LIKE 'run\_task$%' THEN
               (SELECT pg_catalog.jsonb_build_object(
                           'task_id', t.id, 'queue', t.queue, 'state', t.state,
                           'attempt', t.attempt, 'available_at', t.available_at,
                           'claimed_by', t.claimed_by, 'claimed_at', t.claimed_at,
                           'lease_until', t.lease_until, 'timeout_at', t.timeout_at,
                           'error_class', t.error_class, 'error_message', t.error_message)
                  FROM chrono_forge.tasks t
                 WHERE t.workflow_id = run.id AND t.step = pg_catalog.substr(l.step_name, 10)) END
      FROM steps l
    UNION ALL
    SELECT NULL, NULL, 'workflow errors', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', e.id, 'attempt', e.attempt, 'error_class', e.error_class,
               'error_message', e.error_message, 'at', e.created_at)
                       || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                              'error_detail', e.error_detail, 'error_hint', e.error_hint,
                              'error_context', e.error_context)) ORDER BY e.id),
           NULL, NULL
      FROM (SELECT * FROM chrono_forge.error_logs e
             WHERE e.workflow_id = run.id AND e.step_name IS NULL
               AND NOT EXISTS (SELECT 1 FROM chrono_forge.execution_logs m
                                WHERE m.workflow_id = run.id
                                  AND m.step_name = '$workflow_failure$' || e.id::text)
             ORDER BY e.id DESC LIMIT max_errors) e
    HAVING pg_catalog.count(*) > 0
    ORDER BY 1 NULLS LAST;
END
$$;

-- (end of section: tasks)

-- =====================================================================
-- Waiting for a run from a client (issue 17)
-- =====================================================================

-- wait_for_run(): returns when the caller's run (found as the other run
-- functions find it) is completed, failed, cancelled or stalled, or when
-- timeout passes (then as it is; NULL: no timeout).  Blocks on its latch,
-- set by the commit that ends the run; the last error only for a failed
-- or stalled run.
CREATE FUNCTION chrono_forge.wait_for_run(workflow text, key text, timeout interval DEFAULT NULL)
    RETURNS TABLE (state text, context jsonb, error_class text, error_message text)
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_wait_for_run';

-- Sessions blocked in wait_for_run() now (the shared registry's count).
CREATE FUNCTION chrono_forge.run_waiters() RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_run_waiters';
REVOKE ALL ON FUNCTION chrono_forge.run_waiters() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chrono_forge.run_waiters() TO chrono_forge_admin;

-- (end of section: wait for run)

-- =====================================================================
-- The house (issue 16)
-- =====================================================================

-- (end of section: house)
