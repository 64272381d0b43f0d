-- Run deadlines (0.11.0), driven by run_pending and fake_now: start()
-- options, what a run past its deadline becomes wherever it was (a timer,
-- a task, a merge, stalled), its children, retry() and set_deadline().
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE dl_effects (key text, what text);
CREATE FUNCTION dl_note(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO dl_effects VALUES (args->>'key', args->>'what') $$;
-- Waits an hour, then notes it got through.
CREATE PROCEDURE dl_wait(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('1 hour', 'nap');
    CALL chrono_forge.durably_execute('dl_note', args => args || '{"what": "woke"}');
END $$;
CREATE FUNCTION dl_fail_step() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'always';
END $$;
CREATE PROCEDURE dl_stall(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('dl_fail_step', retry_policy => chrono_forge.retry_policy(max_attempts => 1));
END $$;
CREATE PROCEDURE dl_task(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.run_task('charge', 'dl_q', result => r);
END $$;
CREATE PROCEDURE dl_parent(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn_each('c', 'dl_wait',
        'SELECT g AS item_key, jsonb_build_object(''key'', ''kid'' || g) AS args FROM generate_series(1, 3) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['kids'], '1 second', '1 minute');
    CALL chrono_forge.durably_execute('dl_note', args => '{"key": "parent", "what": "merged"}');
END $$;
CREATE VIEW dl_runs AS
SELECT w.key, w.state, w.deadline,
       (SELECT string_agg(e.error_class, ',' ORDER BY e.id) FROM chrono_forge.error_logs e
         WHERE e.workflow_id = w.id) AS errors,
       (SELECT l.metadata FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = w.id AND l.step_name = '$workflow_deadline$') AS marker,
       (SELECT count(*) FROM chrono_forge.wakeups k WHERE k.workflow_id = w.id) AS wakeups
  FROM chrono_forge.workflows w WHERE w.parent_execution_log_id IS NULL;

-- Options: "timeout" from the engine clock, "deadline" as given.
SELECT chrono_forge.start('dl_wait', 'a', '{"key": "a"}', '{"timeout": "30 minutes"}') > 0 AS started;
SELECT chrono_forge.start('dl_wait', 'b', '{"key": "b"}', '{"deadline": "2030-01-01 02:00:00+00"}') > 0 AS started;
SELECT chrono_forge.start('dl_wait', 'none', '{"key": "none"}') > 0 AS started;
SELECT key, deadline FROM dl_runs ORDER BY key;
-- Refused before anything is written (CF012).
\set VERBOSITY default
SELECT chrono_forge.start('dl_wait', 'x', '{}', '{"timeout": "1 hour", "deadline": "2030-01-02"}');
SELECT chrono_forge.start('dl_wait', 'x', '{}', '{"timeout": "-1 hour"}');
SELECT chrono_forge.start('dl_wait', 'x', '{}', '{"timeout": "0 seconds"}');
SELECT chrono_forge.start('dl_wait', 'x', '{}', '{"timeout": "soon"}');
SELECT chrono_forge.start('dl_wait', 'x', '{}', '{"timeout": "1000000 years"}');
SELECT chrono_forge.start('dl_wait', 'x', '{}', '{"timeout": 60}');
SELECT chrono_forge.start('dl_wait', 'x', '{}', '{"deadline": "2029-12-31 23:00:00+00"}');
SELECT chrono_forge.start('dl_wait', 'x', '{}', '{"deadline": "infinity"}');
SELECT chrono_forge.start('dl_wait', 'x', '{}', '{"deadline": "2030-13-45"}');
SELECT chrono_forge.start('dl_wait', 'x', '{}', '{"timeout": "1 hour", "deadline_children": "drop"}');
\set VERBOSITY terse
SELECT count(*) AS refused_runs FROM chrono_forge.workflows WHERE key = 'x';
-- A repeated start() returns the run as it is: its deadline stays.
SELECT chrono_forge.start('dl_wait', 'a', '{}', '{"timeout": "5 hours"}') =
       chrono_forge.start('dl_wait', 'a') AS same_run;
SELECT deadline FROM dl_runs WHERE key = 'a';

-- Parked on a timer: the first pass parks all three.
CALL chrono_forge.run_pending();
-- Before the deadline nothing happens.
SET chrono_forge.fake_now = '2030-01-01 00:29:59+00';
CALL chrono_forge.run_pending();
SELECT key, state, errors, wakeups FROM dl_runs ORDER BY key;
-- Past a's deadline (an hour before its timer): a fails with CF029, its
-- wake-up gone, a marker in its timeline; b and none wait on.
SET chrono_forge.fake_now = '2030-01-01 00:30:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, errors, marker, wakeups FROM dl_runs ORDER BY key;
SELECT error_class, regexp_replace(error_message, '\d+', 'N') AS error_message, error_detail,
       e.created_at FROM chrono_forge.error_logs e
  JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key = 'a';
SELECT ended_at FROM chrono_forge.workflows WHERE key = 'a';
-- The timers fire: none completes (its step ran), b completes before its
-- deadline; a's step never runs.
SET chrono_forge.fake_now = '2030-01-01 01:00:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, errors FROM dl_runs ORDER BY key;
SELECT * FROM dl_effects ORDER BY key;
-- A completed run's deadline passing changes nothing.
SET chrono_forge.fake_now = '2030-01-01 03:00:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, errors FROM dl_runs WHERE key = 'b';
-- wait_for_run() tells the client.
SELECT state, error_class, error_message = 'workflow run ' || (SELECT id FROM chrono_forge.workflows WHERE key = 'a')
       || ' passed its deadline' AS names_the_run
  FROM chrono_forge.wait_for_run('dl_wait', 'a', '0');

-- retry() of a run past its deadline is refused (CF029); set_deadline()
-- moves it, and then the run goes on.
\set VERBOSITY default
SELECT chrono_forge.retry('dl_wait', 'a');
\set VERBOSITY terse
SELECT chrono_forge.set_deadline('dl_wait', 'a', '2030-01-01 05:00:00+00');
SELECT chrono_forge.retry('dl_wait', 'a');
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 04:00:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, errors FROM dl_runs WHERE key = 'a';
SELECT what FROM dl_effects WHERE key = 'a';
-- Completed and cancelled runs keep theirs: false.
SELECT chrono_forge.set_deadline('dl_wait', 'a', NULL);
-- A second spelling of the workflow names the same run.
SELECT chrono_forge.start('dl_wait', 'c', '{"key": "c"}', '{"timeout": "1 day"}') > 0 AS started;
SELECT chrono_forge.set_deadline('public.dl_wait', 'c', NULL);
SELECT chrono_forge.set_deadline('"public"."dl_wait"', 'c', '2030-01-01 04:30:00+00');
SELECT deadline FROM dl_runs WHERE key = 'c';
SELECT chrono_forge.cancel('dl_wait', 'c');
SELECT chrono_forge.set_deadline('dl_wait', 'c', '2030-01-02');
-- Infinite deadlines and unknown runs are refused.
SELECT chrono_forge.set_deadline('dl_wait', 'b', 'infinity');
SELECT chrono_forge.set_deadline('dl_wait', 'nobody', '2030-01-02');
SELECT chrono_forge.set_deadline('dl_wait', 'nobody', NULL);
-- A deadline moved into the past ends a run in flight at the next look.
SELECT chrono_forge.start('dl_wait', 'd', '{"key": "d"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT chrono_forge.set_deadline('dl_wait', 'd', '2030-01-01 03:59:00+00');
CALL chrono_forge.run_pending();
SELECT key, state, errors FROM dl_runs WHERE key = 'd';
-- A second deadline of a retried run: the marker is written again.
SELECT chrono_forge.set_deadline('dl_wait', 'd', '2030-01-01 04:10:00+00');
SELECT chrono_forge.retry('dl_wait', 'd');
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 04:10:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, errors, marker FROM dl_runs WHERE key = 'd';
SELECT attempts FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'd' AND l.step_name = '$workflow_deadline$';

-- Stalled: a stalled run past its deadline fails too.
SELECT chrono_forge.start('dl_stall', 's', '{}', '{"timeout": "10 minutes"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, errors FROM dl_runs WHERE key = 's';
SET chrono_forge.fake_now = '2030-01-01 04:20:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, errors FROM dl_runs WHERE key = 's';

-- A task: the open task is cancelled with its run; a worker's late
-- completion is refused.
SELECT chrono_forge.start('dl_task', 't', '{}', '{"timeout": "10 minutes"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT task_id, claim_token AS token FROM chrono_forge.claim_tasks(ARRAY['dl_q'], 1, 'w1') \gset
SET chrono_forge.fake_now = '2030-01-01 04:30:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, errors FROM dl_runs WHERE key = 't';
SELECT state FROM chrono_forge.tasks WHERE id = :task_id;
SELECT chrono_forge.complete_task(:task_id, :'token', '{"ok": true}');

-- Children: cancelled with their parent by default, started or not;
-- kept with "deadline_children": "keep".
SELECT chrono_forge.start('dl_parent', 'p-cancel', '{}', '{"timeout": "10 minutes"}') > 0 AS started;
SELECT chrono_forge.start('dl_parent', 'p-keep', '{}',
    '{"timeout": "10 minutes", "deadline_children": "keep"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT p.key, c.state, count(*) FROM chrono_forge.workflows c
  JOIN chrono_forge.execution_logs b ON b.id = c.parent_execution_log_id
  JOIN chrono_forge.workflows p ON p.id = b.workflow_id
 GROUP BY 1, 2 ORDER BY 1, 2;
SET chrono_forge.fake_now = '2030-01-01 04:40:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, errors FROM dl_runs WHERE key LIKE 'p-%' ORDER BY key;
SELECT p.key, c.state, count(*) FROM chrono_forge.workflows c
  JOIN chrono_forge.execution_logs b ON b.id = c.parent_execution_log_id
  JOIN chrono_forge.workflows p ON p.id = b.workflow_id
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT DISTINCT l.metadata->>'reason' = 'deadline of workflow run ' || (SELECT id FROM chrono_forge.workflows
       WHERE key = 'p-cancel') AS names_the_parent FROM chrono_forge.execution_logs l
  JOIN chrono_forge.workflows c ON c.id = l.workflow_id
 WHERE c.parent_execution_log_id IS NOT NULL AND l.step_name = '$workflow_cancelled$';
-- Children not started yet are dropped with the parent's deadline.
CREATE PROCEDURE dl_wide(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('many');
    CALL chrono_forge.spawn_each('c', 'dl_wait',
        'SELECT g AS item_key, ''{}''::jsonb AS args FROM generate_series(1, 50) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['many'], '1 second', '1 minute');
END $$;
SELECT chrono_forge.start('dl_wide', 'wide', '{}', '{"timeout": "1 minute"}') > 0 AS started;
CALL chrono_forge.run_pending(1);
SELECT count(*) > 0 AS batched FROM chrono_forge.spawn_batches;
SET chrono_forge.fake_now = '2030-01-01 04:41:00+00';
CALL chrono_forge.run_pending(1);
SELECT key, state, errors FROM dl_runs WHERE key = 'wide';
SELECT count(*) AS batches_left FROM chrono_forge.spawn_batches;
SELECT count(*) FILTER (WHERE state <> 'cancelled') AS children_not_cancelled
  FROM chrono_forge.workflows WHERE key LIKE '$' || (SELECT id FROM chrono_forge.workflows WHERE key = 'wide') || '$%';

-- Every way to start one: a DO block, a function, a procedure, a body.
DO $$ BEGIN PERFORM chrono_forge.start('dl_wait', 'do', '{"key": "do"}', '{"timeout": "1 minute"}'); END $$;
CREATE FUNCTION dl_start_fn(k text) RETURNS bigint LANGUAGE sql
    AS $$ SELECT chrono_forge.start('dl_wait', k, jsonb_build_object('key', k), '{"timeout": "1 minute"}') $$;
SELECT dl_start_fn('fn') > 0 AS started;
CREATE PROCEDURE dl_start_proc(k text) LANGUAGE plpgsql
    AS $$ BEGIN PERFORM chrono_forge.start('dl_wait', k, jsonb_build_object('key', k), '{"timeout": "1 minute"}'); END $$;
CALL dl_start_proc('proc');
-- A step of another run starts one: a step is a function.
CREATE FUNCTION dl_start_step(args jsonb) RETURNS bigint LANGUAGE sql
    AS $$ SELECT dl_start_fn(args->>'key') $$;
CREATE PROCEDURE dl_starter(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('dl_start_step', args => '{"key": "body"}');
END $$;
SELECT chrono_forge.start('dl_starter', 'starter') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, deadline FROM dl_runs WHERE key IN ('do', 'fn', 'proc', 'body') ORDER BY key;
-- In an EXCEPTION block a refused start() leaves nothing behind.
DO $$
BEGIN
    PERFORM chrono_forge.start('dl_wait', 'exc', '{}', '{"timeout": "-1 minute"}');
EXCEPTION WHEN SQLSTATE 'CF012' THEN RAISE NOTICE 'refused: %', SQLERRM;
END $$;
SELECT count(*) AS exc_runs FROM chrono_forge.workflows WHERE key = 'exc';
SET chrono_forge.fake_now = '2030-01-01 04:42:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, errors FROM dl_runs WHERE key IN ('do', 'fn', 'proc', 'body') ORDER BY key;

-- Another role: cannot see, move or clear this role's deadlines.
CREATE ROLE dl_other;
GRANT USAGE ON SCHEMA public TO dl_other;
SELECT chrono_forge.start('dl_wait', 'mine', '{"key": "mine"}', '{"timeout": "1 hour"}') > 0 AS started;
SET ROLE dl_other;
SELECT chrono_forge.set_deadline('dl_wait', 'mine', NULL);
SELECT chrono_forge.set_deadline('dl_wait', 'mine', '2030-01-01 04:42:01+00');
SELECT count(*) AS visible FROM chrono_forge.workflows WHERE key = 'mine';
-- Its own run of the same key is its own, deadline and all.
SELECT chrono_forge.start('dl_wait', 'mine', '{"key": "theirs"}', '{"timeout": "1 minute"}') > 0 AS started;
RESET ROLE;
-- run_pending() as dl_other ends only dl_other's runs.
SET chrono_forge.fake_now = '2030-01-01 06:00:00+00';
SET ROLE dl_other;
CALL chrono_forge.run_pending();
SELECT key, state FROM chrono_forge.workflows WHERE key = 'mine';
RESET ROLE;
SELECT w.key, w.owner, w.state FROM chrono_forge.workflows w WHERE key = 'mine' ORDER BY owner::text;
SELECT chrono_forge.cancel('dl_wait', 'mine');
DELETE FROM chrono_forge.workflows WHERE owner = 'dl_other'::regrole;
REVOKE USAGE ON SCHEMA public FROM dl_other;
DROP ROLE dl_other;

-- set_deadline() from every context: a DO block, a procedure, an
-- EXCEPTION block catching its refusal (nothing changed), a step of
-- another run.
SELECT chrono_forge.start('dl_wait', 'ctx', '{"key": "ctx"}') > 0 AS started;
DO $$ BEGIN PERFORM chrono_forge.set_deadline('dl_wait', 'ctx', '2030-01-01 07:00:00+00'); END $$;
SELECT deadline FROM dl_runs WHERE key = 'ctx';
CREATE PROCEDURE dl_move(t timestamptz) LANGUAGE plpgsql
    AS $$ BEGIN PERFORM chrono_forge.set_deadline('dl_wait', 'ctx', t); END $$;
CALL dl_move('2030-01-01 08:00:00+00');
SELECT deadline FROM dl_runs WHERE key = 'ctx';
DO $$
BEGIN
    PERFORM chrono_forge.set_deadline('dl_wait', 'ctx', 'infinity');
EXCEPTION WHEN SQLSTATE 'CF012' THEN RAISE NOTICE 'refused: %', SQLERRM;
END $$;
SELECT deadline FROM dl_runs WHERE key = 'ctx';
CREATE FUNCTION dl_move_step() RETURNS boolean LANGUAGE sql
    AS $$ SELECT chrono_forge.set_deadline('dl_wait', 'ctx', '2030-01-01 09:00:00+00') $$;
CREATE PROCEDURE dl_mover(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('dl_move_step');
END $$;
SELECT chrono_forge.start('dl_mover', 'mover') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, deadline FROM dl_runs WHERE key IN ('ctx', 'mover') ORDER BY key;

DELETE FROM chrono_forge.workflows;
DROP VIEW dl_runs;
-- tasks.sql numbers its tasks from 1.
ALTER TABLE chrono_forge.tasks ALTER COLUMN id RESTART;
