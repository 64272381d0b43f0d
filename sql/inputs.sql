-- Bounded inputs: every bad input answers a SQLSTATE of the README's
-- table (mostly CF012) before anything is written, inside a pass it fails
-- the run at once, and no call writes or works in proportion to a range
-- or count the caller made up.
SET chrono_forge.fake_now = '2030-01-10 12:00:00+00';
CREATE FUNCTION in_step() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
CREATE PROCEDURE in_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('in_step');
END $$;

-- The SQLSTATE a statement raises ('ok' if none).
CREATE FUNCTION in_state(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE;
END $$;
-- Rows of every engine table, to show that nothing was written.
CREATE FUNCTION in_rows() RETURNS text LANGUAGE sql AS $$
    SELECT format('runs %s, logs %s, errors %s, wakeups %s, events %s, defaults %s, days %s, summarised %s',
        (SELECT count(*) FROM chrono_forge.workflows), (SELECT count(*) FROM chrono_forge.execution_logs),
        (SELECT count(*) FROM chrono_forge.error_logs), (SELECT count(*) FROM chrono_forge.wakeups),
        (SELECT count(*) FROM chrono_forge.events), (SELECT count(*) FROM chrono_forge.workflow_defaults),
        (SELECT count(*) FROM chrono_forge.outcome_days), (SELECT count(*) FROM chrono_forge.outcome_days_summarised)) $$;
CREATE TEMP TABLE in_before AS SELECT in_rows() AS rows;

-- Malformed workflow names: CF012 (were 42601, 42602, 0A000), like an
-- unknown one.
SELECT s, in_state(format('SELECT chrono_forge.start(%L, %L)', s, s)) AS sqlstate
  FROM unnest(ARRAY['a.b.c.d', '"unterminated', 'x..y', '""', 'other_db.public.in_wf',
                    'nosuchschema.in_wf']) AS s;
-- Names and keys over their maxima (doc/reference.md): CF012, not 54000 at insert
-- (random text does not compress below the index limit).
CREATE FUNCTION in_long(n int) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(md5(i::text), '') FROM generate_series(1, (n + 31) / 32) i $$;
SELECT what, in_state(stmt) AS sqlstate FROM (VALUES
    ('key 1025 bytes', format('SELECT chrono_forge.start(''in_wf'', %L)', left(in_long(1025), 1025))),
    ('key 3000 bytes', format('SELECT chrono_forge.start(''in_wf'', %L)', in_long(3000))),
    ('workflow 513 bytes', format('SELECT chrono_forge.start(%L, ''k'')', left(in_long(513), 513))),
    ('wake key', format('SELECT chrono_forge.wake(''in_wf'', %L)', in_long(3000))),
    ('event name', format('SELECT chrono_forge.send_event(''in_wf'', ''k'', %L)', in_long(3000))),
    ('schedule name', format('SELECT chrono_forge.schedule(%L, ''* * * * *'', ''in_wf'')', in_long(3000))),
    ('branch name', format('SELECT chrono_forge.retry_blocked_children(''in_wf'', ''k'', %L)', in_long(3000))))
  AS t(what, stmt);
SELECT in_rows() = rows AS nothing_written FROM in_before;
-- At the maxima, and the three spellings of a name: accepted.
SELECT chrono_forge.start('in_wf', left(in_long(1024), 1024)) > 0 AS key_1024,
       chrono_forge.start(current_database() || '.public.in_wf', 'three-parts') > 0 AS three_parts,
       chrono_forge.start('"in_wf"', 'quoted') > 0 AS quoted;
UPDATE in_before SET rows = in_rows();

-- Retry policies: numbers finite and within the maxima (base and cap at
-- most 31536000 seconds, max_attempts at most 2147483647), else CF012.
SELECT p, in_state(format('SELECT chrono_forge.configure(''in_wf'', %L)', p)) AS sqlstate
  FROM unnest(ARRAY['{"base": 1e20, "cap": 1e20}', '{"cap": 1e400}', '{"base": -1e400}',
                    '{"max_attempts": 1e10}', '{"max_attempts": 1e400}', '{"cap": 31536001}',
                    '[{"cap": 60}, {"cap": 1e20}]']) AS p;
SELECT in_state($$SELECT chrono_forge.retry_policy(3, '100000 years', '100000 years')$$) AS huge_intervals,
       in_state($$SELECT chrono_forge.retry_policy(3, '1 day', '365 days')$$) AS year_cap,
       in_state($$SELECT chrono_forge.retry_backoff('{"base": 1, "cap": 31536000}', 1)$$) AS at_maximum,
       in_state($$SELECT chrono_forge.retry_backoff('{"base": 1e20, "cap": 1e20}', 5)$$) AS backoff_huge,
       in_state($$SELECT chrono_forge.retry_backoff('{"base": 1, "cap": 30}', 5, 'NaN')$$) AS backoff_nan;
-- At most 100 retry_on entries, and 100 policies in a composite.
SELECT in_state(format('SELECT chrono_forge.retry_policy(3, ''1 second'', ''2 seconds'', true, %L)',
                       array_fill('40001'::text, ARRAY[101]))) AS retry_on_101,
       in_state(format('SELECT chrono_forge.retry_policy(3, ''1 second'', ''2 seconds'', true, %L)',
                       array_fill('40001'::text, ARRAY[100]))) AS retry_on_100,
       in_state(format('SELECT chrono_forge.configure(''in_wf'', %L)',
                       (SELECT jsonb_agg('{"cap": 1}'::jsonb) FROM generate_series(1, 101)))) AS composite_101;
-- The backoff is never negative or NaN, whatever the attempt count.
SELECT chrono_forge.retry_backoff('{"base": 31536000, "cap": 31536000, "jitter": false}', 2000000000) AS capped,
       chrono_forge.retry_backoff('{"base": 1, "cap": 30, "jitter": false}', -2147483648) AS min_attempts,
       chrono_forge.retry_backoff('{"base": 0, "cap": 30, "jitter": false}', 5000) AS zero_base,
       chrono_forge.retry_backoff('{"base": 1, "cap": 30}', 3, 1) AS jitter_one;
SELECT in_rows() = rows AS nothing_written FROM in_before;
-- A default stored before the maximum existed decides as if it said the
-- maximum: the next attempt is due within a year, never in the past.
CREATE FUNCTION in_boom() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
CREATE PROCEDURE in_fail_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('in_boom');
END $$;
SELECT chrono_forge.configure('in_fail_wf', chrono_forge.retry_policy(NULL, '1 second', '7 seconds'));
UPDATE chrono_forge.workflow_defaults SET retry_policy = '{"max_attempts": null, "base": 1e20, "cap": 1e20}'
 WHERE retry_policy->>'cap' = '7.000000';
SELECT chrono_forge.start('in_fail_wf', 'legacy') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT w.state, k.due_at > chrono_forge.now() + interval '182 days' AS after_half_a_year,
       k.due_at <= chrono_forge.now() + interval '365 days' AS within_a_year
  FROM chrono_forge.workflows w JOIN chrono_forge.wakeups k ON k.workflow_id = w.id
 WHERE w.key = 'legacy';
DELETE FROM chrono_forge.workflow_defaults WHERE retry_policy->>'cap' = '1e20';

-- cron_next / cron_prev: infinities are CF012; no tick past either end of
-- the timestamp range.
SELECT in_state($$SELECT chrono_forge.cron_prev('* * * * *', '-infinity')$$) AS prev_minus_inf,
       in_state($$SELECT chrono_forge.cron_prev('* * * * *', 'infinity')$$) AS prev_inf,
       in_state($$SELECT chrono_forge.cron_next('* * * * *', 'infinity')$$) AS next_inf,
       in_state($$SELECT chrono_forge.cron_next('* * * * *', '-infinity')$$) AS next_minus_inf;
SELECT chrono_forge.cron_next('* * * * *', '294276-12-31 23:59:00+00') AS past_the_end,
       to_char(chrono_forge.cron_prev('0 0 1 1 *', '4713-06-01 00:00:00+00 BC') AT TIME ZONE 'UTC',
               'YYYY-MM-DD HH24:MI BC') AS first_representable;

-- context_set(NULL, ...) is CF012 (was 22023) in a pass (like an unknown
-- step function, it goes through the workflow-level retries: it may be
-- called from a step); outside a pass CF013, as for every context function.
SELECT in_state($$SELECT chrono_forge.context_set(NULL, '1')$$) AS outside_pass;

-- daily_outcomes() and outcome_days_refresh() are clamped to the days
-- that have ended runs: a window of 300 (or 300,000) years writes and
-- counts what the data holds.
-- (As a role of its own, which sees only its runs.)
DELETE FROM chrono_forge.outcome_days_summarised;
CREATE ROLE in_role;
SET ROLE in_role;
SELECT chrono_forge.start('in_wf', 'done-1') > 0 AS started;
CALL chrono_forge.run_pending();
RESET ROLE;
SET chrono_forge.fake_now = '2030-01-20 12:00:00+00';
SET ROLE in_role;
SELECT count(*) AS days FROM chrono_forge.daily_outcomes('300 years');
SELECT day, completed FROM chrono_forge.daily_outcomes('300000 years');
SELECT count(*) AS summarised FROM chrono_forge.outcome_days_summarised;
-- Still callable by everyone (daily_outcomes() runs as its caller), but
-- clamped: days before the oldest end of any run, or after yesterday,
-- are never summarised.
SELECT chrono_forge.outcome_days_refresh('0001-01-01', '9999-12-31') AS refreshed,
       chrono_forge.outcome_days_refresh('-infinity', 'infinity') AS refreshed_inf;
SELECT count(*) AS summarised FROM chrono_forge.outcome_days_summarised;
RESET ROLE;
-- One refresh summarises at most 366 days (the newest first).
UPDATE chrono_forge.workflows SET ended_at = '2025-01-01 10:00:00+00' WHERE key = 'done-1';
SET ROLE in_role;
SELECT chrono_forge.outcome_days_refresh('2020-01-01', '2030-01-01') AS first_call;
SELECT count(*) AS summarised, min(day) > '2025-01-01' AS newest_first
  FROM chrono_forge.outcome_days_summarised;
-- The days left are counted: the run of 2025-01-01 is there.
SELECT day, completed FROM chrono_forge.daily_outcomes('10 years');
RESET ROLE;
DELETE FROM chrono_forge.outcome_days_summarised;
DELETE FROM chrono_forge.outcome_days;
DELETE FROM chrono_forge.workflows WHERE owner = 'in_role'::regrole;
DROP ROLE in_role;
SET chrono_forge.fake_now = '2030-01-10 12:00:00+00';

-- Inside a pass: a primitive's time out of range (an infinite start_at, a
-- wait past the end of time), an over-long name, an oversized policy or
-- batch: the run fails at once (attempt 1, no workflow-level retries),
-- CF012.  (A NULL context key: CF012, retried.)
CREATE PROCEDURE in_wait_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('100000000 years', 'forever');
END $$;
CREATE FUNCTION in_till() RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE PROCEDURE in_repeat_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('in_step', '1 hour', 'in_till', start_at => 'infinity');
END $$;
CREATE PROCEDURE in_event_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.await_event('e', timeout => '100000000 years');
END $$;
CREATE PROCEDURE in_name_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('in_step', name => in_long(3000));
END $$;
CREATE PROCEDURE in_policy_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('in_step', retry_policy => '{"base": 1e20, "cap": 1e20}');
END $$;
CREATE PROCEDURE in_context_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM chrono_forge.context_set(NULL, '1');
END $$;
CREATE PROCEDURE in_merge_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('b');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['b'], '1 second', '100000000 years');
END $$;
CREATE PROCEDURE in_batch_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('b');
    CALL chrono_forge.spawn_each('s', 'in_wf', 'SELECT 1 AS item_key', batch_size => 2147483647);
END $$;
-- A child's key over 2048 bytes could never be written: the parent
-- fails at dispatch, nothing is left in spawn_batches for a worker to
-- fail on again and again.
CREATE PROCEDURE in_child_key_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('b');
    CALL chrono_forge.spawn_each('s', 'in_wf', 'SELECT in_long(3000) AS item_key');
END $$;
CREATE FUNCTION in_cond() RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE PROCEDURE in_until_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait_until('in_cond', timeout => '100000000 years');
END $$;
CREATE PROCEDURE in_every_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('in_step', '100000000 years', 'in_till');
END $$;
CREATE PROCEDURE in_context_key_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM chrono_forge.context_set(in_long(600), '1');
END $$;
SELECT count(chrono_forge.start(w, 'p')) FROM unnest(ARRAY['in_wait_wf', 'in_repeat_wf', 'in_event_wf',
    'in_name_wf', 'in_policy_wf', 'in_context_wf', 'in_merge_wf', 'in_batch_wf', 'in_child_key_wf',
    'in_context_key_wf', 'in_until_wf', 'in_every_wf']) AS w;
CALL chrono_forge.run_pending();
SELECT w.workflow, w.state, w.attempt, e.error_class,
       left(regexp_replace(e.error_message, '\(\d+ bytes', '(N bytes'), 60) AS error_message
  FROM chrono_forge.workflows w
  LEFT JOIN LATERAL (SELECT * FROM chrono_forge.error_logs e WHERE e.workflow_id = w.id
                      ORDER BY e.id DESC LIMIT 1) e ON true
 WHERE w.key = 'p' ORDER BY w.workflow;
SELECT count(*) AS batches FROM chrono_forge.spawn_batches;
SELECT w.workflow, count(e.id) AS errors
  FROM chrono_forge.workflows w LEFT JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.key = 'p' GROUP BY 1 ORDER BY 1;

-- Views: an interval reaching past either end of time is "all time" (or
-- "none"), not 22008.
SELECT in_state($$SELECT * FROM chrono_forge.top_errors('100000000 years')$$) AS top_errors_huge,
       in_state($$SELECT * FROM chrono_forge.top_errors('-100000000 years')$$) AS top_errors_negative,
       in_state($$SELECT * FROM chrono_forge.stranded('100000000 years')$$) AS stranded_huge,
       in_state($$SELECT * FROM chrono_forge.stranded('-100000000 years')$$) AS stranded_negative;
SELECT count(*) > 0 AS all_time FROM chrono_forge.top_errors('100000000 years');

-- Documented, not CF012 (README, "Errors"): a negative limit given to a
-- view (2201W), a cap of 2147483647 (22003), reap_stalled() past the
-- timestamp range (22008).
SELECT in_state($$SELECT * FROM chrono_forge.waiting(max_rows => -1)$$) AS waiting,
       in_state($$SELECT * FROM chrono_forge.top_errors(sample => -1)$$) AS top_errors,
       in_state($$SELECT * FROM chrono_forge.overview(2147483647)$$) AS overview,
       in_state($$SELECT chrono_forge.reap_stalled('100000000 years')$$) AS reap_stalled;

-- JSON a run keeps is at most 1 MB as jsonb (CF012, nothing written):
-- start() args and options, schedule() args, an event payload; spawn args
-- inside a pass fail the run at once.
DELETE FROM chrono_forge.workflows;
CREATE TEMP TABLE in_json_before AS SELECT in_rows() AS rows;
CREATE FUNCTION in_big() RETURNS jsonb LANGUAGE sql AS
    $$ SELECT jsonb_build_object('x', repeat('x', 1100000)) $$;
SELECT in_state($$SELECT chrono_forge.start('in_wf', 'big', in_big())$$) AS start_args,
       in_state($$SELECT chrono_forge.start('in_wf', 'big', '{}', in_big())$$) AS start_options,
       in_state($$SELECT chrono_forge.schedule('big', '* * * * *', 'in_wf', in_big())$$) AS schedule_args;
SELECT chrono_forge.start('in_wf', 'small', jsonb_build_object('x', repeat('x', 1000000))) > 0 AS just_under;
SELECT in_state($$SELECT chrono_forge.send_event('in_wf', 'small', 'e', in_big())$$) AS event_payload;
DELETE FROM chrono_forge.workflows;
SELECT rows = in_rows() AS nothing_written FROM in_json_before;
CREATE PROCEDURE in_big_spawn_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('b');
    CALL chrono_forge.spawn('s', 'in_wf', in_big());
END $$;
SELECT chrono_forge.start('in_big_spawn_wf', 'p') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT w.state, w.attempt, e.error_class, e.error_message
  FROM chrono_forge.workflows w JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.workflow = 'public.in_big_spawn_wf';
