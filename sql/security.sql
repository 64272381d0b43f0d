-- Runs execute as their owner; no role acts on another's runs.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE ROLE sec_alice;
CREATE ROLE sec_bob;
GRANT USAGE, CREATE ON SCHEMA public TO sec_alice, sec_bob;
CREATE TABLE sec_who (label text, current_role_name text, session_is_super boolean);
GRANT INSERT ON sec_who TO sec_alice;
CREATE TABLE sec_secret (x int);
REVOKE ALL ON sec_secret FROM PUBLIC;

SET ROLE sec_alice;
CREATE FUNCTION sec_whoami(args jsonb) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sec_who VALUES (args->>'label', current_user,
        (SELECT rolsuper FROM pg_roles WHERE rolname = current_user));
    RETURN current_user;
END $$;
CREATE FUNCTION sec_read_secret() RETURNS int LANGUAGE sql AS $$ SELECT count(*)::int FROM sec_secret $$;
CREATE PROCEDURE sec_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('sec_whoami');
    CALL chrono_forge.durably_execute('sec_read_secret', retry_policy => chrono_forge.retry_policy(1));
END $$;
SELECT chrono_forge.start('sec_wf', 'a1', '{"label": "alice run"}') AS aid \gset
-- She owns the procedure, so she may configure its defaults.
SELECT chrono_forge.configure('sec_wf', chrono_forge.retry_policy(2));
-- The run is alice's, and she sees it.
SELECT workflow, key, owner FROM chrono_forge.workflows;
RESET ROLE;

-- bob sees nothing of alice's, and cannot act on her run.
SET ROLE sec_bob;
SELECT count(*) AS bob_sees FROM chrono_forge.workflows;
SELECT count(*) AS bob_sees_logs FROM chrono_forge.execution_logs;
SELECT chrono_forge.wake('sec_wf', 'a1');
SELECT chrono_forge.retry('sec_wf', 'a1');
SELECT chrono_forge.configure('sec_wf', chrono_forge.retry_policy(9));
SELECT retry_policy->'max_attempts' AS alice_default FROM chrono_forge.workflow_defaults;
-- Nor write the tables directly.
UPDATE chrono_forge.workflows SET state = 'idle';
INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason) VALUES (:aid, now(), 'forged');
SELECT chrono_forge.acquire_lock(:aid, 'bob');
CALL chrono_forge.worker_drain(1);
-- bob's run_pending runs only bob's runs: alice's stays pending.
CALL chrono_forge.run_pending();
RESET ROLE;
SELECT state FROM chrono_forge.workflows WHERE id = :aid;

-- A superuser's run_pending does not run alice's run either (runs execute
-- as their owner, and sessions only drive their own).
CALL chrono_forge.run_pending();
SELECT state FROM chrono_forge.workflows WHERE id = :aid;

-- alice drives it: the step ran as alice, not as a superuser; her
-- missing privilege is recorded on the run and stalls it.
SET ROLE sec_alice;
CALL chrono_forge.run_pending();
RESET ROLE;
SELECT label, current_role_name, session_is_super FROM sec_who;
SELECT state FROM chrono_forge.workflows WHERE id = :aid;
SELECT step_name, error_class, error_message FROM chrono_forge.error_logs WHERE workflow_id = :aid;

-- Children that alice's fan-out dispatched (spawn_batches) run as alice,
-- and only her sessions or the workers start them; bob sees none of them.
SET ROLE sec_alice;
CREATE PROCEDURE sec_child_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('sec_whoami', args => jsonb_build_object('label', 'alice child'));
END $$;
CREATE PROCEDURE sec_fan_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('kids', automerge => true);
    CALL chrono_forge.spawn_each('k', 'sec_child_wf', 'SELECT g AS item_key FROM generate_series(1, 2) g');
    CALL chrono_forge.seal_branch();
END $$;
SELECT chrono_forge.start('sec_fan_wf', 'f1') > 0 AS started;
CALL chrono_forge.run_pending(1);
SELECT owner, n - taken AS not_started FROM chrono_forge.spawn_batches;
RESET ROLE;
SET ROLE sec_bob;
SELECT count(*) AS bob_sees_batches FROM chrono_forge.spawn_batches;
CALL chrono_forge.run_pending();
DELETE FROM chrono_forge.spawn_batches;
RESET ROLE;
CALL chrono_forge.run_pending();
SELECT sum(n - taken) AS still_not_started FROM chrono_forge.spawn_batches;
SET ROLE sec_alice;
CALL chrono_forge.run_pending();
RESET ROLE;
SELECT label, current_role_name, session_is_super FROM sec_who WHERE label = 'alice child';
SELECT regexp_replace(key, '^\$[0-9]+\$', '') AS key, state, owner FROM chrono_forge.workflows WHERE key LIKE 'f1%' OR key LIKE '$%$f1$%' ORDER BY 1;

-- Workflow procedures that would run as someone else are refused.
CREATE PROCEDURE sec_definer_wf(args jsonb) LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN NULL; END $$;
SELECT chrono_forge.start('sec_definer_wf', 'x');
-- A procedure alice may not execute.
CREATE PROCEDURE sec_private_wf(args jsonb) LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
REVOKE EXECUTE ON PROCEDURE sec_private_wf(jsonb) FROM PUBLIC;
SET ROLE sec_alice;
SELECT chrono_forge.start('sec_private_wf', 'x');
RESET ROLE;

DELETE FROM chrono_forge.workflows WHERE workflow LIKE 'public.sec\_%';
DELETE FROM chrono_forge.workflow_defaults;
DROP OWNED BY sec_alice, sec_bob;
DROP ROLE sec_alice;
DROP ROLE sec_bob;
