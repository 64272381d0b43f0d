-- External tasks: run_task in a workflow, the worker protocol (claim,
-- heartbeat, complete, fail), retries, leases, timeouts, cancel, retry(),
-- bad input and calling contexts.  Workers off; passes by run_pending().
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE tk_log (what text);
CREATE FUNCTION tk_note(args jsonb) RETURNS void LANGUAGE sql AS $$ INSERT INTO tk_log VALUES (args::text) $$;
CREATE VIEW tk_runs AS
SELECT w.key, w.state,
       (SELECT string_agg(l.step_name || ':' || l.state || ':' || l.attempts, ', ' ORDER BY l.id)
          FROM chrono_forge.execution_logs l WHERE l.workflow_id = w.id) AS steps,
       (SELECT string_agg(t.step || ':' || t.state || ':' || t.attempt
                          || ' due ' || to_char(t.available_at AT TIME ZONE 'UTC', 'HH24:MI:SS'), ', ')
          FROM chrono_forge.tasks t WHERE t.workflow_id = w.id) AS tasks,
       (SELECT string_agg(to_char(k.due_at AT TIME ZONE 'UTC', 'HH24:MI:SS') || ' ' || k.reason, ', ' ORDER BY k.due_at)
          FROM chrono_forge.wakeups k WHERE k.workflow_id = w.id) AS wakeups
  FROM chrono_forge.workflows w WHERE w.workflow LIKE 'public.tk\_%' ORDER BY w.id;
-- A claim without the token (it is random); the idempotency key's run id
-- (which depends on the suites before this one) shown as <run>.
CREATE FUNCTION tk_claim(q text, n integer DEFAULT 1)
    RETURNS TABLE (task_id bigint, step text, key text, args jsonb, attempt integer,
                   lease_until timestamptz, idempotency_key text)
    LANGUAGE sql AS $$
    SELECT c.task_id, c.step, c.key, c.args, c.attempt, c.lease_until,
           regexp_replace(c.idempotency_key, '^' || w.id || ':', '<run>:')
      FROM chrono_forge.claim_tasks(ARRAY[q], n, 'tk-worker') c
      JOIN chrono_forge.workflows w ON w.workflow = c.workflow AND w.key = c.key $$;
CREATE FUNCTION tk_token(k text, s text DEFAULT NULL) RETURNS uuid LANGUAGE sql AS $$
    SELECT t.claim_token FROM chrono_forge.tasks t JOIN chrono_forge.workflows w ON w.id = t.workflow_id
     WHERE w.key = k AND (s IS NULL OR t.step = s) $$;
CREATE FUNCTION tk_id(k text, s text DEFAULT NULL) RETURNS bigint LANGUAGE sql AS $$
    SELECT t.id FROM chrono_forge.tasks t JOIN chrono_forge.workflows w ON w.id = t.workflow_id
     WHERE w.key = k AND (s IS NULL OR t.step = s) $$;

-- The whole protocol: the first pass writes the task and parks the run;
-- a worker claims it (lease, token), heartbeats and completes it once;
-- the next pass records the result on the step and goes on.
CREATE PROCEDURE tk_order_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE charge jsonb;
BEGIN
    CALL chrono_forge.run_task('charge_card', 'payments', result => charge,
                               args => jsonb_build_object('amount', args->'amount'));
    CALL chrono_forge.durably_execute('tk_note', args => jsonb_build_object('charged', charge));
    CALL chrono_forge.wait('1 minute', 'settle');
    CALL chrono_forge.durably_execute('tk_note', name => 'again', args => jsonb_build_object('replayed', charge));
END $$;
SELECT chrono_forge.start('tk_order_wf', 'o1', '{"amount": 42}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'o1';
-- The task, the pending step and the run's release commit together, in
-- one transaction: the run's row and the others share their xmin.
SELECT t.xmin = w.xmin AS task_with_release, l.xmin = w.xmin AS step_with_release,
       w.started_at IS NOT NULL AS started, w.locked_by IS NULL AS unlocked
  FROM chrono_forge.workflows w
  JOIN chrono_forge.tasks t ON t.workflow_id = w.id
  JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id AND l.step_name = 'run_task$charge_card'
 WHERE w.key = 'o1';
SELECT step, queue, args, state, attempt, lease, timeout_at, claim_token IS NULL AS unclaimed
  FROM chrono_forge.tasks WHERE id = tk_id('o1');
SELECT metadata FROM chrono_forge.execution_logs WHERE step_name = 'run_task$charge_card';
SELECT * FROM chrono_forge.task_queues;
SELECT * FROM tk_claim('other');
SELECT task_id = tk_id('o1') AS same_task, step, key, args, attempt, lease_until, idempotency_key
  FROM tk_claim('payments', 5);
SELECT * FROM tk_claim('payments');
SELECT step, state, claimed_by, claimed_at, lease_until FROM chrono_forge.tasks WHERE id = tk_id('o1');
SELECT * FROM tk_runs WHERE key = 'o1';
SELECT * FROM chrono_forge.task_queues;
SET chrono_forge.fake_now = '2030-01-01 00:00:10+00';
SELECT chrono_forge.heartbeat_task(tk_id('o1'), tk_token('o1'));
SELECT lease_until FROM chrono_forge.tasks WHERE id = tk_id('o1');
SELECT chrono_forge.heartbeat_task(tk_id('o1'), tk_token('o1'), '5 minutes');
SELECT lease_until FROM chrono_forge.tasks WHERE id = tk_id('o1');
SELECT chrono_forge.heartbeat_task(tk_id('o1'), gen_random_uuid());
SELECT chrono_forge.complete_task(tk_id('o1'), gen_random_uuid(), '{"charge": "wrong"}');
SELECT chrono_forge.complete_task(tk_id('o1'), tk_token('o1'), '{"charge": "ch_1"}');
SELECT chrono_forge.complete_task(tk_id('o1'), tk_token('o1'), '{"charge": "ch_2"}');
SELECT chrono_forge.fail_task(tk_id('o1'), tk_token('o1'), 'Late', 'too late');
SELECT chrono_forge.heartbeat_task(tk_id('o1'), tk_token('o1'));
SELECT state, result, completed_at FROM chrono_forge.tasks WHERE id = tk_id('o1');
SELECT * FROM tk_runs WHERE key = 'o1';
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'o1';
-- Replay: the step returns its recorded result; the task is not touched.
SELECT updated_at AS task_updated FROM chrono_forge.tasks WHERE id = tk_id('o1') \gset
SET chrono_forge.fake_now = '2030-01-01 00:01:10+00';
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'o1';
SELECT what FROM tk_log ORDER BY what;
SELECT updated_at = :'task_updated' AS task_untouched, state FROM chrono_forge.tasks WHERE id = tk_id('o1');
SELECT step_name, kind, state, attempts, result, task->>'state' AS task_state, task->>'queue' AS queue,
       task->>'claimed_by' AS claimed_by
  FROM chrono_forge.timeline('tk_order_wf', 'o1');

-- The overload without a result, with no args: the task's args are {}.
CREATE PROCEDURE tk_plain_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.run_task('ping', 'plain');
    CALL chrono_forge.run_task('pong', 'plain', args => '{"n": 2}', lease => '1 minute');
END $$;
SELECT chrono_forge.start('tk_plain_wf', 'p1') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT c.step, c.args, c.lease_until - t.claimed_at AS lease
  FROM tk_claim('plain') c JOIN chrono_forge.tasks t ON t.id = c.task_id;
SELECT chrono_forge.complete_task(tk_id('p1', 'ping'), tk_token('p1', 'ping'));
CALL chrono_forge.run_pending();
SELECT step, args, attempt, lease FROM chrono_forge.tasks t WHERE t.queue = 'plain' ORDER BY id;
SELECT t.step, chrono_forge.complete_task(t.task_id, t.claim_token, '[1, 2]')
  FROM chrono_forge.claim_tasks('{plain}') t;
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'p1';
SELECT step_name, result FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'p1' ORDER BY l.id;

-- fail_task: a failed attempt under the step's retry policy, the task
-- offered again after the backoff (a pass at the backoff's end notifies
-- the queue); a SQLSTATE class is matched by retry_on.
SET chrono_forge.fake_now = '2030-01-02 00:00:00+00';
CREATE PROCEDURE tk_retry_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.run_task('flaky', coalesce(args->>'queue', 'retrying'), result => r,
        retry_policy => chrono_forge.retry_policy(3, '10 seconds', '1 minute', false, ARRAY['40001', 'CF026', 'CF027']));
    PERFORM chrono_forge.context_set('r', r);
END $$;
SELECT chrono_forge.start('tk_retry_wf', 'r1') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT step, attempt FROM tk_claim('retrying');
SELECT chrono_forge.fail_task(tk_id('r1'), tk_token('r1'), '40001', 'could not serialize');
SELECT chrono_forge.fail_task(tk_id('r1'), tk_token('r1'), '40001', 'twice');
SELECT state, error_class, error_message, retryable FROM chrono_forge.tasks WHERE id = tk_id('r1');
-- The outcome moved the claim's lease wake-up to now: one row, no second.
SELECT * FROM tk_runs WHERE key = 'r1';
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'r1';
SELECT * FROM tk_claim('retrying');
SET chrono_forge.fake_now = '2030-01-02 00:00:10+00';
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'r1';
SELECT step, attempt FROM tk_claim('retrying');
SELECT chrono_forge.fail_task(tk_id('r1'), tk_token('r1'), 'ConnectionError', 'reset by peer');
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'r1';
SELECT e.attempt, e.error_class, e.error_message FROM chrono_forge.error_logs e
  JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key = 'r1' ORDER BY e.id;
SELECT queue, due, backing_off, in_flight, failed_last_hour FROM chrono_forge.task_queues WHERE queue = 'retrying';
SET chrono_forge.fake_now = '2030-01-02 00:00:30+00';
CALL chrono_forge.run_pending();
SELECT step, attempt FROM tk_claim('retrying');
SELECT chrono_forge.complete_task(tk_id('r1'), tk_token('r1'), '"third time"');
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'r1';
SELECT context FROM chrono_forge.workflows WHERE key = 'r1';

-- Not retryable: the step fails at once and the run stalls; retry()
-- offers the task again as one more attempt (as a durably_execute step
-- whose budget ran out); a failure then stalls it again.
SET chrono_forge.fake_now = '2030-01-03 00:00:00+00';
SELECT chrono_forge.start('tk_retry_wf', 'n1', '{"queue": "declines"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT step, attempt FROM tk_claim('declines');
SELECT chrono_forge.fail_task(tk_id('n1'), tk_token('n1'), 'CardDeclined', 'insufficient funds', false);
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'n1';
SELECT l.error_class, l.error_message, e.error_detail FROM chrono_forge.execution_logs l
  JOIN chrono_forge.error_logs e ON e.workflow_id = l.workflow_id AND e.step_name = l.step_name
  JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.key = 'n1';
SELECT * FROM tk_claim('declines');
SELECT chrono_forge.retry('tk_retry_wf', 'n1');
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'n1';
SELECT step, attempt FROM tk_claim('declines');
SELECT chrono_forge.fail_task(tk_id('n1'), tk_token('n1'), 'CardDeclined', 'still declined', false);
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'n1';
SELECT chrono_forge.retry('tk_retry_wf', 'n1');
CALL chrono_forge.run_pending();
SELECT t.step, t.attempt, chrono_forge.complete_task(t.task_id, t.claim_token, '"fixed"')
  FROM chrono_forge.claim_tasks('{declines}') t;
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'n1';

-- Leases: a lease that runs out is a failed attempt (CF026) noticed by
-- the run's own pass at the lease's end (claim_tasks gave it a wake-up);
-- the old token is stale from then on.  A heartbeat moves the lease: the
-- pass at the old end parks again until the new one.
SET chrono_forge.fake_now = '2030-01-04 00:00:00+00';
SELECT chrono_forge.start('tk_retry_wf', 'l1', '{"queue": "leases"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT step, attempt, lease_until FROM tk_claim('leases');
SELECT tk_token('l1') AS old_token \gset
SELECT * FROM tk_runs WHERE key = 'l1';
SELECT queue, in_flight, leases_expiring FROM chrono_forge.task_queues WHERE queue = 'leases';
SET chrono_forge.fake_now = '2030-01-04 00:00:25+00';
SELECT queue, in_flight, leases_expiring FROM chrono_forge.task_queues WHERE queue = 'leases';
SET chrono_forge.fake_now = '2030-01-04 00:00:30+00';
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'l1';
SELECT state, error_class, error_message FROM chrono_forge.tasks WHERE id = tk_id('l1');
SELECT e.attempt, e.error_class, e.error_message FROM chrono_forge.error_logs e
  JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key = 'l1' ORDER BY e.id;
SELECT chrono_forge.heartbeat_task(tk_id('l1'), :'old_token');
SELECT chrono_forge.complete_task(tk_id('l1'), :'old_token', '"late"');
SELECT chrono_forge.fail_task(tk_id('l1'), :'old_token', 'Late', 'late');
SELECT * FROM tk_claim('leases');
SET chrono_forge.fake_now = '2030-01-04 00:00:40+00';
CALL chrono_forge.run_pending();
SELECT step, attempt, lease_until FROM tk_claim('leases');
SELECT tk_token('l1') <> :'old_token' AS new_token;
SELECT chrono_forge.complete_task(tk_id('l1'), :'old_token', '"stale"');
SET chrono_forge.fake_now = '2030-01-04 00:01:00+00';
SELECT chrono_forge.heartbeat_task(tk_id('l1'), tk_token('l1'), '2 minutes');
SET chrono_forge.fake_now = '2030-01-04 00:01:10+00';
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'l1';
SELECT chrono_forge.complete_task(tk_id('l1'), tk_token('l1'), '"in time"');
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'l1';

-- The overall timeout: the step fails with CF010 and the run stalls; the
-- task is failed, so its worker's heartbeat says lost and its completion
-- changes nothing.  retry() offers it again with a fresh timeout.
SET chrono_forge.fake_now = '2030-01-05 00:00:00+00';
CREATE PROCEDURE tk_timeout_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.run_task('slow', coalesce(args->>'queue', 'timeouts'), timeout => '2 minutes',
                               lease => '10 minutes');
END $$;
SELECT chrono_forge.start('tk_timeout_wf', 't1') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 't1';
SELECT step, attempt FROM tk_claim('timeouts');
SET chrono_forge.fake_now = '2030-01-05 00:02:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 't1';
SELECT l.error_class, l.error_message FROM chrono_forge.execution_logs l
  JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.key = 't1';
SELECT state, error_class FROM chrono_forge.tasks WHERE id = tk_id('t1');
SELECT chrono_forge.heartbeat_task(tk_id('t1'), tk_token('t1'));
SELECT chrono_forge.complete_task(tk_id('t1'), tk_token('t1'));
SELECT chrono_forge.retry('tk_timeout_wf', 't1');
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 't1';
SELECT timeout_at FROM chrono_forge.tasks WHERE id = tk_id('t1');

-- cancel(): the run's open task is cancelled; its worker's heartbeat
-- says so, its completion or failure changes nothing.
SET chrono_forge.fake_now = '2030-01-06 00:00:00+00';
SELECT chrono_forge.start('tk_timeout_wf', 'c1', '{"queue": "cancels"}') > 0 AS started;
SELECT chrono_forge.start('tk_timeout_wf', 'c2', '{"queue": "cancels"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key FROM tk_claim('cancels', 2) ORDER BY key;
SELECT chrono_forge.cancel('tk_timeout_wf', 'c1', 'customer left');
SELECT chrono_forge.heartbeat_task(tk_id('c1'), tk_token('c1'));
SELECT chrono_forge.heartbeat_task(tk_id('c1'), gen_random_uuid());
SELECT chrono_forge.complete_task(tk_id('c1'), tk_token('c1'));
SELECT chrono_forge.fail_task(tk_id('c1'), tk_token('c1'), 'X', 'y');
SELECT state FROM chrono_forge.tasks WHERE id = tk_id('c1');
SELECT * FROM tk_runs WHERE key = 'c1';
SELECT chrono_forge.heartbeat_task(tk_id('c2'), tk_token('c2'));
-- A cancelled pending task is never offered.
SELECT chrono_forge.start('tk_timeout_wf', 'c3', '{"queue": "cancels"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM tk_runs WHERE key = 'c3';
SELECT chrono_forge.cancel('tk_timeout_wf', 'c3');
SELECT * FROM tk_claim('cancels');
SELECT queue, due, in_flight FROM chrono_forge.task_queues WHERE queue = 'cancels';

-- Bad input: the run fails at once (programming errors), nothing of the
-- task written; a worker's bad call is refused before anything changes.
SET chrono_forge.fake_now = '2030-01-07 00:00:00+00';
CREATE PROCEDURE tk_bad_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF args->>'case' = 'queue$' THEN
        CALL chrono_forge.run_task('s', 'a$b');
    ELSIF args->>'case' = 'queue null' THEN
        CALL chrono_forge.run_task('s', NULL);
    ELSIF args->>'case' = 'step empty' THEN
        CALL chrono_forge.run_task('', 'q');
    ELSIF args->>'case' = 'big args' THEN
        CALL chrono_forge.run_task('s', 'q', args => jsonb_build_object('x', repeat('x', 1100000)));
    ELSIF args->>'case' = 'lease 0' THEN
        CALL chrono_forge.run_task('s', 'q', lease => '0 seconds');
    ELSIF args->>'case' = 'lease null' THEN
        CALL chrono_forge.run_task('s', 'q', lease => NULL);
    ELSIF args->>'case' = 'timeout negative' THEN
        CALL chrono_forge.run_task('s', 'q', timeout => '-1 second');
    ELSIF args->>'case' = 'bad policy' THEN
        CALL chrono_forge.run_task('s', 'q', retry_policy => '{"max_attempts": 0}');
    END IF;
END $$;
SELECT c, chrono_forge.start('tk_bad_wf', c, jsonb_build_object('case', c)) > 0 AS started
  FROM unnest(ARRAY['queue$', 'queue null', 'step empty', 'big args', 'lease 0', 'lease null',
                    'timeout negative', 'bad policy']) c;
CALL chrono_forge.run_pending();
SELECT w.key, w.state, e.error_class, e.error_message
  FROM chrono_forge.workflows w JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.workflow = 'public.tk_bad_wf' ORDER BY w.id;
SELECT count(*) AS tasks_of_bad_runs FROM chrono_forge.tasks t
  JOIN chrono_forge.workflows w ON w.id = t.workflow_id WHERE w.workflow = 'public.tk_bad_wf';
SELECT chrono_forge.start('tk_timeout_wf', 'b1', '{"queue": "bad"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key FROM tk_claim('bad');
SELECT updated_at AS b1_updated FROM chrono_forge.tasks WHERE id = tk_id('b1') \gset
\set VERBOSITY sqlstate
SELECT chrono_forge.complete_task(tk_id('b1'), tk_token('b1'), jsonb_build_object('x', repeat('x', 1100000)));
SELECT chrono_forge.complete_task(NULL, tk_token('b1'));
SELECT chrono_forge.complete_task(tk_id('b1'), NULL);
SELECT chrono_forge.fail_task(tk_id('b1'), tk_token('b1'), '', 'empty class');
SELECT chrono_forge.fail_task(tk_id('b1'), tk_token('b1'), NULL, 'no class');
SELECT chrono_forge.fail_task(tk_id('b1'), tk_token('b1'), repeat('E', 600), 'long class');
SELECT chrono_forge.heartbeat_task(tk_id('b1'), tk_token('b1'), '-1 second');
SELECT chrono_forge.heartbeat_task(tk_id('b1'), tk_token('b1'), '0 seconds');
SELECT * FROM chrono_forge.claim_tasks(NULL);
SELECT * FROM chrono_forge.claim_tasks('{}');
SELECT * FROM chrono_forge.claim_tasks('{timeouts}', 0);
SELECT * FROM chrono_forge.claim_tasks('{timeouts}', 1001);
SELECT * FROM chrono_forge.claim_tasks('{timeouts}', NULL);
SELECT * FROM chrono_forge.claim_tasks(ARRAY['timeouts', NULL]);
SELECT * FROM chrono_forge.claim_tasks('{a$b}');
SELECT * FROM chrono_forge.claim_tasks('{timeouts}', 1, repeat('w', 600));
\set VERBOSITY default
SELECT state, result, error_class, lease_until, updated_at = :'b1_updated' AS unchanged
  FROM chrono_forge.tasks WHERE id = tk_id('b1');

-- Calling contexts: run_task outside a pass, from a DO block or a plain
-- function, is refused like every primitive (CF013).
\set VERBOSITY sqlstate
CALL chrono_forge.run_task('s', 'q');
DO $$ DECLARE r jsonb; BEGIN CALL chrono_forge.run_task('s', 'q', result => r); END $$;
CREATE FUNCTION tk_in_function() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.run_task('s', 'q');
END $$;
SELECT tk_in_function();
\set VERBOSITY default
-- ... and from a function during a pass, the run fails at once.
CREATE PROCEDURE tk_atomic_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tk_in_function();
END $$;
SELECT chrono_forge.start('tk_atomic_wf', 'a1') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT w.state, e.error_class, e.error_message FROM chrono_forge.workflows w
  JOIN chrono_forge.error_logs e ON e.workflow_id = w.id WHERE w.key = 'a1';
SELECT count(*) AS tasks FROM chrono_forge.tasks WHERE queue = 'q';
-- The worker calls from every context a worker's code may use them in:
-- a DO block, a procedure, another spelling of the workflow (a task is
-- found by id), and an EXCEPTION block whose error undoes the completion.
CREATE PROCEDURE tk_ctx_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.run_task('ctx', 'ctxq', result => r);
END $$;
SELECT count(chrono_forge.start('public.TK_CTX_WF', k)) AS started
  FROM unnest(ARRAY['c1', 'c2', 'c3']) k;
CALL chrono_forge.run_pending();
DO $$
DECLARE t record;
BEGIN
    SELECT * INTO t FROM chrono_forge.claim_tasks(ARRAY['ctxq'], 1) WHERE key = 'c1';
    PERFORM chrono_forge.complete_task(t.task_id, t.claim_token, '{"by": "do"}');
END $$;
CREATE PROCEDURE tk_work(q text) LANGUAGE plpgsql AS $$
DECLARE t record;
BEGIN
    FOR t IN SELECT * FROM chrono_forge.claim_tasks(ARRAY[q], 1) LOOP
        PERFORM chrono_forge.complete_task(t.task_id, t.claim_token, '{"by": "procedure"}');
    END LOOP;
END $$;
CALL tk_work('ctxq');
DO $$
DECLARE t record;
BEGIN
    SELECT * INTO t FROM chrono_forge.claim_tasks(ARRAY['ctxq'], 1);
    BEGIN
        PERFORM chrono_forge.complete_task(t.task_id, t.claim_token, '{"by": "rolled back"}');
        RAISE EXCEPTION 'the handler failed after completing';
    EXCEPTION WHEN raise_exception THEN
        RAISE NOTICE 'complete_task undone: %', SQLERRM;
    END;
END $$;
SELECT w.key, t.state, t.result FROM chrono_forge.tasks t
  JOIN chrono_forge.workflows w ON w.id = t.workflow_id WHERE t.queue = 'ctxq' ORDER BY w.key;
CALL chrono_forge.run_pending();
SELECT w.key, w.state, l.result FROM chrono_forge.workflows w
  LEFT JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id AND l.step_name = 'run_task$ctx'
 WHERE w.workflow = 'public.tk_ctx_wf' ORDER BY w.key;
SELECT key, state FROM chrono_forge.runs(workflow => 'TK_CTX_WF') ORDER BY key;
-- (The upgrade suite drops the extension: nothing may depend on it.)
DROP VIEW tk_runs;
