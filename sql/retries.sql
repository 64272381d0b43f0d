-- Retry policies: validation, backoff, matching, composite budgets,
-- per-workflow defaults, and the workflow-level policy.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';

SELECT chrono_forge.retry_policy();
SELECT chrono_forge.retry_policy(5, '2 seconds', '1 minute', false, ARRAY['40001', '08', 'unique_violation']);
SELECT chrono_forge.retry_policy(max_attempts => NULL, retry_on => '{}');
\set VERBOSITY sqlstate
SELECT chrono_forge.retry_policy(0);
SELECT chrono_forge.retry_policy(-1);
SELECT chrono_forge.retry_policy(base => '1 minute', cap => '1 second');
SELECT chrono_forge.retry_policy(base => '-1 second');
SELECT chrono_forge.retry_policy(retry_on => ARRAY['no_such_condition']);
SELECT chrono_forge.retry_policy(retry_on => ARRAY[NULL]);
SELECT chrono_forge.configure('retries_wf', '[]');
SELECT chrono_forge.configure('retries_wf', '{"max_attempts": 2.5}');
SELECT chrono_forge.configure('retries_wf', '"x"');
SELECT chrono_forge.configure('retries_wf', NULL);
\set VERBOSITY default
SELECT chrono_forge.retry_policy(retry_on => ARRAY['no_such_condition']);

-- Backoff: min(cap, base * 2^(n-1)); equal jitter between d/2 and d.
SELECT n, chrono_forge.retry_backoff(chrono_forge.retry_policy(jitter => false), n) AS plain,
       chrono_forge.retry_backoff(chrono_forge.retry_policy(), n, 0) AS low,
       chrono_forge.retry_backoff(chrono_forge.retry_policy(), n, 1) AS high
  FROM generate_series(1, 7) n;
SELECT bool_and(d BETWEEN '2 seconds' AND '4 seconds') AS jitter_in_range
  FROM (SELECT chrono_forge.retry_backoff(chrono_forge.retry_policy(), 3) AS d
          FROM generate_series(1, 200)) s;

-- Matching, the way PL/pgSQL's EXCEPTION WHEN matches: a failing step
-- that raises SQLSTATE errs; retried only when the policy names it.
CREATE TABLE retries_attempts (label text, n int);
CREATE FUNCTION retries_fail(args jsonb) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO retries_attempts VALUES (args->>'label', 1);
    RAISE EXCEPTION 'failing with %', args->>'code' USING ERRCODE = args->>'code';
END $$;
CREATE PROCEDURE retries_match_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE
    policy jsonb := chrono_forge.retry_policy(2, jitter => false,
        retry_on => ARRAY(SELECT jsonb_array_elements_text(args->'retry_on')));
BEGIN
    CALL chrono_forge.durably_execute('retries_fail', retry_policy => policy);
END $$;
SELECT count(chrono_forge.start('retries_match_wf', label,
         jsonb_build_object('label', label, 'code', code, 'retry_on', retry_on)))
  FROM (VALUES ('exact', '40001', '["40001"]'::jsonb),
               ('class', '40P01', '["40"]'),
               ('name', '40001', '["serialization_failure"]'),
               ('category_name', '23505', '["integrity_constraint_violation"]'),
               ('others', '22012', '["others"]'),
               ('no_match', '22012', '["40001", "unique_violation"]'),
               ('none', '40001', '[]')) AS v(label, code, retry_on);
CALL chrono_forge.run_pending();
SELECT w.key, w.state, l.attempts,
       EXISTS (SELECT 1 FROM chrono_forge.wakeups k WHERE k.workflow_id = w.id) AS retry_scheduled
  FROM chrono_forge.workflows w
  JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id
 WHERE w.workflow = 'public.retries_match_wf' ORDER BY w.id;

-- Composite: the first matching policy applies, each with its own budget,
-- kept in the step's metadata under the policy's declared errors.
CREATE TABLE retries_script (n serial, code text);
INSERT INTO retries_script (code) VALUES ('40001'), ('23505'), ('40001'), ('40001'), ('23505');
CREATE FUNCTION retries_scripted() RETURNS int LANGUAGE plpgsql AS $$
DECLARE c text;
BEGIN
    SELECT code INTO c FROM retries_script
     WHERE n = (SELECT count(*) + 1 FROM chrono_forge.error_logs e
                 WHERE e.step_name = 'durably_execute$retries_scripted');
    IF c IS NULL THEN RETURN 7; END IF;
    RAISE EXCEPTION 'scripted %', c USING ERRCODE = c;
END $$;
CREATE PROCEDURE retries_composite_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.durably_execute('retries_scripted', r, retry_policy => jsonb_build_array(
        chrono_forge.retry_policy(4, jitter => false, retry_on => '{serialization_failure,40P01}'),
        chrono_forge.retry_policy(3, '10 seconds', '1 minute', false, '{23505}')));
    RAISE NOTICE 'composite result %', r;
END $$;
SELECT chrono_forge.start('retries_composite_wf', 'c') AS cid \gset
CALL chrono_forge.run_pending();
SELECT attempts, metadata, (SELECT due_at - chrono_forge.now() FROM chrono_forge.wakeups WHERE workflow_id = :cid) AS next
  FROM chrono_forge.execution_logs WHERE workflow_id = :cid;
SET chrono_forge.fake_now = '2030-01-01 00:01:00+00';
CALL chrono_forge.run_pending();
SELECT attempts, metadata, (SELECT due_at - chrono_forge.now() FROM chrono_forge.wakeups WHERE workflow_id = :cid) AS next
  FROM chrono_forge.execution_logs WHERE workflow_id = :cid;
SET chrono_forge.fake_now = '2030-01-01 00:02:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 00:03:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 00:04:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 00:05:00+00';
CALL chrono_forge.run_pending();
SELECT w.state, l.state AS step_state, l.attempts, l.metadata, l.result
  FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id
 WHERE w.id = :cid ORDER BY l.id;

-- An error no policy of a composite names fails fast: stalled at once.
CREATE PROCEDURE retries_unmatched_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('retries_fail', retry_policy =>
        jsonb_build_array(chrono_forge.retry_policy(retry_on => '{40001}')));
END $$;
SELECT chrono_forge.start('retries_unmatched_wf', 'u', '{"label": "unmatched", "code": "22012"}') AS uid \gset
CALL chrono_forge.run_pending();
SELECT state FROM chrono_forge.workflows WHERE id = :uid;

-- configure(): the per-workflow default applies to steps without a
-- per-call policy, and to errors escaping the body.
SET chrono_forge.fake_now = '2030-01-02 00:00:00+00';
CREATE PROCEDURE retries_configured_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('retries_fail');
END $$;
SELECT chrono_forge.configure('retries_configured_wf', chrono_forge.retry_policy(1));
SELECT chrono_forge.start('retries_configured_wf', 'cfg', '{"label": "configured", "code": "40001"}') AS gid \gset
CALL chrono_forge.run_pending();
SELECT state, (SELECT attempts FROM chrono_forge.execution_logs WHERE workflow_id = :gid) FROM chrono_forge.workflows WHERE id = :gid;
SELECT workflow, retry_policy FROM chrono_forge.workflow_defaults;

-- The workflow-level policy: by default 10 attempts (cap 600 s), then
-- failed with $workflow_failure$.
CREATE PROCEDURE retries_body_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'body failure' USING ERRCODE = '22012';
END $$;
SELECT chrono_forge.start('retries_body_wf', 'b') AS bid \gset
SELECT format('SET chrono_forge.fake_now = %L', timestamptz '2030-01-03' + i * interval '1 hour') AS set_clock,
       'CALL chrono_forge.run_pending()' AS run
  FROM generate_series(1, 12) i \gexec
SELECT state, attempt FROM chrono_forge.workflows WHERE id = :bid;
SELECT count(*) AS errors, min(attempt), max(attempt) FROM chrono_forge.error_logs WHERE workflow_id = :bid;
SELECT step_name LIKE '$workflow_failure$%' AS failure_marker FROM chrono_forge.execution_logs WHERE workflow_id = :bid;

DELETE FROM chrono_forge.workflows WHERE workflow LIKE 'public.retries\_%';
DELETE FROM chrono_forge.workflow_defaults;
