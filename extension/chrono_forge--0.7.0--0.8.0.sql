/* chrono_forge 0.7.0 -> 0.8.0: the dashboard's reads and the engine's
 * tasks path.  See CHANGELOG.md.
 * A fresh CREATE EXTENSION runs chrono_forge--0.8.0.sql, built from
 * chrono_forge.sql, which holds everything this script makes; the catalog
 * test (test/integration/t_catalog_match.sh) checks that both agree. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.8.0'" to load this file. \quit

-- =====================================================================
-- The dashboard's reads (issue 18)
-- =====================================================================

-- runs() at 1,000,000 runs: the per-state scans read each state's
-- (state_code, id) index backwards from (state, before_id) (a range and
-- a row comparison, not state_code = s.code: with an equality the planner
-- took the state as constant, walked the primary key and filtered by
-- state, reading every newer run of other states to find an old idle
-- one: 0.6 s); a key prefix
-- matching at most 10,000 runs reads those runs by the key index (through
-- starts_with, which is leakproof, so it stays an index condition under
-- row-level security) and keeps the newest, as a created range reads its
-- range (BRIN).  (issue 18)
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
    by_time boolean := runs.created_from IS NOT NULL OR runs.created_to IS NOT NULL;
    by_key boolean := false;
    top bigint := 9223372036854775807;
    -- key_prefix as a LIKE pattern (escaped), which the key index serves.
    pattern text := pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
        runs.key_prefix, '\', '\\'), '%', '\%'), '_', '\_') || '%';
BEGIN
    runs.workflow := chrono_forge.canonical_workflow(runs.workflow);
    IF runs.key_prefix IS NOT NULL THEN
        by_key := (SELECT pg_catalog.count(*) <= 10000 FROM (
                       SELECT 1 FROM chrono_forge.workflows t
                        WHERE pg_catalog.starts_with(t.key, runs.key_prefix)
                        LIMIT 10001) k);
    END IF;
    IF by_time OR by_key THEN
        -- A created range: read the range (BRIN) once, for every state,
        -- and keep the newest rows; walking each state's runs from the
        -- newest would skip everything created after a range in the past.
        -- A key prefix of a few runs: read them by the key index.
        -- (state_code + 0 and id + 0 keep the planner on the BRIN range or
        -- the key index.)
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
    -- One ordered index range per state, merged: never more than
    -- page_size rows read per state (plus what the filters skip).
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
         WHERE t.state_code >= s.code
           AND (t.state_code, t.id) < (s.code, coalesce(runs.before_id, top))
           AND (runs.workflow IS NULL OR t.workflow = runs.workflow)
           AND (runs.key_prefix IS NULL
                OR (t.key LIKE pattern AND pg_catalog.starts_with(t.key, runs.key_prefix)))
           AND (runs.include_children OR t.parent_execution_log_id IS NULL)
         ORDER BY t.state_code DESC, t.id DESC LIMIT lim) w
     ORDER BY w.id DESC
     LIMIT lim;
END
$$;

-- merge_polls' policy as an EXISTS per row, like the other tables': as
-- "workflow_id IN (SELECT id FROM workflows)" a reader's count of parked
-- merges hashed every run it may see (0.9 s at 1,000,000 runs).  Same rows.
ALTER POLICY merge_polls_owner ON chrono_forge.merge_polls
    USING (EXISTS (SELECT 1 FROM chrono_forge.workflows w
                    WHERE w.id OPERATOR(pg_catalog.=) merge_polls.workflow_id));

-- (end of section: dashboard)

-- =====================================================================
-- Engine (issue 17's throughput)
-- =====================================================================

-- A child that completed in its first pass was written completed without
-- ended_at (the state trigger set it on updates only, from 0.5.0): give
-- those runs the end they had, and have daily_outcomes() count the days
-- already summarised again.  The trigger now sets it on inserts too.
WITH ended AS (
    UPDATE chrono_forge.workflows SET ended_at = coalesce(completed_at, updated_at)
     WHERE ended_at IS NULL AND state IN ('completed', 'failed', 'cancelled')
    RETURNING ended_at, owner)
INSERT INTO chrono_forge.outcome_days_changed (day, owner)
SELECT DISTINCT pg_catalog.timezone('UTC', ended_at)::date, owner FROM ended
 WHERE ended_at < pg_catalog.now() - interval '1 hour';

-- (end of section: engine)

