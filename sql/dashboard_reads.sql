-- The dashboard's reads at 1,000,000 runs (issue 18), on a small stand-in:
-- one old idle run under 5,000 newer completed ones.  runs() reads each
-- state's (state_code, id) index from its newest run (before 0.8.0 the
-- planner walked the primary key and filtered by state: every newer run
-- of another state was read to reach the old idle one); a key prefix
-- walks blocks of 16,384 ids from the newest (0.9.0, below); merge_polls'
-- policy is a per-row EXISTS.  Each part is one transaction, rolled back:
-- the other suites' runs are back after it.

-- The plan: buffers touched by one call (its inner query included).
CREATE FUNCTION pg_temp.runs_buffers(args text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE plan json;
BEGIN
    EXECUTE 'EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM chrono_forge.runs(' || args || ')'
       INTO plan;
    RETURN (plan->0->'Plan'->>'Shared Hit Blocks')::bigint
         + (plan->0->'Plan'->>'Shared Read Blocks')::bigint;
END $$;

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
-- Key prefixes, literal (no pattern).
SELECT key FROM chrono_forge.runs(key_prefix => 'done-0001', page_size => 3);
SELECT count(*) FROM chrono_forge.runs(key_prefix => 'done-0001', page_size => 1000);
SELECT count(*) FROM chrono_forge.runs(key_prefix => 'done_', page_size => 1000);
SELECT count(*) FROM chrono_forge.runs(key_prefix => 'do%', page_size => 1000);
SELECT key FROM chrono_forge.runs(key_prefix => 'done-', page_size => 2, before_id =>
    (SELECT id FROM chrono_forge.workflows WHERE key = 'done-00100'));

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

-- A key prefix matching 20,000 old runs under 40,000 newer ones (0.9.0):
-- the walk starts at the block of the newest id and reads in each block
-- only the keys with the prefix.  (Before, a prefix of more than 10,000
-- runs walked the newer runs: 1,481 buffers here, now 170.)  Each
-- part starts on a block of its own (setval: ids are skipped, not reused).
BEGIN;
DELETE FROM chrono_forge.workflows;
CREATE ROLE dr_owner;
SELECT setval('chrono_forge.workflows_id_seq',
              (chrono_forge.run_bucket(nextval('chrono_forge.workflows_id_seq')) + 1) * 16384 - 1) > 0 AS aligned;
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner)
SELECT 'public.dr_wf', 'old-' || lpad(i::text, 5, '0'), 'public.dr_wf', 'completed', 'dr_owner'
  FROM generate_series(1, 20000) i;
SELECT setval('chrono_forge.workflows_id_seq',
              (chrono_forge.run_bucket(nextval('chrono_forge.workflows_id_seq')) + 1) * 16384 - 1) > 0 AS aligned;
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner)
SELECT 'public.dr_wf', 'new-' || lpad(i::text, 5, '0'), 'public.dr_wf', 'completed', 'dr_owner'
  FROM generate_series(1, 40000) i;
ANALYZE chrono_forge.workflows;
-- The newest of the old runs, then a page across a block's start.
SELECT key FROM chrono_forge.runs(key_prefix => 'old-', page_size => 3);
SELECT key, chrono_forge.run_bucket(id) - min(chrono_forge.run_bucket(id)) OVER () AS block
  FROM chrono_forge.runs(key_prefix => 'old-', page_size => 4, before_id =>
           (SELECT id + 2 FROM chrono_forge.workflows WHERE key = 'old-16384'));
SELECT count(*) FROM chrono_forge.runs(key_prefix => 'old-0', page_size => 1000,
    before_id => (SELECT id FROM chrono_forge.workflows WHERE key = 'old-00500'));
SELECT count(*) FROM chrono_forge.runs(key_prefix => 'old-', state => 'failed');
SELECT count(*) FROM chrono_forge.runs(key_prefix => 'none');
SELECT state, runs FROM chrono_forge.run_counts(key_prefix => 'old-', cap => 30000) WHERE runs <> '0';
SELECT state, runs FROM chrono_forge.run_counts(key_prefix => 'old-1') WHERE runs <> '0';
SELECT pg_temp.runs_buffers($$key_prefix => 'old-', page_size => 10$$) < 500 AS old_prefix_reads_its_block;
-- Row-level security: the owner sees its runs, another role none.
CREATE ROLE dr_other;
SET ROLE dr_owner;
SELECT key FROM chrono_forge.runs(key_prefix => 'old-', page_size => 2);
SET ROLE dr_other;
SELECT count(*) AS other_runs FROM chrono_forge.runs(key_prefix => 'old-');
SELECT count(*) AS other_counted FROM chrono_forge.run_counts(key_prefix => 'old-') WHERE runs <> '0';
RESET ROLE;
ROLLBACK;

-- The key-prefix read from every context a user has (a DO block, a
-- procedure, an EXCEPTION block, another role), and against an ordinary
-- role with its own schema and CREATE on public that plants look-alikes
-- of what runs() calls (starts_with, =, run_bucket): runs() reads on its
-- pinned path, so none of them runs and the rows are the same.
BEGIN;
DELETE FROM chrono_forge.workflows;
CREATE ROLE dr_owner;
CREATE ROLE dr_attacker;
GRANT CREATE ON SCHEMA public TO dr_attacker;
CREATE SCHEMA dr_evil AUTHORIZATION dr_attacker;
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner)
SELECT 'public.dr_wf', 'ctx-' || i, 'public.dr_wf', 'completed', 'dr_owner' FROM generate_series(1, 3) i;
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner)
VALUES ('public.dr_wf', 'ctx-mine', 'public.dr_wf', 'completed', 'dr_attacker');
CREATE TEMP TABLE dr_seen (n bigint);
GRANT ALL ON dr_seen TO PUBLIC;
DO $$ BEGIN
    INSERT INTO dr_seen SELECT count(*) FROM chrono_forge.runs(key_prefix => 'ctx-');
END $$;
CREATE PROCEDURE pg_temp.dr_count() LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dr_seen SELECT count(*) FROM chrono_forge.runs(key_prefix => 'ctx-');
END $$;
CALL pg_temp.dr_count();
DO $$ BEGIN
    INSERT INTO dr_seen SELECT count(*) FROM chrono_forge.runs(key_prefix => 'ctx-', page_size => 0);
EXCEPTION WHEN SQLSTATE 'CF012' THEN
    INSERT INTO dr_seen SELECT count(*) FROM chrono_forge.runs(key_prefix => 'ctx-');
END $$;
SELECT n FROM dr_seen;
SET ROLE dr_attacker;
CREATE FUNCTION dr_evil.starts_with(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'planted starts_with ran'; END $$;
CREATE FUNCTION public.starts_with(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'planted starts_with ran'; END $$;
CREATE FUNCTION dr_evil.run_bucket(bigint) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'planted run_bucket ran'; END $$;
CREATE FUNCTION dr_evil.eq(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'planted = ran'; END $$;
CREATE OPERATOR dr_evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = dr_evil.eq);
SET search_path = dr_evil, public, pg_catalog;
SELECT key FROM chrono_forge.runs(key_prefix => 'ctx-');
SELECT state, runs FROM chrono_forge.run_counts(key_prefix => 'ctx-') WHERE runs <> '0';
SELECT chrono_forge.newest_run_id() >= (SELECT max(id) FROM chrono_forge.workflows) AS newest_covers_mine;
-- An ordinary role cannot make its own function LEAKPROOF (run_bucket's
-- mark is the extension owner's to give).
SAVEPOINT leaky;
CREATE FUNCTION dr_evil.leaky(bigint) RETURNS bigint LANGUAGE sql IMMUTABLE LEAKPROOF AS 'SELECT $1';
ROLLBACK TO SAVEPOINT leaky;
RESET search_path;
RESET ROLE;
SELECT chrono_forge.run_bucket(16383) AS b0, chrono_forge.run_bucket(16384) AS b1,
       p.proleakproof, p.provolatile
  FROM pg_proc p WHERE p.oid = 'chrono_forge.run_bucket(bigint)'::regprocedure;
ROLLBACK;
