#!/usr/bin/env bash
# Schedules with the real pg_cron: a schedule firing every minute starts
# exactly one run per tick, and the runs complete; after a restart the
# reboot jobs catch up missed ticks per policy (downtime simulated by
# setting the schedules' last handled tick back five hours).
set -euo pipefail
. "$CF_INTEGRATION_DIR/lib.sh"

q -c "CREATE EXTENSION IF NOT EXISTS pg_cron"
q <<'SQL'
CREATE TABLE sched_log (key text PRIMARY KEY);
CREATE PROCEDURE sched_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sched_log VALUES (chrono_forge.key());
END $$;
SELECT chrono_forge.schedule('every_minute', '* * * * *', 'sched_wf') > 0;
SQL
created_tick=$(q -c "SELECT last_tick FROM chrono_forge.schedules WHERE name = 'every_minute'")

# pg_cron fires at the top of each minute: wait for two runs to complete.
wait_for 150 "SELECT count(*) >= 2 FROM sched_log WHERE key LIKE 'every\_minute@%'"
q -c "SELECT pg_sleep(2)" >/dev/null
# One run per tick: as many runs as minutes since creation, each keyed by
# its own tick, and as many successful firings of the job.
expect_eq "$(q -c "SELECT count(*) = (SELECT extract(epoch FROM last_tick - '$created_tick'::timestamptz) / 60
                                       FROM chrono_forge.schedules WHERE name = 'every_minute')
                   FROM chrono_forge.workflows WHERE workflow = 'public.sched_wf'")" t "one run per tick"
expect_eq "$(q -c "SELECT bool_and(key = 'every_minute@' || to_char((options->>'scheduled_for')::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI\"Z\"'))
                   FROM chrono_forge.workflows WHERE workflow = 'public.sched_wf'")" t "keys name their tick"
expect_eq "$(q -c "SELECT (SELECT count(*) FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                           WHERE j.jobid = (SELECT jobid FROM chrono_forge.schedules WHERE name = 'every_minute')
                             AND d.status = 'succeeded')
                   >= (SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.sched_wf')")" t \
    "each run came from a successful firing"
expect_eq "$(q -c "SELECT bool_and(state = 'completed') FROM chrono_forge.workflows
                   WHERE workflow = 'public.sched_wf' AND key IN (SELECT key FROM sched_log)")" t "runs completed"
# The job fired by hand again for a handled tick starts nothing.
expect_eq "$(q -c "SELECT chrono_forge.schedule_fire('every_minute')")" 0 "duplicate firing"
q -c "SELECT chrono_forge.unschedule('every_minute')" >/dev/null

# Downtime.  Stay clear of the top of the hour, where the hourly jobs fire.
while [ "$(date -u +%M)" = 59 ] || [ "$(date -u +%M)" = 00 ]; do sleep 5; done
q <<'SQL'
SELECT chrono_forge.schedule('hourly_' || p, '0 * * * *', 'sched_wf', catch_up => p) > 0
  FROM unnest(ARRAY['none', 'latest', 'all']) p;
UPDATE chrono_forge.schedules SET last_tick = date_trunc('hour', now()) - interval '5 hours'
 WHERE name LIKE 'hourly\_%';
SQL
cf_stop_immediate
cf_start
wait_for 60 "SELECT count(*) = 3 FROM chrono_forge.schedules WHERE name LIKE 'hourly\_%' AND last_tick = date_trunc('hour', now())"
runs() { q -c "SELECT count(*) FROM chrono_forge.workflows WHERE key LIKE 'hourly\_$1@%'"; }
expect_eq "$(runs none)" 0 "catch_up none"
expect_eq "$(runs latest)" 1 "catch_up latest"
expect_eq "$(runs all)" 5 "catch_up all"
expect_eq "$(q -c "SELECT key FROM chrono_forge.workflows WHERE key LIKE 'hourly\_latest@%'")" \
    "hourly_latest@$(date -u +%Y-%m-%dT%H):00Z" "latest is the newest tick"
wait_for 60 "SELECT count(*) = 6 FROM sched_log WHERE key LIKE 'hourly\_%'"
q -c "SELECT chrono_forge.unschedule(name) FROM chrono_forge.schedules" >/dev/null
expect_eq "$(q -c "SELECT count(*) FROM cron.job")" 0 "jobs removed"
