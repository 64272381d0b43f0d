-- Compensation (0.12.0), driven by run_pending: undo steps registered by
-- durably_execute(..., compensate => ...), run newest first when a run
-- calls compensate(), fails, is cancelled or passes its deadline; each a
-- durable step (retried, stalled, resumed by retry(), never twice); the
-- run ends compensated.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE cp_ledger (id serial, key text, what text, detail jsonb);
CREATE FUNCTION cp_reserve(args jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO cp_ledger (key, what) VALUES (args->>'key', 'reserve')
    RETURNING jsonb_build_object('reservation', id) $$;
CREATE FUNCTION cp_charge(args jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO cp_ledger (key, what) VALUES (args->>'key', 'charge')
    RETURNING jsonb_build_object('charge', id) $$;
-- Undo steps: they get {"step", "args", "result"}.
CREATE FUNCTION cp_release(a jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO cp_ledger (key, what, detail) VALUES (a->'args'->>'key', 'release', a) $$;
CREATE FUNCTION cp_refund(a jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO cp_ledger (key, what, detail) VALUES (a->'args'->>'key', 'refund', a) $$;
-- Fails while cp_flaky_ok is empty.
CREATE TABLE cp_flaky_ok (ok boolean);
CREATE FUNCTION cp_flaky_refund(a jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cp_ledger (key, what) VALUES (a->'args'->>'key', 'refund attempt');
    IF NOT EXISTS (SELECT 1 FROM cp_flaky_ok) THEN
        RAISE EXCEPTION 'card network down';
    END IF;
END $$;
CREATE FUNCTION cp_ship(args jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('shipped', args->>'address' IS NOT NULL) $$;

-- The saga: reserve, charge, ship; an unshippable order compensates.
CREATE PROCEDURE cp_order(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.durably_execute('cp_reserve', compensate => 'cp_release');
    CALL chrono_forge.durably_execute('cp_charge', compensate => 'cp_refund');
    CALL chrono_forge.durably_execute('cp_ship', r);
    IF NOT (r->>'shipped')::boolean THEN
        CALL chrono_forge.compensate('no address');
    END IF;
    CALL chrono_forge.wait('1 hour', 'settle');
END $$;
CREATE VIEW cp_runs AS
SELECT w.key, w.state,
       (SELECT l.metadata->>'reason' FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = w.id AND l.step_name = '$workflow_compensating$') AS why,
       (SELECT l.metadata FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = w.id AND l.step_name = '$workflow_compensated$') AS done,
       (SELECT string_agg(l.step_name, ' > ' ORDER BY l.id) FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = w.id AND l.step_name LIKE 'compensate$%') AS undone,
       (SELECT count(*) FROM chrono_forge.wakeups k WHERE k.workflow_id = w.id) AS wakeups
  FROM chrono_forge.workflows w;

-- compensate(): the undo steps run newest first, once; the run ends
-- compensated, and its ledger balances.
SELECT chrono_forge.start('cp_order', 'o1', '{"key": "o1"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, why, done, undone, wakeups FROM cp_runs WHERE key = 'o1';
SELECT what, detail->>'step' AS step, detail->'result' ? 'charge' AS has_charge,
       detail->'args'->>'key' AS args_key
  FROM cp_ledger WHERE key = 'o1' ORDER BY id;
-- Replay changes nothing: the run has ended, and a wake-up finds nothing.
SELECT chrono_forge.wake('cp_order', 'o1');
CALL chrono_forge.run_pending();
SELECT count(*) AS ledger_rows FROM cp_ledger WHERE key = 'o1';
-- An ended, compensated run: cancel() and retry() leave it alone.
SELECT chrono_forge.cancel('cp_order', 'o1');
SELECT chrono_forge.retry('cp_order', 'o1');
SELECT state, ended_at IS NOT NULL AS ended, state_code FROM chrono_forge.workflows WHERE key = 'o1';
-- A shippable order completes, and nothing is undone.
SELECT chrono_forge.start('cp_order', 'o2', '{"key": "o2", "address": "here"}') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 02:00:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, why, undone FROM cp_runs WHERE key = 'o2';
SELECT what FROM cp_ledger WHERE key = 'o2' ORDER BY id;

-- cancel(): a run with undo steps compensates instead of ending at once
-- (cancel() counts it); the reason and who asked are in the marker.
SELECT chrono_forge.start('cp_order', 'o3', '{"key": "o3", "address": "here"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state FROM cp_runs WHERE key = 'o3';
SELECT chrono_forge.cancel('cp_order', 'o3', 'customer changed their mind');
SELECT key, state, why, wakeups FROM cp_runs WHERE key = 'o3';
SELECT l.metadata->>'detail' AS detail, l.metadata ? 'requested_by' AS who
  FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'o3' AND l.step_name = '$workflow_compensating$';
CALL chrono_forge.run_pending();
SELECT key, state, undone FROM cp_runs WHERE key = 'o3';
SELECT what FROM cp_ledger WHERE key = 'o3' ORDER BY id;
-- A run with nothing to undo is cancelled as before.
CREATE PROCEDURE cp_plain(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cp_reserve');
    CALL chrono_forge.wait('1 hour', 'nap');
END $$;
SELECT chrono_forge.start('cp_plain', 'p1', '{"key": "p1"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT chrono_forge.cancel('cp_plain', 'p1');
SELECT key, state, why FROM cp_runs WHERE key = 'p1';

-- Failure: an error escaping the body, its retries exhausted, makes a
-- run with undo steps compensate (the failure stays in its history).
CREATE PROCEDURE cp_breaks(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cp_charge', compensate => 'cp_refund');
    RAISE EXCEPTION 'label printer on fire';
END $$;
SELECT chrono_forge.configure('cp_breaks', chrono_forge.retry_policy(max_attempts => 1));
SELECT chrono_forge.start('cp_breaks', 'f1', '{"key": "f1"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, why, undone FROM cp_runs WHERE key = 'f1';
SELECT what FROM cp_ledger WHERE key = 'f1' ORDER BY id;
SELECT e.error_message FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id
 WHERE w.key = 'f1';

-- An undo step that fails is retried per its policy; exhausted, the run
-- stalls (CF009) in the middle of its compensation.  retry() resumes it
-- at that undo step: the undo steps that completed do not run again.
CREATE PROCEDURE cp_flaky(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cp_reserve', compensate => 'cp_release');
    CALL chrono_forge.durably_execute('cp_charge', compensate => 'cp_flaky_refund',
        compensate_policy => chrono_forge.retry_policy(max_attempts => 2, base => '0 seconds', cap => '0 seconds'));
    CALL chrono_forge.compensate();
END $$;
SELECT chrono_forge.start('cp_flaky', 'k1', '{"key": "k1"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, undone FROM cp_runs WHERE key = 'k1';
SELECT what FROM cp_ledger WHERE key = 'k1' ORDER BY id;
SELECT e.error_class, e.error_message FROM chrono_forge.error_logs e
  JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key = 'k1' ORDER BY e.id;
INSERT INTO cp_flaky_ok VALUES (true);
SELECT chrono_forge.retry('cp_flaky', 'k1');
CALL chrono_forge.run_pending();
SELECT key, state, undone, done FROM cp_runs WHERE key = 'k1';
SELECT what FROM cp_ledger WHERE key = 'k1' ORDER BY id;

-- cancel() of a run stalled in its compensation abandons it: cancelled,
-- the remaining undo steps never run.
DELETE FROM cp_flaky_ok;
SELECT chrono_forge.start('cp_flaky', 'k2', '{"key": "k2"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state FROM cp_runs WHERE key = 'k2';
SELECT chrono_forge.cancel('cp_flaky', 'k2');
CALL chrono_forge.run_pending();
SELECT key, state, undone FROM cp_runs WHERE key = 'k2';
SELECT what FROM cp_ledger WHERE key = 'k2' ORDER BY id;

-- A run stalled going forward does not compensate by itself; cancel()
-- compensates it.
CREATE FUNCTION cp_ship_fails() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'carrier refused';
END $$;
CREATE PROCEDURE cp_stuck(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cp_charge', compensate => 'cp_refund');
    CALL chrono_forge.durably_execute('cp_ship_fails', retry_policy => chrono_forge.retry_policy(max_attempts => 1));
END $$;
SELECT chrono_forge.start('cp_stuck', 's1', '{"key": "s1"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, why FROM cp_runs WHERE key = 's1';
SELECT chrono_forge.cancel('cp_stuck', 's1', 'give up on shipping');
CALL chrono_forge.run_pending();
SELECT key, state, why, undone FROM cp_runs WHERE key = 's1';
SELECT what FROM cp_ledger WHERE key = 's1' ORDER BY id;

-- An error outside an undo step (its function dropped since it was
-- registered) goes through the workflow-level retries: the run is failed
-- with its compensation unfinished; retry() resumes it, and the body
-- never runs again.
CREATE FUNCTION cp_gone(a jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO cp_ledger (key, what) VALUES (a->'args'->>'key', 'gone undo') $$;
CREATE PROCEDURE cp_dropper(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cp_reserve', compensate => 'cp_gone');
    INSERT INTO cp_ledger (key, what) VALUES (args->>'key', 'body ran');
    CALL chrono_forge.wait('1 hour', 'nap');
END $$;
SELECT chrono_forge.configure('cp_dropper', chrono_forge.retry_policy(max_attempts => 1));
SELECT chrono_forge.start('cp_dropper', 'g1', '{"key": "g1"}') > 0 AS started;
CALL chrono_forge.run_pending();
DROP FUNCTION cp_gone(jsonb);
SELECT chrono_forge.cancel('cp_dropper', 'g1');
CALL chrono_forge.run_pending();
SELECT key, state, why, undone FROM cp_runs WHERE key = 'g1';
SELECT e.error_class, e.error_message FROM chrono_forge.error_logs e
  JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key = 'g1' ORDER BY e.id;
CREATE FUNCTION cp_gone(a jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO cp_ledger (key, what) VALUES (a->'args'->>'key', 'gone undo') $$;
SELECT chrono_forge.retry('cp_dropper', 'g1');
CALL chrono_forge.run_pending();
SELECT key, state, why, undone FROM cp_runs WHERE key = 'g1';
SELECT what FROM cp_ledger WHERE key = 'g1' ORDER BY id;

-- A deadline passing: the run compensates (CF029 and the deadline's
-- marker kept); a compensating run has no deadline, and set_deadline()
-- refuses to give it one.
SELECT chrono_forge.start('cp_order', 'd1', '{"key": "d1", "address": "here"}',
                          '{"timeout": "30 minutes"}') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 03:00:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, why, undone FROM cp_runs WHERE key = 'd1';
SELECT w.deadline, (SELECT string_agg(e.error_class, ',') FROM chrono_forge.error_logs e WHERE e.workflow_id = w.id) AS errors,
       EXISTS (SELECT 1 FROM chrono_forge.execution_logs l WHERE l.workflow_id = w.id
                AND l.step_name = '$workflow_deadline$') AS deadline_marker
  FROM chrono_forge.workflows w WHERE w.key = 'd1';
SELECT what FROM cp_ledger WHERE key = 'd1' ORDER BY id;
SELECT chrono_forge.set_deadline('cp_order', 'd1', '2031-01-01');

-- Undo steps run as the run's owner, with the owner's rights; another
-- role cannot cancel (and so compensate) the run.
CREATE ROLE cp_alice;
CREATE ROLE cp_mallory;
GRANT USAGE ON SCHEMA chrono_forge TO cp_alice, cp_mallory;
CREATE TABLE cp_alice_ledger (what text, who text);
GRANT INSERT, SELECT ON cp_alice_ledger TO cp_alice;
CREATE FUNCTION cp_alice_do() RETURNS void LANGUAGE sql
    AS $$ INSERT INTO cp_alice_ledger VALUES ('do', current_user) $$;
CREATE FUNCTION cp_alice_undo(a jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO cp_alice_ledger VALUES ('undo', current_user) $$;
CREATE PROCEDURE cp_alice_flow(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cp_alice_do', compensate => 'public.cp_alice_undo');
    CALL chrono_forge.wait('1 hour', 'nap');
END $$;
GRANT EXECUTE ON PROCEDURE cp_alice_flow(jsonb) TO cp_alice;
SET ROLE cp_alice;
SELECT chrono_forge.start('public.cp_alice_flow', 'a1') > 0 AS started;
CALL chrono_forge.run_pending();
RESET ROLE;
SET ROLE cp_mallory;
SELECT chrono_forge.cancel('cp_alice_flow', 'a1');
CALL chrono_forge.run_compensation('{}');
RESET ROLE;
SET ROLE cp_alice;
SELECT chrono_forge.cancel('cp_alice_flow', 'a1');
CALL chrono_forge.run_pending();
RESET ROLE;
SELECT what, who FROM cp_alice_ledger ORDER BY what;
SELECT key, state, undone FROM cp_runs WHERE key = 'a1';

-- Every way of calling compensate(): from a procedure the body calls it
-- compensates; from a function, EXECUTE or a block with an EXCEPTION
-- clause it is refused (CF013) and the run fails at once, with the step
-- before it (whose commit it was to make) rolled back: nothing to undo.
-- run_compensation() from a body fails the run too, which then
-- compensates (its step had committed).
CREATE PROCEDURE cp_helper() LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.compensate('from a helper');
END $$;
CREATE FUNCTION cp_fn() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.compensate();
END $$;
CREATE PROCEDURE cp_ctx(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cp_charge', compensate => 'cp_refund');
    IF args->>'how' = 'procedure' THEN
        CALL cp_helper();
    ELSIF args->>'how' = 'execute' THEN
        EXECUTE 'DO $d$ BEGIN CALL chrono_forge.compensate(''from a DO block''); END $d$';
    ELSIF args->>'how' = 'function' THEN
        PERFORM cp_fn();
    ELSIF args->>'how' = 'exception' THEN
        BEGIN
            CALL chrono_forge.compensate();
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'caught: %', SQLERRM;
        END;
    ELSIF args->>'how' = 'engine' THEN
        CALL chrono_forge.run_compensation(args);
    END IF;
END $$;
SELECT chrono_forge.start('cp_ctx', 'c-' || h, jsonb_build_object('key', 'c-' || h, 'how', h)) > 0 AS started
  FROM unnest(ARRAY['procedure', 'execute', 'function', 'exception', 'engine']) h;
CALL chrono_forge.run_pending();
SELECT w.key, w.state, r.why, r.undone,
       (SELECT e.error_class FROM chrono_forge.error_logs e WHERE e.workflow_id = w.id ORDER BY e.id LIMIT 1) AS error
  FROM chrono_forge.workflows w JOIN cp_runs r ON r.key = w.key
 WHERE w.key LIKE 'c-%' ORDER BY w.key;
SELECT count(*) AS charges FROM cp_ledger WHERE key LIKE 'c-%' AND what = 'charge';
-- Registering an undo step (durably_execute and run_task with compensate)
-- from a procedure the body calls works as from the body; from a block
-- with an EXCEPTION clause it is refused (CF013), nothing registered.
CREATE PROCEDURE cp_reg_helper(k text) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cp_charge', args => jsonb_build_object('key', k),
                                      compensate => 'cp_refund');
END $$;
CREATE PROCEDURE cp_reg(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF args->>'how' = 'procedure' THEN
        CALL cp_reg_helper(args->>'key');
        CALL chrono_forge.compensate();
    ELSE
        BEGIN
            CALL chrono_forge.durably_execute('cp_charge', args => jsonb_build_object('key', args->>'key'),
                                              compensate => 'cp_refund');
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'caught: %', SQLERRM;
        END;
    END IF;
END $$;
SELECT chrono_forge.start('cp_reg', 'r-' || h, jsonb_build_object('key', 'r-' || h, 'how', h)) > 0 AS started
  FROM unnest(ARRAY['procedure', 'exception']) h;
CALL chrono_forge.run_pending();
SELECT w.key, w.state, r.undone,
       (SELECT e.error_class FROM chrono_forge.error_logs e WHERE e.workflow_id = w.id ORDER BY e.id LIMIT 1) AS error
  FROM chrono_forge.workflows w JOIN cp_runs r ON r.key = w.key WHERE w.key LIKE 'r-%' ORDER BY w.key;
SELECT key, what FROM cp_ledger WHERE key LIKE 'r-%' ORDER BY id;
-- Outside a pass, compensate() is refused.
CALL chrono_forge.compensate();
-- cancel() from a DO block, and from a step of another run: the victim
-- compensates all the same.
SELECT chrono_forge.start('cp_order', 'v' || g, jsonb_build_object('key', 'v' || g, 'address', 'here')) > 0 AS started
  FROM generate_series(1, 2) g;
CALL chrono_forge.run_pending();
DO $$ BEGIN PERFORM chrono_forge.cancel('cp_order', 'v1', 'from a DO block'); END $$;
CREATE FUNCTION cp_cancel_other(args jsonb) RETURNS int LANGUAGE sql
    AS $$ SELECT chrono_forge.cancel('cp_order', args->>'victim', 'from a step') $$;
CREATE PROCEDURE cp_canceller(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cp_cancel_other');
END $$;
SELECT chrono_forge.start('cp_canceller', 'x1', '{"victim": "v2"}') > 0 AS started;
DO $$ BEGIN CALL chrono_forge.run_pending(); END $$;
SELECT key, state, why, undone FROM cp_runs WHERE key IN ('v1', 'v2', 'x1') ORDER BY key;
SELECT l.metadata->>'detail' AS detail FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key IN ('v1', 'v2') AND l.step_name = '$workflow_compensating$' ORDER BY w.key;

-- Bad input: compensate_policy without compensate, a bad policy or a
-- reason over 1 MB fails the run at once (CF012); a missing undo
-- function is found when the step runs (CF012, workflow-level retries),
-- before its effect.
CREATE PROCEDURE cp_bad(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF args->>'how' = 'policy_alone' THEN
        CALL chrono_forge.durably_execute('cp_charge', compensate_policy => chrono_forge.retry_policy());
    ELSIF args->>'how' = 'long_reason' THEN
        CALL chrono_forge.compensate(repeat('x', 1048577));
    ELSIF args->>'how' = 'bad_policy' THEN
        CALL chrono_forge.durably_execute('cp_charge', compensate => 'cp_refund',
                                          compensate_policy => '{"max_attempts": -1}');
    ELSE
        CALL chrono_forge.durably_execute('cp_charge', compensate => 'no_such_undo');
    END IF;
END $$;
SELECT chrono_forge.configure('cp_bad', chrono_forge.retry_policy(max_attempts => 1));
SELECT chrono_forge.start('cp_bad', 'b-' || h, jsonb_build_object('key', 'b-' || h, 'how', h)) > 0 AS started
  FROM unnest(ARRAY['policy_alone', 'bad_policy', 'missing', 'long_reason']) h;
CALL chrono_forge.run_pending();
SELECT w.key, w.state, (SELECT string_agg(e.error_class || ': ' || e.error_message, '; ') FROM chrono_forge.error_logs e
         WHERE e.workflow_id = w.id) AS errors
  FROM chrono_forge.workflows w WHERE w.key LIKE 'b-%' ORDER BY w.key;
SELECT count(*) AS charges_written FROM cp_ledger WHERE key LIKE 'b-%';

-- An external task registers an undo step too: the card is charged by a
-- worker outside the database; a failed shipment refunds it (the undo
-- gets the task's args and the worker's result).
CREATE PROCEDURE cp_task_saga(args jsonb) LANGUAGE plpgsql AS $$
DECLARE charge jsonb;
BEGIN
    CALL chrono_forge.durably_execute('cp_reserve', compensate => 'cp_release');
    CALL chrono_forge.run_task('charge_card', 'cp_cards', result => charge,
                               args => jsonb_build_object('key', args->>'key', 'amount', 42),
                               compensate => 'cp_refund');
    CALL chrono_forge.compensate('carrier refused');
END $$;
SELECT chrono_forge.start('cp_task_saga', 't1', '{"key": "t1"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT c.step, c.args FROM chrono_forge.claim_tasks(ARRAY['cp_cards'], 1, 'cp-worker') c;
SELECT chrono_forge.complete_task(t.id, t.claim_token, '{"charge": "ch_77"}')
  FROM chrono_forge.tasks t WHERE t.queue = 'cp_cards';
CALL chrono_forge.run_pending();
SELECT key, state, undone FROM cp_runs WHERE key = 't1';
SELECT what, detail->'args'->>'amount' AS amount, detail->'result'->>'charge' AS charge
  FROM cp_ledger WHERE key = 't1' ORDER BY id;

-- Children of spawn_each that compensate in their first pass (their run
-- row written by it); a merge that ignores failed children counts them
-- as ended, one that fails on them fails the parent.
CREATE PROCEDURE cp_kid(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cp_charge', args => jsonb_build_object('key', 'kid'),
                                      compensate => 'cp_refund');
    IF (args->>'n')::int % 2 = 0 THEN
        CALL chrono_forge.compensate('even');
    END IF;
END $$;
CREATE PROCEDURE cp_family(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn_each('k', 'cp_kid',
        'SELECT g AS item_key, jsonb_build_object(''n'', g) AS args FROM generate_series(1, 4) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['kids'], '1 second', '1 second',
                                     on_child_failure => args->>'policy');
END $$;
SELECT chrono_forge.start('cp_family', 'fam-' || p, jsonb_build_object('policy', p)) > 0 AS started
  FROM unnest(ARRAY['ignore', 'fail']) p;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 03:00:05+00';
CALL chrono_forge.run_pending();
SELECT w.key, w.state,
       (SELECT string_agg(c.state::text, ',' ORDER BY c.key) FROM chrono_forge.workflows c
         JOIN chrono_forge.execution_logs b ON b.id = c.parent_execution_log_id WHERE b.workflow_id = w.id) AS kids,
       (SELECT e.error_class FROM chrono_forge.error_logs e WHERE e.workflow_id = w.id ORDER BY e.id LIMIT 1) AS error
  FROM chrono_forge.workflows w WHERE w.key LIKE 'fam-%' ORDER BY w.key;
SELECT count(*) AS kid_refunds FROM cp_ledger WHERE key = 'kid' AND what = 'refund';

-- cancel(..., with_children => true): the parent and its children with
-- undo steps each compensate; wait_for_run() returns compensated runs.
CREATE PROCEDURE cp_kid_waits(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cp_charge', args => jsonb_build_object('key', 'kid2'),
                                      compensate => 'cp_refund');
    CALL chrono_forge.wait('1 hour', 'nap');
END $$;
CREATE PROCEDURE cp_family2(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cp_reserve', args => jsonb_build_object('key', 'fam2'),
                                      compensate => 'cp_release');
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn_each('k', 'cp_kid_waits', 'SELECT g AS item_key FROM generate_series(1, 3) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['kids']);
END $$;
SELECT chrono_forge.start('cp_family2', 'fam2') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT chrono_forge.cancel('cp_family2', 'fam2', 'all of it', with_children => true);
CALL chrono_forge.run_pending();
SELECT w.state, (SELECT string_agg(c.state::text, ',') FROM chrono_forge.workflows c
                  JOIN chrono_forge.execution_logs b ON b.id = c.parent_execution_log_id
                 WHERE b.workflow_id = w.id) AS kids
  FROM chrono_forge.workflows w WHERE w.key = 'fam2';
SELECT key, what FROM cp_ledger WHERE key IN ('fam2', 'kid2') AND what IN ('refund', 'release') ORDER BY key, what;
SELECT state, error_class FROM chrono_forge.wait_for_run('cp_family2', 'fam2', '1 second');

-- Views: the state filter knows compensated; retention deletes
-- compensated runs as failed ones.
SELECT key FROM chrono_forge.runs(state => 'compensated') ORDER BY key;
-- daily_outcomes() counts a compensated run as failed (it did not complete).
SELECT count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE state IN ('failed', 'compensated')) AS failed_or_compensated
  FROM chrono_forge.workflows WHERE workflow = 'public.cp_order';
SELECT day, completed, failed, cancelled FROM chrono_forge.daily_outcomes('1 day', 'cp_order');
-- As another role: its own runs only (cp_alice's compensated run; none
-- for cp_mallory).
SET ROLE cp_alice;
SELECT completed, failed FROM chrono_forge.daily_outcomes('1 day', 'public.cp_alice_flow');
RESET ROLE;
SET ROLE cp_mallory;
SELECT count(*) AS days FROM chrono_forge.daily_outcomes('1 day', 'public.cp_alice_flow');
RESET ROLE;
SELECT count(*) AS compensated FROM chrono_forge.workflows WHERE state = 'compensated';
SELECT (chrono_forge.cleanup(older_than => '0 seconds')->>'workflows')::int > 0 AS some_deleted;
SELECT count(*) AS compensated_left FROM chrono_forge.workflows WHERE state = 'compensated';
RESET chrono_forge.fake_now;

DELETE FROM chrono_forge.workflows;
DROP VIEW cp_runs;
DROP OWNED BY cp_alice, cp_mallory;
DROP ROLE cp_alice;
DROP ROLE cp_mallory;
-- tasks.sql numbers its tasks from 1.
ALTER TABLE chrono_forge.tasks ALTER COLUMN id RESTART;
