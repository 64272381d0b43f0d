/* chrono_forge 0.11.0 -> 0.12.0: compensation.  A step may register an
 * undo step (durably_execute(..., compensate => f, compensate_policy =>
 * p)); a run that fails, is cancelled, passes its deadline or calls
 * compensate() runs its undo steps newest first, each a durable step, and
 * ends in the new state "compensated".  See CHANGELOG.md.
 * A fresh CREATE EXTENSION runs chrono_forge--0.12.0.sql, built from
 * chrono_forge.sql, which holds everything this script makes; the catalog
 * test (test/integration/t_catalog_match.sh) checks that both agree. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.12.0'" to load this file. \quit

-- The new state, 7th (state_code 7).  Not used by anything below in this
-- transaction (PostgreSQL refuses a new enum value before its commit):
-- the functions here compare state_code.
ALTER TYPE chrono_forge.workflow_state ADD VALUE 'compensated';

-- durably_execute takes compensate and compensate_policy.  Replaced, not
-- overloaded: an overload with two more defaulted arguments would make
-- every existing call ambiguous.  Workflow procedures call it by name at
-- run time, so none depends on the old signature.
DROP PROCEDURE chrono_forge.durably_execute(text, text, jsonb, jsonb);
DROP PROCEDURE chrono_forge.durably_execute(text, jsonb, text, jsonb, jsonb);

-- durably_execute: compensate and compensate_policy since 0.12.0 (see
-- compensate()).
CREATE PROCEDURE chrono_forge.durably_execute(step text, name text DEFAULT NULL,
    args jsonb DEFAULT NULL, retry_policy jsonb DEFAULT NULL,
    compensate text DEFAULT NULL, compensate_policy jsonb DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_durably_execute';

CREATE PROCEDURE chrono_forge.durably_execute(step text, INOUT result jsonb,
    name text DEFAULT NULL, args jsonb DEFAULT NULL, retry_policy jsonb DEFAULT NULL,
    compensate text DEFAULT NULL, compensate_policy jsonb DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_durably_execute';

-- run_task takes them too, the same way.
DROP PROCEDURE chrono_forge.run_task(text, text, jsonb, jsonb, interval, interval);
DROP PROCEDURE chrono_forge.run_task(text, text, jsonb, jsonb, jsonb, interval, interval);

-- compensate and compensate_policy since 0.12.0: the undo step the
-- completed task registers (its function gets the task's args and
-- result), as durably_execute's.
CREATE PROCEDURE chrono_forge.run_task(step text, queue text, args jsonb DEFAULT '{}',
    retry_policy jsonb DEFAULT NULL, timeout interval DEFAULT NULL,
    lease interval DEFAULT '30 seconds',
    compensate text DEFAULT NULL, compensate_policy jsonb DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_run_task';

CREATE PROCEDURE chrono_forge.run_task(step text, queue text, INOUT result jsonb,
    args jsonb DEFAULT '{}', retry_policy jsonb DEFAULT NULL,
    timeout interval DEFAULT NULL, lease interval DEFAULT '30 seconds',
    compensate text DEFAULT NULL, compensate_policy jsonb DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_run_task';

-- Retention deletes compensated runs as it deletes failed ones
-- (failed_before).
CREATE OR REPLACE FUNCTION chrono_forge.cleanup_batch(
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
    -- Completed runs first, then failed, cancelled and compensated ones,
    -- oldest first.
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
              ORDER BY x.ended_at LIMIT batch_size)
            UNION ALL
            (SELECT p.id FROM chrono_forge.workflows p
              WHERE p.state_code = 7 AND p.ended_at <= failed_before
              ORDER BY p.ended_at LIMIT batch_size))
           AND w.state_code IN (3, 4, 6, 7)
         ORDER BY w.state <> 'completed', w.ended_at
         LIMIT batch_size
         FOR UPDATE SKIP LOCKED) v;

    IF ids IS NOT NULL THEN
        -- Their days may be summarised (see daily_outcomes()).
        INSERT INTO chrono_forge.outcome_days_changed (day, owner)
        SELECT DISTINCT pg_catalog.timezone('UTC', w.ended_at)::date, w.owner
          FROM chrono_forge.workflows w WHERE w.id = ANY (ids);
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
           AND state_code IN (3, 4, 6, 7);
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

-- overview() counts compensated runs too.
CREATE OR REPLACE FUNCTION chrono_forge.overview(cap integer DEFAULT 1000)
    RETURNS TABLE (workflow text, state chrono_forge.workflow_state, runs text, capped boolean)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    states chrono_forge.workflow_state[] := pg_catalog.enum_range(NULL::chrono_forge.workflow_state);
    last_id bigint;
BEGIN
    PERFORM chrono_forge.workflow_owners_refresh();
    SELECT h.last_id INTO last_id FROM chrono_forge.workflow_owners_horizon h;
    RETURN QUERY
    WITH names(name) AS (
        SELECT o.workflow FROM chrono_forge.workflow_owners o
        UNION
        SELECT w.workflow FROM chrono_forge.workflows w WHERE w.id > last_id)
    SELECT n.name, states[s.code],
           CASE WHEN c.n > cap THEN cap::text || '+' ELSE c.n::text END, c.n > cap
      FROM names n
     CROSS JOIN pg_catalog.unnest('{1,2,3,4,5,6,7}'::smallint[]) AS s(code)
     CROSS JOIN LATERAL (SELECT pg_catalog.count(*) AS n FROM
                  (SELECT 1 FROM chrono_forge.workflows w
                    WHERE w.workflow = n.name AND w.state_code = s.code LIMIT cap + 1) x) c
     WHERE c.n > 0
     ORDER BY n.name, s.code;
END
$$;

-- A compensated run's duration is shown like any ended run's.
CREATE OR REPLACE FUNCTION chrono_forge.runs(
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
    ts timestamptz := chrono_forge.now();
    stale interval := chrono_forge.reap_stale_after();
    top bigint := 9223372036854775807;
BEGIN
    runs.workflow := chrono_forge.canonical_workflow(runs.workflow);
    IF runs.created_from IS NOT NULL OR runs.created_to IS NOT NULL THEN
        -- A created range: read the range (BRIN) once, for every state,
        -- and keep the newest rows; walking each state's runs from the
        -- newest would skip everything created after a range in the past.
        -- (state_code + 0 and id + 0 keep the planner on the BRIN range.)
        RETURN QUERY
        SELECT t.id, t.workflow, t.key, t.state, t.owner, t.created_at, t.started_at, t.ended_at,
               CASE WHEN t.state = 'running' THEN ts - t.started_at
                    WHEN t.state_code IN (3, 4, 5, 6, 7) THEN
                         coalesce(t.ended_at, t.updated_at) - t.started_at END,
               t.locked_by,
               t.state = 'running' AND t.locked_at < ts - stale,
               t.parent_execution_log_id
          FROM chrono_forge.workflows t
         WHERE t.state_code + 0 = ANY (codes)
           AND (runs.before_id IS NULL OR t.id + 0 < runs.before_id)
           AND (runs.workflow IS NULL OR t.workflow = runs.workflow)
           AND (runs.key_prefix IS NULL OR pg_catalog.starts_with(t.key, runs.key_prefix))
           AND (runs.created_from IS NULL OR t.created_at >= runs.created_from)
           AND (runs.created_to IS NULL OR t.created_at < runs.created_to)
           AND (runs.include_children OR t.parent_execution_log_id IS NULL)
         ORDER BY t.id + 0 DESC
         LIMIT lim;
    ELSIF runs.key_prefix IS NOT NULL THEN
        -- A key prefix: the key-prefix index's blocks from the newest
        -- (the block of before_id, or of the newest id issued), in each
        -- only the keys with the prefix (starts_with is leakproof: an
        -- index condition under row-level security), the page's ids; then
        -- those runs.  (id + 0 keeps the planner off the primary key's
        -- order.)
        RETURN QUERY
        SELECT t.id, t.workflow, t.key, t.state, t.owner, t.created_at, t.started_at, t.ended_at,
               CASE WHEN t.state = 'running' THEN ts - t.started_at
                    WHEN t.state_code IN (3, 4, 5, 6, 7) THEN
                         coalesce(t.ended_at, t.updated_at) - t.started_at END,
               t.locked_by,
               t.state = 'running' AND t.locked_at < ts - stale,
               t.parent_execution_log_id
          FROM (SELECT p.id
                  FROM pg_catalog.generate_series(
                           chrono_forge.run_bucket(coalesce(runs.before_id - 1, chrono_forge.newest_run_id())),
                           0, -1) AS b(bucket)
                 CROSS JOIN LATERAL (
                    SELECT k.id FROM chrono_forge.workflows k
                     WHERE chrono_forge.run_bucket(k.id) = b.bucket
                       AND pg_catalog.starts_with(k.key, runs.key_prefix)
                       AND k.state_code = ANY (codes)
                       AND (runs.before_id IS NULL OR k.id + 0 < runs.before_id)
                       AND (runs.workflow IS NULL OR k.workflow = runs.workflow)
                       AND (runs.include_children OR k.parent_execution_log_id IS NULL)
                     ORDER BY k.id + 0 DESC LIMIT lim) p
                 LIMIT lim) page
          JOIN chrono_forge.workflows t ON t.id = page.id
         ORDER BY t.id DESC;
    ELSE
        -- One ordered index range per state, merged: never more than
        -- page_size rows read per state (plus what the filters skip).
        RETURN QUERY
        SELECT w.id, w.workflow, w.key, w.state, w.owner, w.created_at, w.started_at, w.ended_at,
               CASE WHEN w.state = 'running' THEN ts - w.started_at
                    WHEN w.state_code IN (3, 4, 5, 6, 7) THEN
                         coalesce(w.ended_at, w.updated_at) - w.started_at END,
               w.locked_by,
               w.state = 'running' AND w.locked_at < ts - stale,
               w.parent_execution_log_id
          FROM pg_catalog.unnest(codes) AS s(code)
         CROSS JOIN LATERAL (
            SELECT * FROM chrono_forge.workflows t
             WHERE t.state_code >= s.code
               AND (t.state_code, t.id) < (s.code, coalesce(runs.before_id, top))
               AND (runs.workflow IS NULL OR t.workflow = runs.workflow)
               AND (runs.include_children OR t.parent_execution_log_id IS NULL)
             ORDER BY t.state_code DESC, t.id DESC LIMIT lim) w
         ORDER BY w.id DESC
         LIMIT lim;
    END IF;
END
$$;

-- daily_outcomes() counts a compensated run as failed (it did not
-- complete), in its summaries and in the days it counts live.  The days
-- summarised before the update have no compensated runs to count.
CREATE OR REPLACE FUNCTION chrono_forge.outcome_days_refresh(first_day date, last_day date)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
DECLARE
    horizon timestamptz;
    oldest timestamptz;
    days date[];
BEGIN
    -- (Each statement below must see what committed before it: only in
    -- READ COMMITTED.)
    IF pg_catalog.current_setting('transaction_read_only')::boolean
       OR pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN 0;
    END IF;
    -- No day before the oldest end of any run has anything to summarise:
    -- the range is clamped to the data, whatever the caller asked for
    -- (one index probe per ended state).
    SELECT LEAST((SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 3 AND w.ended_at IS NOT NULL
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 4 AND w.ended_at IS NOT NULL
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 6 AND w.ended_at IS NOT NULL
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 7 AND w.ended_at IS NOT NULL
                   ORDER BY w.ended_at LIMIT 1))
      INTO oldest;
    -- A day before it that was noted has lost its runs (cleanup): its
    -- summary goes (the day is then counted, and has nothing to count)
    -- rather than being summarised anew, since the clamp never reaches it.
    -- (Under the summarising lock, as any change to the summaries.)
    IF EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c
                WHERE oldest IS NULL OR c.day < pg_catalog.timezone('UTC', oldest)::date)
       AND pg_catalog.pg_try_advisory_xact_lock(
               'chrono_forge.outcome_days_summarised'::regclass::oid::integer, 0) THEN
        DELETE FROM chrono_forge.outcome_days_summarised s
         WHERE oldest IS NULL OR s.day < pg_catalog.timezone('UTC', oldest)::date;
        DELETE FROM chrono_forge.outcome_days o
         WHERE oldest IS NULL OR o.day < pg_catalog.timezone('UTC', oldest)::date;
        DELETE FROM chrono_forge.outcome_days_changed c
         WHERE oldest IS NULL OR c.day < pg_catalog.timezone('UTC', oldest)::date;
    END IF;
    IF oldest IS NULL OR first_day IS NULL OR last_day IS NULL THEN
        RETURN 0;
    END IF;
    -- Days that may be closed; the cheap test first: nothing to do in
    -- the usual call.
    first_day := GREATEST(first_day, pg_catalog.timezone('UTC', oldest)::date);
    last_day := LEAST(last_day, pg_catalog.timezone('UTC', pg_catalog.clock_timestamp() - interval '1 hour')::date - 1);
    IF first_day > last_day THEN
        RETURN 0;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.generate_series(0, last_day - first_day) i
                    WHERE NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s
                                       WHERE s.day = first_day + i))
       AND NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c
                        WHERE c.day BETWEEN first_day AND last_day) THEN
        RETURN 0;
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock(
               'chrono_forge.outcome_days_summarised'::regclass::oid::integer, 0)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts) THEN
        RETURN 0;
    END IF;
    -- The activity snapshot is per transaction: take a fresh one.
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    -- (A transaction that wrote has an xid; without track_activities its
    -- start is not shown: take it as older than anything.)
    SELECT LEAST(pg_catalog.clock_timestamp(),
                 pg_catalog.min(coalesce(a.xact_start,
                                         CASE WHEN a.backend_xid IS NOT NULL THEN '-infinity'::timestamptz END)))
           - interval '1 hour'
      INTO horizon
      FROM pg_catalog.pg_stat_activity a
     WHERE a.pid <> pg_catalog.pg_backend_pid() AND a.datname = pg_catalog.current_database()
       AND a.backend_type <> 'autovacuum worker';
    -- At most 366 days a call, the newest first: what one call writes is
    -- bounded, and the days left are counted by daily_outcomes() until a
    -- later call summarises them.
    SELECT pg_catalog.array_agg(d.day ORDER BY d.day) INTO days
      FROM (SELECT first_day + i AS day
              FROM pg_catalog.generate_series(0, LEAST(last_day, pg_catalog.timezone('UTC', horizon)::date - 1)
                                                 - first_day) i
             WHERE NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s WHERE s.day = first_day + i)
                OR EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c WHERE c.day = first_day + i)
             ORDER BY i DESC
             LIMIT 366) d;
    IF days IS NULL THEN
        RETURN 0;
    END IF;
    -- Notes of days not summarised say nothing: drop them.
    DELETE FROM chrono_forge.outcome_days_changed c
     WHERE NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s WHERE s.day = c.day);
    -- Notes first, then the counts, each statement with a newer snapshot:
    -- a change noted after the first is seen by the second, and its note
    -- stays (the day is counted once more, never wrongly).
    DELETE FROM chrono_forge.outcome_days_changed WHERE day = ANY (days);
    DELETE FROM chrono_forge.outcome_days WHERE day = ANY (days);
    INSERT INTO chrono_forge.outcome_days (day, workflow, owner, completed, failed, cancelled)
    SELECT pg_catalog.timezone('UTC', w.ended_at)::date, w.workflow, w.owner,
           pg_catalog.count(*) FILTER (WHERE w.state_code = 3),
           pg_catalog.count(*) FILTER (WHERE w.state_code IN (4, 7)),   -- compensated: failed (0.12.0)
           pg_catalog.count(*) FILTER (WHERE w.state_code = 6)
      FROM chrono_forge.workflows w
     WHERE w.state_code IN (3, 4, 6, 7)
       AND w.ended_at >= pg_catalog.timezone('UTC', days[1]::timestamp)
       AND w.ended_at < pg_catalog.timezone('UTC', (days[pg_catalog.array_upper(days, 1)] + 1)::timestamp)
       AND pg_catalog.timezone('UTC', w.ended_at)::date = ANY (days)
     GROUP BY 1, 2, 3;
    INSERT INTO chrono_forge.outcome_days_summarised (day)
    SELECT pg_catalog.unnest(days) ON CONFLICT DO NOTHING;
    RETURN pg_catalog.cardinality(days);
END
$$;

CREATE OR REPLACE FUNCTION chrono_forge.daily_outcomes(window_ interval DEFAULT '7 days',
    workflow text DEFAULT NULL, spike_rate double precision DEFAULT 0.10)
    RETURNS TABLE (day date, completed bigint, failed bigint, cancelled bigint,
                   completion_rate double precision, failure_rate double precision,
                   spike boolean)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    until_ timestamptz := chrono_forge.now();
    since timestamptz;
    oldest timestamptz;
    first_whole date;
    last_whole date;
BEGIN
    daily_outcomes.workflow := chrono_forge.canonical_workflow(daily_outcomes.workflow);
    IF window_ IS NULL OR window_ OPERATOR(pg_catalog.<=) interval '0' THEN
        RAISE EXCEPTION 'window_ must be a positive interval' USING ERRCODE = 'CF012';
    END IF;
    -- A window reaching (within a year) past the first representable
    -- timestamp is all time ('300000 years' is not an error).
    IF window_ OPERATOR(pg_catalog.>=)
       ((until_ OPERATOR(pg_catalog.-) '4713-01-01 00:00:00+00 BC'::timestamptz)
        OPERATOR(pg_catalog.-) interval '1 year') THEN
        since := '-infinity';
    ELSE
        since := until_ OPERATOR(pg_catalog.-) window_;
    END IF;
    -- The window then starts no earlier than the oldest end of a run the
    -- caller sees in it: no day before has anything to count, so a window
    -- far wider than the data costs what the data costs.  (One index
    -- probe per ended state, from the window's start: the first visible
    -- entry ends it.)
    SELECT LEAST((SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 3 AND w.ended_at OPERATOR(pg_catalog.>) since
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 4 AND w.ended_at OPERATOR(pg_catalog.>) since
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 6 AND w.ended_at OPERATOR(pg_catalog.>) since
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 7 AND w.ended_at OPERATOR(pg_catalog.>) since
                   ORDER BY w.ended_at LIMIT 1))
      INTO oldest;
    IF oldest IS NULL OR oldest OPERATOR(pg_catalog.>) until_ THEN
        -- (Nothing to count; the refresh still drops the summaries of
        -- days whose runs are gone.)
        PERFORM chrono_forge.outcome_days_refresh(NULL, NULL);
        RETURN;
    END IF;
    -- (From the start of the oldest end's day, so that the day is whole
    -- and can be read from its summary.)
    since := GREATEST(since, pg_catalog.timezone('UTC', pg_catalog.timezone('UTC', oldest)::date::timestamp)
                             OPERATOR(pg_catalog.-) interval '1 microsecond');
    -- The window's whole days: (since, until_] holds all of them.
    first_whole := pg_catalog.timezone('UTC', since)::date + 1;
    last_whole := pg_catalog.timezone('UTC', until_)::date - 1;
    PERFORM chrono_forge.outcome_days_refresh(first_whole, last_whole);
    -- One statement (one snapshot): a whole day summarised and without a
    -- change the caller can see adds up its summary rows; any other day
    -- is one index-only range count of (state_code, ended_at).  (CASE
    -- runs only the subquery it picks; a lateral qual would be tested on
    -- every row of the other; OFFSET 0 keeps it from being copied into
    -- every reference to its result.  The days' bounds are computed
    -- apart (OFFSET 0 again) so that they reach the scans as values:
    -- under row-level security a condition computed with a function that
    -- is not leakproof, like timezone(), cannot be an index condition.)
    RETURN QUERY
    SELECT g.day, n.completed, n.failed, n.cancelled,
           n.completed::double precision / NULLIF(n.completed + n.failed, 0),
           n.failed::double precision / NULLIF(n.completed + n.failed, 0),
           coalesce(n.failed::double precision / NULLIF(n.completed + n.failed, 0) >= spike_rate, false)
      FROM (SELECT d.day, pg_catalog.timezone('UTC', d.day::timestamp) AS lo,
                   pg_catalog.timezone('UTC', (d.day + 1)::timestamp) AS hi,
                   d.day BETWEEN first_whole AND last_whole
                   AND EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s WHERE s.day = d.day)
                   AND NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c WHERE c.day = d.day)
                       AS summarised
              FROM (SELECT pg_catalog.timezone('UTC', since)::date + i AS day
                      FROM pg_catalog.generate_series(0, pg_catalog.timezone('UTC', until_)::date
                                                         - pg_catalog.timezone('UTC', since)::date) i) d
            OFFSET 0) g
     CROSS JOIN LATERAL (
          SELECT CASE WHEN g.summarised THEN
                     (SELECT ARRAY[coalesce(pg_catalog.sum(o.completed), 0), coalesce(pg_catalog.sum(o.failed), 0),
                                   coalesce(pg_catalog.sum(o.cancelled), 0)]::bigint[]
                        FROM chrono_forge.outcome_days o
                       WHERE o.day = g.day
                         AND (daily_outcomes.workflow IS NULL OR o.workflow = daily_outcomes.workflow))
                 ELSE
                     (SELECT ARRAY[pg_catalog.count(*) FILTER (WHERE w.state_code = 3),
                                   pg_catalog.count(*) FILTER (WHERE w.state_code IN (4, 7)),
                                   pg_catalog.count(*) FILTER (WHERE w.state_code = 6)]
                        FROM chrono_forge.workflows w
                       WHERE w.state_code IN (3, 4, 6, 7)
                         AND w.ended_at >= g.lo AND w.ended_at < g.hi
                         AND w.ended_at > since AND w.ended_at <= until_
                         AND (daily_outcomes.workflow IS NULL OR w.workflow = daily_outcomes.workflow))
                 END AS c
          OFFSET 0) x
     CROSS JOIN LATERAL (SELECT x.c[1] AS completed, x.c[2] AS failed, x.c[3] AS cancelled) n
     WHERE n.completed + n.failed + n.cancelled > 0
     ORDER BY g.day;
END
$$;

-- A compensated child is blocked, as failed, stalled and cancelled ones are.
CREATE OR REPLACE FUNCTION chrono_forge.branches(workflow text, key text,
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
                          LIMIT cap + 1) x) + u.n, cap)),
           CASE WHEN b.poll ? 'pending' AND NOT coalesce(mm.state = 'completed', false)
                THEN b.poll->>'pending'
                ELSE chrono_forge.capped_count((SELECT pg_catalog.count(*) FROM
                        (SELECT 1 FROM chrono_forge.workflows c WHERE c.parent_execution_log_id = b.id
                            AND c.state_code <> 3 LIMIT cap + 1) x) + u.n, cap) END,
           CASE WHEN b.poll ? 'never_started' AND NOT coalesce(mm.state = 'completed', false)
                THEN b.poll->>'never_started'
                ELSE chrono_forge.capped_count((SELECT pg_catalog.count(*) FROM
                        (SELECT 1 FROM chrono_forge.workflows c WHERE c.parent_execution_log_id = b.id
                            AND c.state_code = 1 AND c.started_at IS NULL LIMIT cap + 1) x) + u.n, cap) END,
           chrono_forge.capped_count((SELECT pg_catalog.count(*) FROM
                (SELECT 1 FROM chrono_forge.workflows c WHERE c.parent_execution_log_id = b.id
                    AND c.state_code IN (4, 5, 6, 7) LIMIT cap + 1) x), cap),
           (b.poll->>'last_polled_at')::timestamptz, (b.poll->>'next_poll_at')::timestamptz,
           (b.poll->>'polls')::bigint, (b.poll->>'rate')::double precision,
           (b.poll->>'eta_seconds')::double precision,
           coalesce(NOT coalesce(mm.state = 'completed', false)
               AND (b.poll->>'next_poll_at')::timestamptz < ts - grace, false),
           b.poll
      FROM b
      CROSS JOIN LATERAL (SELECT coalesce(pg_catalog.sum(s.n - s.taken), 0)::bigint AS n
                            FROM chrono_forge.spawn_batches s WHERE s.branch_log_id = b.id) u
      LEFT JOIN LATERAL (SELECT m.step_name, m.state FROM m WHERE b.name = ANY (m.names)
                          ORDER BY m.state = 'completed' DESC LIMIT 1) mm ON true
     ORDER BY b.id;
END
$$;

CREATE OR REPLACE FUNCTION chrono_forge.branch_children(workflow text, key text, branch text,
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
    SELECT c.code IN (4, 5, 6, 7), w.id, w.workflow, w.key, w.state, w.owner,
           w.created_at, w.started_at, w.ended_at, w.locked_by
      FROM b, pg_catalog.unnest(chrono_forge.state_codes(branch_children.state)) AS c(code)
     CROSS JOIN LATERAL (
        SELECT * FROM chrono_forge.workflows t
         WHERE t.parent_execution_log_id = b.log_id AND t.state_code = c.code
           AND (branch_children.after_id IS NULL
                OR (c.code IN (4, 5, 6, 7)) < branch_children.after_blocked
                OR ((c.code IN (4, 5, 6, 7)) = branch_children.after_blocked
                    AND t.id > branch_children.after_id))
         ORDER BY t.id LIMIT branch_children.page_size) w
     ORDER BY 1 DESC, w.id
     LIMIT chrono_forge.page_limit(branch_children.page_size)
$$;

-- compensate(reason): inside a workflow, undo what the run did: the undo
-- steps its completed steps registered (durably_execute(...,
-- compensate => f)) run newest first, each a durable step of its own, and
-- the run ends compensated.  A run with undo steps registered also
-- compensates when it fails or is cancelled.
CREATE PROCEDURE chrono_forge.compensate(reason text DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_compensate';

-- run_compensation(args): the body of a compensating run's passes, which
-- the engine calls in place of the workflow procedure (as the run's
-- owner, like the body).  Refused anywhere else.
CREATE PROCEDURE chrono_forge.run_compensation(args jsonb)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_run_compensation';
