# Item 9, upgrade: schedules made on 0.4.0 whose job names collided once
# truncated to 63 bytes (two long names sharing one job; a long name whose
# reboot job replaced its tick job) get jobs of their own at ALTER
# EXTENSION UPDATE, named by id and owned by the schedule's owner; a short
# name's jobs are renamed; the shared job goes.
. "$CF_SECURITY_DIR/identity_lib.sh"
q >/dev/null <<'SQL'
CREATE EXTENSION IF NOT EXISTS pg_cron;
DELETE FROM cron.job WHERE jobname LIKE 'chrono_forge:%';
DROP EXTENSION chrono_forge CASCADE;
CREATE EXTENSION chrono_forge VERSION '0.4.0';
GRANT USAGE ON SCHEMA cron TO tenant_a;
SQL
trap 'q -c "DELETE FROM cron.job WHERE jobname LIKE '"'"'chrono_forge:%'"'"'" >/dev/null 2>&1' EXIT
sql_as tenant_a >/dev/null <<'SQL'
CREATE PROCEDURE tenant_a.nightly(args jsonb) LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
-- The jobs 0.4.0's schedule() made: chrono_forge:<name>[:reboot], truncated.
SELECT cron.schedule('chrono_forge:short', '0 3 * * *', 'SELECT chrono_forge.schedule_fire(''short'')');
SELECT cron.schedule('chrono_forge:short:reboot', '@reboot', 'SELECT chrono_forge.schedule_fire(''short'', reboot => true)');
SELECT cron.schedule(left('chrono_forge:' || repeat('x', 60) || '_one', 63), '0 4 * * *',
                     format('SELECT chrono_forge.schedule_fire(%L)', repeat('x', 60) || '_one'));
SELECT cron.schedule(left('chrono_forge:' || repeat('x', 60) || '_two', 63), '0 5 * * *',
                     format('SELECT chrono_forge.schedule_fire(%L)', repeat('x', 60) || '_two'));
SQL
q >/dev/null <<'SQL'
INSERT INTO chrono_forge.schedules (name, cron, workflow, catch_up, owner, jobid, reboot_jobid, last_tick)
SELECT 'short', '0 3 * * *', 'tenant_a.nightly', 'latest', 'tenant_a'::regrole,
       (SELECT jobid FROM cron.job WHERE jobname = 'chrono_forge:short'),
       (SELECT jobid FROM cron.job WHERE jobname = 'chrono_forge:short:reboot'), now()
UNION ALL
SELECT repeat('x', 60) || s, c, 'tenant_a.nightly', 'latest', 'tenant_a'::regrole, j.jobid, j.jobid, now()
  FROM (VALUES ('_one', '0 4 * * *'), ('_two', '0 5 * * *')) v(s, c),
       cron.job j WHERE j.jobname LIKE 'chrono_forge:xxx%';
SQL
expect_eq "$(q -c "SELECT count(*) FROM cron.job WHERE jobname LIKE 'chrono_forge:%'")" 3 "0.4.0's jobs (the long names share one)"
q -c "ALTER EXTENSION chrono_forge UPDATE" >/dev/null 2>&1 || fail "update failed"
expect_eq "$(q -c "SELECT count(*) FROM cron.job WHERE jobname LIKE 'chrono_forge:%'")" 6 "jobs after the update"
expect_eq "$(q -c "SELECT bool_and(j.command LIKE '%' || s.name || '%' AND j.username = 'tenant_a'
                                   AND j.jobname = 'chrono_forge:' || s.id || CASE WHEN j.jobid = s.reboot_jobid THEN ':reboot' ELSE '' END)
                          AND count(DISTINCT j.jobid) = 6
                     FROM chrono_forge.schedules s JOIN cron.job j ON j.jobid IN (s.jobid, s.reboot_jobid)")" t \
    "each schedule's own two jobs, named by id, as its owner"
expect_eq "$(q -c "SELECT count(*) FROM cron.job j JOIN chrono_forge.schedules s ON j.jobid = s.jobid AND j.schedule = s.cron")" 3 \
    "tick jobs on their cron expression"
exit 0
