-- States and transitions: wake, retry, the lock functions.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE st_gate (open boolean);
INSERT INTO st_gate VALUES (false);
CREATE FUNCTION st_check() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (SELECT open FROM st_gate) THEN
        RAISE EXCEPTION 'gate closed' USING ERRCODE = '55000';
    END IF;
    RETURN true;
END $$;
CREATE PROCEDURE st_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('st_check', retry_policy => chrono_forge.retry_policy(1));
END $$;
CREATE PROCEDURE st_body_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (SELECT open FROM st_gate) THEN
        RAISE EXCEPTION 'body gate closed';
    END IF;
END $$;

-- A step exhausts its policy: stalled.  retry() re-runs it by replay.
SELECT chrono_forge.start('st_wf', 's') AS sid \gset
CALL chrono_forge.run_pending();
SELECT state FROM chrono_forge.workflows WHERE id = :sid;
\set VERBOSITY sqlstate
SELECT chrono_forge.retry('st_wf', 'nope');
\set VERBOSITY default
SELECT chrono_forge.wake('st_wf', 's') AS woken_stalled;
UPDATE st_gate SET open = true;
SELECT chrono_forge.retry('st_wf', 's');
SELECT state, attempt FROM chrono_forge.workflows WHERE id = :sid;
CALL chrono_forge.run_pending();
SELECT state FROM chrono_forge.workflows WHERE id = :sid;
SELECT step_name, state, attempts, metadata->>'previous_state' AS previous
  FROM chrono_forge.execution_logs WHERE workflow_id = :sid ORDER BY id;
-- Completed is terminal: not retryable, not wakeable.
SELECT chrono_forge.retry('st_wf', 's');
SELECT chrono_forge.wake('st_wf', 's') AS woken_completed;

-- failed (workflow-level budget exhausted) is retryable too.
UPDATE st_gate SET open = false;
SELECT chrono_forge.configure('st_body_wf', chrono_forge.retry_policy(1));
SELECT chrono_forge.start('st_body_wf', 'b') AS bid \gset
CALL chrono_forge.run_pending();
SELECT state FROM chrono_forge.workflows WHERE id = :bid;
UPDATE st_gate SET open = true;
SELECT chrono_forge.retry('st_body_wf', 'b');
CALL chrono_forge.run_pending();
SELECT state, attempt FROM chrono_forge.workflows WHERE id = :bid;

-- wake(): an idle run gets a pass now; many wakes coalesce into one pass.
-- (A sequence counts passes: the body's own writes roll back with its error.)
CREATE SEQUENCE st_passes;
CREATE PROCEDURE st_count_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('st_passes');
    RAISE EXCEPTION 'keep it idle';
END $$;
SELECT chrono_forge.start('st_count_wf', 'w') AS wid \gset
CALL chrono_forge.run_pending();
SELECT last_value AS passes FROM st_passes;
SELECT chrono_forge.wake('st_count_wf', 'w'), chrono_forge.wake('st_count_wf', 'w'), chrono_forge.wake('st_count_wf', 'w');
SELECT count(*) AS wakeups_due FROM chrono_forge.wakeups WHERE workflow_id = :wid AND due_at <= chrono_forge.now();
CALL chrono_forge.run_pending();
SELECT last_value AS passes_after_three_wakes FROM st_passes;
\set VERBOSITY sqlstate
SELECT chrono_forge.wake('st_count_wf', 'nope');
SELECT chrono_forge.wake(NULL, 'w');
\set VERBOSITY default

-- The lock, SQL-callable: acquire stamps started_at; a fresh lock
-- refuses a second holder; a stale one is stolen; release checks the
-- holder.
SELECT chrono_forge.start('st_count_wf', 'lock') AS lid \gset
UPDATE chrono_forge.workflows SET started_at = NULL WHERE id = :lid;
SELECT state, locked_by, locked_at AT TIME ZONE 'UTC' AS locked, started_at AT TIME ZONE 'UTC' AS started
  FROM chrono_forge.acquire_lock(:lid, 'holder-1');
\set VERBOSITY sqlstate
SELECT state FROM chrono_forge.acquire_lock(:lid, 'holder-2');
SET chrono_forge.fake_now = '2030-01-01 00:10:01+00';
SELECT locked_by FROM chrono_forge.acquire_lock(:lid, 'holder-2');
SELECT chrono_forge.release_lock(:lid, 'holder-1');
SELECT chrono_forge.release_lock(:lid, 'holder-2');
SELECT state, locked_by, started_at AT TIME ZONE 'UTC' AS started FROM chrono_forge.workflows WHERE id = :lid;
UPDATE chrono_forge.workflows SET state = 'completed' WHERE id = :lid;
SELECT chrono_forge.acquire_lock(:lid, 'holder-3');
SELECT chrono_forge.acquire_lock(-1, 'holder-3');
\set VERBOSITY default

DELETE FROM chrono_forge.workflows WHERE workflow LIKE 'public.st\_%';
DELETE FROM chrono_forge.workflow_defaults;
