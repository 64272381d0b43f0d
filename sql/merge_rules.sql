-- merge_branches' quorum and timeout (0.10.0), driven by run_pending and
-- fake_now: the merge poll is what notices a quorum or a deadline.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE mr_gates (name text PRIMARY KEY, open boolean NOT NULL DEFAULT false);
CREATE FUNCTION mr_gate(args jsonb) RETURNS boolean LANGUAGE sql
    AS $$ SELECT coalesce((SELECT open FROM mr_gates WHERE name = args->>'gate'), true) $$;
-- A child that completes at once, or waits for its gate to open.
CREATE PROCEDURE mr_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.continue_if('mr_gate');
    CALL chrono_forge.set_result(args->'n');
END $$;
CREATE PROCEDURE mr_parent(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.branch('g');
    CALL chrono_forge.spawn_each('c', 'mr_child',
        'SELECT g AS item_key, jsonb_build_object(''n'', g, ''gate'', CASE WHEN g > 3 THEN ''slow'' END) AS args
           FROM generate_series(1, 5) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(r, ARRAY['g'], '1 second', '1 hour',
        quorum => (args->>'quorum')::int, timeout => (args->>'timeout')::interval,
        on_timeout => coalesce(args->>'on_timeout', 'stall'));
    CALL chrono_forge.set_result(r);
END $$;
CREATE VIEW mr_state AS
SELECT w.key, w.state, e.error_class, e.error_message,
       (SELECT l.result FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = w.id AND l.step_name = '$workflow_completion$') AS result,
       (SELECT count(*) FROM chrono_forge.workflows c JOIN chrono_forge.execution_logs b ON b.id = c.parent_execution_log_id
         WHERE b.workflow_id = w.id AND c.state = 'completed') AS children_completed
  FROM chrono_forge.workflows w
  LEFT JOIN LATERAL (SELECT x.error_class, x.error_message FROM chrono_forge.error_logs x
                      WHERE x.workflow_id = w.id ORDER BY x.id DESC LIMIT 1) e ON true
 WHERE w.workflow = 'public.mr_parent';
INSERT INTO mr_gates VALUES ('slow', false);

-- Quorum: three of five children completed are enough.  The parent
-- parks; the merge poll after min_interval sees the quorum and wakes it;
-- the merge hands back the three results; the two others go on waiting.
SELECT chrono_forge.start('mr_parent', 'quorum', '{"quorum": 3}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, children_completed FROM mr_state WHERE key = 'quorum';
SELECT l.state, l.metadata->'quorum' AS quorum FROM chrono_forge.execution_logs l
  JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.key = 'quorum' AND l.step_name = 'merge$g';
-- The probes (0.12.0): branch_done() answers by the parked merge's
-- rules (its quorum is reached), branch_pending() still counts the two
-- children not completed.
SELECT chrono_forge.branch_done(l.id) AS done, chrono_forge.branch_pending(l.id) AS pending
  FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'quorum' AND l.step_name = 'branch$g';
-- The same from a DO block; another role is answered as for a log that
-- is no branch (CF008), whatever the merge's rules.
SELECT set_config('mr.branch', l.id::text, false) IS NOT NULL AS noted
  FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'quorum' AND l.step_name = 'branch$g';
DO $$ BEGIN
    RAISE NOTICE 'branch_done in a DO block: %', chrono_forge.branch_done(current_setting('mr.branch')::bigint);
END $$;
CREATE ROLE mr_other;
GRANT USAGE ON SCHEMA chrono_forge TO mr_other;
SET ROLE mr_other;
DO $$ BEGIN
    PERFORM chrono_forge.branch_done(current_setting('mr.branch')::bigint);
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'another role: % %', SQLSTATE, SQLERRM ~ 'is not a branch';
END $$;
RESET ROLE;
DROP OWNED BY mr_other;
DROP ROLE mr_other;
SET chrono_forge.fake_now = '2030-01-01 00:00:01+00';
CALL chrono_forge.run_pending();
SELECT key, state, result, children_completed FROM mr_state WHERE key = 'quorum';
SELECT branch, merged, poll->'quorum' AS quorum, poll->'completed' AS completed
  FROM chrono_forge.branches('mr_parent', 'quorum');
SELECT count(*) FILTER (WHERE c.state = 'idle') AS still_waiting
  FROM chrono_forge.workflows c WHERE c.workflow = 'public.mr_child' AND c.key LIKE '%$quorum$g$%';
-- A quorum larger than the children there are: every child completing is
-- enough, as without one.
SELECT chrono_forge.start('mr_parent', 'big-quorum', '{"quorum": 50}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, children_completed FROM mr_state WHERE key = 'big-quorum';
-- Parked under a quorum not reached: not done.
SELECT chrono_forge.branch_done(l.id) AS done, chrono_forge.branch_pending(l.id) AS pending
  FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'big-quorum' AND l.step_name = 'branch$g';

-- Timeout, stall: past its deadline (10 minutes after the merge first
-- waited) the run stalls with CF010 on the merge step.  The poll is due
-- at the deadline, not after max_interval (1 hour).  retry() waits a
-- whole timeout again; once the slow children are done it merges.
SET chrono_forge.fake_now = '2030-01-01 01:00:00+00';
SELECT chrono_forge.start('mr_parent', 'stall', '{"timeout": "10 minutes"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT l.state, l.metadata->>'deadline' AS deadline, l.metadata->>'on_timeout' AS on_timeout
  FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'stall' AND l.step_name = 'merge$g';
SET chrono_forge.fake_now = '2030-01-01 01:09:00+00';
CALL chrono_forge.run_pending();
SELECT p.due_at <= '2030-01-01 01:10:00+00' AS poll_due_by_deadline
  FROM chrono_forge.merge_polls p JOIN chrono_forge.workflows w ON w.id = p.workflow_id WHERE w.key = 'stall';
-- branches() shows the merge's rules in its poll stamp.
SELECT branch, merged, poll->>'deadline' AS deadline, poll->'quorum' AS quorum
  FROM chrono_forge.branches('mr_parent', 'stall');
SELECT key, state FROM mr_state WHERE key = 'stall';
SET chrono_forge.fake_now = '2030-01-01 01:10:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, error_class, error_message FROM mr_state WHERE key = 'stall';
SELECT l.state, l.error_class FROM chrono_forge.execution_logs l
  JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.key = 'stall' AND l.step_name = 'merge$g';
SELECT chrono_forge.retry('mr_parent', 'stall');
CALL chrono_forge.run_pending();
SELECT key, state FROM mr_state WHERE key = 'stall';
SELECT (l.metadata->>'deadline')::timestamptz - chrono_forge.now() AS waits_again
  FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'stall' AND l.step_name = 'merge$g';

-- Timeout, fail: the run fails (CF010).
SELECT chrono_forge.start('mr_parent', 'fail', '{"timeout": "1 minute", "on_timeout": "fail"}') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 01:11:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, error_class, error_message FROM mr_state WHERE key = 'fail';

-- The slow children finish: the retried merge completes with all five.
UPDATE mr_gates SET open = true;
SELECT count(chrono_forge.wake(c.workflow, c.key)) > 0 AS woken
  FROM chrono_forge.workflows c WHERE c.workflow = 'public.mr_child' AND c.state = 'idle';
SET chrono_forge.fake_now = '2030-01-01 01:12:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, result FROM mr_state WHERE key = 'stall';

-- Bad rules fail the run at once (CF012), nothing merged.
SELECT chrono_forge.start('mr_parent', 'bad-quorum', '{"quorum": 0}') > 0 AS started;
SELECT chrono_forge.start('mr_parent', 'bad-timeout', '{"timeout": "-1 second"}') > 0 AS started;
SELECT chrono_forge.start('mr_parent', 'bad-on-timeout', '{"timeout": "1 minute", "on_timeout": "maybe"}') > 0 AS started;
SELECT chrono_forge.start('mr_parent', 'huge-timeout', '{"timeout": "400 days"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, error_class, error_message FROM mr_state
 WHERE key IN ('bad-quorum', 'bad-timeout', 'bad-on-timeout', 'huge-timeout') ORDER BY key;

DELETE FROM chrono_forge.workflows;
DROP VIEW mr_state;
