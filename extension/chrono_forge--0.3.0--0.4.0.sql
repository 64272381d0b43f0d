/* chrono_forge 0.3.0 -> 0.4.0: children of spawn_each are dispatched in
 * batches and become runs when a worker starts them.
 * A fresh CREATE EXTENSION runs the 0.1.0 script and then each upgrade
 * script in turn. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.4.0'" to load this file. \quit

-- =====================================================================
-- Fan-out
-- =====================================================================

-- Children dispatched by spawn_each that no worker has started yet, up to
-- 32 per row in dispatch order.  A run is an indexed row of workflows
-- (seven B-tree entries) plus a wake-up (three more and a foreign-key
-- check): written per child at dispatch, that capped dispatch at about
-- 20,000 children/s.  Here a dispatch batch costs a few rows; a worker
-- takes the next child of the oldest batch (taken counts them, FOR UPDATE
-- SKIP LOCKED) and inserts its run, already claimed, in the transaction
-- of its first pass: a crash loses or repeats no child.  The branch
-- probes count what is left here (n - taken) beside the children's runs.
-- No foreign key to the branch log: a worker updates one row several
-- times per transaction, and each update after the first would re-check
-- it (5% of a child's pass).  Like the children's runs, which outlive a
-- deleted parent, children not started yet still run if it goes.
CREATE TABLE chrono_forge.spawn_batches (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    branch_log_id bigint NOT NULL,
    owner         regrole NOT NULL,     -- the parent's owner: the children run as it
    due_at        timestamptz NOT NULL, -- when dispatched (the children's created_at)
    n             integer NOT NULL,     -- children in this row
    taken         integer NOT NULL DEFAULT 0,   -- the first `taken` have become runs
    workflows     text[] NOT NULL,
    keys          text[] NOT NULL,      -- the children's run keys
    procedures    text[] NOT NULL,
    args          jsonb[] NOT NULL
);
CREATE INDEX spawn_batches_branch_log_id_idx ON chrono_forge.spawn_batches (branch_log_id);
ALTER TABLE chrono_forge.spawn_batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY spawn_batches_owner ON chrono_forge.spawn_batches FOR SELECT
    USING (pg_catalog.pg_has_role(current_user, owner, 'MEMBER'));
CREATE POLICY spawn_batches_admin ON chrono_forge.spawn_batches FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.spawn_batches TO PUBLIC;

-- A child taken from spawn_batches writes its step logs before its run's
-- row, which is written when the pass first commits or ends (once, when
-- the child completes in that pass): the engine defers this check to the
-- commit for that transaction (SET CONSTRAINTS); everyone else's stays
-- immediate.
ALTER TABLE chrono_forge.execution_logs ALTER CONSTRAINT execution_logs_workflow_id_fkey
    DEFERRABLE INITIALLY IMMEDIATE;

-- branches(): children not started yet count as spawned, pending and
-- never started.
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
                    AND c.state_code IN (4, 5) LIMIT cap + 1) x), cap),
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

-- (end of fan-out)
