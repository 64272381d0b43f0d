/* chrono_forge 0.1.0 -> 0.2.0: periodic work (durably_repeat, pg_cron
 * schedules), operations (retention, views, actions, the admin role) and
 * fan-out (branches, spawns, merges).
 * A fresh CREATE EXTENSION runs the 0.1.0 script and then this one. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.2.0'" to load this file. \quit

-- =====================================================================
-- Periodic work
-- =====================================================================

-- durably_repeat: a step run once per tick.  A C procedure that commits,
-- so no SET clause (see the 0.1.0 script); it pins its own search path.
CREATE PROCEDURE chrono_forge.durably_repeat(step text, every interval, till text,
    start_at timestamptz DEFAULT NULL, retry_policy jsonb DEFAULT NULL,
    timeout interval DEFAULT '1 hour', on_error text DEFAULT 'continue',
    name text DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_durably_repeat';

-- The replay cache reads a run's step logs but never its repeat ticks:
-- without this index that read would walk every tick the run ever had.
-- The predicate names step_name only (fixed per row), so updates of a log
-- stay HOT; it must match the executor's query word for word.
CREATE INDEX execution_logs_replay_idx ON chrono_forge.execution_logs (workflow_id)
    WHERE step_name NOT LIKE 'durably\_repeat$%$%';

-- Cron expressions (UTC minutes, as pg_cron 1.4 fires them).
CREATE FUNCTION chrono_forge.cron_next(cron text, after timestamptz) RETURNS timestamptz
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cf_cron_next_sql';
CREATE FUNCTION chrono_forge.cron_prev(cron text, at timestamptz) RETURNS timestamptz
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cf_cron_prev_sql';

-- Schedules: pg_cron jobs that start one run per tick.  last_tick is the
-- newest tick handled (started or skipped by the catch-up policy).
CREATE TABLE chrono_forge.schedules (
    name          text PRIMARY KEY,
    cron          text NOT NULL,
    workflow      text NOT NULL,
    args          jsonb NOT NULL DEFAULT '{}',
    catch_up      text NOT NULL,
    owner         regrole NOT NULL,   -- the jobs and the runs are this role's
    jobid         bigint,             -- cron.job: the ticks
    reboot_jobid  bigint,             -- cron.job: catch-up at pg_cron's start
    last_tick     timestamptz NOT NULL,
    last_fired_at timestamptz,
    runs_started  bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT schedules_name_check CHECK (name <> ''),
    CONSTRAINT schedules_catch_up_check CHECK (catch_up IN ('none', 'latest', 'all'))
);
ALTER TABLE chrono_forge.schedules ENABLE ROW LEVEL SECURITY;
CREATE POLICY schedules_owner ON chrono_forge.schedules FOR SELECT
    USING (pg_catalog.pg_has_role(current_user, owner, 'MEMBER'));
GRANT SELECT ON chrono_forge.schedules TO PUBLIC;

CREATE FUNCTION chrono_forge.schedule(name text, cron text, workflow text,
    args jsonb DEFAULT '{}', catch_up text DEFAULT 'latest') RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_schedule';
CREATE FUNCTION chrono_forge.unschedule(name text) RETURNS void
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_unschedule';
-- What the pg_cron jobs call; only the schedule's owner may.
CREATE FUNCTION chrono_forge.schedule_fire(name text, reboot boolean DEFAULT false)
    RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_schedule_fire';

-- Schedules with their last and next tick and the last tick's run.
CREATE VIEW chrono_forge.schedule_status WITH (security_invoker = true) AS
SELECT s.name, s.cron, s.workflow, s.args, s.catch_up, s.owner, s.last_tick,
       chrono_forge.cron_next(s.cron, GREATEST(s.last_tick, chrono_forge.now())) AS next_tick,
       s.last_fired_at, s.runs_started, r.id AS last_run_id, r.state AS last_run_state,
       s.jobid, s.reboot_jobid
  FROM chrono_forge.schedules s
  LEFT JOIN chrono_forge.workflows r
    ON r.workflow = s.workflow
   AND r.key = s.name || '@' || pg_catalog.to_char(s.last_tick AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"');
GRANT SELECT ON chrono_forge.schedule_status TO PUBLIC;

-- (end of periodic work)

-- =====================================================================
-- Operations
-- =====================================================================

-- ---------------------------------------------------------------------
-- The admin role.  Roles are cluster-wide: create it only if no other
-- database's chrono_forge did.  DBAs GRANT it to on-call roles; its
-- members see and act on every role's runs.
-- ---------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'chrono_forge_admin') THEN
        CREATE ROLE chrono_forge_admin NOLOGIN;
    END IF;
END
$$;

CREATE POLICY workflows_admin ON chrono_forge.workflows FOR SELECT
    TO chrono_forge_admin USING (true);
CREATE POLICY execution_logs_admin ON chrono_forge.execution_logs FOR SELECT
    TO chrono_forge_admin USING (true);
CREATE POLICY error_logs_admin ON chrono_forge.error_logs FOR SELECT
    TO chrono_forge_admin USING (true);
CREATE POLICY wakeups_admin ON chrono_forge.wakeups FOR SELECT
    TO chrono_forge_admin USING (true);
CREATE POLICY events_admin ON chrono_forge.events FOR SELECT
    TO chrono_forge_admin USING (true);
CREATE POLICY workflow_defaults_admin ON chrono_forge.workflow_defaults FOR SELECT
    TO chrono_forge_admin USING (true);
CREATE POLICY schedules_admin ON chrono_forge.schedules FOR SELECT
    TO chrono_forge_admin USING (true);

-- The owner policy tested membership row by row (pg_has_role() per run,
-- a role-name lookup each time); the roles the caller is a member of are
-- now computed once per query and each row compared with that short list.
ALTER POLICY workflows_owner ON chrono_forge.workflows
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));
ALTER POLICY workflow_defaults_owner ON chrono_forge.workflow_defaults
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));

-- The owner policies of the logs looked the run up with an uncorrelated
-- IN (a hash of every visible run per query); a correlated EXISTS is one
-- index probe per log row, which is what the per-run views read.
ALTER POLICY execution_logs_owner ON chrono_forge.execution_logs
    USING (EXISTS (SELECT 1 FROM chrono_forge.workflows w WHERE w.id = workflow_id));
ALTER POLICY error_logs_owner ON chrono_forge.error_logs
    USING (EXISTS (SELECT 1 FROM chrono_forge.workflows w WHERE w.id = workflow_id));
ALTER POLICY wakeups_owner ON chrono_forge.wakeups
    USING (EXISTS (SELECT 1 FROM chrono_forge.workflows w WHERE w.id = workflow_id));
ALTER POLICY events_owner ON chrono_forge.events
    USING (EXISTS (SELECT 1 FROM chrono_forge.workflows w WHERE w.id = workflow_id));

-- ---------------------------------------------------------------------
-- When a run became terminal.  completed_at is the contract's (completed
-- runs only); ended_at is set on every move into completed, failed or
-- cancelled (from the engine clock, as updated_at) and cleared when a run
-- leaves them (retry).  A trigger rather than the engine's statements, so
-- every path that ends a run (passes, cancel, future primitives) sets it;
-- its WHEN clause keeps other updates free of it.
-- ---------------------------------------------------------------------

ALTER TABLE chrono_forge.workflows ADD COLUMN ended_at timestamptz;
UPDATE chrono_forge.workflows SET ended_at = coalesce(completed_at, updated_at)
 WHERE state IN ('completed', 'failed', 'cancelled');

-- (C: it fires for every run that completes; no SQL inside, so no path
-- to pin.)
CREATE FUNCTION chrono_forge.workflows_ended_at() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_workflows_ended_at';
REVOKE ALL ON FUNCTION chrono_forge.workflows_ended_at() FROM PUBLIC;

CREATE TRIGGER workflows_ended_at BEFORE UPDATE OF state ON chrono_forge.workflows
    FOR EACH ROW
    WHEN ((NEW.state IN ('completed', 'failed', 'cancelled'))
          IS DISTINCT FROM (OLD.state IN ('completed', 'failed', 'cancelled')))
    EXECUTE FUNCTION chrono_forge.workflows_ended_at();

-- The state as a small integer (1..6, in the enum's order), kept by the
-- table itself.  The views filter and index on it rather than on the enum:
-- under row-level security a non-leakproof comparison (enum equality is
-- not marked leakproof) cannot be an index condition ahead of the policy,
-- so every view would scan all of a caller's runs; smallint equality is
-- leakproof.
ALTER TABLE chrono_forge.workflows ADD COLUMN state_code smallint
    GENERATED ALWAYS AS (CASE state WHEN 'idle' THEN 1 WHEN 'running' THEN 2
                                    WHEN 'completed' THEN 3 WHEN 'failed' THEN 4
                                    WHEN 'stalled' THEN 5 WHEN 'cancelled' THEN 6 END) STORED;

-- ---------------------------------------------------------------------
-- Indexes for retention and the views (each view reads a bounded range
-- of one of these; none counts or skips without a bound).
-- ---------------------------------------------------------------------

-- Retention and analytics: terminal runs by when they ended.  Partial: a
-- run in flight has no entry, so a pass's own updates never touch it.
CREATE INDEX workflows_state_ended_at_idx ON chrono_forge.workflows (state_code, ended_at)
    INCLUDE (owner) WHERE ended_at IS NOT NULL;
-- Run list by state, newest first (keyset on id); capped counts per state
-- index-only (children hidden, owner for row-level security).
CREATE INDEX workflows_state_id_idx ON chrono_forge.workflows (state_code, id)
    INCLUDE (parent_execution_log_id, owner);
-- Overview (capped counts per workflow and state, index-only) and the run
-- list filtered by workflow.
CREATE INDEX workflows_workflow_state_id_idx ON chrono_forge.workflows (workflow, state_code, id)
    INCLUDE (owner);
-- Run list by key prefix (LIKE 'prefix%' with any collation).
CREATE INDEX workflows_key_pattern_idx ON chrono_forge.workflows (key text_pattern_ops);
-- Run list by creation time: runs are inserted in time order, so a BRIN
-- index is small and costs inserts next to nothing.
CREATE INDEX workflows_created_at_brin ON chrono_forge.workflows USING brin (created_at);
-- A branch's children by state, in id order (top-level runs stay out).
CREATE INDEX workflows_children_idx ON chrono_forge.workflows (parent_execution_log_id, state_code, id)
    WHERE parent_execution_log_id IS NOT NULL;
-- Runs parked on a condition or an event, oldest first.
CREATE INDEX execution_logs_pending_waits_idx ON chrono_forge.execution_logs (started_at, id)
    WHERE state = 'pending' AND (step_name LIKE 'wait\_until$%' OR step_name LIKE 'continue\_if$%'
                                 OR step_name LIKE 'await\_event$%');
-- durably_repeat coordination logs (not their ticks).
CREATE INDEX execution_logs_repeat_coordination_idx ON chrono_forge.execution_logs (workflow_id, id)
    WHERE step_name LIKE 'durably\_repeat$%' AND step_name NOT LIKE 'durably\_repeat$%$%';
-- Top errors over a window.
CREATE INDEX error_logs_created_at_idx ON chrono_forge.error_logs (created_at);
-- Deleting a run's events (the 0.1.0 index covers unconsumed ones only).
CREATE INDEX events_workflow_id_idx ON chrono_forge.events (workflow_id);

-- ---------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------

-- 'N' below the cap, 'cap+' at it.
CREATE FUNCTION chrono_forge.capped_count(n bigint, cap integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT CASE WHEN n > cap THEN cap::text || '+' ELSE n::text END $$;

-- The reaper's threshold: chrono_forge.reap_stale_after, -1 = 3 x max_duration.
CREATE FUNCTION chrono_forge.reap_stale_after() RETURNS interval
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN pg_catalog.current_setting('chrono_forge.reap_stale_after') = '-1'
                THEN 3 * pg_catalog.current_setting('chrono_forge.max_duration')::interval
                ELSE pg_catalog.current_setting('chrono_forge.reap_stale_after')::interval END
$$;

-- The states a run-list filter names: a state, 'blocked' (failed,
-- stalled), 'in_flight' (idle, running), or NULL/'all' (every state).
CREATE FUNCTION chrono_forge.state_filter(state text) RETURNS chrono_forge.workflow_state[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF state IS NULL OR state = 'all' THEN
        RETURN pg_catalog.enum_range(NULL::chrono_forge.workflow_state);
    ELSIF state = 'blocked' THEN
        RETURN ARRAY['failed', 'stalled']::chrono_forge.workflow_state[];
    ELSIF state = 'in_flight' THEN
        RETURN ARRAY['idle', 'running']::chrono_forge.workflow_state[];
    ELSIF state = ANY (pg_catalog.enum_range(NULL::chrono_forge.workflow_state)::text[]) THEN
        RETURN ARRAY[state]::chrono_forge.workflow_state[];
    END IF;
    RAISE EXCEPTION 'unknown state filter "%"', state
        USING ERRCODE = 'CF012',
              HINT = 'Use a run state, blocked, in_flight or all.';
END
$$;

-- The same as state_code values.
CREATE FUNCTION chrono_forge.state_codes(state text) RETURNS smallint[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT pg_catalog.array_agg(pg_catalog.array_position(
               pg_catalog.enum_range(NULL::chrono_forge.workflow_state), s)::smallint ORDER BY 1)
      FROM pg_catalog.unnest(chrono_forge.state_filter(state)) AS s
$$;

-- A run the caller may see (row-level security decides), by (workflow, key).
CREATE FUNCTION chrono_forge.visible_run(workflow text, key text) RETURNS chrono_forge.workflows
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    w chrono_forge.workflows;
BEGIN
    SELECT * INTO w FROM chrono_forge.workflows t
     WHERE t.workflow = visible_run.workflow AND t.key = visible_run.key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow run (%, %) does not exist', workflow, key
            USING ERRCODE = 'CF014';
    END IF;
    RETURN w;
END
$$;

-- ---------------------------------------------------------------------
-- Retention: cleanup().  Terminal runs only (completed; failed and
-- cancelled), by the time they ended; idle, running and stalled runs are
-- never touched.  One batch = at most batch_size runs (and their logs,
-- errors, wake-ups, events) and at most batch_size repetition logs.
-- ---------------------------------------------------------------------

CREATE FUNCTION chrono_forge.cleanup_batch(
    completed_before timestamptz, failed_before timestamptz,
    repetitions_before timestamptz, batch_size integer)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    ids bigint[];
    n_workflows bigint := 0;
    n_logs bigint := 0;
    n_errors bigint := 0;
    n_wakeups bigint := 0;
    n_events bigint := 0;
    n_reps bigint := 0;
    n_orphaned bigint := 0;
BEGIN
    -- Completed runs first, then failed and cancelled ones, oldest first.
    -- SKIP LOCKED: a run a retry or a cancel is changing is left for the
    -- next batch.
    SELECT pg_catalog.array_agg(v.id) INTO ids FROM (
        SELECT w.id FROM chrono_forge.workflows w
         WHERE w.id IN (
            (SELECT c.id FROM chrono_forge.workflows c
              WHERE c.state_code = 3 AND c.ended_at <= completed_before
              ORDER BY c.ended_at LIMIT batch_size)
            UNION ALL
            (SELECT f.id FROM chrono_forge.workflows f
              WHERE f.state_code = 4 AND f.ended_at <= failed_before
              ORDER BY f.ended_at LIMIT batch_size)
            UNION ALL
            (SELECT x.id FROM chrono_forge.workflows x
              WHERE x.state_code = 6 AND x.ended_at <= failed_before
              ORDER BY x.ended_at LIMIT batch_size))
           AND w.state IN ('completed', 'failed', 'cancelled')
         ORDER BY w.state <> 'completed', w.ended_at
         LIMIT batch_size
         FOR UPDATE SKIP LOCKED) v;

    IF ids IS NOT NULL THEN
        -- Children of a deleted run's branches lose their parent reference.
        UPDATE chrono_forge.workflows c SET parent_execution_log_id = NULL
          FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = ANY (ids) AND l.step_name LIKE 'branch$%'
           AND c.parent_execution_log_id = l.id;
        GET DIAGNOSTICS n_orphaned = ROW_COUNT;
        DELETE FROM chrono_forge.error_logs WHERE workflow_id = ANY (ids);
        GET DIAGNOSTICS n_errors = ROW_COUNT;
        DELETE FROM chrono_forge.execution_logs WHERE workflow_id = ANY (ids);
        GET DIAGNOSTICS n_logs = ROW_COUNT;
        DELETE FROM chrono_forge.wakeups WHERE workflow_id = ANY (ids);
        GET DIAGNOSTICS n_wakeups = ROW_COUNT;
        DELETE FROM chrono_forge.events WHERE workflow_id = ANY (ids);
        GET DIAGNOSTICS n_events = ROW_COUNT;
        DELETE FROM chrono_forge.workflows WHERE id = ANY (ids)
           AND state IN ('completed', 'failed', 'cancelled');
        GET DIAGNOSTICS n_workflows = ROW_COUNT;
    END IF;

    -- Repetition logs strictly behind their coordination's frontier
    -- (last_execution_at) and before the cutoff, by scheduled time (the
    -- epoch in the tick's name).  Pending ticks and the coordination log
    -- stay; a coordination without a frontier prunes nothing.
    IF repetitions_before IS NOT NULL AND n_workflows < batch_size THEN
        WITH coord AS (
            SELECT l.workflow_id, l.step_name || '$' AS prefix,
                   LEAST(
                       pg_catalog.date_part('epoch', (l.metadata->>'last_execution_at')::timestamptz),
                       pg_catalog.date_part('epoch', repetitions_before)) AS before_epoch
              FROM chrono_forge.execution_logs l
             WHERE l.step_name LIKE 'durably\_repeat$%' AND l.step_name NOT LIKE 'durably\_repeat$%$%'
               AND l.metadata->>'last_execution_at' IS NOT NULL),
        victims AS (
            SELECT t.id FROM coord c
              JOIN chrono_forge.execution_logs t ON t.workflow_id = c.workflow_id
             WHERE pg_catalog.left(t.step_name, pg_catalog.length(c.prefix)) = c.prefix
               AND t.state IN ('completed', 'failed')
               AND pg_catalog.substr(t.step_name, pg_catalog.length(c.prefix) + 1) ~ '^[0-9]{1,12}$'
               AND pg_catalog.substr(t.step_name, pg_catalog.length(c.prefix) + 1)::numeric < c.before_epoch
             LIMIT batch_size - n_workflows)
        DELETE FROM chrono_forge.execution_logs t USING victims v WHERE t.id = v.id;
        GET DIAGNOSTICS n_reps = ROW_COUNT;
    END IF;

    RETURN pg_catalog.jsonb_build_object(
        'workflows', n_workflows, 'execution_logs', n_logs, 'error_logs', n_errors,
        'wakeups', n_wakeups, 'events', n_events, 'repetition_logs', n_reps,
        'orphaned_children', n_orphaned);
END
$$;

CREATE FUNCTION chrono_forge.cleanup_cutoffs(
    older_than interval, completed_older_than interval, failed_older_than interval,
    prune_repetition_logs_older_than interval, batch_size integer,
    OUT completed_before timestamptz, OUT failed_before timestamptz,
    OUT repetitions_before timestamptz)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    ts timestamptz := chrono_forge.now();
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = 'CF012';
    END IF;
    IF coalesce(completed_older_than, older_than) IS NULL
       OR coalesce(failed_older_than, older_than) IS NULL THEN
        RAISE EXCEPTION 'older_than must not be NULL unless completed_older_than and failed_older_than are given'
            USING ERRCODE = 'CF012';
    END IF;
    IF coalesce(completed_older_than, older_than) < interval '0'
       OR coalesce(failed_older_than, older_than) < interval '0'
       OR prune_repetition_logs_older_than < interval '0' THEN
        RAISE EXCEPTION 'retention intervals must not be negative' USING ERRCODE = 'CF012';
    END IF;
    completed_before := ts - coalesce(completed_older_than, older_than);
    failed_before := ts - coalesce(failed_older_than, older_than);
    repetitions_before := ts - prune_repetition_logs_older_than;
END
$$;

CREATE FUNCTION chrono_forge.cleanup_add(a jsonb, b jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce(pg_catalog.jsonb_object_agg(k, coalesce((a->>k)::bigint, 0) + coalesce((b->>k)::bigint, 0)), '{}')
      FROM (SELECT pg_catalog.jsonb_object_keys(b) UNION SELECT pg_catalog.jsonb_object_keys(a)) AS t(k)
$$;

-- The contract's function: every batch in the caller's transaction.
CREATE FUNCTION chrono_forge.cleanup(
    older_than interval DEFAULT '90 days',
    completed_older_than interval DEFAULT NULL,
    failed_older_than interval DEFAULT NULL,
    prune_repetition_logs_older_than interval DEFAULT NULL,
    batch_size integer DEFAULT 1000)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c record;
    total jsonb := '{"workflows": 0, "execution_logs": 0, "error_logs": 0, "wakeups": 0,
                     "events": 0, "repetition_logs": 0, "orphaned_children": 0, "batches": 0}';
    b jsonb;
BEGIN
    c := chrono_forge.cleanup_cutoffs(older_than, completed_older_than, failed_older_than,
                                      prune_repetition_logs_older_than, batch_size);
    LOOP
        b := chrono_forge.cleanup_batch(c.completed_before, c.failed_before,
                                        c.repetitions_before, batch_size);
        EXIT WHEN (b->>'workflows')::bigint = 0 AND (b->>'repetition_logs')::bigint = 0;
        total := chrono_forge.cleanup_add(total, b || '{"batches": 1}');
    END LOOP;
    RETURN total;
END
$$;

-- The same, committing after every batch (CALL it outside a transaction
-- block): no lock outlives one batch.  (In C: a procedure that commits
-- cannot carry a SET search_path clause.)
CREATE PROCEDURE chrono_forge.cleanup_in_batches(
    older_than interval DEFAULT '90 days',
    completed_older_than interval DEFAULT NULL,
    failed_older_than interval DEFAULT NULL,
    prune_repetition_logs_older_than interval DEFAULT NULL,
    batch_size integer DEFAULT 1000,
    INOUT counts jsonb DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_cleanup_in_batches';

REVOKE ALL ON FUNCTION chrono_forge.cleanup_batch(timestamptz, timestamptz, timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION chrono_forge.cleanup(interval, interval, interval, interval, integer) FROM PUBLIC;
REVOKE ALL ON PROCEDURE chrono_forge.cleanup_in_batches(interval, interval, interval, interval, integer, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chrono_forge.cleanup_batch(timestamptz, timestamptz, timestamptz, integer) TO chrono_forge_admin;
GRANT EXECUTE ON FUNCTION chrono_forge.cleanup(interval, interval, interval, interval, integer) TO chrono_forge_admin;
GRANT EXECUTE ON PROCEDURE chrono_forge.cleanup_in_batches(interval, interval, interval, interval, integer, jsonb) TO chrono_forge_admin;
GRANT EXECUTE ON FUNCTION chrono_forge.reap_stalled(interval) TO chrono_forge_admin;

-- ---------------------------------------------------------------------
-- Maintenance schedules (pg_cron).  The jobs run as the extension owner;
-- callers choose only when they run and the retention settings, which are
-- validated as typed values before they are written into the commands.
-- ---------------------------------------------------------------------

CREATE FUNCTION chrono_forge.schedule_maintenance(
    cleanup_cron text DEFAULT '17 3 * * *',
    reap_cron text DEFAULT '* * * * *',
    older_than interval DEFAULT '90 days',
    completed_older_than interval DEFAULT NULL,
    failed_older_than interval DEFAULT NULL,
    prune_repetition_logs_older_than interval DEFAULT NULL,
    batch_size integer DEFAULT 1000,
    stale_after interval DEFAULT NULL)
    RETURNS TABLE (job text, jobid bigint, schedule text, command text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cleanup_cmd text;
    reap_cmd text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'schedule_maintenance() needs the pg_cron extension in this database'
            USING ERRCODE = 'CF020',
                  HINT = 'Install pg_cron (postgresql-15-cron), add it to shared_preload_libraries, set cron.database_name, then CREATE EXTENSION pg_cron.';
    END IF;
    IF cleanup_cron IS NULL AND reap_cron IS NULL THEN
        RAISE EXCEPTION 'nothing to schedule: cleanup_cron and reap_cron are both NULL'
            USING ERRCODE = 'CF012';
    END IF;
    -- Validate the retention arguments now rather than at 3 a.m.
    PERFORM chrono_forge.cleanup_cutoffs(older_than, completed_older_than, failed_older_than,
                                         prune_repetition_logs_older_than, batch_size);
    IF stale_after < interval '0' THEN
        RAISE EXCEPTION 'stale_after must not be negative' USING ERRCODE = 'CF012';
    END IF;
    cleanup_cmd := pg_catalog.format(
        'CALL chrono_forge.cleanup_in_batches(%s::interval, %s::interval, %s::interval, %s::interval, %s)',
        pg_catalog.quote_nullable(older_than::text), pg_catalog.quote_nullable(completed_older_than::text),
        pg_catalog.quote_nullable(failed_older_than::text),
        pg_catalog.quote_nullable(prune_repetition_logs_older_than::text), batch_size);
    reap_cmd := pg_catalog.format('SELECT chrono_forge.reap_stalled(%s::interval)',
        pg_catalog.quote_nullable(stale_after::text));
    IF cleanup_cron IS NOT NULL THEN
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jobid
            USING 'chrono_forge_cleanup', cleanup_cron, cleanup_cmd;
        job := 'chrono_forge_cleanup'; schedule := cleanup_cron; command := cleanup_cmd;
        RETURN NEXT;
    END IF;
    IF reap_cron IS NOT NULL THEN
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jobid
            USING 'chrono_forge_reap', reap_cron, reap_cmd;
        job := 'chrono_forge_reap'; schedule := reap_cron; command := reap_cmd;
        RETURN NEXT;
    END IF;
END
$$;

CREATE FUNCTION chrono_forge.unschedule_maintenance() RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n integer := 0;
    ok boolean;
    name text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'unschedule_maintenance() needs the pg_cron extension in this database'
            USING ERRCODE = 'CF020',
                  HINT = 'Maintenance jobs exist only where pg_cron is installed.';
    END IF;
    FOREACH name IN ARRAY ARRAY['chrono_forge_cleanup', 'chrono_forge_reap'] LOOP
        EXECUTE 'SELECT EXISTS (SELECT FROM cron.job WHERE jobname = $1 AND username = current_user)'
            INTO ok USING name;
        IF ok THEN
            EXECUTE 'SELECT cron.unschedule($1)' USING name;
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION chrono_forge.schedule_maintenance(text, text, interval, interval, interval, interval, integer, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION chrono_forge.unschedule_maintenance() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chrono_forge.schedule_maintenance(text, text, interval, interval, interval, interval, integer, interval) TO chrono_forge_admin;
GRANT EXECUTE ON FUNCTION chrono_forge.unschedule_maintenance() TO chrono_forge_admin;

-- ---------------------------------------------------------------------
-- Observability.  (Each is planned per call and runs with jit off: the
-- planner's cost for these short reads can pass jit_above_cost, and
-- compiling would cost more than the query.)  Plain SECURITY INVOKER
-- functions over the tables:
-- row-level security shows each role its own runs (chrono_forge_admin
-- members and superusers see all).  Counts are capped (shown as 'N+'),
-- lists are keyset-paginated and bounded.
-- ---------------------------------------------------------------------

-- Runs per workflow and state (capped counts; the grid's default cap is
-- 1,000 per cell, run_counts()' 5,000 per state).
CREATE FUNCTION chrono_forge.overview(cap integer DEFAULT 1000)
    RETURNS TABLE (workflow text, state chrono_forge.workflow_state, runs text, capped boolean)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    states chrono_forge.workflow_state[] := pg_catalog.enum_range(NULL::chrono_forge.workflow_state);
BEGIN
    RETURN QUERY
    WITH RECURSIVE names(name) AS (
        (SELECT w.workflow FROM chrono_forge.workflows w ORDER BY w.workflow LIMIT 1)
        UNION ALL
        SELECT (SELECT w.workflow FROM chrono_forge.workflows w WHERE w.workflow > n.name
                 ORDER BY w.workflow LIMIT 1)
          FROM names n WHERE n.name IS NOT NULL)
    SELECT n.name, states[s.code],
           CASE WHEN c.n > cap THEN cap::text || '+' ELSE c.n::text END, c.n > cap
      FROM names n
     CROSS JOIN pg_catalog.unnest('{1,2,3,4,5,6}'::smallint[]) AS s(code)
     CROSS JOIN LATERAL (SELECT pg_catalog.count(*) AS n FROM
                  (SELECT 1 FROM chrono_forge.workflows w
                    WHERE w.workflow = n.name AND w.state_code = s.code LIMIT cap + 1) x) c
     WHERE n.name IS NOT NULL AND c.n > 0
     ORDER BY n.name, s.code;
END
$$;

-- Capped counts per state for a run-list filter (same filters as runs()).
-- One statement per state, each planned for its state (a rare state is
-- read from the index, a common one scanned until the cap).
CREATE FUNCTION chrono_forge.run_counts(
    workflow text DEFAULT NULL, key_prefix text DEFAULT NULL,
    created_from timestamptz DEFAULT NULL, created_to timestamptz DEFAULT NULL,
    include_children boolean DEFAULT false, cap integer DEFAULT 5000)
    RETURNS TABLE (state chrono_forge.workflow_state, runs text, capped boolean)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    states chrono_forge.workflow_state[] := pg_catalog.enum_range(NULL::chrono_forge.workflow_state);
    pattern text := pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
        run_counts.key_prefix, '\', '\\'), '%', '\%'), '_', '\_') || '%';
    n bigint;
BEGIN
    FOR code IN 1..6 LOOP
        SELECT pg_catalog.count(*) INTO n FROM
            (SELECT 1 FROM chrono_forge.workflows w
              WHERE w.state_code = code::smallint
                AND (run_counts.workflow IS NULL OR w.workflow = run_counts.workflow)
                AND (run_counts.key_prefix IS NULL
                     OR (w.key LIKE pattern AND pg_catalog.starts_with(w.key, run_counts.key_prefix)))
                AND (run_counts.created_from IS NULL OR w.created_at >= run_counts.created_from)
                AND (run_counts.created_to IS NULL OR w.created_at < run_counts.created_to)
                AND (run_counts.include_children OR w.parent_execution_log_id IS NULL)
              LIMIT cap + 1) x;
        state := states[code];
        runs := CASE WHEN n > cap THEN cap::text || '+' ELSE n::text END;
        capped := n > cap;
        RETURN NEXT;
    END LOOP;
END
$$;

-- A page size, checked (used as the LIMIT, so it is checked even when
-- nothing else runs).
CREATE FUNCTION chrono_forge.page_limit(page_size integer) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF page_size IS NULL OR page_size < 1 OR page_size > 1000 THEN
        RAISE EXCEPTION 'page_size must be between 1 and 1000' USING ERRCODE = 'CF012';
    END IF;
    RETURN page_size;
END
$$;

CREATE TYPE chrono_forge.run_row AS (
    id bigint, workflow text, key text, state chrono_forge.workflow_state,
    owner regrole, created_at timestamptz, started_at timestamptz,
    ended_at timestamptz, duration interval, locked_by text,
    stranded boolean, parent_execution_log_id bigint);

-- PL/pgSQL (not SQL) so that each call is planned for its own filters:
-- an absent filter drops out instead of defeating the index.
CREATE FUNCTION chrono_forge.runs(
    state text DEFAULT NULL, workflow text DEFAULT NULL, key_prefix text DEFAULT NULL,
    created_from timestamptz DEFAULT NULL, created_to timestamptz DEFAULT NULL,
    include_children boolean DEFAULT false,
    before_id bigint DEFAULT NULL, page_size integer DEFAULT 50)
    RETURNS SETOF chrono_forge.run_row
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    codes smallint[] := chrono_forge.state_codes(runs.state);
    lim integer := chrono_forge.page_limit(runs.page_size);
    by_time boolean := runs.created_from IS NOT NULL OR runs.created_to IS NOT NULL;
    ts timestamptz := chrono_forge.now();
    stale interval := chrono_forge.reap_stale_after();
    -- key_prefix as a LIKE pattern (escaped), which the key index serves.
    pattern text := pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
        runs.key_prefix, '\', '\\'), '%', '\%'), '_', '\_') || '%';
BEGIN
    -- One ordered index range per state, merged: never more than
    -- page_size rows read per state (plus what the filters skip).
    IF by_time THEN
        -- A created range: read the range (BRIN) once, for every state,
        -- and keep the newest rows; walking each state's runs from the
        -- newest would skip everything created after a range in the past.
        -- (state_code + 0 and id + 0 keep the planner on the BRIN range.)
        RETURN QUERY
        SELECT t.id, t.workflow, t.key, t.state, t.owner, t.created_at, t.started_at, t.ended_at,
               CASE WHEN t.state = 'running' THEN ts - t.started_at
                    WHEN t.state IN ('completed', 'failed', 'cancelled', 'stalled') THEN
                         coalesce(t.ended_at, t.updated_at) - t.started_at END,
               t.locked_by,
               t.state = 'running' AND t.locked_at < ts - stale,
               t.parent_execution_log_id
          FROM chrono_forge.workflows t
         WHERE t.state_code + 0 = ANY (codes)
           AND (runs.before_id IS NULL OR t.id + 0 < runs.before_id)
           AND (runs.workflow IS NULL OR t.workflow = runs.workflow)
           AND (runs.key_prefix IS NULL
                OR (t.key LIKE pattern AND pg_catalog.starts_with(t.key, runs.key_prefix)))
           AND (runs.created_from IS NULL OR t.created_at >= runs.created_from)
           AND (runs.created_to IS NULL OR t.created_at < runs.created_to)
           AND (runs.include_children OR t.parent_execution_log_id IS NULL)
         ORDER BY t.id + 0 DESC
         LIMIT lim;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT w.id, w.workflow, w.key, w.state, w.owner, w.created_at, w.started_at, w.ended_at,
           CASE WHEN w.state = 'running' THEN ts - w.started_at
                WHEN w.state IN ('completed', 'failed', 'cancelled', 'stalled') THEN
                     coalesce(w.ended_at, w.updated_at) - w.started_at END,
           w.locked_by,
           w.state = 'running' AND w.locked_at < ts - stale,
           w.parent_execution_log_id
      FROM pg_catalog.unnest(codes) AS s(code)
     CROSS JOIN LATERAL (
        SELECT * FROM chrono_forge.workflows t
         WHERE t.state_code = s.code
           AND (runs.before_id IS NULL OR t.id < runs.before_id)
           AND (runs.workflow IS NULL OR t.workflow = runs.workflow)
           AND (runs.key_prefix IS NULL
                OR (t.key LIKE pattern AND pg_catalog.starts_with(t.key, runs.key_prefix)))
           AND (runs.created_from IS NULL OR t.created_at >= runs.created_from)
           AND (runs.created_to IS NULL OR t.created_at < runs.created_to)
           AND (runs.include_children OR t.parent_execution_log_id IS NULL)
         ORDER BY t.id DESC LIMIT lim) w
     ORDER BY w.id DESC
     LIMIT lim;
END
$$;

-- One run's timeline: its steps in the order they started, with attempts,
-- duration, result and errors attached; a durably_repeat coordination
-- carries a summary of its ticks instead of one row per tick;
-- workflow-level errors come last.
CREATE FUNCTION chrono_forge.timeline(workflow text, key text, max_errors integer DEFAULT 20)
    RETURNS TABLE (seq bigint, step_name text, kind text, state text, attempts integer,
                   started_at timestamptz, completed_at timestamptz, duration interval,
                   result jsonb, metadata jsonb, error_class text, error_message text,
                   errors jsonb, repetitions jsonb)
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
                       'error_message', e.error_message, 'at', e.created_at) ORDER BY e.id)
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
                   AND pg_catalog.starts_with(t.step_name, l.step_name || '$')) END
      FROM steps l
    UNION ALL
    SELECT NULL, NULL, 'workflow errors', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', e.id, 'attempt', e.attempt, 'error_class', e.error_class,
               'error_message', e.error_message, 'at', e.created_at) ORDER BY e.id),
           NULL
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

-- A run's branches: sealed or dispatching, merged or not, children
-- spawned / pending / never started / blocked (from the poller's recorded
-- state when there is one, else capped live counts), the poll state, and
-- an overdue poller (next_poll_at more than `grace` ago on an unmerged
-- branch) flagged.
CREATE FUNCTION chrono_forge.branches(workflow text, key text,
    grace interval DEFAULT '2 minutes', cap integer DEFAULT 5000)
    RETURNS TABLE (branch text, branch_log_id bigint, sealed boolean, merged boolean,
                   merge_step text, spawned text, pending text, never_started text,
                   blocked text, last_polled_at timestamptz, next_poll_at timestamptz,
                   polls bigint, rate double precision, eta_seconds double precision,
                   poll_overdue boolean, poll jsonb)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    run chrono_forge.workflows := chrono_forge.visible_run(workflow, key);
    ts timestamptz := chrono_forge.now();
BEGIN
    RETURN QUERY
    WITH b AS (
        SELECT l.id, pg_catalog.substr(l.step_name, 8) AS name, l.state, l.metadata->'poll' AS poll
          FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = run.id AND l.step_name LIKE 'branch$%'),
    m AS (
        SELECT l.step_name, l.state,
               pg_catalog.string_to_array(pg_catalog.substr(l.step_name, 7), ',') AS names
          FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = run.id AND l.step_name LIKE 'merge$%')
    SELECT b.name, b.id, b.state = 'completed',
           coalesce(mm.state = 'completed', false), mm.step_name,
           coalesce(b.poll->>'spawned',
                    chrono_forge.capped_count((SELECT pg_catalog.count(*) FROM
                        (SELECT 1 FROM chrono_forge.workflows c WHERE c.parent_execution_log_id = b.id
                          LIMIT cap + 1) x), cap)),
           CASE WHEN b.poll ? 'pending' AND NOT coalesce(mm.state = 'completed', false)
                THEN b.poll->>'pending'
                ELSE chrono_forge.capped_count((SELECT pg_catalog.count(*) FROM
                        (SELECT 1 FROM chrono_forge.workflows c WHERE c.parent_execution_log_id = b.id
                            AND c.state_code <> 3 LIMIT cap + 1) x), cap) END,
           CASE WHEN b.poll ? 'never_started' AND NOT coalesce(mm.state = 'completed', false)
                THEN b.poll->>'never_started'
                ELSE chrono_forge.capped_count((SELECT pg_catalog.count(*) FROM
                        (SELECT 1 FROM chrono_forge.workflows c WHERE c.parent_execution_log_id = b.id
                            AND c.state_code = 1 AND c.started_at IS NULL LIMIT cap + 1) x), cap) END,
           chrono_forge.capped_count((SELECT pg_catalog.count(*) FROM
                (SELECT 1 FROM chrono_forge.workflows c WHERE c.parent_execution_log_id = b.id
                    AND c.state_code IN (4, 5) LIMIT cap + 1) x), cap),
           (b.poll->>'last_polled_at')::timestamptz, (b.poll->>'next_poll_at')::timestamptz,
           (b.poll->>'polls')::bigint, (b.poll->>'rate')::double precision,
           (b.poll->>'eta_seconds')::double precision,
           coalesce(NOT coalesce(mm.state = 'completed', false)
               AND (b.poll->>'next_poll_at')::timestamptz < ts - grace, false),
           b.poll
      FROM b
      LEFT JOIN LATERAL (SELECT m.step_name, m.state FROM m WHERE b.name = ANY (m.names)
                          ORDER BY m.state = 'completed' DESC LIMIT 1) mm ON true
     ORDER BY b.id;
END
$$;

-- A branch's children, blocked (failed, stalled) first, then by id.
-- Keyset: pass the last row's (blocked, id) as after_blocked, after_id.
CREATE FUNCTION chrono_forge.branch_log(workflow text, key text, branch text) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    run chrono_forge.workflows := chrono_forge.visible_run(workflow, key);
    log_id bigint;
BEGIN
    SELECT l.id INTO log_id FROM chrono_forge.execution_logs l
     WHERE l.workflow_id = run.id AND l.step_name = 'branch$' || branch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow run (%, %) has no branch "%"', workflow, key, branch
            USING ERRCODE = 'CF008';
    END IF;
    RETURN log_id;
END
$$;

CREATE FUNCTION chrono_forge.branch_children(workflow text, key text, branch text,
    state text DEFAULT 'all', after_blocked boolean DEFAULT NULL, after_id bigint DEFAULT NULL,
    page_size integer DEFAULT 50)
    RETURNS TABLE (blocked boolean, id bigint, workflow text, key text,
                   state chrono_forge.workflow_state, owner regrole, created_at timestamptz,
                   started_at timestamptz, ended_at timestamptz, locked_by text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    WITH b AS MATERIALIZED (SELECT chrono_forge.branch_log(branch_children.workflow, branch_children.key,
                                              branch_children.branch) AS log_id)
    SELECT c.code IN (4, 5), w.id, w.workflow, w.key, w.state, w.owner,
           w.created_at, w.started_at, w.ended_at, w.locked_by
      FROM b, pg_catalog.unnest(chrono_forge.state_codes(branch_children.state)) AS c(code)
     CROSS JOIN LATERAL (
        SELECT * FROM chrono_forge.workflows t
         WHERE t.parent_execution_log_id = b.log_id AND t.state_code = c.code
           AND (branch_children.after_id IS NULL
                OR (c.code IN (4, 5)) < branch_children.after_blocked
                OR ((c.code IN (4, 5)) = branch_children.after_blocked
                    AND t.id > branch_children.after_id))
         ORDER BY t.id LIMIT branch_children.page_size) w
     ORDER BY 1 DESC, w.id
     LIMIT chrono_forge.page_limit(branch_children.page_size)
$$;

-- A child's ancestry, nearest parent first: the branch that spawned it
-- and the run that owns that branch, up to the top-level run.
CREATE FUNCTION chrono_forge.parent_chain(workflow text, key text)
    RETURNS TABLE (depth integer, id bigint, workflow text, key text,
                   state chrono_forge.workflow_state, branch text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    WITH RECURSIVE up(depth, parent_log, id, workflow, key, state, branch) AS (
        SELECT 0, r.parent_execution_log_id, r.id, r.workflow, r.key, r.state, NULL::text
          FROM chrono_forge.visible_run(parent_chain.workflow, parent_chain.key) r
        UNION ALL
        SELECT u.depth + 1, p.parent_execution_log_id, p.id, p.workflow, p.key, p.state,
               pg_catalog.substr(l.step_name, 8)
          FROM up u
          JOIN chrono_forge.execution_logs l ON l.id = u.parent_log
          JOIN chrono_forge.workflows p ON p.id = l.workflow_id
         WHERE u.depth < 100)
    SELECT depth, id, workflow, key, state, branch FROM up WHERE depth > 0 ORDER BY depth
$$;

-- Runs parked on wait_until, continue_if or an event, oldest first, and
-- for how long.  (A fixed wait() is a timer, not shown.)
CREATE FUNCTION chrono_forge.waiting(max_rows integer DEFAULT 500)
    RETURNS TABLE (id bigint, workflow text, key text, step_name text, kind text,
                   waiting_since timestamptz, waiting_for interval, timeout_at timestamptz,
                   next_check_at timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    SELECT w.id, w.workflow, w.key, l.step_name, pg_catalog.split_part(l.step_name, '$', 1),
           l.started_at, chrono_forge.now() - l.started_at,
           (l.metadata->>'timeout_at')::timestamptz,
           (SELECT pg_catalog.min(k.due_at) FROM chrono_forge.wakeups k WHERE k.workflow_id = w.id)
      FROM chrono_forge.execution_logs l
      JOIN chrono_forge.workflows w ON w.id = l.workflow_id
     WHERE l.state = 'pending'
       AND (l.step_name LIKE 'wait\_until$%' OR l.step_name LIKE 'continue\_if$%'
            OR l.step_name LIKE 'await\_event$%')
       AND w.state IN ('idle', 'running')
     ORDER BY l.started_at, l.id
     LIMIT max_rows
$$;

-- Stranded runs: running with a lock older than stale_after (default
-- chrono_forge.reap_stale_after), oldest lock first.
CREATE FUNCTION chrono_forge.stranded(stale_after interval DEFAULT NULL, max_rows integer DEFAULT 500)
    RETURNS TABLE (id bigint, workflow text, key text, owner regrole, locked_by text,
                   locked_at timestamptz, lock_age interval)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    SELECT w.id, w.workflow, w.key, w.owner, w.locked_by, w.locked_at,
           chrono_forge.now() - w.locked_at
      FROM chrono_forge.workflows w
     WHERE w.state = 'running'
       AND w.locked_at < chrono_forge.now() - coalesce(stale_after, chrono_forge.reap_stale_after())
     ORDER BY w.locked_at
     LIMIT max_rows
$$;

-- Periodic-task health, one row per durably_repeat coordination of a run
-- still in flight (or of the given run): last tick, next tick, missed
-- ticks (fast-forwarded, over the last 1,000 summaries), lateness.
CREATE TYPE chrono_forge.periodic_row AS (
    id bigint, workflow text, key text, task text, state text,
    every text, last_tick_at timestamptz, next_tick_at timestamptz,
    late_by interval, missed_ticks bigint, failed_ticks bigint,
    avg_lateness interval);

CREATE FUNCTION chrono_forge.periodic_health(workflow text DEFAULT NULL, key text DEFAULT NULL,
    max_rows integer DEFAULT 500, tick_window integer DEFAULT NULL)
    RETURNS SETOF chrono_forge.periodic_row
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    only_id bigint;
    ts timestamptz := chrono_forge.now();
    -- Ticks read per task: the latest 1,000 for one run, the latest 20
    -- for the list of every task.
    window_ integer;
BEGIN
    IF periodic_health.workflow IS NOT NULL OR periodic_health.key IS NOT NULL THEN
        only_id := (chrono_forge.visible_run(periodic_health.workflow, periodic_health.key)).id;
    END IF;
    window_ := coalesce(tick_window, CASE WHEN only_id IS NULL THEN 20 ELSE 1000 END);
    IF window_ < 1 THEN
        RAISE EXCEPTION 'tick_window must be at least 1' USING ERRCODE = 'CF012';
    END IF;
    -- A task's ticks are named <coordination>$<epoch seconds>: within the
    -- run they sort by time on the (workflow_id, step_name) index, so the
    -- latest ones are read backwards from it, never the whole history.
    -- The next tick is the pending one (the latest); missed ticks, failed
    -- ticks and lateness are counted over the window.
    -- The tasks first (coordination logs, from their partial index; in
    -- the list only those still repeating), then their runs, then the
    -- latest ticks of each: the planner is not left to guess how rare
    -- coordination logs are.
    RETURN QUERY
    WITH coord AS MATERIALIZED (
        SELECT c.id, c.workflow_id, c.step_name, c.state, c.metadata
          FROM chrono_forge.execution_logs c
         WHERE c.step_name LIKE 'durably\_repeat$%' AND c.step_name NOT LIKE 'durably\_repeat$%$%'
           AND (only_id IS NULL OR c.workflow_id = only_id)
           AND (only_id IS NOT NULL OR c.state = 'pending')),
    sel AS MATERIALIZED (
        SELECT c.*, w.workflow, w.key FROM coord c
          JOIN chrono_forge.workflows w ON w.id = c.workflow_id
         WHERE only_id IS NOT NULL OR w.state_code IN (1, 2, 5)
         ORDER BY c.workflow_id, c.id
         LIMIT periodic_health.max_rows)
    SELECT c.workflow_id, c.workflow, c.key, pg_catalog.substr(c.step_name, 16), c.state::text,
           c.metadata->>'every',
           (c.metadata->>'last_execution_at')::timestamptz,
           nx.next_at,
           CASE WHEN nx.next_at < ts THEN ts - nx.next_at ELSE interval '0' END,
           f.missed, f.failed, f.avg_late
      FROM sel c
      LEFT JOIN LATERAL (
          SELECT pg_catalog.max((t.metadata->>'scheduled_for')::timestamptz)
                     FILTER (WHERE t.state = 'pending') AS next_at,
                 coalesce(pg_catalog.sum(coalesce((t.metadata->>'fast_forwarded')::bigint, 1))
                          FILTER (WHERE t.state = 'failed' AND t.error_class = 'CF016'), 0)::bigint AS missed,
                 pg_catalog.count(*) FILTER (WHERE t.state = 'failed'
                                               AND t.error_class IS DISTINCT FROM 'CF016') AS failed,
                 pg_catalog.avg(t.started_at - (t.metadata->>'scheduled_for')::timestamptz)
                     FILTER (WHERE t.state = 'completed') AS avg_late
            FROM (SELECT t.state, t.metadata, t.error_class, t.started_at
                    FROM chrono_forge.execution_logs t
                   WHERE t.workflow_id = c.workflow_id AND t.step_name > c.step_name || '$'
                     AND pg_catalog.starts_with(t.step_name, c.step_name || '$')
                   ORDER BY t.step_name DESC LIMIT window_) t) f ON true
      -- The next tick: a pending (retrying) tick's, else the one after the
      -- last tick handled, else the anchor (a tick's log is written only
      -- when it runs); none once the task is done.
     CROSS JOIN LATERAL (
          SELECT CASE WHEN c.state = 'completed' THEN NULL::timestamptz
                      ELSE coalesce(f.next_at,
                                    (c.metadata->>'last_execution_at')::timestamptz
                                        + (c.metadata->>'every')::interval,
                                    (c.metadata->>'anchor')::timestamptz) END AS next_at) nx
     ORDER BY c.workflow_id, c.id;
END
$$;

-- Outcomes per day over a window: runs completed and failed (by when they
-- ended), rates, and whether the day's failure rate reached spike_rate.
CREATE FUNCTION chrono_forge.daily_outcomes(window_ interval DEFAULT '7 days',
    workflow text DEFAULT NULL, spike_rate double precision DEFAULT 0.10)
    RETURNS TABLE (day date, completed bigint, failed bigint, cancelled bigint,
                   completion_rate double precision, failure_rate double precision,
                   spike boolean)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    until_ timestamptz := chrono_forge.now();
    since timestamptz := until_ - window_;
    d date;
    lo timestamptz;
    hi timestamptz;
BEGIN
    IF window_ IS NULL OR window_ <= interval '0' THEN
        RAISE EXCEPTION 'window_ must be a positive interval' USING ERRCODE = 'CF012';
    END IF;
    -- One index-only range count per UTC day (no sort, no per-row date
    -- arithmetic).
    d := (since AT TIME ZONE 'UTC')::date;
    WHILE d <= (until_ AT TIME ZONE 'UTC')::date LOOP
        lo := GREATEST(since, d::timestamp AT TIME ZONE 'UTC');
        hi := LEAST(until_, (d + 1)::timestamp AT TIME ZONE 'UTC');
        SELECT pg_catalog.count(*) FILTER (WHERE w.state_code = 3),
               pg_catalog.count(*) FILTER (WHERE w.state_code = 4),
               pg_catalog.count(*) FILTER (WHERE w.state_code = 6)
          INTO completed, failed, cancelled
          FROM chrono_forge.workflows w
         WHERE w.state_code IN (3, 4, 6)
           AND w.ended_at > lo AND w.ended_at <= hi
           AND (daily_outcomes.workflow IS NULL OR w.workflow = daily_outcomes.workflow);
        IF completed + failed + cancelled > 0 THEN
            day := d;
            completion_rate := completed::double precision / NULLIF(completed + failed, 0);
            failure_rate := failed::double precision / NULLIF(completed + failed, 0);
            spike := coalesce(failure_rate >= spike_rate, false);
            RETURN NEXT;
        END IF;
        d := d + 1;
    END LOOP;
END
$$;

-- The most frequent error classes over a window, among its latest
-- `sample` errors.
CREATE FUNCTION chrono_forge.top_errors(window_ interval DEFAULT '7 days',
    workflow text DEFAULT NULL, max_rows integer DEFAULT 8, sample integer DEFAULT 2000)
    RETURNS TABLE (error_class text, errors bigint, runs bigint, last_seen timestamptz,
                   example_message text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    SELECT e.error_class, pg_catalog.count(*), pg_catalog.count(DISTINCT e.workflow_id),
           pg_catalog.max(e.created_at),
           (pg_catalog.array_agg(e.error_message ORDER BY e.id DESC))[1]
      FROM (SELECT e.* FROM chrono_forge.error_logs e
             WHERE e.created_at > chrono_forge.now() - window_
               AND (top_errors.workflow IS NULL OR EXISTS (
                    SELECT 1 FROM chrono_forge.workflows w
                     WHERE w.id = e.workflow_id AND w.workflow = top_errors.workflow))
             ORDER BY e.created_at DESC LIMIT sample) e
     GROUP BY e.error_class
     ORDER BY 2 DESC, 1
     LIMIT max_rows
$$;

-- Views over the functions (row-level security applies to the caller).
CREATE VIEW chrono_forge.overview WITH (security_invoker = true) AS
    SELECT * FROM chrono_forge.overview(1000);
CREATE VIEW chrono_forge.stranded_runs WITH (security_invoker = true) AS
    SELECT * FROM chrono_forge.stranded(NULL, 500);
CREATE VIEW chrono_forge.waiting_runs WITH (security_invoker = true) AS
    SELECT * FROM chrono_forge.waiting(500);
CREATE VIEW chrono_forge.periodic_tasks WITH (security_invoker = true) AS
    SELECT * FROM chrono_forge.periodic_health(NULL, NULL, 500, NULL);
GRANT SELECT ON chrono_forge.overview, chrono_forge.stranded_runs,
    chrono_forge.waiting_runs, chrono_forge.periodic_tasks TO PUBLIC;

-- ---------------------------------------------------------------------
-- Actions (C: they act for the caller, checked against each run's owner;
-- chrono_forge_admin members act on any run).
-- ---------------------------------------------------------------------

CREATE FUNCTION chrono_forge.cancel(workflow text, key text, reason text DEFAULT NULL,
    with_children boolean DEFAULT false) RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_cancel';

CREATE FUNCTION chrono_forge.reap(workflow text, key text) RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_reap';

CREATE FUNCTION chrono_forge.force_unlock(workflow text, key text) RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_force_unlock';

CREATE FUNCTION chrono_forge.retry_blocked_children(workflow text, key text, branch text)
    RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_retry_blocked_children';

-- Every helper above is for the API; keep the internal ones private.
REVOKE ALL ON FUNCTION chrono_forge.cleanup_cutoffs(interval, interval, interval, interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chrono_forge.cleanup_cutoffs(interval, interval, interval, interval, integer) TO chrono_forge_admin;

-- (end of operations)

-- =====================================================================
-- Fan-out
-- =====================================================================

-- Branches: a durable step branch$<name> of the parent (pending while it
-- dispatches, completed once sealed); children are runs whose
-- parent_execution_log_id is that log's id.  C procedures that commit: no
-- SET clause (see the 0.1.0 script); they pin their own search path.
CREATE PROCEDURE chrono_forge.branch(name text, automerge boolean DEFAULT false)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_branch';
CREATE PROCEDURE chrono_forge.spawn(name text, workflow text, args jsonb DEFAULT '{}')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_spawn';
CREATE PROCEDURE chrono_forge.spawn_each(name text, workflow text, source text,
    batch_size integer DEFAULT 1000)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_spawn_each';
CREATE PROCEDURE chrono_forge.seal_branch()
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_seal_branch';
CREATE PROCEDURE chrono_forge.merge_branches(names text[],
    min_interval interval DEFAULT '5 seconds', max_interval interval DEFAULT '5 minutes')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_merge_branches';

-- Probes (the caller must own the branch's run).  Index-only on
-- workflows_parent_state_idx: they count the children that are not
-- completed, never the completed ones.
CREATE FUNCTION chrono_forge.branch_sealed(branch_log_id bigint) RETURNS boolean
    LANGUAGE c STABLE STRICT
    AS 'MODULE_PATHNAME', 'cf_branch_sealed';
CREATE FUNCTION chrono_forge.branch_pending(branch_log_id bigint, cap integer DEFAULT 5000)
    RETURNS bigint
    LANGUAGE c STABLE STRICT
    AS 'MODULE_PATHNAME', 'cf_branch_pending';
CREATE FUNCTION chrono_forge.branch_done(branch_log_id bigint) RETURNS boolean
    LANGUAGE c STABLE STRICT
    AS 'MODULE_PATHNAME', 'cf_branch_done';

-- Merge polls: one row per parked merge (the poller's next visit).  The
-- launcher runs due polls itself, so they never queue behind passes;
-- run_pending() runs the caller's.  token fences a superseded chain: it
-- must equal the poll_token stamped on every branch log it watches.
CREATE TABLE chrono_forge.merge_polls (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id    bigint NOT NULL REFERENCES chrono_forge.workflows ON DELETE CASCADE,
    merge_step     text NOT NULL,
    branch_log_ids bigint[] NOT NULL,
    min_interval   interval NOT NULL,
    max_interval   interval NOT NULL,
    token          text NOT NULL,
    due_at         timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT merge_polls_workflow_step_key UNIQUE (workflow_id, merge_step)
);
CREATE INDEX merge_polls_due_at_idx ON chrono_forge.merge_polls (due_at);
ALTER TABLE chrono_forge.merge_polls ENABLE ROW LEVEL SECURITY;
CREATE POLICY merge_polls_owner ON chrono_forge.merge_polls FOR SELECT
    USING (workflow_id IN (SELECT id FROM chrono_forge.workflows));
GRANT SELECT ON chrono_forge.merge_polls TO PUBLIC;

-- (end of fan-out)
