-- wait, wait_until, continue_if, events: every branch, with fake_now.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE wt_log (what text);
CREATE FUNCTION wt_note(args jsonb) RETURNS void LANGUAGE sql AS $$ INSERT INTO wt_log VALUES (args->>'what') $$;
CREATE VIEW wt_runs AS
SELECT w.key, w.state,
       (SELECT string_agg(l.step_name || ':' || l.state || ':' || l.attempts, ', ' ORDER BY l.id)
          FROM chrono_forge.execution_logs l WHERE l.workflow_id = w.id) AS steps,
       (SELECT string_agg(to_char(k.due_at AT TIME ZONE 'UTC', 'HH24:MI:SS') || ' ' || k.reason, ', ' ORDER BY k.due_at)
          FROM chrono_forge.wakeups k WHERE k.workflow_id = w.id) AS wakeups
  FROM chrono_forge.workflows w WHERE w.workflow LIKE 'public.wt\_%' ORDER BY w.id;

-- wait: resumes at first-seen time + duration; an early wake re-arms only
-- the remainder.
CREATE PROCEDURE wt_wait_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('10 minutes', 'cool_off');
    CALL chrono_forge.durably_execute('wt_note', args => '{"what": "after wait"}');
    CALL chrono_forge.wait('0 seconds', 'no_wait');
END $$;
SELECT chrono_forge.start('wt_wait_wf', 'w') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'w';
SELECT metadata FROM chrono_forge.execution_logs WHERE step_name = 'wait$cool_off';
SET chrono_forge.fake_now = '2030-01-01 00:04:00+00';
SELECT chrono_forge.wake('wt_wait_wf', 'w');
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'w';
SET chrono_forge.fake_now = '2030-01-01 00:10:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'w';
SELECT what FROM wt_log;

-- wait_until, the gem's KitchenSink flow: the condition turns true on its
-- third check, then a wait, then a step.
SET chrono_forge.fake_now = '2030-01-02 00:00:00+00';
CREATE SEQUENCE wt_checks;
CREATE FUNCTION wt_ready() RETURNS boolean LANGUAGE sql AS $$ SELECT nextval('wt_checks') >= 3 $$;
CREATE PROCEDURE wt_kitchen_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait_until('wt_ready', timeout => '1 hour', check_interval => '1 minute');
    CALL chrono_forge.wait('5 minutes', 'settle');
    CALL chrono_forge.durably_execute('wt_note', args => '{"what": "kitchen done"}');
END $$;
SELECT chrono_forge.start('wt_kitchen_wf', 'k') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'k';
SET chrono_forge.fake_now = '2030-01-02 00:01:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'k';
SET chrono_forge.fake_now = '2030-01-02 00:02:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'k';
SET chrono_forge.fake_now = '2030-01-02 00:07:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'k';
SELECT step_name, metadata, result FROM chrono_forge.execution_logs
 WHERE step_name = 'wait_until$wt_ready';

-- wait_until that times out: the step fails with CF010, the run stalls.
SET chrono_forge.fake_now = '2030-01-03 00:00:00+00';
CREATE FUNCTION wt_never() RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE PROCEDURE wt_timeout_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait_until('wt_never', timeout => '90 seconds', check_interval => '1 minute');
END $$;
SELECT chrono_forge.start('wt_timeout_wf', 't') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-03 00:01:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 't';
SET chrono_forge.fake_now = '2030-01-03 00:02:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 't';
SELECT l.result, l.metadata->'result' AS meta_result, l.error_class, e.error_class AS logged, e.error_message
  FROM chrono_forge.execution_logs l JOIN chrono_forge.error_logs e ON e.step_name = l.step_name
 WHERE l.step_name = 'wait_until$wt_never';

-- Condition errors: not retried by default (stalled at once), retried
-- only as a per-call policy allows.
SET chrono_forge.fake_now = '2030-01-04 00:00:00+00';
CREATE FUNCTION wt_broken() RETURNS boolean LANGUAGE sql AS $$ SELECT 1 / 0 = 1 $$;
CREATE PROCEDURE wt_broken_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF args ? 'policy' THEN
        CALL chrono_forge.wait_until('wt_broken', retry_policy => args->'policy');
    ELSE
        CALL chrono_forge.wait_until('wt_broken');
    END IF;
END $$;
SELECT chrono_forge.configure('wt_broken_wf', chrono_forge.retry_policy(5));
SELECT chrono_forge.start('wt_broken_wf', 'default') > 0 AS started;
SELECT chrono_forge.start('wt_broken_wf', 'policy',
    jsonb_build_object('policy', chrono_forge.retry_policy(2, jitter => false))) > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key IN ('default', 'policy');
SET chrono_forge.fake_now = '2030-01-04 00:00:01+00';
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key IN ('default', 'policy');

-- continue_if: no polling; wake() resumes it; an error stalls the run.
SET chrono_forge.fake_now = '2030-01-05 00:00:00+00';
CREATE TABLE wt_flag (go boolean);
INSERT INTO wt_flag VALUES (false);
CREATE FUNCTION wt_go() RETURNS boolean LANGUAGE sql AS $$ SELECT go FROM wt_flag $$;
CREATE PROCEDURE wt_gate_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.continue_if('wt_go', name => 'gate');
    CALL chrono_forge.durably_execute('wt_note', args => '{"what": "through the gate"}');
END $$;
CREATE PROCEDURE wt_gate_broken_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.continue_if('wt_broken');
END $$;
SELECT chrono_forge.start('wt_gate_wf', 'g') > 0 AS started;
SELECT chrono_forge.start('wt_gate_broken_wf', 'gb') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key IN ('g', 'gb');
SET chrono_forge.fake_now = '2030-01-06 00:00:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'g';
SELECT chrono_forge.wake('wt_gate_wf', 'g');
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'g';
UPDATE wt_flag SET go = true;
SELECT chrono_forge.wake('wt_gate_wf', 'g');
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'g';
SELECT metadata FROM chrono_forge.execution_logs WHERE step_name = 'continue_if$gate';
SELECT chrono_forge.wake('wt_gate_wf', 'g') AS wake_completed;
SELECT chrono_forge.wake('wt_gate_broken_wf', 'gb') AS wake_stalled;

-- Events: sent before the run awaits them they are kept; each await_event
-- consumes one, in send order, and replays with the same payload.
SET chrono_forge.fake_now = '2030-01-07 00:00:00+00';
CREATE PROCEDURE wt_event_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE p jsonb;
BEGIN
    CALL chrono_forge.await_event('approval', p);
    PERFORM chrono_forge.context_set('first', p);
    CALL chrono_forge.wait('1 minute', 'between');
    CALL chrono_forge.await_event('approval', p, timeout => '1 hour');  -- same step: replays
    PERFORM chrono_forge.context_set('replayed', p);
    CALL chrono_forge.await_event('signoff', timeout => '1 hour');
END $$;
SELECT chrono_forge.start('wt_event_wf', 'e') > 0 AS started;
SELECT chrono_forge.send_event('wt_event_wf', 'e', 'approval', '{"by": "ann"}');
SELECT chrono_forge.send_event('wt_event_wf', 'e', 'approval', '{"by": "bob"}');
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'e';
-- The wait parks in one transaction: its pending step, the context and
-- the run's release share their xmin.
SELECT l.step_name, l.xmin = w.xmin AS step_with_release, w.context ? 'first' AS context_written
  FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id
 WHERE w.key = 'e' AND l.state = 'pending';
SET chrono_forge.fake_now = '2030-01-07 00:01:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'e';
SELECT context FROM chrono_forge.workflows WHERE key = 'e';
SELECT name, payload, consumed_by_step FROM chrono_forge.events ORDER BY id;
SELECT chrono_forge.send_event('wt_event_wf', 'e', 'signoff');
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'e';
SELECT chrono_forge.send_event('wt_event_wf', 'e', 'late') AS sent_to_completed;

-- An event that never comes: the timeout stalls the run (CF010).
SET chrono_forge.fake_now = '2030-01-08 00:00:00+00';
CREATE PROCEDURE wt_event_timeout_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.await_event('never', timeout => '10 minutes');
END $$;
SELECT chrono_forge.start('wt_event_timeout_wf', 'et') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'et';
SET chrono_forge.fake_now = '2030-01-08 00:10:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM wt_runs WHERE key = 'et';
SELECT error_class, error_message FROM chrono_forge.error_logs e
  JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key = 'et';

-- Bad input: a documented SQLSTATE, nothing written.
\set VERBOSITY sqlstate
SELECT chrono_forge.send_event('wt_event_wf', 'nope', 'x');
SELECT chrono_forge.send_event('wt_event_wf', 'e', NULL);
SELECT chrono_forge.send_event('wt_event_wf', 'e', 'a$b');
\set VERBOSITY default
CREATE FUNCTION wt_not_boolean() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
CREATE PROCEDURE wt_bad_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CASE args->>'case'
    WHEN 'negative' THEN CALL chrono_forge.wait('-1 second', 'x');
    WHEN 'null duration' THEN CALL chrono_forge.wait(NULL, 'x');
    WHEN 'null name' THEN CALL chrono_forge.wait('1 second', NULL);
    WHEN 'dollar name' THEN CALL chrono_forge.wait('1 second', 'a$b');
    WHEN 'zero check' THEN CALL chrono_forge.wait_until('wt_ready', check_interval => '0 seconds');
    WHEN 'null timeout' THEN CALL chrono_forge.wait_until('wt_ready', timeout => NULL);
    WHEN 'unknown condition' THEN CALL chrono_forge.continue_if('wt_no_such_condition');
    WHEN 'not boolean' THEN CALL chrono_forge.wait_until('wt_not_boolean');
    WHEN 'negative event timeout' THEN CALL chrono_forge.await_event('x', timeout => '-1 hour');
    END CASE;
END $$;
SELECT count(chrono_forge.start('wt_bad_wf', c, jsonb_build_object('case', c)))
  FROM unnest(ARRAY['negative', 'null duration', 'null name', 'dollar name', 'zero check',
                    'null timeout', 'unknown condition', 'not boolean', 'negative event timeout']) c;
CALL chrono_forge.run_pending();
SELECT w.key, w.state, e.error_class, e.error_message,
       (SELECT count(*) FROM chrono_forge.execution_logs l WHERE l.workflow_id = w.id
         AND l.step_name NOT LIKE '$%') AS steps_written
  FROM chrono_forge.workflows w JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.workflow = 'public.wt_bad_wf' ORDER BY w.id;

-- The payload an event step returns is used by the next step of the same
-- pass (it once pointed into memory freed at the step's end).
CREATE TABLE wt_gate (open boolean);
INSERT INTO wt_gate VALUES (false);
CREATE FUNCTION wt_gate_open() RETURNS boolean LANGUAGE sql AS $$ SELECT open FROM wt_gate $$;
CREATE PROCEDURE wt_payload_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE p jsonb;
BEGIN
    CALL chrono_forge.continue_if('wt_gate_open');
    CALL chrono_forge.await_event('go', p);
    CALL chrono_forge.durably_execute('wt_note', name => 'after_event',
        args => jsonb_build_object('what', 'payload ' || (p->>'what')));
END $$;
SELECT chrono_forge.start('wt_payload_wf', 'p') > 0 AS started;
CALL chrono_forge.run_pending();
UPDATE wt_gate SET open = true;
SELECT chrono_forge.wake('wt_payload_wf', 'p');
CALL chrono_forge.run_pending();
SELECT chrono_forge.send_event('wt_payload_wf', 'p', 'go', '{"what": "delivered"}');
CALL chrono_forge.run_pending();
SELECT state FROM chrono_forge.workflows WHERE workflow = 'public.wt_payload_wf';
SELECT what FROM wt_log WHERE what LIKE 'payload%';

DELETE FROM chrono_forge.workflows WHERE workflow LIKE 'public.wt\_%';
DELETE FROM chrono_forge.workflow_defaults;
