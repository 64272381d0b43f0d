-- patched() (0.10.0): a procedure changed while runs are in flight keeps
-- the runs that passed the changed point on the old path.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE vs_log (key text, what text);
CREATE FUNCTION vs_note(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO vs_log VALUES (chrono_forge.key(), args->>'what') $$;
-- Version 1: step a, wait w1, step b, wait w2, step c.
CREATE PROCEDURE vs_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('vs_note', name => 'a', args => '{"what": "a"}');
    CALL chrono_forge.wait('1 hour', 'w1');
    CALL chrono_forge.durably_execute('vs_note', name => 'b', args => '{"what": "b"}');
    CALL chrono_forge.wait('1 hour', 'w2');
    CALL chrono_forge.durably_execute('vs_note', name => 'c', args => '{"what": "c"}');
END $$;
-- 'early' parks at w1 (before the point that changes), 'late' at w2
-- (after it): 'late' is made to pass w1 first.
SELECT chrono_forge.start('vs_wf', 'late') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 01:00:00+00';
SELECT chrono_forge.start('vs_wf', 'early') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, string_agg(what, ' ' ORDER BY what) AS done FROM vs_log GROUP BY key ORDER BY key;

-- Version 2 replaces step b, between w1 and w2, by b2 behind a patch.
CREATE OR REPLACE PROCEDURE vs_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('vs_note', name => 'a', args => '{"what": "a"}');
    CALL chrono_forge.wait('1 hour', 'w1');
    IF chrono_forge.patched('b2') THEN
        CALL chrono_forge.durably_execute('vs_note', name => 'b2', args => '{"what": "b2"}');
    ELSE
        CALL chrono_forge.durably_execute('vs_note', name => 'b', args => '{"what": "b"}');
    END IF;
    CALL chrono_forge.wait('1 hour', 'w2');
    CALL chrono_forge.durably_execute('vs_note', name => 'c', args => '{"what": "c"}');
END $$;
-- A run started now takes the new path at once.
SELECT chrono_forge.start('vs_wf', 'new') > 0 AS started;
-- Operators see the runs whose procedure changed since they started (the
-- definition hash each run was written with, against the procedure's now).
SELECT key, state, started_hash <> current_hash AS changed FROM chrono_forge.changed_definition_runs ORDER BY key;
SELECT key, definition_hash = chrono_forge.definition_hash(procedure) AS current
  FROM chrono_forge.workflows ORDER BY key;
-- Another role sees none of them (row-level security, as every view).
CREATE ROLE vs_mallory;
SET ROLE vs_mallory;
SELECT count(*) AS mallory_sees FROM chrono_forge.changed_definition_runs;
RESET ROLE;
DROP ROLE vs_mallory;
SELECT chrono_forge.definition_hash('public.no_such_procedure') IS NULL AS none,
       chrono_forge.definition_hash('vs_wf') IS NULL AS unqualified_none;
-- Every spelling of a qualified name gives the same hash.
SELECT count(DISTINCT h) AS hashes, count(h) AS found
  FROM (SELECT chrono_forge.definition_hash(s) AS h
          FROM unnest(ARRAY['public.vs_wf', '"public"."vs_wf"', 'PUBLIC.VS_WF',
                            current_database() || '.public.vs_wf']) s) x;
-- A malformed name is CF012, as for the other functions taking one.
SELECT chrono_forge.definition_hash('a.b.c.d');
SELECT chrono_forge.definition_hash('');
SELECT chrono_forge.definition_hash('"unterminated');
SELECT count(*) FROM chrono_forge.changed_definitions(-1);
SET chrono_forge.fake_now = '2030-01-01 02:00:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 03:00:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 04:00:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 05:00:00+00';
CALL chrono_forge.run_pending();
-- 'late' had passed the point (it ran b and waits at w2): the old path;
-- 'early' reaches the point after the change: the new path; 'new' too.
-- Each run's answer is recorded once and every later pass agrees.
SELECT w.key, w.state, l.result AS patched,
       (SELECT string_agg(what, ' ' ORDER BY what) FROM vs_log v WHERE v.key = w.key) AS done
  FROM chrono_forge.workflows w
  JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id AND l.step_name = 'patched$b2'
 ORDER BY w.key;
SELECT key, what, count(*) FROM vs_log GROUP BY 1, 2 HAVING count(*) > 1;

-- From a procedure the body calls, and a DO block it runs (not atomic):
-- allowed, and recorded once.
CREATE PROCEDURE vs_ask(INOUT p boolean) LANGUAGE plpgsql AS $$
BEGIN
    p := chrono_forge.patched('nested');
END $$;
CREATE PROCEDURE vs_nested(args jsonb) LANGUAGE plpgsql AS $$
DECLARE p boolean;
BEGIN
    CALL vs_ask(p);
    DO $d$ BEGIN PERFORM chrono_forge.context_set('in_do', to_jsonb(chrono_forge.patched('in-do'))); END $d$;
    PERFORM chrono_forge.context_set('nested', to_jsonb(p));
END $$;
SELECT chrono_forge.start('vs_nested', 'n') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT w.state, w.context, (SELECT string_agg(l.step_name || '=' || l.result, ', ' ORDER BY l.step_name)
                              FROM chrono_forge.execution_logs l WHERE l.workflow_id = w.id
                               AND l.step_name LIKE 'patched$%') AS recorded
  FROM chrono_forge.workflows w WHERE w.key = 'n';

-- Refused: outside a pass (CF013); in an EXCEPTION block or a step the
-- run fails (CF013); a bad name fails the run (CF005).
SELECT chrono_forge.patched('x');
CREATE FUNCTION vs_step_asks() RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN to_jsonb(chrono_forge.patched('in-step'));
END $$;
CREATE PROCEDURE vs_bad(args jsonb) LANGUAGE plpgsql AS $$
DECLARE p boolean;
BEGIN
    CASE args->>'how'
    WHEN 'exception' THEN
        BEGIN
            p := chrono_forge.patched('caught');
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    WHEN 'step' THEN
        CALL chrono_forge.durably_execute('vs_step_asks', retry_policy => chrono_forge.retry_policy(1));
    WHEN 'name' THEN
        p := chrono_forge.patched('a$b');
    END CASE;
END $$;
SELECT chrono_forge.start('vs_bad', h, jsonb_build_object('how', h)) > 0 AS started
  FROM unnest(ARRAY['exception', 'step', 'name']) h;
CALL chrono_forge.run_pending();
SELECT w.key, w.state, e.error_class, e.error_message
  FROM chrono_forge.workflows w
  JOIN LATERAL (SELECT x.error_class, x.error_message FROM chrono_forge.error_logs x
                 WHERE x.workflow_id = w.id ORDER BY x.id DESC LIMIT 1) e ON true
 WHERE w.workflow = 'public.vs_bad' ORDER BY w.key;

DELETE FROM chrono_forge.workflows;
