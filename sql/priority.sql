-- Priorities (0.13.0), driven by run_pending() and fake_now: start()
-- option "priority"; claims take due runs of a higher priority first,
-- due time next; a run's later wake-ups (timers, wake(), events, retry(),
-- a concurrency gate's admission) keep its priority; a priority never
-- makes a run due before its time; bad input; every context.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE pr_order (seq serial, what text);
CREATE FUNCTION pr_note(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO pr_order (what) VALUES (args->>'what') $$;
CREATE PROCEDURE pr_job(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('pr_note', args => args);
END $$;
-- Waits (an hour, or for an event), then notes it got through.
CREATE PROCEDURE pr_nap(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF args ? 'event' THEN
        CALL chrono_forge.await_event('go');
    ELSE
        CALL chrono_forge.wait('1 hour', 'nap');
    END IF;
    CALL chrono_forge.durably_execute('pr_note', args => args);
END $$;
CREATE FUNCTION pr_start(what text, priority jsonb, proc text DEFAULT 'pr_job',
                         extra jsonb DEFAULT '{}') RETURNS bigint
    LANGUAGE sql AS $$
    SELECT chrono_forge.start(proc, what, jsonb_build_object('what', what) || extra,
                              CASE WHEN priority IS NULL THEN '{}'::jsonb
                                   ELSE jsonb_build_object('priority', priority) END)
$$;
CREATE FUNCTION pr_taken() RETURNS text LANGUAGE sql
    AS $$ WITH d AS (DELETE FROM pr_order RETURNING *) SELECT string_agg(what, ' ' ORDER BY seq) FROM d $$;

-- Due one second apart, oldest first: without priorities they would run
-- a b c d e f g; by priority (then due time) g b d c, then a e f.
SELECT pr_start('a', NULL) > 0;
SET chrono_forge.fake_now = '2030-01-01 00:00:01+00';
SELECT pr_start('b', '5') > 0;
SET chrono_forge.fake_now = '2030-01-01 00:00:02+00';
SELECT pr_start('c', '1') > 0;
SET chrono_forge.fake_now = '2030-01-01 00:00:03+00';
SELECT pr_start('d', '5') > 0;
SET chrono_forge.fake_now = '2030-01-01 00:00:04+00';
SELECT pr_start('e', NULL) > 0;
SET chrono_forge.fake_now = '2030-01-01 00:00:05+00';
SELECT pr_start('f', '0') > 0;
SET chrono_forge.fake_now = '2030-01-01 00:00:06+00';
SELECT pr_start('g', '2147483647') > 0;
-- The runs keep their priority (0: none); so do their wake-ups.
SELECT w.key, w.priority, k.priority AS wakeup_priority
  FROM chrono_forge.workflows w JOIN chrono_forge.wakeups k ON k.workflow_id = w.id
 ORDER BY w.key;
CALL chrono_forge.run_pending();
SELECT pr_taken() AS taken;
-- One at a time (a claim each): the same order.
SELECT pr_start('h', NULL) > 0, pr_start('i', '3') > 0, pr_start('j', '7') > 0;
CALL chrono_forge.run_pending(1);
SELECT pr_taken() AS first_taken;
CALL chrono_forge.run_pending();
SELECT pr_taken() AS then_taken;

-- A priority never makes a run due early: a prioritized run napping for
-- an hour waits; a run due now goes first.  When both are due, the
-- prioritized run's timer wake-up goes first, though due later.
SELECT pr_start('napper', '9', 'pr_nap') > 0;
CALL chrono_forge.run_pending();
SELECT k.reason, k.priority FROM chrono_forge.wakeups k;
SELECT pr_start('plain', NULL) > 0;
CALL chrono_forge.run_pending();
SELECT pr_taken() AS taken_before_the_hour;
SET chrono_forge.fake_now = '2030-01-01 00:30:00+00';
SELECT pr_start('early', NULL) > 0;             -- due at 00:30, the napper at 01:00
SET chrono_forge.fake_now = '2030-01-01 02:00:00+00';
CALL chrono_forge.run_pending();
SELECT pr_taken() AS taken_after;

-- wake(), send_event() and retry() write wake-ups with the run's priority.
SELECT pr_start('ev_low', NULL, 'pr_nap', '{"event": true}') > 0,
       pr_start('ev_high', '4', 'pr_nap', '{"event": true}') > 0;
CALL chrono_forge.run_pending();
SELECT chrono_forge.send_event('pr_nap', 'ev_low', 'go', '{}');
SELECT chrono_forge.send_event('pr_nap', 'ev_high', 'go', '{}');
SELECT w.key, k.reason, k.priority FROM chrono_forge.wakeups k
  JOIN chrono_forge.workflows w ON w.id = k.workflow_id ORDER BY w.key;
CALL chrono_forge.run_pending();
SELECT pr_taken() AS taken_events;
SELECT pr_start('w_high', '2', 'pr_nap') > 0;
CALL chrono_forge.run_pending();
SELECT chrono_forge.wake('pr_nap', 'w_high');
SELECT k.reason, k.priority FROM chrono_forge.wakeups k
  JOIN chrono_forge.workflows w ON w.id = k.workflow_id WHERE w.key = 'w_high' ORDER BY k.reason;
CREATE FUNCTION pr_flaky() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pr_order WHERE what = 'fixed') THEN
        RAISE EXCEPTION 'not yet';
    END IF;
END $$;
CREATE PROCEDURE pr_fails(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('pr_flaky', retry_policy => chrono_forge.retry_policy(max_attempts => 1));
END $$;
SELECT pr_start('stuck', '6', 'pr_fails') > 0;
CALL chrono_forge.run_pending();
SELECT w.state, w.priority FROM chrono_forge.workflows w WHERE w.key = 'stuck';
SELECT chrono_forge.retry('pr_fails', 'stuck');
SELECT k.reason, k.priority FROM chrono_forge.wakeups k
  JOIN chrono_forge.workflows w ON w.id = k.workflow_id WHERE w.key = 'stuck';

-- A concurrency gate's admission: the admitted run's wake-up has its
-- priority.
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'pr-gate');
SELECT chrono_forge.start('pr_nap', 'g1', '{"what": "g1"}', '{"priority": 3, "concurrency_key": "pr-gate"}') > 0,
       chrono_forge.start('pr_job', 'g2', '{"what": "g2"}', '{"priority": 8, "concurrency_key": "pr-gate"}') > 0;
CALL chrono_forge.run_pending();
SELECT k.reason, k.priority FROM chrono_forge.wakeups k
  JOIN chrono_forge.workflows w ON w.id = k.workflow_id WHERE w.key = 'g2';
SELECT chrono_forge.cancel('pr_nap', 'g1');
SELECT k.reason, k.priority FROM chrono_forge.wakeups k
  JOIN chrono_forge.workflows w ON w.id = k.workflow_id WHERE w.key = 'g2';
DELETE FROM chrono_forge.workflows;
DELETE FROM chrono_forge.concurrency_gates;

-- Bad input: CF012, nothing written.
\set VERBOSITY sqlstate
SELECT pr_start('bad', '-1');
SELECT pr_start('bad', '1.5');
SELECT pr_start('bad', '"5"');
SELECT pr_start('bad', '2147483648');
SELECT pr_start('bad', 'true');
SELECT pr_start('bad', '[1]');
SELECT pr_start('bad', '1e100');
\set VERBOSITY default
SELECT pr_start('bad', '-1');
SELECT count(*) AS runs, (SELECT count(*) FROM chrono_forge.wakeups) AS wakeups
  FROM chrono_forge.workflows;
-- JSON null is no priority; 5.0 is 5.
SELECT pr_start('null', 'null') > 0, pr_start('five', '5.0') > 0;
SELECT key, priority FROM chrono_forge.workflows ORDER BY key;
DELETE FROM chrono_forge.workflows;

-- Every context: a DO block, a procedure, a step of another run, an
-- EXCEPTION block that catches the refusal (nothing written), another
-- role (its runs' priority is its own; run_pending() runs only its own).
DO $$ BEGIN PERFORM pr_start('from_do', '2'); END $$;
CREATE PROCEDURE pr_starter_proc() LANGUAGE plpgsql
    AS $$ BEGIN PERFORM pr_start('from_proc', '3'); END $$;
CALL pr_starter_proc();
CREATE FUNCTION pr_step_start() RETURNS bigint LANGUAGE sql AS $$ SELECT pr_start('from_step', '4') $$;
CREATE PROCEDURE pr_starter(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('pr_step_start');
END $$;
SELECT chrono_forge.start('pr_starter', 'starter') > 0;
DO $$
BEGIN
    PERFORM pr_start('refused', '-5');
EXCEPTION WHEN SQLSTATE 'CF012' THEN RAISE NOTICE 'refused: %', SQLERRM;
END $$;
CALL chrono_forge.run_pending();
SELECT pr_taken() AS taken;
SELECT key, priority, state FROM chrono_forge.workflows ORDER BY key;
CREATE ROLE pr_other;
GRANT EXECUTE ON FUNCTION pr_start(text, jsonb, text, jsonb) TO pr_other;
GRANT INSERT ON pr_order TO pr_other;
GRANT USAGE ON SEQUENCE pr_order_seq_seq TO pr_other;
SET ROLE pr_other;
SELECT pr_start('theirs', '100') > 0;
SELECT key, priority FROM chrono_forge.workflows;
RESET ROLE;
SELECT pr_start('mine', '1') > 0;
CALL chrono_forge.run_pending();
SELECT pr_taken() AS taken_by_me;
SET ROLE pr_other;
CALL chrono_forge.run_pending();
RESET ROLE;
SELECT pr_taken() AS taken_by_them;
DELETE FROM chrono_forge.workflows;
REVOKE ALL ON pr_order FROM pr_other;
REVOKE ALL ON SEQUENCE pr_order_seq_seq FROM pr_other;
REVOKE ALL ON FUNCTION pr_start(text, jsonb, text, jsonb) FROM pr_other;
DROP ROLE pr_other;
RESET chrono_forge.fake_now;
