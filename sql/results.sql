-- Results (0.10.0): set_result(), kept with the run's completion and
-- handed back by wait_for_run(); a parent reads its children's results
-- through merge_branches with results and child_results().
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE FUNCTION rs_square(args jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT to_jsonb((args->>'n')::int * (args->>'n')::int) $$;
CREATE PROCEDURE rs_child(args jsonb) LANGUAGE plpgsql AS $$
DECLARE sq jsonb;
BEGIN
    CALL chrono_forge.durably_execute('rs_square', sq);
    CALL chrono_forge.set_result(jsonb_build_object('n', (args->>'n')::int, 'square', sq));
END $$;
-- What the completion log keeps, and what wait_for_run() hands back.
CREATE VIEW rs_results AS
SELECT w.key, w.state, l.result AS kept,
       (SELECT r.result FROM chrono_forge.wait_for_run(w.workflow, w.key, '0') r) AS waited
  FROM chrono_forge.workflows w
  LEFT JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id AND l.step_name = '$workflow_completion$'
 WHERE w.parent_execution_log_id IS NULL AND w.workflow LIKE 'public.rs\_%';

-- A result set in the body, from a step's result; the last call wins;
-- NULL clears it; a run that sets none has none.
CREATE PROCEDURE rs_last_wins(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.set_result('"first"');
    CALL chrono_forge.set_result(args->'result');
END $$;
SELECT chrono_forge.start('rs_child', 'one', '{"n": 7}') > 0 AS started;
SELECT chrono_forge.start('rs_last_wins', 'last', '{"result": {"total": 2}}') > 0 AS started;
SELECT chrono_forge.start('rs_last_wins', 'cleared', '{"result": null}') > 0 AS started;
SELECT chrono_forge.start('rs_last_wins', 'none') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM rs_results ORDER BY key;
-- Before its end a run hands back no result.
SELECT chrono_forge.start('rs_child', 'not-yet', '{"n": 2}') > 0 AS started;
SELECT state, result FROM chrono_forge.wait_for_run('rs_child', 'not-yet', '0');

-- A run that sets its result before a wait: the pass that completes it
-- replays the body and sets it again.
CREATE PROCEDURE rs_across_wait(args jsonb) LANGUAGE plpgsql AS $$
DECLARE sq jsonb;
BEGIN
    CALL chrono_forge.durably_execute('rs_square', sq, args => '{"n": 12}');
    CALL chrono_forge.set_result(jsonb_build_object('before_wait', sq));
    CALL chrono_forge.wait('1 hour', 'later');
END $$;
SELECT chrono_forge.start('rs_across_wait', 'w') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM rs_results WHERE key = 'w';
SET chrono_forge.fake_now = '2030-01-01 01:00:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM rs_results WHERE key = 'w';

-- From a procedure the body CALLs, and a DO block the body runs (both
-- non-atomic, as the body): allowed.
CREATE PROCEDURE rs_helper(v jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.set_result(v);
END $$;
CREATE PROCEDURE rs_nested(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF args->>'how' = 'procedure' THEN
        CALL rs_helper('"from a procedure"');
    ELSE
        DO $d$ BEGIN CALL chrono_forge.set_result('"from a DO block"'); END $d$;
    END IF;
END $$;
SELECT chrono_forge.start('rs_nested', 'via-procedure', '{"how": "procedure"}') > 0 AS started;
SELECT chrono_forge.start('rs_nested', 'via-do', '{"how": "do"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, waited FROM rs_results WHERE key LIKE 'via-%' ORDER BY key;

-- Refused (CF013): outside a pass (top level, a DO block); in an
-- EXCEPTION block (atomic), where the run fails even though the body
-- catches the error; from a step (which does not run again on replay),
-- where the step fails and is retried by its policy, as with any
-- primitive there.
CALL chrono_forge.set_result('1');
DO $$ BEGIN CALL chrono_forge.set_result('1'); END $$;
CREATE FUNCTION rs_step_sets() RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.set_result('"from a step"');
    RETURN '1';
END $$;
CREATE PROCEDURE rs_from_step(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('rs_step_sets');
END $$;
CREATE PROCEDURE rs_in_exception(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        CALL chrono_forge.set_result('"caught"');
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
END $$;
-- Too large: over 16 KB as JSON fails the run (CF028); 16 KB is kept.
CREATE PROCEDURE rs_sized(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.set_result(to_jsonb(repeat('x', (args->>'len')::int)));
END $$;
SELECT chrono_forge.start('rs_from_step', 'step') > 0 AS started;
SELECT chrono_forge.start('rs_in_exception', 'exc') > 0 AS started;
SELECT chrono_forge.start('rs_sized', 'big', '{"len": 16383}') > 0 AS started;
SELECT chrono_forge.start('rs_sized', 'fits', '{"len": 16382}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT w.key, w.state, e.error_class, e.error_message
  FROM chrono_forge.workflows w LEFT JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.key IN ('step', 'exc', 'big', 'fits') ORDER BY w.key;
SELECT key, state, length(kept #>> '{}') AS kept_length, kept IS NOT DISTINCT FROM waited AS same
  FROM rs_results WHERE key = 'fits';
SELECT r.state, r.error_class, r.result FROM chrono_forge.wait_for_run('rs_sized', 'big', '0') r;

-- merge_branches with results: {branch: {child: result}}, a child named
-- by its spawn (and item key); kept on the merge log, so a replay hands
-- back the same results even if a child's log changed meanwhile.
CREATE PROCEDURE rs_fan_out(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.branch('squares');
    CALL chrono_forge.spawn_each('n', 'rs_child',
        'SELECT g AS item_key, jsonb_build_object(''n'', g) AS args FROM generate_series(1, 3) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.branch('solo');
    CALL chrono_forge.spawn('only', 'rs_child', '{"n": 10}');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(r, ARRAY['squares', 'solo'], '1 second', '1 minute');
    CALL chrono_forge.set_result(r);
    CALL chrono_forge.wait('1 hour', 'after');
END $$;
SELECT chrono_forge.start('rs_fan_out', 'fan') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT step_name, state, jsonb_pretty(result) FROM chrono_forge.execution_logs
 WHERE workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'fan') AND step_name LIKE 'merge$%';
UPDATE chrono_forge.execution_logs SET result = '"changed"'
 WHERE step_name = '$workflow_completion$'
   AND workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key LIKE '%$fan$solo$only');
SET chrono_forge.fake_now = '2030-01-01 02:00:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, waited -> 'solo' AS solo, waited -> 'squares' AS squares FROM rs_results WHERE key = 'fan';

-- The other merge_branches, by position and by name, is not ambiguous
-- with the overload (the results come first): outside a pass, each
-- reaches the procedure and says so.
CALL chrono_forge.merge_branches(ARRAY['x'], '1 second', '1 minute');
CALL chrono_forge.merge_branches(ARRAY['x'], '1 second');
CALL chrono_forge.merge_branches(names => ARRAY['x'], on_child_failure => 'fail');
DO $$ DECLARE r jsonb; BEGIN CALL chrono_forge.merge_branches(r, ARRAY['x']); END $$;
DO $$ DECLARE r jsonb; BEGIN CALL chrono_forge.merge_branches(names => ARRAY['x'], results => r); END $$;

-- Under 'ignore' a stalled child is left out of the results; an automerged
-- branch's results are read when asked for (nothing was kept at its merge).
CREATE FUNCTION rs_boom() RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'boom';
END $$;
CREATE PROCEDURE rs_maybe_fail(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF (args->>'fail')::boolean THEN
        CALL chrono_forge.durably_execute('rs_boom', retry_policy => chrono_forge.retry_policy(1));
    END IF;
    CALL chrono_forge.set_result(args->'n');
END $$;
CREATE PROCEDURE rs_ignore(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb; a jsonb;
BEGIN
    CALL chrono_forge.branch('g');
    CALL chrono_forge.spawn('ok', 'rs_maybe_fail', '{"n": 1, "fail": false}');
    CALL chrono_forge.spawn('bad', 'rs_maybe_fail', '{"n": 2, "fail": true}');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(r, ARRAY['g'], '1 second', '1 minute', on_child_failure => 'ignore');
    CALL chrono_forge.branch('auto', automerge => true);
    CALL chrono_forge.spawn('x', 'rs_maybe_fail', '{"n": 3, "fail": false}');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(a, ARRAY['auto']);
    CALL chrono_forge.set_result(jsonb_build_object('ignore', r, 'auto', a));
END $$;
SELECT chrono_forge.start('rs_ignore', 'ign') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, waited FROM rs_results WHERE key = 'ign';
SELECT l.step_name, l.metadata->'ignored_children' AS ignored FROM chrono_forge.execution_logs l
  JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.key = 'ign' AND l.step_name LIKE 'merge$%' ORDER BY l.id;

-- child_results(): pages by run id, from the body or a step of the
-- parent; the parent sums its children's results page by page.
CREATE FUNCTION rs_sum_children(args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE last bigint := 0; total bigint := 0; pages int := 0; r record; n int;
BEGIN
    LOOP
        n := 0;
        FOR r IN SELECT * FROM chrono_forge.child_results('many', last, 2) LOOP
            total := total + (r.result->>'square')::bigint;
            last := r.id;
            n := n + 1;
        END LOOP;
        EXIT WHEN n = 0;
        pages := pages + 1;
    END LOOP;
    RETURN jsonb_build_object('sum', total, 'pages', pages);
END $$;
CREATE PROCEDURE rs_paged(args jsonb) LANGUAGE plpgsql AS $$
DECLARE s jsonb; first jsonb; unknown text; bad_page text;
BEGIN
    CALL chrono_forge.branch('many');
    CALL chrono_forge.spawn_each('n', 'rs_child',
        'SELECT g AS item_key, jsonb_build_object(''n'', g) AS args FROM generate_series(1, 5) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['many'], '1 second', '1 minute');
    CALL chrono_forge.durably_execute('rs_sum_children', s);
    SELECT jsonb_agg(jsonb_build_array(c.child, c.result) ORDER BY c.id) INTO first
      FROM chrono_forge.child_results('many', page_size => 2) c;
    BEGIN
        PERFORM chrono_forge.child_results('nope');
    EXCEPTION WHEN OTHERS THEN
        unknown := SQLSTATE || ': ' || SQLERRM;
    END;
    BEGIN
        PERFORM chrono_forge.child_results('many', page_size => 0);
    EXCEPTION WHEN OTHERS THEN
        bad_page := SQLSTATE || ': ' || SQLERRM;
    END;
    CALL chrono_forge.set_result(jsonb_build_object('step', s, 'first_page', first,
                                                    'unknown', unknown, 'bad_page', bad_page));
END $$;
SELECT chrono_forge.start('rs_paged', 'paged') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, jsonb_pretty(waited) FROM rs_results WHERE key = 'paged';
-- Outside a pass there is no current run (CF013).
SELECT * FROM chrono_forge.child_results('many');
SELECT * FROM chrono_forge.pass_branch('many');

-- More children than a merge hands back: the run fails (CF028), naming
-- child_results().
CREATE PROCEDURE rs_too_many(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.branch('g');
    CALL chrono_forge.spawn_each('n', 'rs_last_wins',
        'SELECT g AS item_key, ''{"result": 1}''::jsonb AS args FROM generate_series(1, 1001) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(r, ARRAY['g'], '1 second', '1 minute');
END $$;
SELECT chrono_forge.start('rs_too_many', 'many') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT w.state, e.error_class, e.error_message
  FROM chrono_forge.workflows w JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.key = 'many';

-- await_child(): the parent waits for one child (polled every
-- check_interval) and receives its result; the step keeps it for replays.
CREATE TABLE rs_gate (open boolean);
INSERT INTO rs_gate VALUES (false);
CREATE FUNCTION rs_gate_open() RETURNS boolean LANGUAGE sql AS $$ SELECT open FROM rs_gate $$;
CREATE PROCEDURE rs_gated(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.continue_if('rs_gate_open');
    CALL chrono_forge.set_result('"through the gate"');
END $$;
CREATE PROCEDURE rs_await(args jsonb) LANGUAGE plpgsql AS $$
DECLARE slow jsonb; two jsonb;
BEGIN
    CALL chrono_forge.branch('b');
    CALL chrono_forge.spawn('slow', 'rs_gated');
    CALL chrono_forge.spawn_each('n', 'rs_child',
        'SELECT g AS item_key, jsonb_build_object(''n'', g) AS args FROM generate_series(1, 3) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.await_child('b', 'n_2', two);
    CALL chrono_forge.await_child('b', args->>'child', slow, timeout => (args->>'timeout')::interval);
    CALL chrono_forge.merge_branches(ARRAY['b']);
    CALL chrono_forge.set_result(jsonb_build_object('two', two, 'slow', slow));
END $$;
SET chrono_forge.fake_now = '2030-01-01 06:00:00+00';
SELECT chrono_forge.start('rs_await', 'aw', '{"child": "slow"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT l.step_name, l.state, l.result FROM chrono_forge.execution_logs l
  JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.key = 'aw' AND l.step_name LIKE 'await_child$%' ORDER BY l.id;
SELECT k.reason, k.due_at - chrono_forge.now() AS polls_in FROM chrono_forge.wakeups k
  JOIN chrono_forge.workflows w ON w.id = k.workflow_id WHERE w.key = 'aw';
UPDATE rs_gate SET open = true;
SELECT chrono_forge.wake(workflow, key) FROM chrono_forge.workflows WHERE key LIKE '%$aw$b$slow';
CALL chrono_forge.run_pending();
SELECT key, state FROM rs_results WHERE key = 'aw';
SET chrono_forge.fake_now = '2030-01-01 06:00:01+00';
CALL chrono_forge.run_pending();
SELECT key, state, waited FROM rs_results WHERE key = 'aw';
-- A child that stalls fails the parent (CF025); an unknown child of a
-- sealed branch fails it (CF012); past its timeout the parent stalls
-- (CF010).
CREATE PROCEDURE rs_stalls(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('rs_boom', retry_policy => chrono_forge.retry_policy(1));
END $$;
CREATE PROCEDURE rs_await_bad(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.branch('b');
    CALL chrono_forge.spawn('doomed', 'rs_stalls');
    CALL chrono_forge.spawn('gated', 'rs_gated');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.await_child(args->>'branch', args->>'child', r, timeout => '1 minute');
END $$;
UPDATE rs_gate SET open = false;
SELECT chrono_forge.start('rs_await_bad', 'doomed', '{"branch": "b", "child": "doomed"}') > 0 AS started;
SELECT chrono_forge.start('rs_await_bad', 'nobody', '{"branch": "b", "child": "nobody"}') > 0 AS started;
SELECT chrono_forge.start('rs_await_bad', 'nobranch', '{"branch": "nope", "child": "gated"}') > 0 AS started;
SELECT chrono_forge.start('rs_await_bad', 'late', '{"branch": "b", "child": "gated"}') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 06:01:01+00';
CALL chrono_forge.run_pending();
SELECT w.key, w.state, e.error_class, e.error_message
  FROM chrono_forge.workflows w
  JOIN LATERAL (SELECT x.error_class, x.error_message FROM chrono_forge.error_logs x
                 WHERE x.workflow_id = w.id ORDER BY x.id DESC LIMIT 1) e ON true
 WHERE w.workflow = 'public.rs_await_bad' ORDER BY w.key;
CALL chrono_forge.await_child('b', 'x', NULL);
-- await_child and merge_branches with results from a DO block the body
-- runs (allowed), and from an EXCEPTION block or a function (the run fails
-- with CF013, even when the body catches the error).
CREATE FUNCTION rs_awaits_in_function() RETURNS void LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.await_child('b', 'gated', r);
END $$;
CREATE PROCEDURE rs_await_contexts(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.branch('b');
    CALL chrono_forge.spawn('gated', 'rs_gated');
    CALL chrono_forge.seal_branch();
    CASE args->>'how'
    WHEN 'do' THEN
        DO $d$ DECLARE r jsonb; BEGIN
            CALL chrono_forge.await_child('b', 'gated', r);
            CALL chrono_forge.merge_branches(r, ARRAY['b']);
            PERFORM chrono_forge.context_set('merged', r);
        END $d$;
    WHEN 'exception' THEN
        BEGIN
            CALL chrono_forge.await_child('b', 'gated', r);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    WHEN 'merge_exception' THEN
        BEGIN
            CALL chrono_forge.merge_branches(r, ARRAY['b']);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    WHEN 'function' THEN
        PERFORM rs_awaits_in_function();
    END CASE;
    CALL chrono_forge.merge_branches(ARRAY['b']);
END $$;
UPDATE rs_gate SET open = true;
SELECT count(chrono_forge.start('rs_await_contexts', h, jsonb_build_object('how', h)))
  FROM unnest(ARRAY['do', 'exception', 'merge_exception', 'function']) h;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 06:02:01+00';
CALL chrono_forge.run_pending();
SELECT w.key, w.state, w.context, e.error_class, e.error_message
  FROM chrono_forge.workflows w
  LEFT JOIN LATERAL (SELECT x.error_class, x.error_message FROM chrono_forge.error_logs x
                      WHERE x.workflow_id = w.id ORDER BY x.id DESC LIMIT 1) e ON true
 WHERE w.workflow = 'public.rs_await_contexts' ORDER BY w.key;
-- Every spelling of the workflow names the run whose result a client waits for.
SELECT count(DISTINCT r.result) AS results, min(r.result::text) AS result
  FROM unnest(ARRAY['rs_child', 'public.rs_child', '"public"."rs_child"', 'PUBLIC.RS_CHILD']) s,
       chrono_forge.wait_for_run(s, 'one', '0') r;

-- Another role reaches neither the runs' results nor their branches: its
-- own run has no branch of that name (CF008), wait_for_run() does not
-- find the run (CF014), the completion logs are not visible.
CREATE ROLE rs_mallory;
GRANT USAGE, CREATE ON SCHEMA public TO rs_mallory;
SET ROLE rs_mallory;
CREATE PROCEDURE rs_snoop(args jsonb) LANGUAGE plpgsql AS $$
DECLARE err text;
BEGIN
    BEGIN
        PERFORM chrono_forge.child_results('squares');
    EXCEPTION WHEN OTHERS THEN
        err := SQLSTATE || ': ' || SQLERRM;
    END;
    CALL chrono_forge.set_result(to_jsonb(err));
END $$;
SELECT chrono_forge.start('rs_snoop', 'fan') > 0 AS started;
SELECT * FROM chrono_forge.wait_for_run('rs_fan_out', 'fan', '0');
SELECT count(*) FROM chrono_forge.execution_logs WHERE step_name = '$workflow_completion$';
CALL chrono_forge.run_pending();
SELECT state, result FROM chrono_forge.wait_for_run('rs_snoop', 'fan', '0');
DROP PROCEDURE rs_snoop(jsonb);
RESET ROLE;

DELETE FROM chrono_forge.workflows;
DROP VIEW rs_results;
REVOKE ALL ON SCHEMA public FROM rs_mallory;
DROP ROLE rs_mallory;
