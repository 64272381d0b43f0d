/* chrono_forge 0.8.0 -> 0.9.0: the run list by key prefix walks blocks
 * of ids from the newest.  See CHANGELOG.md.
 * A fresh CREATE EXTENSION runs chrono_forge--0.9.0.sql, built from
 * chrono_forge.sql, which holds everything this script makes; the catalog
 * test (test/integration/t_catalog_match.sh) checks that both agree. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.9.0'" to load this file. \quit

-- =====================================================================
-- The dashboard's reads (issue 18)
-- =====================================================================

-- The newest run id issued (0 before the first): where the run list by key
-- prefix starts its walk.  (The sequence is the extension owner's; any
-- role learns as much from the id of a run it starts.)
CREATE FUNCTION chrono_forge.newest_run_id() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END FROM chrono_forge.workflows_id_seq s
$$;

-- The key-prefix index replaces the plain one on key (built here: on a
-- large table the update takes as long as CREATE INDEX does).
DROP INDEX chrono_forge.workflows_key_pattern_idx;
-- Run list by key prefix, newest first: the runs in blocks of 16,384 ids
-- (run_bucket()), each block's keys in order.  runs() walks the blocks
-- from the newest and reads in each only the runs whose key has the
-- prefix: a prefix matching 100,000 old runs costs what a block of them
-- does, not a walk past every newer run.  (run_bucket() is LEAKPROOF, so
-- its condition stays an index condition under row-level security.)  No
-- INCLUDE columns: with the filters' columns it served the list
-- index-only, for 5 % more WAL per run in every workload.
CREATE FUNCTION chrono_forge.run_bucket(id bigint) RETURNS bigint
    LANGUAGE c IMMUTABLE STRICT LEAKPROOF PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cf_run_bucket';
CREATE INDEX workflows_key_bucket_idx
    ON chrono_forge.workflows (chrono_forge.run_bucket(id), key text_pattern_ops);

-- Capped counts per state for a run-list filter (same filters as runs()).
-- One statement per state, each planned for its state (a rare state is
-- read from the index, a common one scanned until the cap); a key prefix
-- walks the blocks of the key-prefix index from the newest, as runs()
-- does (0.9.0).
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
    newest_bucket bigint := chrono_forge.run_bucket(chrono_forge.newest_run_id());
    n bigint;
BEGIN
    run_counts.workflow := chrono_forge.canonical_workflow(run_counts.workflow);
    FOR code IN 1..6 LOOP
        IF run_counts.key_prefix IS NOT NULL THEN
            SELECT pg_catalog.count(*) INTO n FROM
                (SELECT 1 FROM pg_catalog.generate_series(newest_bucket, 0, -1) AS b(bucket)
                  CROSS JOIN LATERAL (
                     SELECT 1 FROM chrono_forge.workflows w
                      WHERE chrono_forge.run_bucket(w.id) = b.bucket
                        AND pg_catalog.starts_with(w.key, run_counts.key_prefix)
                        AND w.state_code = code::smallint
                        AND (run_counts.workflow IS NULL OR w.workflow = run_counts.workflow)
                        AND (run_counts.created_from IS NULL OR w.created_at >= run_counts.created_from)
                        AND (run_counts.created_to IS NULL OR w.created_at < run_counts.created_to)
                        AND (run_counts.include_children OR w.parent_execution_log_id IS NULL)) m
                  LIMIT cap + 1) x;
        ELSE
            SELECT pg_catalog.count(*) INTO n FROM
                (SELECT 1 FROM chrono_forge.workflows w
                  WHERE w.state_code = code::smallint
                    AND (run_counts.workflow IS NULL OR w.workflow = run_counts.workflow)
                    AND (run_counts.created_from IS NULL OR w.created_at >= run_counts.created_from)
                    AND (run_counts.created_to IS NULL OR w.created_at < run_counts.created_to)
                    AND (run_counts.include_children OR w.parent_execution_log_id IS NULL)
                  LIMIT cap + 1) x;
        END IF;
        state := states[code];
        runs := CASE WHEN n > cap THEN cap::text || '+' ELSE n::text END;
        capped := n > cap;
        RETURN NEXT;
    END LOOP;
END
$$;

-- runs() at 1,000,000 runs: the per-state scans read each state's
-- (state_code, id) index backwards from (state, before_id) (a range and
-- a row comparison, not state_code = s.code: with an equality the planner
-- took the state as constant, walked the primary key and filtered by
-- state, reading every newer run of other states to find an old idle
-- one: 0.6 s); a created range reads its range (BRIN); a key prefix walks
-- the blocks of the key-prefix index from the newest (0.9.0: before, a
-- prefix of more than 10,000 runs, all old, walked every newer run:
-- 0.12-0.25 s at 100,000).  (issue 18)
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
                    WHEN t.state IN ('completed', 'failed', 'cancelled', 'stalled') THEN
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
                    WHEN t.state IN ('completed', 'failed', 'cancelled', 'stalled') THEN
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
               AND (runs.include_children OR t.parent_execution_log_id IS NULL)
             ORDER BY t.state_code DESC, t.id DESC LIMIT lim) w
         ORDER BY w.id DESC
         LIMIT lim;
    END IF;
END
$$;

-- (end of section: dashboard)
