-- wait_for_run(): returns at once for an ended run (with its context and
-- last error), the current state when its timeout passes, the run
-- functions' visibility; refused where it cannot wait.  (Workers off: the
-- wake-up by another session's commit is test/integration/t_wait_for_run.sh.)
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE SCHEMA wfr;
CREATE TABLE wfr.gate (open boolean);
INSERT INTO wfr.gate VALUES (false);
CREATE FUNCTION wfr.check_gate() RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (SELECT open FROM wfr.gate) THEN
        RAISE EXCEPTION 'gate closed' USING ERRCODE = '55000';
    END IF;
    RETURN '{"passed": true}';
END $$;
-- Completes (gate open) or stalls (gate closed: the step exhausts its policy).
CREATE PROCEDURE wfr.flow(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM chrono_forge.context_set('seen', args);
    CALL chrono_forge.durably_execute('wfr.check_gate', retry_policy => chrono_forge.retry_policy(1));
END $$;
-- Fails: an error escapes the body, and the workflow policy allows one attempt.
CREATE PROCEDURE wfr.boom(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'boom %', args->>'n' USING ERRCODE = '22012';
END $$;
SELECT chrono_forge.configure('wfr.boom', chrono_forge.retry_policy(1));
-- Parks on an event: stays idle.
CREATE PROCEDURE wfr.parked(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.await_event('never');
END $$;
-- Waits from inside a pass: refused, and the run fails.
CREATE PROCEDURE wfr.waits(args jsonb) LANGUAGE plpgsql AS $$
DECLARE s text;
BEGIN
    BEGIN
        SELECT state INTO s FROM chrono_forge.wait_for_run('wfr.parked', 'p', '1 s');
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'caught %', SQLSTATE;
    END;
END $$;

-- Ended runs: at once, with the context; the error only if failed or stalled.
SELECT chrono_forge.start('wfr.flow', 'stalls', '{"n": 1}') > 0 AS started;
CALL chrono_forge.run_pending();
UPDATE wfr.gate SET open = true;
SELECT chrono_forge.start('wfr.flow', 'completes', '{"n": 2}') > 0 AS started;
SELECT chrono_forge.start('wfr.boom', 'fails', '{"n": 3}') > 0 AS started;
SELECT chrono_forge.start('wfr.parked', 'p') > 0 AS started;
SELECT chrono_forge.start('wfr.parked', 'cancelled') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT chrono_forge.cancel('wfr.parked', 'cancelled', 'no longer needed');
SELECT clock_timestamp() AS t0 \gset
SELECT * FROM chrono_forge.wait_for_run('wfr.flow', 'completes');
SELECT * FROM chrono_forge.wait_for_run('wfr.flow', 'stalls');
SELECT * FROM chrono_forge.wait_for_run('wfr.boom', 'fails');
SELECT * FROM chrono_forge.wait_for_run('wfr.parked', 'cancelled', '1 hour');
-- Every name of the procedure names the run.
SELECT state FROM chrono_forge.wait_for_run('WFR.FLOW', 'completes');
SELECT state FROM chrono_forge.wait_for_run('"wfr".flow', 'completes');
SET search_path = wfr, public;
SELECT state FROM chrono_forge.wait_for_run('flow', 'completes');
RESET search_path;
-- None of them waited (a generous bound: ended runs return at once).
SELECT clock_timestamp() - :'t0'::timestamptz < interval '30 seconds' AS returned_at_once;

-- A run that has not ended: its state when the timeout passes (0: at once).
SELECT clock_timestamp() AS t0 \gset
SELECT * FROM chrono_forge.wait_for_run('wfr.parked', 'p', '0.2 s');
SELECT clock_timestamp() - :'t0'::timestamptz BETWEEN interval '0.2 s' AND interval '60 s' AS waited_its_timeout;
SELECT state FROM chrono_forge.wait_for_run('wfr.parked', 'p', '0');
SELECT chrono_forge.run_waiters() AS waiters_left;

-- From a DO block, a function, a procedure.
DO $$
DECLARE r record;
BEGIN
    SELECT * INTO r FROM chrono_forge.wait_for_run('wfr.flow', 'completes', '5 s');
    RAISE NOTICE 'do: % %', r.state, r.context;
    SELECT * INTO r FROM chrono_forge.wait_for_run('wfr.parked', 'p', '0.1 s');
    RAISE NOTICE 'do: %', r.state;
END $$;
CREATE FUNCTION wfr.state_of(k text, t interval) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT state FROM chrono_forge.wait_for_run('wfr.flow', k, t));
END $$;
SELECT wfr.state_of('stalls', '5 s'), wfr.state_of('completes', NULL);
CREATE PROCEDURE wfr.report(k text) LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    SELECT * INTO r FROM chrono_forge.wait_for_run('wfr.boom', k);
    RAISE NOTICE 'procedure: % % %', r.state, r.error_class, r.error_message;
END $$;
CALL wfr.report('fails');

-- Visibility: another role's run answers as a missing one (CF014).
CREATE ROLE wfr_other;
GRANT USAGE ON SCHEMA wfr TO wfr_other;
\set VERBOSITY sqlstate
SET ROLE wfr_other;
SELECT * FROM chrono_forge.wait_for_run('wfr.flow', 'completes', '0');
SELECT * FROM chrono_forge.wait_for_run('wfr.flow', 'nothing', '0');
SELECT chrono_forge.run_waiters();
RESET ROLE;
SELECT * FROM chrono_forge.wait_for_run('wfr.flow', 'nothing', '0');

-- Refusals: bad arguments (CF012), snapshots that never see the change
-- (25000), a wait in a transaction that wrote (25000), inside a pass (CF013).
SELECT * FROM chrono_forge.wait_for_run('wfr.flow', 'completes', '-1 second');
SELECT * FROM chrono_forge.wait_for_run('wfr.flow', 'completes', '1 mon -31 days');
SELECT * FROM chrono_forge.wait_for_run('wfr.flow', NULL);
SELECT * FROM chrono_forge.wait_for_run(NULL, 'completes');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM chrono_forge.wait_for_run('wfr.flow', 'completes', '0');
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM chrono_forge.wait_for_run('wfr.parked', 'p', '1 s');
ROLLBACK;
BEGIN;
SELECT chrono_forge.start('wfr.parked', 'new') > 0 AS started;
SELECT * FROM chrono_forge.wait_for_run('wfr.parked', 'new', '1 hour');
ROLLBACK;
BEGIN;
SELECT chrono_forge.send_event('wfr.parked', 'p', 'never');
SELECT * FROM chrono_forge.wait_for_run('wfr.parked', 'p', '1 hour');
ROLLBACK;
-- (Looking once is no wait: allowed.)
BEGIN;
SELECT chrono_forge.send_event('wfr.parked', 'p', 'never');
SELECT state FROM chrono_forge.wait_for_run('wfr.parked', 'p', '0');
ROLLBACK;
-- A run this transaction ended is ended: returned at once.
BEGIN;
SELECT chrono_forge.cancel('wfr.parked', 'p');
SELECT state FROM chrono_forge.wait_for_run('wfr.parked', 'p');
ROLLBACK;
\set VERBOSITY default
SELECT chrono_forge.start('wfr.waits', 'w') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT state, (SELECT string_agg(error_class, ',' ORDER BY id) FROM chrono_forge.error_logs e WHERE e.workflow_id = w.id) AS errors
  FROM chrono_forge.workflows w WHERE key = 'w';
SELECT chrono_forge.run_waiters() AS waiters_left;

DROP SCHEMA wfr CASCADE;
DROP ROLE wfr_other;
