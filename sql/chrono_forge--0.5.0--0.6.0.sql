/* chrono_forge 0.5.0 -> 0.6.0: reliability.  No calling context crashes
 * the server; every merge ends; backups keep every run; standbys wait
 * quietly and serve at promotion.  See README.md.
 * A fresh CREATE EXTENSION runs the 0.1.0 script and then each upgrade
 * script in turn. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.6.0'" to load this file. \quit

-- =====================================================================
-- Security, continued (issue 14)
-- =====================================================================

-- (end of section: security)



-- =====================================================================
-- Calling contexts (issue 15, items 1-2)
-- =====================================================================

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

-- (end of section: backups)



-- =====================================================================
-- Fuzz findings (issue 15, item 8)
-- =====================================================================

-- (end of section: fuzz)
