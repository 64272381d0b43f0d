-- Observability: each view and function on a small fixture.  Runs that
-- the engine can produce today are real; branches and repeats (issues 6
-- and 5) are inserted as rows in their documented shape.
-- Start from no runs (earlier suites in this database leave theirs).
DELETE FROM chrono_forge.workflows;
SET chrono_forge.fake_now = '2030-01-10 12:00:00+00';
CREATE FUNCTION vw_ok() RETURNS jsonb LANGUAGE sql AS $$ SELECT '{"ok": true}'::jsonb $$;
CREATE FUNCTION vw_boom() RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'P0001'; END $$;
CREATE FUNCTION vw_no() RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE PROCEDURE vw_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('vw_ok');
    IF args ? 'stall' THEN
        CALL chrono_forge.durably_execute('vw_boom', retry_policy => chrono_forge.retry_policy(2, '1 second', jitter => false));
    END IF;
    IF args ? 'until' THEN CALL chrono_forge.wait_until('vw_no', '1 day', '10 minutes'); END IF;
    IF args ? 'gate' THEN CALL chrono_forge.continue_if('vw_no', 'gate'); END IF;
    IF args ? 'event' THEN CALL chrono_forge.await_event('paid', timeout => '2 days'); END IF;
    IF args ? 'fail' THEN PERFORM vw_boom(); END IF;
END $$;
CREATE PROCEDURE vw_other(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('vw_ok');
END $$;
SELECT chrono_forge.configure('vw_wf', chrono_forge.retry_policy(1));

-- Day 1 (2030-01-08): 3 completed, 1 failed.  Day 2: 1 completed.
SET chrono_forge.fake_now = '2030-01-08 09:00:00+00';
SELECT count(chrono_forge.start('vw_wf', 'done-' || i)) FROM generate_series(1, 3) i;
SELECT chrono_forge.start('vw_wf', 'failed-1', '{"fail": 1}') > 0 AS ok;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-09 09:00:00+00';
SELECT chrono_forge.start('vw_other', 'other-1') > 0 AS ok;
CALL chrono_forge.run_pending();
-- Now: a stalled run (step failed twice), runs parked on wait_until,
-- continue_if, an event.
SET chrono_forge.fake_now = '2030-01-10 10:00:00+00';
SELECT chrono_forge.start('vw_wf', 'stalled-1', '{"stall": 1}') > 0 AS ok;
SELECT chrono_forge.start('vw_wf', 'until-1', '{"until": 1}') > 0 AS ok;
SELECT chrono_forge.start('vw_wf', 'gate-1', '{"gate": 1}') > 0 AS ok;
SELECT chrono_forge.start('vw_wf', 'event-1', '{"event": 1}') > 0 AS ok;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-10 10:00:05+00';
CALL chrono_forge.run_pending();
-- A run whose pass holds its lock for an hour (stranded) and one locked
-- a minute ago (not stranded).
SET chrono_forge.fake_now = '2030-01-10 11:00:00+00';
SELECT chrono_forge.start('vw_other', 'stuck-1') AS stuck_id \gset
SELECT (chrono_forge.acquire_lock(:stuck_id, 'w1:dead', '1 day')).state;
SET chrono_forge.fake_now = '2030-01-10 11:59:00+00';
SELECT chrono_forge.start('vw_other', 'busy-1') AS busy_id \gset
SELECT (chrono_forge.acquire_lock(:busy_id, 'w2:alive', '1 day')).state;
SET chrono_forge.fake_now = '2030-01-10 12:00:00+00';

-- Overview: per workflow and state, capped.
SELECT * FROM chrono_forge.overview();
SELECT * FROM chrono_forge.overview(cap => 2);
SELECT * FROM chrono_forge.overview WHERE workflow = 'public.vw_other';

-- Run list: newest first, filters, keyset pages.
SELECT key, state, duration, stranded FROM chrono_forge.runs();
SELECT key FROM chrono_forge.runs(state => 'blocked');
SELECT key FROM chrono_forge.runs(state => 'in_flight', workflow => 'public.vw_wf');
SELECT key FROM chrono_forge.runs(key_prefix => 'done-');
SELECT key FROM chrono_forge.runs(key_prefix => 'one-');
-- A prefix, not a pattern: _ and % are literal.
SELECT key FROM chrono_forge.runs(key_prefix => 'done_');
SELECT key FROM chrono_forge.runs(key_prefix => '%');
SELECT key FROM chrono_forge.runs(created_from => '2030-01-09', created_to => '2030-01-10');
SELECT key FROM chrono_forge.runs(page_size => 3);
SELECT key FROM chrono_forge.runs(page_size => 3,
    before_id => (SELECT min(id) FROM chrono_forge.runs(page_size => 3)));
SELECT key FROM chrono_forge.runs(state => 'completed', page_size => 2,
    before_id => (SELECT id FROM chrono_forge.workflows WHERE key = 'done-3'));
SELECT * FROM chrono_forge.run_counts();
SELECT * FROM chrono_forge.run_counts(workflow => 'public.vw_wf', cap => 2);
SELECT key FROM chrono_forge.runs(state => 'sleeping');
SELECT key FROM chrono_forge.runs(page_size => 0);
SELECT key FROM chrono_forge.branch_children('vw_wf', 'parent', 'a', page_size => 5000);

-- Timeline: steps in order with attempts, durations, results, errors.
SELECT seq, step_name, kind, state, attempts, duration, result, error_class,
       jsonb_path_query_array(errors, '$[*].error_class') AS errors
  FROM chrono_forge.timeline('vw_wf', 'stalled-1');
SELECT seq, regexp_replace(step_name, '[0-9]+$', 'N') AS step_name, kind, state,
       jsonb_array_length(errors) AS errors
  FROM chrono_forge.timeline('vw_wf', 'failed-1');
SELECT * FROM chrono_forge.timeline('vw_wf', 'nope');

-- Waiting: wait_until, continue_if, events, oldest first, for how long.
SELECT key, step_name, kind, waiting_since, waiting_for, timeout_at, next_check_at
  FROM chrono_forge.waiting();
SELECT key FROM chrono_forge.waiting_runs;

-- Stranded: running with a lock older than the threshold.
SELECT key, locked_by, lock_age FROM chrono_forge.stranded();
SELECT key FROM chrono_forge.stranded('30 seconds');
SELECT key FROM chrono_forge.stranded_runs;

-- Failure analytics: per day, rates, spikes; top errors.
SELECT * FROM chrono_forge.daily_outcomes();
SELECT * FROM chrono_forge.daily_outcomes('7 days', 'public.vw_other');
SELECT * FROM chrono_forge.daily_outcomes('1 day');
SELECT * FROM chrono_forge.daily_outcomes('0');
SELECT error_class, errors, runs, example_message FROM chrono_forge.top_errors();
SELECT error_class, errors FROM chrono_forge.top_errors(workflow => 'public.vw_other');

-- Branches, children, breadcrumb (fixture in the fan-out data model).
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, started_at)
VALUES ('public.vw_wf', 'parent', 'public.vw_wf', 'idle', 'postgres', '2030-01-10 09:00+00');
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state, started_at, metadata)
SELECT id, v.step, v.state::chrono_forge.step_state, '2030-01-10 09:00+00', v.metadata::jsonb
  FROM chrono_forge.workflows w,
       (VALUES ('branch$a', 'completed', '{"poll": {"last_polled_at": "2030-01-10T11:50:00Z", "next_poll_at": "2030-01-10T11:55:00Z", "interval": 300, "pending": 3, "never_started": 1, "spawned": 5, "sealed": true, "rate": 0.5, "eta_seconds": 6, "polls": 4}}'),
               ('branch$b', 'completed', '{"poll": {"last_polled_at": "2030-01-10T11:59:00Z", "next_poll_at": "2030-01-10T12:04:00Z", "pending": 0, "spawned": 1, "polls": 2}}'),
               ('branch$c', 'pending', NULL),
               ('merge$a,b', 'pending', '{}'),
               ('merge$b', 'completed', '{}')) v(step, state, metadata)
 WHERE w.key = 'parent';
-- branch a: 5 children: completed, failed, stalled, idle never started, running.
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, started_at, parent_execution_log_id)
SELECT 'public.vw_other', 'parent$a$c' || i, 'public.vw_other', s::chrono_forge.workflow_state, 'postgres',
       CASE WHEN s <> 'idle' THEN timestamptz '2030-01-10 09:30+00' END,
       (SELECT id FROM chrono_forge.execution_logs WHERE step_name = 'branch$a')
  FROM unnest(ARRAY['completed', 'failed', 'stalled', 'idle', 'running']) WITH ORDINALITY AS u(s, i);
UPDATE chrono_forge.workflows SET locked_by = 'w3', locked_at = '2030-01-10 11:59:30' WHERE key = 'parent$a$c5';
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, started_at, parent_execution_log_id)
SELECT 'public.vw_other', 'parent$b$c1', 'public.vw_other', 'completed', 'postgres', '2030-01-10 09:30+00',
       (SELECT id FROM chrono_forge.execution_logs WHERE step_name = 'branch$b');
-- A grandchild under c3's own branch.
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state)
SELECT id, 'branch$deep', 'pending' FROM chrono_forge.workflows WHERE key = 'parent$a$c3';
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, parent_execution_log_id)
SELECT 'public.vw_other', 'parent$a$c3$deep$g1', 'public.vw_other', 'idle', 'postgres',
       (SELECT id FROM chrono_forge.execution_logs WHERE step_name = 'branch$deep');

SELECT branch, sealed, merged, merge_step, spawned, pending, never_started, blocked,
       last_polled_at, next_poll_at, polls, rate, eta_seconds, poll_overdue
  FROM chrono_forge.branches('vw_wf', 'parent');
-- Without poll state, live capped counts.
UPDATE chrono_forge.execution_logs SET metadata = NULL WHERE step_name = 'branch$a';
SELECT branch, spawned, pending, never_started, blocked, poll_overdue
  FROM chrono_forge.branches('vw_wf', 'parent', cap => 3);
SELECT count(*) FROM chrono_forge.branches('vw_wf', 'done-1');

SELECT blocked, key, state FROM chrono_forge.branch_children('vw_wf', 'parent', 'a');
SELECT blocked, key, state FROM chrono_forge.branch_children('vw_wf', 'parent', 'a', 'blocked');
SELECT blocked, key, state FROM chrono_forge.branch_children('vw_wf', 'parent', 'a', page_size => 2);
SELECT blocked, key, state FROM chrono_forge.branch_children('vw_wf', 'parent', 'a', page_size => 2,
    after_blocked => true, after_id => (SELECT id FROM chrono_forge.workflows WHERE key = 'parent$a$c3'));
SELECT blocked, key, state FROM chrono_forge.branch_children('vw_wf', 'parent', 'a', page_size => 2,
    after_blocked => false, after_id => (SELECT id FROM chrono_forge.workflows WHERE key = 'parent$a$c1'));
SELECT key FROM chrono_forge.branch_children('vw_wf', 'parent', 'zz');

SELECT depth, workflow, key, state, branch FROM chrono_forge.parent_chain('vw_other', 'parent$a$c3$deep$g1');
SELECT count(*) FROM chrono_forge.parent_chain('vw_wf', 'parent');
-- Children are hidden from the run list unless asked for.
SELECT count(*) AS top_level FROM chrono_forge.runs(page_size => 1000);
SELECT count(*) AS with_children FROM chrono_forge.runs(include_children => true, page_size => 1000);

-- Periodic tasks (fixture in the durably_repeat data model): a task
-- every hour, last tick 09:00, next tick 10:00 (two hours late), one
-- catch-up summary of 3 skipped ticks, one failed tick.
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner)
VALUES ('public.vw_wf', 'ticker', 'public.vw_wf', 'idle', 'postgres');
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state, started_at, metadata, error_class)
SELECT w.id, v.step, v.state::chrono_forge.step_state, v.started::timestamptz, v.metadata::jsonb, v.err
  FROM chrono_forge.workflows w,
       (VALUES ('durably_repeat$poll', 'pending', '2030-01-10 03:00+00', '{"anchor": "2030-01-10T03:00:00Z", "every": "01:00:00", "timeout": "01:00:00", "last_execution_at": "2030-01-10T09:00:00Z"}', NULL),
               ('durably_repeat$poll$1894251600', 'failed', '2030-01-10 07:00+00', '{"scheduled_for": "2030-01-10T03:00:00Z", "fast_forwarded": 3, "from": "2030-01-10T03:00:00Z", "to": "2030-01-10T05:00:00Z"}', 'CF016'),
               ('durably_repeat$poll$1894262400', 'failed', '2030-01-10 07:00+00', '{"scheduled_for": "2030-01-10T06:00:00Z"}', 'P0001'),
               ('durably_repeat$poll$1894266000', 'completed', '2030-01-10 07:00:30+00', '{"scheduled_for": "2030-01-10T07:00:00Z"}', NULL),
               ('durably_repeat$poll$1894269600', 'completed', '2030-01-10 08:00:10+00', '{"scheduled_for": "2030-01-10T08:00:00Z"}', NULL),
               ('durably_repeat$poll$1894273200', 'completed', '2030-01-10 09:00:20+00', '{"scheduled_for": "2030-01-10T09:00:00Z"}', NULL),
               ('durably_repeat$poll$1894276800', 'pending', '2030-01-10 09:00:20+00', '{"scheduled_for": "2030-01-10T10:00:00Z"}', NULL)) v(step, state, started, metadata, err)
 WHERE w.key = 'ticker';
SELECT key, task, state, every, last_tick_at, next_tick_at, late_by, missed_ticks, failed_ticks, avg_lateness
  FROM chrono_forge.periodic_health();
SELECT key, task FROM chrono_forge.periodic_tasks;
SELECT count(*) FROM chrono_forge.periodic_health('vw_wf', 'done-1');
SELECT step_name, state, repetitions FROM chrono_forge.timeline('vw_wf', 'ticker');

-- daily_outcomes() over closed days reads their summary (outcome_days),
-- and stays exact when runs of a summarised day are retried, cancelled
-- after failing, or cleaned up.  (Days in the real past: a day is
-- summarised once it has closed by the real clock.)  outcomes_exact()
-- compares a call with a direct count; read-only, so that it sees the
-- summaries and notes as the change left them.
CREATE FUNCTION pg_temp.outcomes_exact(window_ interval) RETURNS boolean LANGUAGE sql AS $$
    WITH f AS (SELECT day, completed, failed, cancelled FROM chrono_forge.daily_outcomes(window_)),
    r AS (SELECT pg_catalog.timezone('UTC', w.ended_at)::date AS day,
                 count(*) FILTER (WHERE w.state = 'completed') AS completed,
                 count(*) FILTER (WHERE w.state = 'failed') AS failed,
                 count(*) FILTER (WHERE w.state = 'cancelled') AS cancelled
            FROM chrono_forge.workflows w
           WHERE w.ended_at > chrono_forge.now() - window_ AND w.ended_at <= chrono_forge.now()
           GROUP BY 1)
    SELECT NOT EXISTS ((TABLE f EXCEPT TABLE r) UNION ALL (TABLE r EXCEPT TABLE f)) $$;
SET chrono_forge.fake_now = '2026-01-05 10:00:00+00';
SELECT count(chrono_forge.start('vw_other', 'sum-' || i)) FROM generate_series(1, 3) i;
SELECT count(chrono_forge.start('vw_wf', 'sum-failed-' || i, '{"fail": 1}')) FROM generate_series(1, 2) i;
CALL chrono_forge.run_pending();
CREATE ROLE vw_sum_role;
SET ROLE vw_sum_role;
SELECT chrono_forge.start('vw_other', 'sum-role-1') > 0 AS ok;
CALL chrono_forge.run_pending();
RESET ROLE;
SET chrono_forge.fake_now = '2026-01-08 12:00:00+00';
-- A read-only transaction counts every day and summarises nothing; nor
-- does one above READ COMMITTED (its snapshot may predate what it would
-- check).
BEGIN READ ONLY;
SELECT * FROM chrono_forge.daily_outcomes('7 days');
COMMIT;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM chrono_forge.daily_outcomes('7 days');
SELECT count(*) FROM chrono_forge.overview;
COMMIT;
SELECT count(*) FROM chrono_forge.outcome_days_summarised WHERE day < '2027-01-01';
-- The first call summarises the window's closed days from the oldest
-- end of a run (01-05 .. 01-07), the next ones read them.
SELECT * FROM chrono_forge.daily_outcomes('7 days');
SELECT day FROM chrono_forge.outcome_days_summarised WHERE day < '2027-01-01' ORDER BY day;
SELECT day, workflow, owner, completed, failed, cancelled FROM chrono_forge.outcome_days ORDER BY 1, 2;
SELECT count(*) AS notes FROM chrono_forge.outcome_days_changed;
SELECT pg_temp.outcomes_exact('7 days') AS exact;
-- A retry takes a run out of a summarised day (noted); it fails again today.
SELECT chrono_forge.retry('vw_wf', 'sum-failed-1');
SELECT day, owner FROM chrono_forge.outcome_days_changed;
CALL chrono_forge.run_pending();
-- (Read-only: the noted day is counted, not summarised again.)
BEGIN READ ONLY;
SELECT pg_temp.outcomes_exact('7 days') AS exact;
COMMIT;
SELECT * FROM chrono_forge.daily_outcomes('7 days');
SELECT count(*) AS notes FROM chrono_forge.outcome_days_changed WHERE day = '2026-01-05';
-- Cancelled after it failed: the day's failure becomes a cancellation.
SELECT chrono_forge.cancel('vw_wf', 'sum-failed-2');
BEGIN READ ONLY;
SELECT pg_temp.outcomes_exact('7 days') AS exact;
COMMIT;
SELECT * FROM chrono_forge.daily_outcomes('7 days');
SELECT day, workflow, completed, failed, cancelled FROM chrono_forge.outcome_days ORDER BY 1, 2;
-- Each role sees the counts of its runs only.
SET ROLE vw_sum_role;
SELECT * FROM chrono_forge.daily_outcomes('7 days');
SELECT day, workflow, completed FROM chrono_forge.outcome_days;
RESET ROLE;
-- overview() finds a role's workflows from its (workflow, owner) pairs
-- and from its runs past their horizon; the pairs are added once 1,000
-- runs are past it.  Without the pairs (forgotten here; a read-only
-- transaction adds none) the same grid.
SET ROLE vw_sum_role;
SELECT * FROM chrono_forge.overview;
SELECT count(*) FROM chrono_forge.workflow_owners;
RESET ROLE;
INSERT INTO chrono_forge.workflows (workflow, key, procedure, owner)
SELECT 'vw_bulk', 'bulk-' || i, 'public.vw_other', current_user::regrole FROM generate_series(1, 1000) i;
SET ROLE vw_sum_role;
SELECT * FROM chrono_forge.overview;
SELECT workflow FROM chrono_forge.workflow_owners;
RESET ROLE;
SELECT owner, workflow FROM chrono_forge.workflow_owners WHERE workflow LIKE '%vw\_%' ORDER BY 1, 2;
DELETE FROM chrono_forge.workflow_owners;
UPDATE chrono_forge.workflow_owners_horizon SET last_id = 0, candidate = NULL, candidate_at = NULL;
SET ROLE vw_sum_role;
BEGIN READ ONLY;
SELECT * FROM chrono_forge.overview;
SELECT count(*) FROM chrono_forge.workflow_owners;
COMMIT;
RESET ROLE;
BEGIN READ ONLY;
SELECT * FROM chrono_forge.overview;
COMMIT;
SELECT * FROM chrono_forge.overview;
-- repeat_ticks(), periodic_health()'s summary of the tasks' latest ticks,
-- answers only for the tasks the caller can see.
SELECT id AS poll_id FROM chrono_forge.execution_logs WHERE step_name = 'durably_repeat$poll' \gset
SELECT next_at, missed, failed, avg_late FROM chrono_forge.repeat_ticks(ARRAY[:poll_id], 20);
SELECT next_at, missed, failed, avg_late FROM chrono_forge.repeat_ticks(ARRAY[:poll_id], 2);
SET ROLE vw_sum_role;
SELECT count(*) AS seen FROM chrono_forge.repeat_ticks(ARRAY[:poll_id], 20);
RESET ROLE;
-- Its tick times read as the SQL cast reads them, whatever their form.
INSERT INTO chrono_forge.workflows (workflow, key, procedure, owner)
VALUES ('public.vw_wf', 'ticker-2', 'public.vw_wf', current_user::regrole);
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state, metadata, started_at)
SELECT w.id, v.step, v.state::chrono_forge.step_state, v.metadata::jsonb, v.started::timestamptz
  FROM chrono_forge.workflows w,
       (VALUES ('durably_repeat$p2', 'pending', '{}', NULL),
               ('durably_repeat$p2$1894240000', 'completed', '{"scheduled_for": "2030-01-10T00:00:00.25+00:00"}', '2030-01-10 00:00:01+00'),
               ('durably_repeat$p2$1894243600', 'completed', '{"scheduled_for": "2030-01-10T03:00:00+02:00"}', '2030-01-10 01:00:03+00'),
               ('durably_repeat$p2$1894247200', 'completed', '{"scheduled_for": "2030-01-10 02:00:00.5Z"}', '2030-01-10 02:00:07+00'),
               ('durably_repeat$p2$1894250800', 'completed', '{"scheduled_for": "2030-01-10T03:00:00.1234567Z"}', '2030-01-10 03:00:02+00'),
               ('durably_repeat$p2$1894254400', 'pending', '{"scheduled_for": "2030-01-10T04:00:00.123456Z"}', NULL)) v(step, state, metadata, started)
 WHERE w.key = 'ticker-2';
SELECT f.next_at = s.next_at AS same_next, f.avg_late = s.avg_late AS same_lateness, f.avg_late
  FROM chrono_forge.execution_logs c
 CROSS JOIN chrono_forge.repeat_ticks(ARRAY[c.id], 20) f
 CROSS JOIN LATERAL (
      SELECT max((t.metadata->>'scheduled_for')::timestamptz) FILTER (WHERE t.state = 'pending') AS next_at,
             avg(t.started_at - (t.metadata->>'scheduled_for')::timestamptz) FILTER (WHERE t.state = 'completed') AS avg_late
        FROM chrono_forge.execution_logs t
       WHERE t.workflow_id = c.workflow_id AND starts_with(t.step_name, 'durably_repeat$p2$')) s
 WHERE c.step_name = 'durably_repeat$p2';
-- Cleanup deletes the runs of 2026-01-05 (ended more than 2 days ago).
SELECT chrono_forge.cleanup(older_than => '2 days') ->> 'workflows' AS cleaned;
BEGIN READ ONLY;
SELECT pg_temp.outcomes_exact('7 days') AS exact;
COMMIT;
SELECT * FROM chrono_forge.daily_outcomes('7 days');
SELECT count(*) FROM chrono_forge.outcome_days;
-- (Runs deleted by hand, not by cleanup(): forget the summaries.)
DELETE FROM chrono_forge.outcome_days_summarised;
DROP ROLE vw_sum_role;

-- Leave no runs behind.
RESET ROLE;
DELETE FROM chrono_forge.workflows;
DELETE FROM chrono_forge.workflow_defaults;

-- The views' workflow filter takes any spelling of the procedure, on the
-- caller's search_path, as start() does (runs are stored under the
-- canonical name): unqualified, qualified, another case.
CREATE SCHEMA vw_app;
CREATE FUNCTION vw_app.st() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION vw_app.bad() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'bad' USING ERRCODE = 'ZZ002'; END $$;
CREATE PROCEDURE vw_app.spelled(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('vw_app.st');
    CALL chrono_forge.durably_execute('vw_app.bad', retry_policy => '{"max_attempts": 1}');
END $$;
SET search_path = vw_app, public;
SELECT chrono_forge.start('spelled', 's1') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT f, (SELECT count(*) FROM chrono_forge.runs(workflow => f)) AS runs,
       (SELECT runs FROM chrono_forge.run_counts(f) WHERE state = 'stalled') AS stalled,
       (SELECT count(*) FROM chrono_forge.top_errors('1000 years', f)) AS error_classes
  FROM unnest(ARRAY['spelled', 'vw_app.spelled', 'VW_APP.Spelled', '"vw_app"."spelled"']) f;
SELECT chrono_forge.cancel('spelled', 's1') AS cancelled;
SELECT f, (SELECT sum(cancelled) FROM chrono_forge.daily_outcomes('1000 years', f)) AS cancelled
  FROM unnest(ARRAY['spelled', 'vw_app.spelled', 'VW_APP.Spelled', '"vw_app"."spelled"']) f;
RESET search_path;
DELETE FROM chrono_forge.workflows;
DROP SCHEMA vw_app CASCADE;
