/* chrono_forge 0.5.0 -> 0.6.0: reliability.  No calling context crashes
 * the server; every merge ends; backups keep every run; standbys wait
 * quietly and serve at promotion.  See CHANGELOG.md.
 * A fresh CREATE EXTENSION runs chrono_forge--0.6.0.sql, built from
 * chrono_forge.sql, which holds everything this script makes; the catalog
 * test (test/integration/t_catalog_match.sh) checks that both agree. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.6.0'" to load this file. \quit

-- =====================================================================
-- Security, continued (issue 14)
-- =====================================================================

-- The views' workflow filter is any spelling of the procedure, as start()
-- takes it (runs are stored under the canonical name since 0.5.0): each
-- view canonicalizes the filter, on the caller's search_path, once per
-- call.  (Bodies as in their last version, with that one change.)

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
    by_time boolean := runs.created_from IS NOT NULL OR runs.created_to IS NOT NULL;
    ts timestamptz := chrono_forge.now();
    stale interval := chrono_forge.reap_stale_after();
    -- key_prefix as a LIKE pattern (escaped), which the key index serves.
    pattern text := pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
        runs.key_prefix, '\', '\\'), '%', '\%'), '_', '\_') || '%';
BEGIN
    runs.workflow := chrono_forge.canonical_workflow(runs.workflow);
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

CREATE OR REPLACE FUNCTION chrono_forge.run_counts(
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
    run_counts.workflow := chrono_forge.canonical_workflow(run_counts.workflow);
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
                                   pg_catalog.count(*) FILTER (WHERE w.state_code = 4),
                                   pg_catalog.count(*) FILTER (WHERE w.state_code = 6)]
                        FROM chrono_forge.workflows w
                       WHERE w.state_code IN (3, 4, 6)
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

CREATE OR REPLACE FUNCTION chrono_forge.top_errors(window_ interval DEFAULT '7 days',
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
             WHERE e.created_at OPERATOR(pg_catalog.>) (
                   SELECT CASE WHEN window_ OPERATOR(pg_catalog.>=)
                                    ((chrono_forge.now() OPERATOR(pg_catalog.-) '4713-01-01 00:00:00+00 BC'::timestamptz)
                                     OPERATOR(pg_catalog.-) interval '1 year')
                               THEN '-infinity'::timestamptz
                               WHEN window_ OPERATOR(pg_catalog.<=) interval '-1000 years'
                               THEN 'infinity'::timestamptz
                               ELSE chrono_forge.now() OPERATOR(pg_catalog.-) window_ END)
               AND (top_errors.workflow IS NULL OR EXISTS (
                    SELECT 1 FROM chrono_forge.workflows w
                     WHERE w.id = e.workflow_id AND w.workflow = (SELECT chrono_forge.canonical_workflow(top_errors.workflow))))
             ORDER BY e.created_at DESC LIMIT sample) e
     GROUP BY e.error_class
     ORDER BY 2 DESC, 1
     LIMIT max_rows
$$;

-- Outcome summaries written before 0.5.0 name workflows as their callers
-- typed them; since 0.5.0 runs (and so the views' filters) use the
-- canonical name.  Each summary row takes the canonical name of the
-- procedure its name resolves to for its owner ("$user", public as that
-- owner), merged with the row already there; a name that resolves to
-- nothing stays as it is.
DO $$
DECLARE
    r record;
    canonical text;
BEGIN
    FOR r IN SELECT DISTINCT o.workflow, o.owner FROM chrono_forge.outcome_days o LOOP
        PERFORM pg_catalog.set_config('search_path',
            pg_catalog.quote_ident(r.owner::text) OPERATOR(pg_catalog.||) ', public', true);
        BEGIN
            canonical := chrono_forge.canonical_workflow(r.workflow);
        EXCEPTION WHEN OTHERS THEN
            canonical := r.workflow;
        END;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        CONTINUE WHEN canonical OPERATOR(pg_catalog.=) r.workflow;
        INSERT INTO chrono_forge.outcome_days AS d (day, workflow, owner, completed, failed, cancelled)
        SELECT o.day, canonical, o.owner, o.completed, o.failed, o.cancelled
          FROM chrono_forge.outcome_days o
         WHERE o.workflow OPERATOR(pg_catalog.=) r.workflow AND o.owner OPERATOR(pg_catalog.=) r.owner
        ON CONFLICT (day, workflow, owner) DO UPDATE
           SET completed = d.completed OPERATOR(pg_catalog.+) excluded.completed,
               failed = d.failed OPERATOR(pg_catalog.+) excluded.failed,
               cancelled = d.cancelled OPERATOR(pg_catalog.+) excluded.cancelled;
        DELETE FROM chrono_forge.outcome_days o
         WHERE o.workflow OPERATOR(pg_catalog.=) r.workflow AND o.owner OPERATOR(pg_catalog.=) r.owner;
    END LOOP;
END
$$;

-- (end of section: security)



-- =====================================================================
-- Calling contexts (issue 15, items 1-2)
-- =====================================================================

-- Nothing in SQL: the pass driver (src/executor.c) aborts a failed pass
-- on its own SPI connection and fails a run whose body caught a refusal.

-- (end of section: calling contexts)



-- =====================================================================
-- Merges that end, repeats, error logs, spawn cursors (issue 15, items 3-4)
-- =====================================================================

-- merge_branches(..., on_child_failure): what a failed, stalled or
-- cancelled child means to the merge: 'wait' (the default, as before:
-- until it is retried; a cancelled child can now be retried), 'fail' (the
-- parent fails at once, CF025) or 'ignore' (it counts as ended).  One
-- procedure with every argument defaulted, so that 0.5.0's calls, by
-- position or by name, keep working (an overload beside the old one would
-- make them ambiguous).  The policy is kept on the merge step's log.
DROP PROCEDURE chrono_forge.merge_branches(text[], interval, interval);
CREATE PROCEDURE chrono_forge.merge_branches(names text[],
    min_interval interval DEFAULT '5 seconds', max_interval interval DEFAULT '5 minutes',
    on_child_failure text DEFAULT 'wait')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_merge_branches';

-- branches() and branch_children(): a cancelled child is blocked too, as
-- failed and stalled ones are (what a 'wait' merge waits on until it is
-- retried).
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
                    AND c.state_code IN (4, 5, 6) LIMIT cap + 1) x), cap),
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
    SELECT c.code IN (4, 5, 6), w.id, w.workflow, w.key, w.state, w.owner,
           w.created_at, w.started_at, w.ended_at, w.locked_by
      FROM b, pg_catalog.unnest(chrono_forge.state_codes(branch_children.state)) AS c(code)
     CROSS JOIN LATERAL (
        SELECT * FROM chrono_forge.workflows t
         WHERE t.parent_execution_log_id = b.log_id AND t.state_code = c.code
           AND (branch_children.after_id IS NULL
                OR (c.code IN (4, 5, 6)) < branch_children.after_blocked
                OR ((c.code IN (4, 5, 6)) = branch_children.after_blocked
                    AND t.id > branch_children.after_id))
         ORDER BY t.id LIMIT branch_children.page_size) w
     ORDER BY 1 DESC, w.id
     LIMIT chrono_forge.page_limit(branch_children.page_size)
$$;

-- Where an error was raised (PostgreSQL's error context: the PL/pgSQL
-- function and line) and its hint, besides the detail error_logs always
-- kept; timeline() shows them on each error.
ALTER TABLE chrono_forge.error_logs ADD COLUMN error_hint text, ADD COLUMN error_context text;

CREATE OR REPLACE FUNCTION chrono_forge.timeline(workflow text, key text, max_errors integer DEFAULT 20)
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
                   AND pg_catalog.starts_with(t.step_name, l.step_name || '$')) END
      FROM steps l
    UNION ALL
    SELECT NULL, NULL, 'workflow errors', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', e.id, 'attempt', e.attempt, 'error_class', e.error_class,
               'error_message', e.error_message, 'at', e.created_at)
                       || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                              'error_detail', e.error_detail, 'error_hint', e.error_hint,
                              'error_context', e.error_context)) ORDER BY e.id),
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

-- (end of section: merges)



-- =====================================================================
-- Backups and standbys (issue 15, items 5-6)
-- =====================================================================

/*
 * pg_dump keeps an extension's tables out of a dump unless they are marked
 * as configuration tables: before 0.6.0 a logical backup came back with no
 * runs.  Marked here: every table whose rows are the users' data or state
 * the engine cannot rebuild (runs, step logs, errors, wake-ups, events,
 * defaults, schedules, parked merges, children not started yet, cancel
 * requests, the per-day outcome summaries, which outlive the runs cleanup
 * deletes), and their identity sequences, so ids go on after a restore.
 * Not marked: workflow_owners and workflow_owners_horizon, a cache of the
 * (workflow, owner) pairs that overview() rebuilds from the runs (a fresh
 * install's horizon, 0, makes the first call read every run once).
 * pg_dump orders the marked tables by their foreign keys.  See
 * doc/operations.md, "Backup, restore and standbys".
 */
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.workflows', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.workflows_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.execution_logs', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.execution_logs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.error_logs', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.error_logs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.wakeups', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.wakeups_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.events', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.workflow_defaults', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.schedules', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.schedules_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.merge_polls', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.merge_polls_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.spawn_batches', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.spawn_batches_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.cancel_requests', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.outcome_days', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.outcome_days_summarised', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.outcome_days_changed', '');

/*
 * Who asked for a cancel, as a role (dumped by name, like every owner
 * column) rather than a bare oid that would name nobody, or somebody else,
 * in the cluster a dump is restored into.  Binary compatible: no rewrite.
 */
ALTER TABLE chrono_forge.cancel_requests
    ALTER COLUMN requested_by TYPE pg_catalog.regrole;

-- (end of section: backups)



-- =====================================================================
-- Fuzz findings (issue 15, item 8)
-- =====================================================================

-- cleanup_add(), the internal helper that sums cleanup()'s counts, is
-- callable by every role: given something other than two objects of
-- numbers it raised 22023/22P02 from the JSON functions (found by
-- test/fuzz); now CF012, and the sums are numeric so none overflows.
CREATE OR REPLACE FUNCTION chrono_forge.cleanup_add(a jsonb, b jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF pg_catalog.jsonb_typeof(coalesce(a, '{}')) OPERATOR(pg_catalog.<>) 'object'
       OR pg_catalog.jsonb_typeof(coalesce(b, '{}')) OPERATOR(pg_catalog.<>) 'object'
       OR EXISTS (SELECT FROM (SELECT value FROM pg_catalog.jsonb_each(a)
                               UNION ALL SELECT value FROM pg_catalog.jsonb_each(b)) e
                   WHERE pg_catalog.jsonb_typeof(e.value) OPERATOR(pg_catalog.<>) 'number') THEN
        RAISE EXCEPTION 'cleanup_add takes two objects of counts' USING ERRCODE = 'CF012';
    END IF;
    RETURN (SELECT coalesce(pg_catalog.jsonb_object_agg(k,
                coalesce((a OPERATOR(pg_catalog.->) k)::numeric, 0) OPERATOR(pg_catalog.+)
                coalesce((b OPERATOR(pg_catalog.->) k)::numeric, 0)), '{}')
              FROM (SELECT pg_catalog.jsonb_object_keys(coalesce(b, '{}'))
                    UNION SELECT pg_catalog.jsonb_object_keys(coalesce(a, '{}'))) AS t(k));
END
$$;

-- context_set(NULL, v) outside a pass answered CF012 (its key check came
-- first) where every other context function answers CF013.
CREATE OR REPLACE FUNCTION chrono_forge.context_set(key text, value jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    ctx jsonb := chrono_forge.context();    -- CF013 outside a pass
BEGIN
    IF key IS NULL THEN
        RAISE EXCEPTION 'context key must not be NULL' USING ERRCODE = 'CF012';
    END IF;
    PERFORM chrono_forge.context_replace(ctx OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(key, value));
END
$$;

-- (end of section: fuzz)
