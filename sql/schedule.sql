-- Schedules: pg_cron jobs that start one run per tick; catch-up after
-- downtime per policy; bad input; who may fire and remove a schedule.
-- schedule_fire() is called here as pg_cron's jobs would, with fake_now.
SET TimeZone = 'UTC';
SET chrono_forge.fake_now = '2030-01-01 12:00:00+00';
CREATE TABLE sc_log (key text, args jsonb);
CREATE PROCEDURE sc_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sc_log VALUES (chrono_forge.key(), args);
END $$;
CREATE VIEW sc_runs AS
SELECT key, state, options->>'scheduled_for' AS scheduled_for, owner
  FROM chrono_forge.workflows WHERE workflow = 'public.sc_wf' ORDER BY key;

-- Without pg_cron in this database: a clear error, nothing written.
SELECT chrono_forge.schedule('nightly', '0 3 * * *', 'sc_wf');
CREATE EXTENSION pg_cron;

-- Bad input: its own SQLSTATE each, nothing written.
\set VERBOSITY sqlstate
SELECT chrono_forge.schedule('bad', 'bogus', 'sc_wf');
SELECT chrono_forge.schedule('bad', '0 0 30 2 *', 'sc_wf');
SELECT chrono_forge.schedule('bad', '@reboot', 'sc_wf');
SELECT chrono_forge.schedule('bad', '0 3 * * *', 'sc_missing');
SELECT chrono_forge.schedule('bad', '0 3 * * *', 'sc_wf', '[1]');
SELECT chrono_forge.schedule('bad', '0 3 * * *', 'sc_wf', catch_up => 'some');
SELECT chrono_forge.schedule('', '0 3 * * *', 'sc_wf');
SELECT chrono_forge.schedule(NULL, '0 3 * * *', 'sc_wf');
\set VERBOSITY default
SELECT chrono_forge.schedule('bad', '0 3 * * *', 'sc_wf', catch_up => 'some');
SELECT (SELECT count(*) FROM chrono_forge.schedules) AS schedules, (SELECT count(*) FROM cron.job) AS jobs;

-- A nightly schedule: two pg_cron jobs (the ticks, and catch-up when
-- pg_cron starts), owned by the caller; the last tick handled is the
-- latest one before creation, so nothing past runs.
SELECT chrono_forge.schedule('nightly', '0 3 * * *', 'sc_wf', '{"report": "sales"}') > 0 AS scheduled;
-- (Jobs are named by the schedule's id: pg_cron truncates names to 63 bytes.)
SELECT jobname = 'chrono_forge:' || s.id || CASE WHEN j.jobid = s.reboot_jobid THEN ':reboot' ELSE '' END AS named_by_id,
       schedule, command, username = current_user AS mine
  FROM cron.job j JOIN chrono_forge.schedules s ON j.jobid IN (s.jobid, s.reboot_jobid) ORDER BY j.jobid;
SELECT name, cron, workflow, args, catch_up, last_tick, next_tick, last_run_id, runs_started
  FROM chrono_forge.schedule_status;
\set VERBOSITY sqlstate
SELECT chrono_forge.schedule('nightly', '0 4 * * *', 'sc_wf');
\set VERBOSITY default
SELECT count(*) AS jobs_after_duplicate FROM cron.job;

-- Fired before the next tick: nothing.  At the tick: one run, keyed by
-- the schedule and the tick.  Fired twice: still one run.
SELECT chrono_forge.schedule_fire('nightly');
SET chrono_forge.fake_now = '2030-01-02 03:00:04+00';
SELECT chrono_forge.schedule_fire('nightly');
SELECT chrono_forge.schedule_fire('nightly');
SELECT * FROM sc_runs;
SELECT options FROM chrono_forge.workflows WHERE key = 'nightly@2030-01-02T03:00Z';
-- Even with its bookkeeping lost, a tick's run is started once: the run
-- key is the tick's.
UPDATE chrono_forge.schedules SET last_tick = '2030-01-01 03:00:00+00' WHERE name = 'nightly';
SELECT chrono_forge.schedule_fire('nightly');
SELECT count(*) AS runs_of_the_tick FROM sc_runs WHERE key = 'nightly@2030-01-02T03:00Z';
-- The job's own command does the same.
SET chrono_forge.fake_now = '2030-01-03 03:00:01+00';
SELECT command FROM cron.job WHERE jobid = (SELECT jobid FROM chrono_forge.schedules WHERE name = 'nightly') \gexec
CALL chrono_forge.run_pending();
SELECT * FROM sc_runs;
SELECT * FROM sc_log ORDER BY key;
SELECT name, last_tick, next_tick, last_run_state, runs_started FROM chrono_forge.schedule_status;

-- Downtime: hourly schedules created at 00:00, the server back at 05:30.
-- At pg_cron's start the reboot job applies each policy to the missed
-- ticks 01:00-05:00: none skips them, latest starts 05:00, all starts
-- them all.  Then the 06:00 tick fires as usual.
SET chrono_forge.fake_now = '2030-01-05 00:00:00+00';
SELECT chrono_forge.schedule('h_' || p, '0 * * * *', 'sc_wf', catch_up => p) > 0 AS scheduled
  FROM unnest(ARRAY['none', 'latest', 'all']) p;
SET chrono_forge.fake_now = '2030-01-05 05:30:00+00';
SELECT name, chrono_forge.schedule_fire(name, reboot => true) AS started
  FROM chrono_forge.schedules WHERE name LIKE 'h\_%' ORDER BY name;
SELECT * FROM sc_runs WHERE key LIKE 'h\_%';
SELECT name, last_tick, next_tick FROM chrono_forge.schedule_status WHERE name LIKE 'h\_%' ORDER BY name;
SET chrono_forge.fake_now = '2030-01-05 06:00:02+00';
SELECT name, chrono_forge.schedule_fire(name) AS started
  FROM chrono_forge.schedules WHERE name LIKE 'h\_%' ORDER BY name;
SELECT key FROM sc_runs WHERE key LIKE 'h\_%' AND key LIKE '%T06:00Z';

-- The reboot job leaves the current minute's tick to the regular job.
SET chrono_forge.fake_now = '2030-01-05 07:00:10+00';
SELECT chrono_forge.schedule_fire('h_all', reboot => true) AS at_reboot,
       chrono_forge.schedule_fire('h_all') AS regular;
-- A regular firing that finds missed ticks (pg_cron was not running):
-- 'all' starts them too, 'latest' only the current tick.
SET chrono_forge.fake_now = '2030-01-05 10:00:03+00';
SELECT chrono_forge.schedule_fire('h_all') AS all_started,
       chrono_forge.schedule_fire('h_latest') AS latest_started;
-- 'all' starts at most chrono_forge.max_catch_up_runs ticks, the newest.
SET chrono_forge.max_catch_up_runs = 3;
SET chrono_forge.fake_now = '2030-01-06 10:30:00+00';
SELECT chrono_forge.schedule_fire('h_all', reboot => true) AS started;
SELECT key FROM sc_runs WHERE key LIKE 'h\_all@2030-01-06%';
RESET chrono_forge.max_catch_up_runs;

-- Who may see, fire and remove a schedule: its owner (a superuser may
-- remove it too); not even a member of the owner's role.
-- pg_cron lets a role schedule once granted its schema.
CREATE ROLE sc_alice;
CREATE ROLE sc_bob;
GRANT sc_alice TO sc_bob;
GRANT USAGE ON SCHEMA cron TO sc_alice, sc_bob;
GRANT INSERT, SELECT ON sc_log TO sc_alice, sc_bob;
SET ROLE sc_alice;
SELECT chrono_forge.schedule('alice_job', '*/5 * * * *', 'sc_wf') > 0 AS scheduled;
SELECT name, owner FROM chrono_forge.schedule_status;
RESET ROLE;
SET chrono_forge.fake_now = '2030-01-06 10:35:00+00';
SET ROLE sc_alice;
SELECT chrono_forge.schedule_fire('alice_job');
SET ROLE sc_bob;
SELECT name FROM chrono_forge.schedule_status;  -- a member sees it
\set VERBOSITY sqlstate
SELECT chrono_forge.schedule_fire('alice_job');
SELECT chrono_forge.unschedule('alice_job');
\set VERBOSITY default
SELECT chrono_forge.unschedule('alice_job');
RESET ROLE;
SELECT key, owner FROM sc_runs WHERE key LIKE 'alice%';
-- Even a superuser does not start runs of alice's schedule as itself.
\set VERBOSITY sqlstate
SELECT chrono_forge.schedule_fire('alice_job');
\set VERBOSITY default
SET ROLE sc_alice;
SELECT chrono_forge.unschedule('alice_job');
SELECT chrono_forge.schedule('alice_job2', '0 * * * *', 'sc_wf') > 0 AS scheduled;
RESET ROLE;
SELECT chrono_forge.unschedule('alice_job2');  -- a superuser may remove it
SELECT count(*) AS alice_jobs FROM cron.job WHERE username = 'sc_alice';

-- unschedule: the schedule and its jobs go; an unknown name is an error.
SELECT chrono_forge.unschedule(name) FROM chrono_forge.schedules ORDER BY name;
SELECT (SELECT count(*) FROM chrono_forge.schedules) AS schedules, (SELECT count(*) FROM cron.job) AS jobs;
\set VERBOSITY sqlstate
SELECT chrono_forge.unschedule('nightly');
SELECT chrono_forge.schedule_fire('nightly');
\set VERBOSITY default
-- A job removed by hand does not block unschedule.
SELECT chrono_forge.schedule('manual', '0 3 * * *', 'sc_wf') > 0 AS scheduled;
SELECT cron.unschedule((SELECT jobid FROM chrono_forge.schedules WHERE name = 'manual'));
SELECT chrono_forge.unschedule('manual');
SELECT (SELECT count(*) FROM chrono_forge.schedules) AS schedules, (SELECT count(*) FROM cron.job) AS jobs;
DROP EXTENSION pg_cron;

-- Leave nothing behind for the suites that follow.
DROP VIEW sc_runs;
DELETE FROM chrono_forge.workflows WHERE workflow = 'public.sc_wf';
