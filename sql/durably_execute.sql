-- durably_execute: runs once, commits with its writes, replays its result.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE de_out (id serial, what text, arg jsonb);
CREATE SEQUENCE de_calls;

CREATE FUNCTION de_noargs() RETURNS int LANGUAGE sql
    AS $$ INSERT INTO de_out (what) VALUES ('noargs') RETURNING nextval('de_calls')::int $$;
CREATE FUNCTION de_withargs(a jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ INSERT INTO de_out (what, arg) VALUES ('withargs', a) RETURNING jsonb_build_object('got', a) $$;
CREATE FUNCTION de_void(a jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO de_out (what, arg) VALUES ('void', a) $$;
CREATE FUNCTION de_text() RETURNS text LANGUAGE sql AS $$ SELECT 'a "quoted" text' $$;
CREATE FUNCTION de_null() RETURNS int LANGUAGE sql AS $$ SELECT NULL::int $$;

CREATE PROCEDURE de_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
BEGIN
    CALL chrono_forge.durably_execute('de_noargs', r);
    RAISE NOTICE 'noargs -> %', r;
    CALL chrono_forge.durably_execute('de_withargs', r);           -- the workflow's args
    RAISE NOTICE 'withargs -> %', r;
    CALL chrono_forge.durably_execute('de_withargs', r, name => 'explicit', args => '{"x": 9}');
    RAISE NOTICE 'explicit -> %', r;
    CALL chrono_forge.durably_execute('de_void');                  -- no result wanted
    CALL chrono_forge.durably_execute('de_text', r);
    RAISE NOTICE 'text -> %', r;
    CALL chrono_forge.durably_execute('de_null', r);
    RAISE NOTICE 'null -> %', r;
    CALL chrono_forge.durably_execute('public.de_noargs', r, name => 'qualified');
    RAISE NOTICE 'qualified -> %', r;
END $$;

SELECT chrono_forge.start('de_wf', 'one', '{"user": 42}') AS id \gset
CALL chrono_forge.run_pending();
SELECT step_name, state, attempts, result FROM chrono_forge.execution_logs
 WHERE workflow_id = :id ORDER BY id;
SELECT what, arg FROM de_out ORDER BY id;
SELECT state FROM chrono_forge.workflows WHERE id = :id;

-- Replay: a retried (here: forced) pass returns recorded results and
-- executes nothing again.
UPDATE chrono_forge.workflows SET state = 'idle' WHERE id = :id;
DELETE FROM chrono_forge.execution_logs WHERE workflow_id = :id AND step_name = '$workflow_completion$';
INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason) VALUES (:id, chrono_forge.now(), 'test');
CALL chrono_forge.run_pending();
SELECT count(*) AS rows_still, (SELECT last_value FROM de_calls) AS calls_still FROM de_out;

-- A step that fails rolls back its own writes; the body's order holds.
CREATE TABLE de_flaky_state (n int);
INSERT INTO de_flaky_state VALUES (0);
CREATE FUNCTION de_flaky() RETURNS int LANGUAGE plpgsql AS $$
DECLARE cnt int;
BEGIN
    -- Writes of failed attempts roll back: count attempts by their errors.
    UPDATE de_flaky_state SET n = n + 1;
    SELECT count(*) + 1 INTO cnt FROM chrono_forge.error_logs
     WHERE step_name = 'durably_execute$de_flaky';
    INSERT INTO de_out (what) VALUES ('flaky attempt ' || cnt);
    IF cnt < 3 THEN
        RAISE EXCEPTION 'flaky failure %', cnt USING ERRCODE = '40001';
    END IF;
    RETURN cnt;
END $$;
CREATE PROCEDURE de_flaky_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.durably_execute('de_flaky', r, retry_policy => chrono_forge.retry_policy(jitter => false));
    RAISE NOTICE 'flaky -> %', r;
END $$;
SELECT chrono_forge.start('de_flaky_wf', 'f') AS fid \gset
CALL chrono_forge.run_pending();
-- First attempt failed and was rolled back; the retry is due in 1 s.
SELECT state FROM chrono_forge.workflows WHERE id = :fid;
SELECT step_name, state, attempts, error_class, error_message FROM chrono_forge.execution_logs WHERE workflow_id = :fid;
SELECT (due_at - chrono_forge.now()) AS retry_in, reason FROM chrono_forge.wakeups WHERE workflow_id = :fid;
SELECT n AS committed_counter FROM de_flaky_state;
SELECT count(*) AS flaky_rows FROM de_out WHERE what LIKE 'flaky%';
-- Not due yet: nothing runs.
CALL chrono_forge.run_pending();
SELECT attempts FROM chrono_forge.execution_logs WHERE workflow_id = :fid;
SET chrono_forge.fake_now = '2030-01-01 00:00:01+00';
CALL chrono_forge.run_pending();
SELECT (due_at - chrono_forge.now()) AS retry_in FROM chrono_forge.wakeups WHERE workflow_id = :fid;
SET chrono_forge.fake_now = '2030-01-01 00:00:03+00';
CALL chrono_forge.run_pending();
SELECT state FROM chrono_forge.workflows WHERE id = :fid;
SELECT step_name, state, attempts, result, error_class FROM chrono_forge.execution_logs WHERE workflow_id = :fid ORDER BY id;
SELECT step_name, attempt, error_class, error_message FROM chrono_forge.error_logs WHERE workflow_id = :fid ORDER BY id;
SELECT what FROM de_out WHERE what LIKE 'flaky%';

-- A missing step function is bad input: nothing is written for the step,
-- and the error goes through the workflow-level policy.
CREATE PROCEDURE de_missing_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('de_no_such_function');
END $$;
SELECT chrono_forge.start('de_missing_wf', 'm') AS mid \gset
CALL chrono_forge.run_pending();
SELECT state, attempt FROM chrono_forge.workflows WHERE id = :mid;
SELECT count(*) AS step_logs FROM chrono_forge.execution_logs WHERE workflow_id = :mid;
SELECT step_name, attempt, error_class, error_message FROM chrono_forge.error_logs WHERE workflow_id = :mid;
SELECT reason FROM chrono_forge.wakeups WHERE workflow_id = :mid;
-- A step's commit waits for the next primitive or the end of the pass:
-- the last step of a pass commits together with the run's completion (one
-- transaction), a step followed by another primitive commits before it.
CREATE TABLE de_xids (step text, xid xid8);
CREATE FUNCTION de_xid(a jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO de_xids VALUES (a->>'s', pg_current_xact_id()) $$;
CREATE PROCEDURE de_commit_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('de_xid', name => 'first', args => '{"s": "first"}');
    CALL chrono_forge.durably_execute('de_xid', name => 'last', args => '{"s": "last"}');
END $$;
SELECT chrono_forge.start('de_commit_wf', 'c') AS cid \gset
CALL chrono_forge.run_pending();
SELECT step, xid = (SELECT xmin::text::xid8 FROM chrono_forge.execution_logs
                    WHERE workflow_id = :cid AND step_name = '$workflow_completion$')
       AS commits_with_completion
  FROM de_xids ORDER BY step;

-- An error escaping the body before the step's commit rolls the step back
-- with it; the pass then runs again at once, committing each step as it
-- completes, so the error finds the step committed, as if no commit had
-- waited.  The step's function ran twice (a sequence shows it), its
-- effect is there once, its log says one attempt.
CREATE SEQUENCE de_once_calls;
CREATE TABLE de_once (n int);
CREATE TABLE de_body_fails (fail boolean);
INSERT INTO de_body_fails VALUES (true);
CREATE FUNCTION de_once_step() RETURNS void LANGUAGE sql
    AS $$ INSERT INTO de_once VALUES (nextval('de_once_calls')) $$;
CREATE PROCEDURE de_body_error_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('de_once_step');
    IF (SELECT fail FROM de_body_fails) THEN
        UPDATE de_body_fails SET fail = false;
        RAISE EXCEPTION 'body fails after the step';
    END IF;
END $$;
SELECT chrono_forge.start('de_body_error_wf', 'b') AS bid \gset
CALL chrono_forge.run_pending(max_passes => 1);
SELECT n AS step_row_from_call FROM de_once;
SELECT step_name, state, attempts FROM chrono_forge.execution_logs WHERE workflow_id = :bid;
SELECT state, attempt FROM chrono_forge.workflows WHERE id = :bid;
SELECT error_message FROM chrono_forge.error_logs WHERE workflow_id = :bid;
UPDATE de_body_fails SET fail = false;
SET chrono_forge.fake_now = '2030-01-01 01:00:00+00';
CALL chrono_forge.run_pending();
SELECT state FROM chrono_forge.workflows WHERE id = :bid;
SELECT count(*) AS step_rows, max(n) AS calls FROM de_once;
SELECT step_name, attempts FROM chrono_forge.execution_logs WHERE workflow_id = :bid ORDER BY id;
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';

DELETE FROM chrono_forge.workflows WHERE workflow LIKE 'public.de\_%';
