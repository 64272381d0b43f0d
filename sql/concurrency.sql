-- Concurrency limits (0.11.0), driven by run_pending and fake_now: a
-- key's and a workflow's gate, runs waiting in order without a wake-up,
-- places given back by every way a run ends, limits raised, lowered and
-- removed, retry(), wake() and send_event() of a waiting run, another role.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE cc_log (key text, what text, at timestamptz);
CREATE FUNCTION cc_note(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO cc_log VALUES (args->>'key', args->>'what', chrono_forge.now()) $$;
-- Notes its start, waits for its event, notes its end.
CREATE PROCEDURE cc_job(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cc_note', name => 'begin', args => args || '{"what": "begin"}');
    CALL chrono_forge.await_event('done');
    CALL chrono_forge.durably_execute('cc_note', name => 'end', args => args || '{"what": "end"}');
END $$;
CREATE FUNCTION cc_boom() RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
CREATE PROCEDURE cc_failing(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cc_boom', retry_policy => chrono_forge.retry_policy(max_attempts => 1));
END $$;
CREATE VIEW cc_runs AS
SELECT w.key, w.state, w.started_at IS NOT NULL AS started,
       EXISTS (SELECT FROM chrono_forge.concurrency_waiting q WHERE q.workflow_id = w.id) AS waiting,
       (SELECT count(*) FROM chrono_forge.wakeups k WHERE k.workflow_id = w.id) AS wakeups
  FROM chrono_forge.workflows w;
CREATE VIEW cc_gates AS
SELECT coalesce(concurrency_key, workflow) AS gate, max_running, running,
       (SELECT count(*) FROM chrono_forge.concurrency_waiting q WHERE q.gate_id = g.id) AS waiting
  FROM chrono_forge.concurrency_gates g;

-- A limit of 2 on key cust-1: five runs started, two run, three wait in
-- the order they were started, without a wake-up or a first pass.
SELECT chrono_forge.set_concurrency_limit(2, concurrency_key => 'cust-1');
SELECT count(chrono_forge.start('cc_job', 'j' || g, jsonb_build_object('key', 'j' || g),
                                '{"concurrency_key": "cust-1"}')) FROM generate_series(1, 5) g;
-- Another key and no key: not limited.
SELECT chrono_forge.start('cc_job', 'other', '{"key": "other"}', '{"concurrency_key": "cust-2"}') > 0 AS started;
SELECT chrono_forge.start('cc_job', 'nokey', '{"key": "nokey"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM cc_runs ORDER BY key;
SELECT * FROM cc_gates ORDER BY gate;
-- wake() and send_event() do not make a waiting run due; its event is
-- kept for it.
SELECT chrono_forge.wake('cc_job', 'j3') AS woken;
SELECT chrono_forge.send_event('cc_job', 'j3', 'done') AS delivered;
CALL chrono_forge.run_pending();
SELECT key, state, started, waiting, wakeups FROM cc_runs WHERE key = 'j3';
-- j1 ends: its place goes to j3, the oldest waiting, which finds its
-- event and completes at once, giving its place to j4.
SELECT chrono_forge.send_event('cc_job', 'j1', 'done');
CALL chrono_forge.run_pending();
SELECT * FROM cc_runs WHERE key LIKE 'j%' ORDER BY key;
SELECT key, what FROM cc_log WHERE key LIKE 'j%' ORDER BY at, key, what;
SELECT * FROM cc_gates WHERE gate = 'cust-1';
-- Cancelling a waiting run takes it out of the queue; cancelling a
-- running one gives its place away.
SELECT chrono_forge.cancel('cc_job', 'j5');
SELECT * FROM cc_gates WHERE gate = 'cust-1';
SELECT chrono_forge.start('cc_job', 'j6', '{"key": "j6"}', '{"concurrency_key": "cust-1"}') > 0 AS started;
SELECT key, waiting FROM cc_runs WHERE key = 'j6';
SELECT chrono_forge.cancel('cc_job', 'j2');
CALL chrono_forge.run_pending();
SELECT * FROM cc_runs WHERE key IN ('j2', 'j4', 'j6') ORDER BY key;
SELECT * FROM cc_gates WHERE gate = 'cust-1';
-- A deadline ends a waiting run too: out of the queue.
SELECT chrono_forge.start('cc_job', 'j7', '{"key": "j7"}',
    '{"concurrency_key": "cust-1", "timeout": "1 minute"}') > 0 AS started;
SELECT key, waiting FROM cc_runs WHERE key = 'j7';
SET chrono_forge.fake_now = '2030-01-01 00:01:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, waiting FROM cc_runs WHERE key = 'j7';
SELECT * FROM cc_gates WHERE gate = 'cust-1';

-- Raising the limit admits waiting runs at once; lowering it stops
-- nothing; removing it admits all.
SELECT count(chrono_forge.start('cc_job', 'k' || g, jsonb_build_object('key', 'k' || g),
                                '{"concurrency_key": "cust-3"}')) FROM generate_series(1, 4) g;
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'cust-3') AS admitted;
SELECT * FROM cc_gates WHERE gate = 'cust-3';
-- (The gate counted them all before it had a limit: four run.)
SELECT count(chrono_forge.start('cc_job', 'k' || g, jsonb_build_object('key', 'k' || g),
                                '{"concurrency_key": "cust-3"}')) FROM generate_series(5, 7) g;
SELECT * FROM cc_gates WHERE gate = 'cust-3';
SELECT chrono_forge.set_concurrency_limit(5, concurrency_key => 'cust-3') AS admitted;
SELECT chrono_forge.set_concurrency_limit(NULL, concurrency_key => 'cust-3') AS admitted;
SELECT * FROM cc_gates WHERE gate = 'cust-3';
CALL chrono_forge.run_pending();
SELECT count(*) FILTER (WHERE started) AS started FROM cc_runs WHERE key LIKE 'k%';

-- A workflow's gate: the caller's runs of that workflow, by any spelling.
SELECT chrono_forge.set_concurrency_limit(1, workflow => 'public.cc_failing');
SELECT chrono_forge.start('"public".cc_failing', 'f1') > 0 AS started;
SELECT chrono_forge.start('cc_failing', 'f2') > 0 AS started;
SELECT key, state, waiting FROM cc_runs WHERE key LIKE 'f%' ORDER BY key;
CALL chrono_forge.run_pending();
-- f1 stalls (a stalled run keeps its place), f2 waits.
SELECT key, state, waiting FROM cc_runs WHERE key LIKE 'f%' ORDER BY key;
-- retry() of the stalled run: it keeps its place.
SELECT chrono_forge.retry('cc_failing', 'f1');
CALL chrono_forge.run_pending();
SELECT * FROM cc_gates WHERE gate = 'public.cc_failing';
-- A cancelled run leaves; f2 runs and stalls in turn.
SELECT chrono_forge.cancel('cc_failing', 'f1');
CALL chrono_forge.run_pending();
SELECT key, state, waiting FROM cc_runs WHERE key LIKE 'f%' ORDER BY key;
SELECT * FROM cc_gates WHERE gate = 'public.cc_failing';
-- A failed run retried goes through the gate again.  f3 holds the
-- place; f4 waits, fails at its deadline, and once retried waits again
-- until f3 ends.
SELECT chrono_forge.set_concurrency_limit(1, workflow => 'cc_failing');
SELECT chrono_forge.cancel('cc_failing', 'f2');
SELECT chrono_forge.start('cc_failing', 'f3') > 0 AS started;
SELECT chrono_forge.start('cc_failing', 'f4', '{}', '{"timeout": "1 minute"}') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 00:02:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, waiting FROM cc_runs WHERE key LIKE 'f%' ORDER BY key;
SELECT chrono_forge.set_deadline('cc_failing', 'f4', NULL);
SELECT chrono_forge.retry('cc_failing', 'f4');
SELECT key, state, waiting, wakeups FROM cc_runs WHERE key = 'f4';
SELECT * FROM cc_gates WHERE gate = 'public.cc_failing';
SELECT chrono_forge.cancel('cc_failing', 'f3');
CALL chrono_forge.run_pending();
SELECT key, state, waiting FROM cc_runs WHERE key LIKE 'f%' ORDER BY key;
SELECT * FROM cc_gates WHERE gate = 'public.cc_failing';

-- A rate limit: at most two admissions a minute on key 'rate' (no limit
-- on how many run at once).  Five runs: two now, two a minute later, the
-- last one after another minute; a window still full admits nobody.
SET chrono_forge.fake_now = '2030-01-01 01:00:00+00';
SELECT chrono_forge.set_concurrency_limit(NULL, concurrency_key => 'rate', max_starts => 2, per => '1 minute');
SELECT count(chrono_forge.start('cc_job', 'r' || g, jsonb_build_object('key', 'r' || g),
                                '{"concurrency_key": "rate"}')) FROM generate_series(1, 5) g;
CALL chrono_forge.run_pending();
SELECT string_agg(key, ',' ORDER BY key) FILTER (WHERE started) AS started,
       string_agg(key, ',' ORDER BY key) FILTER (WHERE waiting) AS waiting FROM cc_runs WHERE key LIKE 'r_';
-- Their ends free no admission: the window is what limits.
SELECT chrono_forge.send_event('cc_job', k, 'done') FROM unnest(ARRAY['r1', 'r2']) k;
SET chrono_forge.fake_now = '2030-01-01 01:00:59+00';
CALL chrono_forge.run_pending();
SELECT string_agg(key, ',' ORDER BY key) FILTER (WHERE started) AS started FROM cc_runs WHERE key LIKE 'r_';
SET chrono_forge.fake_now = '2030-01-01 01:01:00+00';
CALL chrono_forge.run_pending();
SELECT string_agg(key, ',' ORDER BY key) FILTER (WHERE started) AS started,
       string_agg(key, ',' ORDER BY key) FILTER (WHERE waiting) AS waiting FROM cc_runs WHERE key LIKE 'r_';
SET chrono_forge.fake_now = '2030-01-01 01:02:00+00';
CALL chrono_forge.run_pending();
SELECT string_agg(key, ',' ORDER BY key) FILTER (WHERE started) AS started,
       string_agg(key, ',' ORDER BY key) FILTER (WHERE waiting) AS waiting FROM cc_runs WHERE key LIKE 'r_';
-- Only the last window's admissions are kept.
SELECT count(*) AS admissions_kept FROM chrono_forge.concurrency_admissions a
  JOIN chrono_forge.concurrency_gates g ON g.id = a.gate_id WHERE g.concurrency_key = 'rate';
-- Both limits at once: one in flight and at most three a minute.
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'both', max_starts => 3, per => '1 minute');
SELECT count(chrono_forge.start('cc_job', 'b' || g, jsonb_build_object('key', 'b' || g),
                                '{"concurrency_key": "both"}')) FROM generate_series(1, 3) g;
CALL chrono_forge.run_pending();
SELECT chrono_forge.send_event('cc_job', 'b1', 'done');
CALL chrono_forge.run_pending();
SELECT key, state, started, waiting FROM cc_runs WHERE key LIKE 'b_' ORDER BY key;

-- Bad input: CF012, nothing written.
\set VERBOSITY default
SELECT chrono_forge.set_concurrency_limit(0, concurrency_key => 'x');
SELECT chrono_forge.set_concurrency_limit(1);
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'x', workflow => 'cc_job');
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => '');
SELECT chrono_forge.set_concurrency_limit(1, workflow => 'no_such_workflow');
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'x', max_starts => 2);
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'x', per => '1 minute');
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'x', max_starts => 0, per => '1 minute');
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'x', max_starts => 2, per => '-1 minute');
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'x', max_starts => 2, per => '400 days');
SELECT chrono_forge.start('cc_job', 'bad', '{}', '{"concurrency_key": 7}');
SELECT chrono_forge.start('cc_job', 'bad', '{}', '{"concurrency_key": ""}');
SELECT chrono_forge.start('cc_job', 'bad', '{}', jsonb_build_object('concurrency_key', repeat('x', 600)));
\set VERBOSITY terse
SELECT count(*) AS bad_runs FROM chrono_forge.workflows WHERE key = 'bad';
SELECT count(*) AS gates_x FROM chrono_forge.concurrency_gates WHERE concurrency_key IN ('x', '');

-- Another role: its own gate for the same key name; it cannot see,
-- move or fill this role's.
CREATE ROLE cc_other;
SET ROLE cc_other;
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'cust-1');
SELECT chrono_forge.start('cc_job', 'theirs', '{}', '{"concurrency_key": "cust-1"}') > 0 AS started;
SELECT concurrency_key, workflow, max_running, running FROM chrono_forge.concurrency_gates;
SELECT count(*) AS visible_waiting FROM chrono_forge.concurrency_waiting;
RESET ROLE;
SELECT g.owner, g.concurrency_key, g.max_running, g.running FROM chrono_forge.concurrency_gates g
 WHERE g.concurrency_key = 'cust-1' ORDER BY g.owner::text;
DELETE FROM chrono_forge.workflows WHERE owner = 'cc_other'::regrole;
DELETE FROM chrono_forge.concurrency_gates WHERE owner = 'cc_other'::regrole;
DROP ROLE cc_other;

-- Every context: set_concurrency_limit() from a DO block, a procedure, an
-- EXCEPTION block catching its refusal (nothing changed) and a step;
-- start() with a key from a DO block and a step.
DO $$ BEGIN PERFORM chrono_forge.set_concurrency_limit(3, concurrency_key => 'ctx'); END $$;
CREATE PROCEDURE cc_limit(n int) LANGUAGE plpgsql
    AS $$ BEGIN PERFORM chrono_forge.set_concurrency_limit(n, concurrency_key => 'ctx'); END $$;
CALL cc_limit(2);
SELECT gate, max_running FROM cc_gates WHERE gate = 'ctx';
DO $$
BEGIN
    PERFORM chrono_forge.set_concurrency_limit(0, concurrency_key => 'ctx');
EXCEPTION WHEN SQLSTATE 'CF012' THEN RAISE NOTICE 'refused: %', SQLERRM;
END $$;
SELECT gate, max_running FROM cc_gates WHERE gate = 'ctx';
DO $$ BEGIN PERFORM chrono_forge.start('cc_job', 'ctx1', '{}', '{"concurrency_key": "ctx"}'); END $$;
CREATE FUNCTION cc_step_limit() RETURNS int LANGUAGE sql
    AS $$ SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'ctx') $$;
CREATE FUNCTION cc_step_start() RETURNS bigint LANGUAGE sql
    AS $$ SELECT chrono_forge.start('cc_job', 'ctx2', '{}', '{"concurrency_key": "ctx"}') $$;
CREATE PROCEDURE cc_starter(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cc_step_limit');
    CALL chrono_forge.durably_execute('cc_step_start');
END $$;
SELECT chrono_forge.start('cc_starter', 'starter') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, started, waiting FROM cc_runs WHERE key IN ('ctx1', 'ctx2', 'starter') ORDER BY key;
SELECT * FROM cc_gates WHERE gate = 'ctx';

DELETE FROM chrono_forge.workflows;
DELETE FROM chrono_forge.concurrency_gates;
DROP VIEW cc_runs, cc_gates;
