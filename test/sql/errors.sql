-- Primitives outside a pass, in atomic contexts, and with bad names.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE FUNCTION err_step() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;

-- Outside any pass.
CALL chrono_forge.durably_execute('err_step');
SELECT chrono_forge.context();
SELECT chrono_forge.args();
SELECT chrono_forge.context_set('a', '1');
BEGIN;
CALL chrono_forge.run_pending();
ROLLBACK;
CALL chrono_forge.run_pending(0);

-- A primitive called from a function during a pass: the run fails at
-- once (no workflow-level retries), with the error recorded.
CREATE FUNCTION err_helper() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('err_step');
END $$;
CREATE PROCEDURE err_atomic_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM err_helper();
END $$;
-- ... or inside a block with an EXCEPTION clause.
CREATE PROCEDURE err_exception_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        CALL chrono_forge.durably_execute('err_step');
    EXCEPTION WHEN others THEN
        RAISE NOTICE 'swallowed %', SQLERRM;
        RAISE;
    END;
END $$;
-- Invalid step names.
CREATE PROCEDURE err_dollar_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('err_step', name => 'a$b');
END $$;
CREATE PROCEDURE err_null_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute(NULL);
END $$;
-- An invalid per-call retry policy.
CREATE PROCEDURE err_policy_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('err_step', retry_policy => '{"max_attempts": -1}');
END $$;
-- A plain error in the body: workflow-level retries.
CREATE PROCEDURE err_plain_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'plain failure' USING ERRCODE = '22012';
END $$;

SELECT count(chrono_forge.start(w, 'e')) FROM unnest(ARRAY['err_atomic_wf', 'err_exception_wf',
    'err_dollar_wf', 'err_null_wf', 'err_policy_wf', 'err_plain_wf']) AS w;
CALL chrono_forge.run_pending();
SELECT w.workflow, w.state, w.attempt, e.error_class, e.error_message,
       (SELECT string_agg(regexp_replace(step_name, '[0-9]+$', 'N'), ', ' ORDER BY id)
          FROM chrono_forge.execution_logs l WHERE l.workflow_id = w.id) AS steps
  FROM chrono_forge.workflows w
  LEFT JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.workflow LIKE 'public.err\_%'
 ORDER BY w.id;
-- The marker names the error log.
SELECT count(*) AS markers_match FROM chrono_forge.execution_logs l
  JOIN chrono_forge.error_logs e ON l.step_name = '$workflow_failure$' || e.id
 WHERE (l.metadata ->> 'error_log_id')::bigint = e.id;
SELECT count(*) AS wakeups FROM chrono_forge.wakeups w
  JOIN chrono_forge.workflows r ON r.id = w.workflow_id WHERE r.state = 'failed';
DELETE FROM chrono_forge.workflows WHERE workflow LIKE 'public.err\_%';

-- An error log keeps where the error was raised (its context: function
-- and line), its detail and its hint, for a step's error and for the
-- body's; timeline() shows them.
CREATE FUNCTION err_inner(what text) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% failed', what USING DETAIL = 'the detail of ' || what,
        HINT = 'the hint of ' || what, ERRCODE = '22012';
END $$;
CREATE FUNCTION err_step_boom() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RETURN err_inner('step');
END $$;
CREATE PROCEDURE err_where_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF args ? 'step' THEN
        CALL chrono_forge.durably_execute('err_step_boom',
            retry_policy => chrono_forge.retry_policy(max_attempts => 1));
    END IF;
    PERFORM err_inner('body');
END $$;
SELECT chrono_forge.start('err_where_wf', 'body', '{}', '{"retry_policy": {"max_attempts": 1}}') > 0 AS started;
SELECT chrono_forge.start('err_where_wf', 'step', '{"step": true}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT w.key, e.step_name, e.error_class, e.error_message, e.error_detail, e.error_hint,
       split_part(e.error_context, E'\n', 1) AS raised_at,
       e.error_context ~ 'PL/pgSQL function err_where_wf\(jsonb\) line [47] at (PERFORM|CALL)' AS from_body
  FROM chrono_forge.workflows w JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.workflow = 'public.err_where_wf' ORDER BY e.id;
SELECT step_name, errors->0->>'error_detail' AS detail, errors->0->>'error_hint' AS hint,
       split_part(errors->0->>'error_context', E'\n', 1) AS context
  FROM chrono_forge.timeline('err_where_wf', 'step') WHERE errors IS NOT NULL;

-- The run's context copied into an error log is capped at 64 kB of JSON:
-- the keys that fit, in key order, and a "$truncated" marker (the
-- snapshot's size, its keys, the keys kept).  The run keeps all of it.
CREATE PROCEDURE err_big_context_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..6 LOOP
        PERFORM chrono_forge.context_set('k' || i, to_jsonb(repeat(i::text, 15000)));
    END LOOP;
    RAISE EXCEPTION 'big context' USING ERRCODE = '22012';
END $$;
SELECT chrono_forge.start('err_big_context_wf', 'big', '{}', '{"retry_policy": {"max_attempts": 1}}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT e.context->'$truncated' AS marker, octet_length(e.context::text) <= 65536 AS within_cap,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(e.context) k) AS keys,
       (SELECT count(*) FROM jsonb_object_keys(w.context)) AS run_keys
  FROM chrono_forge.workflows w JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.key = 'big';
DELETE FROM chrono_forge.workflows WHERE workflow LIKE 'public.err\_%';
