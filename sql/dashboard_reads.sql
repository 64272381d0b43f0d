-- The dashboard's reads at 1,000,000 runs (issue 18), on a small stand-in:
-- one old idle run under 5,000 newer completed ones.  runs() reads each
-- state's (state_code, id) index from its newest run (before 0.8.0 the
-- planner walked the primary key and filtered by state: every newer run
-- of another state was read to reach the old idle one); a key prefix of
-- at most 10,000 runs is read by the key index; merge_polls' policy is a
-- per-row EXISTS.  The buffers a call touches show the plan it took.
-- One transaction, rolled back: the other suites' runs are back after it.
BEGIN;
DELETE FROM chrono_forge.workflows;
CREATE ROLE dr_owner;
CREATE ROLE dr_other;
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, created_at, updated_at)
VALUES ('public.dr_wf', 'old-idle', 'public.dr_wf', 'idle', 'dr_owner', '2030-01-01', '2030-01-01');
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, created_at, updated_at, context)
SELECT 'public.dr_wf', 'done-' || lpad(i::text, 5, '0'), 'public.dr_wf', 'completed', 'dr_owner',
       '2030-01-02'::timestamptz + i * interval '1 second', '2030-01-03', jsonb_build_object('pad', repeat('x', 100))
  FROM generate_series(1, 5000) i;
ANALYZE chrono_forge.workflows;

-- The rows: newest first across states, paged by before_id, the idle one last.
SELECT key, state FROM chrono_forge.runs(page_size => 3);
SELECT key, state FROM chrono_forge.runs(page_size => 2,
    before_id => (SELECT min(id) + 2 FROM chrono_forge.workflows));
SELECT key, state FROM chrono_forge.runs(state => 'in_flight');
SELECT count(*) FROM chrono_forge.runs(state => 'completed', before_id => 0);
-- Key prefixes: by the key index (few runs), literal (no pattern).
SELECT key FROM chrono_forge.runs(key_prefix => 'done-0001', page_size => 3);
SELECT count(*) FROM chrono_forge.runs(key_prefix => 'done-0001', page_size => 1000);
SELECT count(*) FROM chrono_forge.runs(key_prefix => 'done_', page_size => 1000);
SELECT count(*) FROM chrono_forge.runs(key_prefix => 'do%', page_size => 1000);
SELECT key FROM chrono_forge.runs(key_prefix => 'done-', page_size => 2, before_id =>
    (SELECT id FROM chrono_forge.workflows WHERE key = 'done-00100'));

-- The plan: buffers touched by one call (its inner query included).
CREATE FUNCTION pg_temp.runs_buffers(args text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE plan json;
BEGIN
    EXECUTE 'EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM chrono_forge.runs(' || args || ')'
       INTO plan;
    RETURN (plan->0->'Plan'->>'Shared Hit Blocks')::bigint
         + (plan->0->'Plan'->>'Shared Read Blocks')::bigint;
END $$;
SELECT pg_temp.runs_buffers($$page_size => 10$$) > 0 AS warmed_up;
SELECT pg_temp.runs_buffers($$state => 'in_flight', page_size => 10$$) < 40 AS in_flight_reads_its_states;
SELECT pg_temp.runs_buffers($$page_size => 10$$) < 60 AS all_reads_each_state_once;

-- merge_polls: a run's parked merge is seen by its owner only.
INSERT INTO chrono_forge.merge_polls (workflow_id, merge_step, branch_log_ids, min_interval, max_interval, token, due_at)
SELECT id, 'merge$a', '{}', '5 seconds', '5 minutes', 't', '2030-01-01' FROM chrono_forge.workflows WHERE key = 'old-idle';
SET ROLE dr_owner;
SELECT count(*) AS owner_sees FROM chrono_forge.merge_polls;
SET ROLE dr_other;
SELECT count(*) AS other_sees FROM chrono_forge.merge_polls;
SELECT count(*) AS other_runs FROM chrono_forge.runs();
RESET ROLE;
SELECT pg_catalog.pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polname = 'merge_polls_owner';

ROLLBACK;
