-- durably_repeat: tick logs, the scheduled time, till, on_error, start_at,
-- closed-form catch-up, calendar stepping, crash replay, bad input.
SET TimeZone = 'UTC';
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE rp_ticks (label text, scheduled timestamptz);
CREATE FUNCTION rp_record(t timestamptz) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO rp_ticks VALUES (chrono_forge.key(), t) RETURNING to_jsonb(t) $$;
CREATE FUNCTION rp_three() RETURNS boolean LANGUAGE sql AS $$
    SELECT count(*) >= 3 FROM rp_ticks WHERE label = chrono_forge.key() $$;
CREATE FUNCTION rp_never() RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE FUNCTION rp_after() RETURNS void LANGUAGE sql AS $$
    INSERT INTO rp_ticks VALUES (chrono_forge.key() || ' after', NULL) $$;
-- One line per log of a run: name (tick names as offsets from the
-- coordination's anchor would hide errors: keep the raw epoch), state,
-- attempts, and for ticks the scheduled time.
CREATE VIEW rp_logs AS
SELECT w.key, l.step_name, l.state, l.attempts, l.error_class,
       l.metadata->>'scheduled_for' AS scheduled_for
  FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id
 WHERE w.workflow LIKE 'public.rp\_%' ORDER BY w.id, l.id;
CREATE VIEW rp_runs AS
SELECT w.key, w.state,
       (SELECT string_agg(to_char(k.due_at, 'YYYY-MM-DD HH24:MI:SS') || ' ' || k.reason, ', ' ORDER BY k.due_at)
          FROM chrono_forge.wakeups k WHERE k.workflow_id = w.id) AS wakeups
  FROM chrono_forge.workflows w WHERE w.workflow LIKE 'public.rp\_%' ORDER BY w.id;

-- Every minute until three ticks ran, then the body goes on.  The step
-- takes its scheduled time; the first tick is the first pass + every.
CREATE PROCEDURE rp_basic_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_record', '1 minute', 'rp_three');
    CALL chrono_forge.durably_execute('rp_after');
END $$;
SELECT chrono_forge.start('rp_basic_wf', 'basic') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'basic';
SELECT * FROM rp_runs WHERE key = 'basic';
SELECT metadata FROM chrono_forge.execution_logs WHERE step_name = 'durably_repeat$rp_record';
-- Not due yet: a pass woken early writes nothing and waits again.
SELECT chrono_forge.wake('rp_basic_wf', 'basic');
CALL chrono_forge.run_pending();
SELECT * FROM rp_runs WHERE key = 'basic';
SET chrono_forge.fake_now = '2030-01-01 00:01:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'basic';
SELECT * FROM rp_runs WHERE key = 'basic';
-- Late by 30 s (within the timeout): the tick runs with its scheduled
-- time, and the next one stays on the grid.
SET chrono_forge.fake_now = '2030-01-01 00:02:30+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 00:03:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_runs WHERE key = 'basic';
-- Periodic health (the operations view) on these real ticks: the last
-- tick handled and the next one, none missed, not late.
SELECT task, state, last_tick_at, next_tick_at, late_by, missed_ticks, failed_ticks
  FROM chrono_forge.periodic_health('rp_basic_wf', 'basic');
-- till is met on the next pass: the coordination completes, the body
-- continues, and no tick runs.
SET chrono_forge.fake_now = '2030-01-01 00:04:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'basic';
SELECT * FROM rp_runs WHERE key = 'basic';
SELECT label, scheduled FROM rp_ticks WHERE label LIKE 'basic%' ORDER BY scheduled NULLS LAST;
SELECT step_name, metadata->>'parent_id' = (SELECT id::text FROM chrono_forge.execution_logs
                                             WHERE step_name = 'durably_repeat$rp_record'
                                               AND workflow_id = l.workflow_id) AS parent_is_coordination,
       metadata->>'timeout_at' AS timeout_at, result
  FROM chrono_forge.execution_logs l
 WHERE step_name LIKE 'durably\_repeat$rp\_record$%' ORDER BY id;

-- A custom name; a step taking the run's args (jsonb) or nothing; a
-- start_at in the future: nothing runs before it, the first tick is at it.
CREATE FUNCTION rp_args_step(args jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO rp_ticks VALUES (args->>'label', chrono_forge.now()) $$;
CREATE FUNCTION rp_plain_step() RETURNS void LANGUAGE sql AS $$
    INSERT INTO rp_ticks VALUES ('plain', chrono_forge.now()) $$;
CREATE PROCEDURE rp_named_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_args_step', '10 minutes', 'rp_never',
        start_at => '2030-01-01 01:00:00+00', name => 'my_task');
    CALL chrono_forge.durably_repeat('rp_plain_step', '1 hour', 'rp_never');
END $$;
SELECT chrono_forge.start('rp_named_wf', 'named', '{"label": "from args"}') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 00:59:59+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'named';
SELECT * FROM rp_runs WHERE key = 'named';
SET chrono_forge.fake_now = '2030-01-01 01:00:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'named';
SELECT label, scheduled FROM rp_ticks WHERE label = 'from args';

-- start_at in the past, within the timeout: the first tick runs at once
-- with start_at as its scheduled time.
SET chrono_forge.fake_now = '2030-01-02 00:00:05+00';
CREATE PROCEDURE rp_past_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_record', '1 hour', 'rp_never',
        start_at => '2030-01-02 00:00:00+00');
END $$;
SELECT chrono_forge.start('rp_past_wf', 'past') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'past';
SELECT * FROM rp_runs WHERE key = 'past';

-- start_at is fixed at the first pass: code that passes a moving value
-- (now() + 1 hour, the gem's bug) keeps the first one.
CREATE PROCEDURE rp_moving_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_record', '1 day', 'rp_never',
        start_at => chrono_forge.now() + interval '1 hour');
END $$;
SELECT chrono_forge.start('rp_moving_wf', 'moving') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-02 00:30:00+00';
SELECT chrono_forge.wake('rp_moving_wf', 'moving');
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-02 01:00:05+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'moving';

-- on_error => 'continue': failing ticks are logged and the next tick
-- runs.  The step fails on its first two calls in each run (a sequence
-- per run: it survives the rollback of a failed attempt).
SET chrono_forge.fake_now = '2030-01-03 00:00:00+00';
CREATE SEQUENCE rp_calls_continue;
CREATE SEQUENCE rp_calls_retry;
CREATE SEQUENCE rp_calls_fail;
CREATE FUNCTION rp_flaky(t timestamptz) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF nextval(('rp_calls_' || chrono_forge.key())::regclass) <= 2 THEN
        RAISE EXCEPTION 'flaky at %', t USING ERRCODE = 'P0001';
    END IF;
    INSERT INTO rp_ticks VALUES ('flaky', t);
END $$;
CREATE PROCEDURE rp_continue_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_flaky', '1 minute', 'rp_never',
        retry_policy => chrono_forge.retry_policy(max_attempts => 1));
END $$;
SELECT chrono_forge.start('rp_continue_wf', 'continue') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-03 00:01:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-03 00:02:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-03 00:03:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'continue';
SELECT * FROM rp_runs WHERE key = 'continue';
SELECT step_name, attempt, error_class, error_message FROM chrono_forge.error_logs
 WHERE workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'continue') ORDER BY id;

-- A tick's retry policy: the same tick re-runs after the backoff.
SET chrono_forge.fake_now = '2030-01-04 00:00:00+00';
CREATE PROCEDURE rp_retry_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_flaky', '1 hour', 'rp_never',
        start_at => '2030-01-04 00:00:00+00',
        retry_policy => chrono_forge.retry_policy(max_attempts => 3, jitter => false));
END $$;
SELECT chrono_forge.start('rp_retry_wf', 'retry') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM rp_runs WHERE key = 'retry';
SET chrono_forge.fake_now = '2030-01-04 00:00:01+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_runs WHERE key = 'retry';
SET chrono_forge.fake_now = '2030-01-04 00:00:03+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'retry';
SELECT * FROM rp_runs WHERE key = 'retry';

-- on_error => 'fail_workflow': the run stalls on the tick; retry() runs
-- that same tick again.
SET chrono_forge.fake_now = '2030-01-05 00:00:00+00';
CREATE PROCEDURE rp_fail_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_flaky', '1 hour', 'rp_never',
        start_at => '2030-01-05 00:00:00+00', on_error => 'fail_workflow',
        retry_policy => chrono_forge.retry_policy(max_attempts => 1));
END $$;
SELECT chrono_forge.start('rp_fail_wf', 'fail') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'fail';
SELECT * FROM rp_runs WHERE key = 'fail';
SELECT error_class, error_message FROM chrono_forge.error_logs
 WHERE workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'fail') AND step_name IS NULL;
SELECT chrono_forge.retry('rp_fail_wf', 'fail');
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'fail';
SELECT * FROM rp_runs WHERE key = 'fail';
SELECT chrono_forge.retry('rp_fail_wf', 'fail');
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'fail';
SELECT * FROM rp_runs WHERE key = 'fail';

-- Catch-up.  Hourly, timeout 30 minutes, dormant from 00:00 to 05:10: the
-- expired ticks 01:00-04:00 collapse into one summary row named after the
-- last of them; 05:00 (not expired) runs.
SET chrono_forge.fake_now = '2030-02-01 00:00:00+00';
CREATE PROCEDURE rp_hourly_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_record', '1 hour', 'rp_never', timeout => '30 minutes');
END $$;
SELECT chrono_forge.start('rp_hourly_wf', 'hourly') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-02-01 05:10:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'hourly';
SELECT step_name, error_message, metadata - 'parent_id' AS metadata
  FROM chrono_forge.execution_logs WHERE metadata ? 'fast_forwarded' AND step_name LIKE '%rp_record$%'
   AND workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'hourly');
SELECT * FROM rp_runs WHERE key = 'hourly';
SELECT task, last_tick_at, next_tick_at, missed_ticks FROM chrono_forge.periodic_health('rp_hourly_wf', 'hourly');
-- The boundary: at 07:30 the 07:00 tick is exactly at its timeout, so it
-- is not expired: only 06:00 is skipped, and 07:00 runs.
SET chrono_forge.fake_now = '2030-02-01 07:30:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'hourly';
-- Late but nothing expired: no summary row, the due tick runs late.
SET chrono_forge.fake_now = '2030-02-01 08:29:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'hourly' AND step_name > 'durably_repeat$rp_record$1896159600';
SELECT label, scheduled FROM rp_ticks WHERE label = 'hourly' ORDER BY scheduled;

-- Months step the calendar: Jan 31 + 1 month repeatedly lands on Feb 28,
-- Mar 28, Apr 28, May 28 (never May 31).
SET chrono_forge.fake_now = '2030-01-31 00:00:00+00';
CREATE PROCEDURE rp_monthly_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_record', '1 month', 'rp_never',
        start_at => '2030-01-31 00:00:00+00');
END $$;
SELECT chrono_forge.start('rp_monthly_wf', 'monthly') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-02-28 00:00:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-03-28 00:00:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-04-28 00:00:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-05-28 00:00:00+00';
CALL chrono_forge.run_pending();
SELECT label, scheduled FROM rp_ticks WHERE label = 'monthly' ORDER BY scheduled;
SELECT * FROM rp_runs WHERE key = 'monthly';

-- The same month-end grid caught up in closed form: dormant from Jan 31
-- to mid-June, the summary covers Feb 28 .. May 28 and the next tick is
-- Jun 28.
SET chrono_forge.fake_now = '2031-01-31 00:00:00+00';
CREATE PROCEDURE rp_monthly_ff_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_record', '1 month', 'rp_never',
        start_at => '2031-01-31 00:00:00+00');
END $$;
SELECT chrono_forge.start('rp_monthly_ff_wf', 'monthly_ff') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2031-06-15 00:00:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'monthly_ff';
SELECT metadata->'fast_forwarded' AS n, metadata->>'from' AS "from", metadata->>'to' AS "to"
  FROM chrono_forge.execution_logs WHERE metadata ? 'fast_forwarded'
   AND workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'monthly_ff');
SELECT * FROM rp_runs WHERE key = 'monthly_ff';
-- Ten years later (past the calendar's settling walk: the jump): still
-- on the 28th, and the count is what stepping month by month gives.
SET chrono_forge.fake_now = '2041-06-15 00:00:00+00';
CALL chrono_forge.run_pending();
WITH RECURSIVE grid(t) AS (
    SELECT timestamptz '2031-06-28 00:00:00+00'
    UNION ALL SELECT t + interval '1 month' FROM grid WHERE t + interval '1 month' < '2041-06-15 00:00:00+00')
SELECT (l.metadata->>'fast_forwarded')::int = (SELECT count(*) FROM grid) AS count_matches_walk,
       l.metadata->>'from' AS "from", l.metadata->>'to' AS "to",
       (l.metadata->>'to')::timestamptz = (SELECT max(t) FROM grid) AS to_matches_walk
  FROM chrono_forge.execution_logs l WHERE l.metadata ? 'fast_forwarded'
   AND l.workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'monthly_ff')
 ORDER BY l.id DESC LIMIT 1;
SELECT * FROM rp_runs WHERE key = 'monthly_ff';

-- Daily, dormant for ten years: one summary row, the next tick tomorrow,
-- the count equal to the days skipped.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE PROCEDURE rp_daily_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_record', '1 day', 'rp_never',
        start_at => '2030-01-01 00:00:00+00');
END $$;
SELECT chrono_forge.start('rp_daily_wf', 'daily') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-02 00:00:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2040-01-01 12:00:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'daily';
SELECT (metadata->>'fast_forwarded')::int AS n,
       (metadata->>'fast_forwarded')::int = (SELECT count(*) FROM generate_series(
            timestamptz '2030-01-03 00:00:00+00', '2040-01-01 00:00:00+00', '1 day')) AS n_is_days_skipped
  FROM chrono_forge.execution_logs WHERE metadata ? 'fast_forwarded'
   AND workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'daily');
SELECT * FROM rp_runs WHERE key = 'daily';
SET chrono_forge.fake_now = '2040-01-02 00:00:00+00';
CALL chrono_forge.run_pending();
SELECT label, scheduled FROM rp_ticks WHERE label = 'daily' ORDER BY scheduled;

-- A calendar timeout at a month end: the catch-up and the expiry of each
-- tick follow one rule (now past tick + timeout).  First pass on Mar 31:
-- Feb 1 .. Feb 28 have expired (Feb 28 + 1 month = Mar 28), one summary
-- row of 28, then Mar 1's tick runs (Mar 1 + 1 month = Apr 1).
SET chrono_forge.fake_now = '2030-03-31 00:00:00+00';
CREATE PROCEDURE rp_calendar_timeout_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_record', (args->>'every')::interval, 'rp_never',
        start_at => '2030-02-01 00:00:00+00', timeout => '1 month');
END $$;
SELECT chrono_forge.start('rp_calendar_timeout_wf', 'cal_timeout', '{"every": "1 day"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT metadata->'fast_forwarded' AS n, metadata->>'from' AS "from", metadata->>'to' AS "to", error_message
  FROM chrono_forge.execution_logs WHERE metadata ? 'fast_forwarded'
   AND workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'cal_timeout');
SELECT min(scheduled) AS first_tick_run, count(*) AS ticks_run FROM rp_ticks WHERE label = 'cal_timeout';
-- Six-hourly ticks (the closed-form jump, then its correction over the three
-- days the two rules disagree on): the count is the walk's.
SELECT chrono_forge.start('rp_calendar_timeout_wf', 'cal_timeout_h', '{"every": "6 hours"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT count(*) AS summaries,
       min((metadata->>'fast_forwarded')::int) = (SELECT count(*) FROM generate_series(
            timestamptz '2030-02-01 00:00:00+00', '2030-03-31 00:00:00+00', '6 hours') t
          WHERE t + interval '1 month' < '2030-03-31 00:00:00+00') AS n_matches_walk,
       min(metadata->>'to') AS "to"
  FROM chrono_forge.execution_logs WHERE metadata ? 'fast_forwarded'
   AND workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'cal_timeout_h');
DELETE FROM chrono_forge.workflows WHERE key LIKE 'cal\_timeout%';

-- A crash between a tick's completion and the coordination's update (the
-- engine writes both in one transaction; here the coordination is set
-- back by hand): the completed tick is not run again, the grid moves on.
SET chrono_forge.fake_now = '2030-03-01 00:00:00+00';
CREATE PROCEDURE rp_crash_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_record', '1 hour', 'rp_never',
        start_at => '2030-03-01 00:00:00+00');
END $$;
SELECT chrono_forge.start('rp_crash_wf', 'crash') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-03-01 01:00:00+00';
CALL chrono_forge.run_pending();
UPDATE chrono_forge.execution_logs SET metadata = metadata || '{"last_execution_at": "2030-03-01T00:00:00+00:00"}'
 WHERE step_name = 'durably_repeat$rp_record'
   AND workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'crash');
SELECT chrono_forge.wake('rp_crash_wf', 'crash');
CALL chrono_forge.run_pending();
SELECT * FROM rp_logs WHERE key = 'crash';
SELECT * FROM rp_runs WHERE key = 'crash';
SELECT count(*) AS runs_of_0100 FROM rp_ticks WHERE label = 'crash' AND scheduled = '2030-03-01 01:00:00+00';

-- till's errors are the run's (a workflow-level retry), not a tick's.
CREATE FUNCTION rp_bad_till() RETURNS boolean LANGUAGE sql AS $$ SELECT 1 / 0 = 1 $$;
CREATE PROCEDURE rp_till_error_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_record', '1 hour', 'rp_bad_till');
END $$;
SELECT chrono_forge.start('rp_till_error_wf', 'till_error') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT state, attempt FROM chrono_forge.workflows WHERE key = 'till_error';
SELECT step_name, error_class FROM chrono_forge.error_logs
 WHERE workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'till_error');

-- Bad input fails the run at once with CF012 (CF005 for names), and
-- nothing of the repeat is written.
CREATE FUNCTION rp_not_boolean() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
CREATE PROCEDURE rp_bad_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat(args->>'step', (args->>'every')::interval, args->>'till',
        timeout => coalesce((args->>'timeout')::interval, '1 hour'),
        on_error => coalesce(args->>'on_error', 'continue'), name => args->>'name');
END $$;
SELECT chrono_forge.start('rp_bad_wf', k, a) > 0 AS started FROM (VALUES
    ('zero',      '{"step": "rp_record", "every": "0", "till": "rp_never"}'::jsonb),
    ('negative',  '{"step": "rp_record", "every": "-1 hour", "till": "rp_never"}'),
    ('mixed',     '{"step": "rp_record", "every": "1 day -1 hour", "till": "rp_never"}'),
    ('subsecond', '{"step": "rp_record", "every": "500 milliseconds", "till": "rp_never"}'),
    ('null_every', '{"step": "rp_record", "till": "rp_never"}'),
    ('null_till', '{"step": "rp_record", "every": "1 hour"}'),
    ('no_step',   '{"step": "rp_missing", "every": "1 hour", "till": "rp_never"}'),
    ('no_till',   '{"step": "rp_record", "every": "1 hour", "till": "rp_missing"}'),
    ('int_till',  '{"step": "rp_record", "every": "1 hour", "till": "rp_not_boolean"}'),
    ('on_error',  '{"step": "rp_record", "every": "1 hour", "till": "rp_never", "on_error": "ignore"}'),
    ('timeout',   '{"step": "rp_record", "every": "1 hour", "till": "rp_never", "timeout": "-1 minute"}'),
    ('dollar',    '{"step": "rp_record", "every": "1 hour", "till": "rp_never", "name": "a$b"}')) v(k, a);
CALL chrono_forge.run_pending();
SELECT w.key, w.state, e.error_class, e.error_message
  FROM chrono_forge.workflows w JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.workflow = 'public.rp_bad_wf' ORDER BY w.id;
SELECT count(*) AS repeat_logs_written FROM chrono_forge.execution_logs l
  JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.workflow = 'public.rp_bad_wf' AND l.step_name LIKE 'durably\_repeat%';

-- A resume reads the coordination log and the current tick, never the
-- ticks behind it: the step-log rows a pass reads (by index or scan) are
-- as many with 1 past tick as with 3,001 (3,000 added by hand).  The two runs'
-- grids are 30 s apart, so each pass below is due alone.
DELETE FROM chrono_forge.workflows WHERE workflow LIKE 'public.rp\_%';
SET chrono_forge.fake_now = '2035-01-01 00:00:40+00';
CREATE PROCEDURE rp_reads_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('rp_record', '1 minute', 'rp_never',
        start_at => (args->>'start')::timestamptz);
END $$;
SELECT chrono_forge.start('rp_reads_wf', 'few', '{"start": "2035-01-01 00:00:00+00"}') > 0 AS started,
       chrono_forge.start('rp_reads_wf', 'many', '{"start": "2035-01-01 00:00:30+00"}') > 0 AS started;
CALL chrono_forge.run_pending();
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state, attempts)
SELECT id, 'durably_repeat$rp_record$' || (1000000 + g), 'completed', 1
  FROM chrono_forge.workflows, generate_series(1, 3000) g WHERE key = 'many';
ANALYZE chrono_forge.execution_logs;
SET stats_fetch_consistency = none;
CREATE FUNCTION rp_log_rows_read() RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables
     WHERE relid = 'chrono_forge.execution_logs'::regclass $$;
SELECT pg_stat_force_next_flush();
SELECT rp_log_rows_read() AS before_few \gset
SET chrono_forge.fake_now = '2035-01-01 00:01:10+00';
CALL chrono_forge.run_pending();
SELECT pg_stat_force_next_flush();
SELECT rp_log_rows_read() AS before_many \gset
SET chrono_forge.fake_now = '2035-01-01 00:01:40+00';
CALL chrono_forge.run_pending();
SELECT pg_stat_force_next_flush();
SELECT rp_log_rows_read() AS after_many \gset
-- (A pass may also replan its statements, whose planning can read an
-- index endpoint or two: a few rows, never the 3,000 ticks.)
SELECT :before_many - :before_few BETWEEN 1 AND 5 AS few_reads_few,
       :after_many - :before_many BETWEEN 1 AND 5 AS many_reads_few;
SELECT key, (SELECT count(*) FROM chrono_forge.execution_logs l WHERE l.workflow_id = w.id) AS logs
  FROM chrono_forge.workflows w WHERE workflow = 'public.rp_reads_wf' ORDER BY key;

-- Outside a pass, durably_repeat refuses to run.
\set VERBOSITY sqlstate
CALL chrono_forge.durably_repeat('rp_record', '1 hour', 'rp_never');
\set VERBOSITY default

-- Leave nothing behind for the suites that follow.
DROP VIEW rp_logs, rp_runs;
DELETE FROM chrono_forge.workflows WHERE workflow LIKE 'public.rp\_%';
