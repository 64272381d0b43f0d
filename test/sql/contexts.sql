-- Calling contexts (issue 15, items 1-2): run_pending() driven from every
-- context a user can call it from, with passes that complete, fail a step,
-- halt, raise in the body, spawn and repeat; primitives called where they
-- cannot commit fail their run with CF013, whatever the body's handlers do.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE cx_log (id serial, what text);
CREATE FUNCTION cx_note(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO cx_log (what) VALUES (chrono_forge.key() || ' ' || coalesce(args->>'what', 'note')) $$;
CREATE FUNCTION cx_boom() RETURNS void LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'ZZ001'; END $$;
CREATE FUNCTION cx_true() RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE FUNCTION cx_two() RETURNS boolean LANGUAGE sql
    AS $$ SELECT count(*) >= 2 FROM cx_log WHERE what = chrono_forge.key() || ' tick' $$;
CREATE FUNCTION cx_tick() RETURNS void LANGUAGE sql
    AS $$ INSERT INTO cx_log (what) VALUES (chrono_forge.key() || ' tick') $$;

-- The six kinds of pass, by args->>'kind'.
CREATE PROCEDURE cx_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cx_note', args => '{"what": "child"}');
END $$;
CREATE PROCEDURE cx_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CASE args->>'kind'
    WHEN 'complete' THEN
        CALL chrono_forge.durably_execute('cx_note');
    WHEN 'fail_step' THEN
        CALL chrono_forge.durably_execute('cx_boom', retry_policy => '{"max_attempts": 1}');
    WHEN 'halt' THEN
        CALL chrono_forge.wait('10 minutes', 'pause');
        CALL chrono_forge.durably_execute('cx_note', args => '{"what": "after wait"}');
    WHEN 'raise' THEN
        CALL chrono_forge.durably_execute('cx_note');
        RAISE EXCEPTION 'body raised' USING ERRCODE = 'ZZ002';
    WHEN 'spawn' THEN
        CALL chrono_forge.branch('grp', automerge => true);
        CALL chrono_forge.spawn('c', 'cx_child');
        CALL chrono_forge.seal_branch();
    WHEN 'repeat' THEN
        CALL chrono_forge.durably_repeat('cx_tick', '1 minute', 'cx_two');
    END CASE;
END $$;
SELECT chrono_forge.configure('cx_wf', '{"max_attempts": 1}');
CREATE PROCEDURE cx_start(ctx text) LANGUAGE plpgsql AS $$
DECLARE
    k text;
BEGIN
    FOREACH k IN ARRAY ARRAY['complete', 'fail_step', 'halt', 'raise', 'spawn', 'repeat'] LOOP
        PERFORM chrono_forge.start('cx_wf', ctx || ':' || k, jsonb_build_object('kind', k));
    END LOOP;
END $$;
-- Each run of a context: state, its error (if any), waiting or not.
CREATE VIEW cx_runs AS
SELECT split_part(w.key, ':', 1) AS ctx, split_part(w.key, ':', 2) AS kind, w.state,
       (SELECT string_agg(e.error_class, ',' ORDER BY e.id) FROM chrono_forge.error_logs e
         WHERE e.workflow_id = w.id) AS errors,
       EXISTS (SELECT 1 FROM chrono_forge.wakeups k WHERE k.workflow_id = w.id) AS due_later,
       (SELECT count(*) FROM chrono_forge.workflows c WHERE c.key LIKE '$%$' || w.key || '$%'
           AND c.state = 'completed') AS children_done
  FROM chrono_forge.workflows w WHERE w.workflow = 'public.cx_wf' ORDER BY w.id;

-- 1. Top level.
CALL cx_start('top');
CALL chrono_forge.run_pending();
SELECT * FROM cx_runs WHERE ctx = 'top';

-- 2. A DO block (it crashed the server before 0.6.0).
CALL cx_start('do');
DO $$ BEGIN CALL chrono_forge.run_pending(); END $$;
SELECT * FROM cx_runs WHERE ctx = 'do';

-- 3. A procedure, and 4. a procedure called by a procedure.
CREATE PROCEDURE cx_drive() LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.run_pending();
END $$;
CREATE PROCEDURE cx_drive_outer() LANGUAGE plpgsql AS $$
BEGIN
    CALL cx_drive();
    INSERT INTO cx_log (what) VALUES ('outer went on');
END $$;
CALL cx_start('proc');
CALL cx_drive();
SELECT * FROM cx_runs WHERE ctx = 'proc';
CALL cx_start('nested');
CALL cx_drive_outer();
SELECT * FROM cx_runs WHERE ctx = 'nested';
SELECT count(*) AS outer_went_on FROM cx_log WHERE what = 'outer went on';

-- 5. A cursor loop: the caller's cursor survives the failed passes (each
-- iteration starts one run that fails its step).
DO $$
DECLARE
    r record;
    n int := 0;
BEGIN
    FOR r IN SELECT g FROM generate_series(1, 3) g ORDER BY g LOOP
        PERFORM chrono_forge.start('cx_wf', 'loop:fail_step' || r.g, '{"kind": "fail_step"}');
        CALL chrono_forge.run_pending();
        n := n + 1;
    END LOOP;
    RAISE NOTICE 'cursor loop ran % iterations', n;
END $$;
SELECT kind, state, errors FROM cx_runs WHERE ctx = 'loop';
-- A cursor loop over a query that writes cannot commit: refused before
-- any pass, as a COMMIT there would be (2D000).
CALL cx_start('wloop');
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN UPDATE cx_log SET what = what WHERE id = (SELECT min(id) FROM cx_log) RETURNING id LOOP
        CALL chrono_forge.run_pending();
    END LOOP;
END $$;
SELECT count(*) FILTER (WHERE state = 'idle') AS still_idle FROM cx_runs WHERE ctx = 'wloop';

-- 6. A test script's loop: fake_now moves on, run_pending() each time, in
-- one DO block; the waits and the repetition end.
DO $$
BEGIN
    FOR i IN 1 .. 4 LOOP
        PERFORM set_config('chrono_forge.fake_now', (timestamptz '2030-01-01 00:00:00+00'
                           + i * interval '10 minutes')::text, false);
        CALL chrono_forge.run_pending();
    END LOOP;
END $$;
SELECT ctx, kind, state FROM cx_runs WHERE kind IN ('halt', 'repeat') ORDER BY ctx, kind;
SELECT ctx, count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE state = 'stalled') AS stalled,
       count(*) FILTER (WHERE state = 'failed') AS failed
  FROM cx_runs WHERE ctx IN ('top', 'do', 'proc', 'nested', 'wloop') GROUP BY ctx ORDER BY ctx;
-- Nothing left pinned or open in this session.
SELECT count(*) AS cursors FROM pg_cursors;
SET chrono_forge.fake_now = '2030-01-01 01:00:00+00';

-- Contexts that cannot commit: refused with CF013 before any pass.
CALL cx_start('atomic');
CREATE FUNCTION cx_drive_fn() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.run_pending();
END $$;
SELECT cx_drive_fn();
CREATE TABLE cx_trigger_table (x int);
CREATE FUNCTION cx_drive_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.run_pending();
    RETURN NEW;
END $$;
CREATE TRIGGER cx_drive AFTER INSERT ON cx_trigger_table FOR EACH ROW EXECUTE FUNCTION cx_drive_trigger();
INSERT INTO cx_trigger_table VALUES (1);
DO $$
BEGIN
    CALL chrono_forge.run_pending();
EXCEPTION WHEN others THEN
    RAISE NOTICE 'caught %: %', SQLSTATE, SQLERRM;
END $$;
CREATE PROCEDURE cx_drive_set() LANGUAGE plpgsql SET work_mem = '4MB' AS $$
BEGIN
    CALL chrono_forge.run_pending();
END $$;
CALL cx_drive_set();
BEGIN;
CALL cx_drive();
ROLLBACK;
SELECT count(*) FILTER (WHERE state = 'idle') AS still_idle FROM cx_runs WHERE ctx = 'atomic';
CALL chrono_forge.run_pending();
SELECT count(*) FILTER (WHERE state = 'idle') AS still_idle FROM cx_runs WHERE ctx = 'atomic';

-- Primitives where they cannot commit, by args->>'p': each run fails with
-- CF013 naming the primitive, even when the body catches the error and
-- goes on; nothing after the refusal runs ('after' never does).
CREATE PROCEDURE cx_prim(p text) LANGUAGE plpgsql AS $$
BEGIN
    CASE p
    WHEN 'durably_execute' THEN CALL chrono_forge.durably_execute('cx_note');
    WHEN 'wait' THEN CALL chrono_forge.wait('1 minute', 'w');
    WHEN 'wait_until' THEN CALL chrono_forge.wait_until('cx_true');
    WHEN 'continue_if' THEN CALL chrono_forge.continue_if('cx_true');
    WHEN 'durably_repeat' THEN CALL chrono_forge.durably_repeat('cx_tick', '1 minute', 'cx_true');
    WHEN 'branch' THEN CALL chrono_forge.branch('b');
    WHEN 'spawn' THEN CALL chrono_forge.spawn('c', 'cx_child');
    WHEN 'spawn_each' THEN CALL chrono_forge.spawn_each('c', 'cx_child', 'SELECT 1 AS item_key');
    WHEN 'seal_branch' THEN CALL chrono_forge.seal_branch();
    WHEN 'merge_branches' THEN CALL chrono_forge.merge_branches(ARRAY['b']);
    WHEN 'await_event' THEN CALL chrono_forge.await_event('e');
    WHEN 'run_pending' THEN CALL chrono_forge.run_pending();
    END CASE;
END $$;
CREATE FUNCTION cx_prim_fn(args jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    CALL cx_prim(args->>'p');
END $$;
CREATE FUNCTION cx_prim_swallowed_fn(args jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    CALL cx_prim(args->>'p');
EXCEPTION WHEN others THEN
    NULL;
END $$;
CREATE FUNCTION cx_prim_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    CALL cx_prim(TG_ARGV[0]);
    RETURN NEW;
END $$;
CREATE TABLE cx_prim_table (p text);
CREATE TRIGGER cx_prim_wait BEFORE INSERT ON cx_prim_table FOR EACH ROW
    WHEN (NEW.p = 'wait') EXECUTE FUNCTION cx_prim_trigger('wait');
CREATE PROCEDURE cx_ctx_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CASE args->>'ctx'
    WHEN 'exception' THEN           -- the handler swallows the refusal
        BEGIN
            CALL cx_prim(args->>'p');
        EXCEPTION WHEN others THEN
            NULL;
        END;
    WHEN 'function' THEN            -- the refusal escapes
        PERFORM cx_prim_fn(args);
    WHEN 'function_swallowed' THEN
        PERFORM cx_prim_swallowed_fn(args);
    WHEN 'step' THEN                -- the step's own retries catch it
        CALL chrono_forge.durably_execute('cx_prim_swallowed_fn', name => 'sw', args => args);
        CALL chrono_forge.durably_execute('cx_prim_fn', args => args);
    WHEN 'trigger' THEN
        INSERT INTO cx_prim_table VALUES (args->>'p');
    WHEN 'nested' THEN              -- allowed: a procedure the body CALLs
        CALL cx_prim(args->>'p');
    WHEN 'do' THEN                  -- allowed: a DO block the body runs
        DO $d$ BEGIN CALL cx_prim('durably_execute'); END $d$;
    WHEN 'execute' THEN             -- a CALL through EXECUTE is atomic
        EXECUTE format('CALL cx_prim(%L)', args->>'p');
    END CASE;
    CALL chrono_forge.durably_execute('cx_note', name => 'after', args => '{"what": "after"}');
END $$;
SELECT count(*) FROM (
    SELECT chrono_forge.start('cx_ctx_wf', c || ':' || p, jsonb_build_object('ctx', c, 'p', p))
      FROM unnest(ARRAY['exception', 'function', 'function_swallowed', 'step']) c,
           unnest(ARRAY['durably_execute', 'wait', 'wait_until', 'continue_if', 'durably_repeat',
                        'branch', 'spawn', 'spawn_each', 'seal_branch', 'merge_branches',
                        'await_event', 'run_pending']) p) s;
SELECT chrono_forge.start('cx_ctx_wf', 'trigger:wait', '{"ctx": "trigger", "p": "wait"}') > 0 AS started;
SELECT chrono_forge.start('cx_ctx_wf', 'nested:durably_execute', '{"ctx": "nested", "p": "durably_execute"}') > 0 AS started;
SELECT chrono_forge.start('cx_ctx_wf', 'nested:run_pending', '{"ctx": "nested", "p": "run_pending"}') > 0 AS started;
SELECT chrono_forge.start('cx_ctx_wf', 'do:durably_execute', '{"ctx": "do", "p": "durably_execute"}') > 0 AS started;
SELECT chrono_forge.start('cx_ctx_wf', 'execute:durably_execute', '{"ctx": "execute", "p": "durably_execute"}') > 0 AS started;
DO $$ BEGIN CALL chrono_forge.run_pending(); END $$;
-- One line per context: every run failed with CF013 naming its primitive,
-- once, and never ran its 'after' step.
SELECT split_part(w.key, ':', 1) AS ctx, w.state, e.error_class, count(*) AS runs,
       count(*) FILTER (WHERE e.error_message LIKE '%' || split_part(w.key, ':', 2) || '%') AS named,
       sum((SELECT count(*) FROM chrono_forge.execution_logs l WHERE l.workflow_id = w.id
             AND l.step_name = 'durably_execute$after')) AS after_ran
  FROM chrono_forge.workflows w
  LEFT JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.workflow = 'public.cx_ctx_wf'
 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SELECT w.key, e.error_message, e.error_detail FROM chrono_forge.workflows w
  JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.key IN ('exception:wait', 'function:wait', 'step:durably_execute', 'nested:run_pending')
 ORDER BY w.key;
SELECT count(*) AS cx_prim_rows FROM cx_prim_table;
SELECT count(*) AS cursors FROM pg_cursors;

-- A cursor loop in the body around a primitive (its cursor is held by the
-- step's commit), with a step that fails in the second iteration: the
-- run stalls, and nothing of the loop is left open.
CREATE FUNCTION cx_maybe_boom(args jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (args->>'g')::int = 2 THEN
        RAISE EXCEPTION 'boom at %', args->>'g' USING ERRCODE = 'ZZ003';
    END IF;
END $$;
CREATE PROCEDURE cx_body_loop_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT g FROM generate_series(1, 3) g ORDER BY g LOOP
        CALL chrono_forge.durably_execute('cx_maybe_boom', name => 'g' || r.g,
                                          args => jsonb_build_object('g', r.g),
                                          retry_policy => '{"max_attempts": 1}');
    END LOOP;
END $$;
SELECT chrono_forge.start('cx_body_loop_wf', 'top') > 0 AS started;
SELECT chrono_forge.start('cx_body_loop_wf', 'do') > 0 AS started;
CALL chrono_forge.run_pending(1);
DO $$ BEGIN CALL chrono_forge.run_pending(1); END $$;
SELECT w.key, w.state, string_agg(l.step_name || ':' || l.state, ', ' ORDER BY l.id) AS steps
  FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id
 WHERE w.workflow = 'public.cx_body_loop_wf' GROUP BY w.id, w.key, w.state ORDER BY w.id;
SELECT count(*) AS cursors FROM pg_cursors;
-- Leave the next suites a clean slate.
DROP VIEW cx_runs;
DELETE FROM chrono_forge.workflows WHERE workflow LIKE 'public.cx\_%';
SELECT count(*) AS left_over FROM chrono_forge.wakeups;
