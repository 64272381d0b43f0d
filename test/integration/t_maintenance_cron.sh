# schedule_maintenance() with pg_cron: on a cluster of its own with
# pg_cron preloaded (the shared integration cluster does not load it),
# the cleanup and reap jobs are installed, run, and do their work;
# unschedule_maintenance() removes them.  (Without pg_cron the function
# fails with CF020: see sql/ops_schedule.sql.)
. "$CF_INTEGRATION_DIR/lib.sh"
port=$((PGPORT + 100))
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || [ -e "/var/run/postgresql/.s.PGSQL.$port" ]; do
    port=$((port + 1))
done
PGPORT=$port pg_virtualenv -t -o "external_pid_file=/tmp/chrono_forge-cron-$port.pid" \
    -o shared_preload_libraries=chrono_forge,pg_cron -o cron.database_name=postgres \
    -o cron.use_background_workers=on -o max_worker_processes=20 \
    -o chrono_forge.database=postgres -o chrono_forge.workers=1 \
    bash -s <<'INNER'
set -u
. "$CF_INTEGRATION_DIR/lib.sh"
cf_wait_ready 60 || fail "cron cluster did not start"
q -c "CREATE EXTENSION pg_cron" -c "CREATE EXTENSION chrono_forge" >/dev/null || fail "extensions"
q <<'SQL' >/dev/null || fail "fixture"
CREATE ROLE mc_admin;
GRANT chrono_forge_admin TO mc_admin;
GRANT USAGE ON SCHEMA cron TO mc_admin;
CREATE PROCEDURE mc_wf(args jsonb) LANGUAGE plpgsql AS $$ BEGIN END $$;
-- Terminal runs ended long ago, and one stranded running run.
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, updated_at, completed_at, ended_at)
SELECT 'mc_wf', 'old' || i, 'public.mc_wf', 'completed', 'postgres', now() - interval '200 days',
       now() - interval '200 days', now() - interval '200 days' FROM generate_series(1, 50) i;
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, locked_by, locked_at, started_at)
VALUES ('mc_wf', 'stranded', 'public.mc_wf', 'running', 'postgres', 'w:dead', now() - interval '2 hours', now() - interval '2 hours');
SQL
# An admin (not a superuser) installs the jobs; bad input is refused first.
out=$(q -c "SET ROLE mc_admin" -c "SELECT chrono_forge.schedule_maintenance('* * * * *', '* * * * *', batch_size => 0)" 2>&1)
echo "$out" | grep -q "batch_size must be at least 1" || fail "bad batch_size accepted: $out"
expect_eq "$(q -c "SELECT count(*) FROM cron.job")" "0" "nothing scheduled after bad input"
q -c "SET ROLE mc_admin" -c "SELECT job, schedule FROM chrono_forge.schedule_maintenance('* * * * *', '* * * * *', batch_size => 7)" \
    || fail "schedule_maintenance"
expect_eq "$(q -c "SELECT string_agg(jobname || '=' || username, ',' ORDER BY jobname) FROM cron.job")" \
    "chrono_forge_cleanup=postgres,chrono_forge_reap=postgres" "jobs installed, run as the extension owner"
# Scheduling again replaces the jobs (same names), it does not add any.
q -c "SET ROLE mc_admin" -c "SELECT chrono_forge.schedule_maintenance('* * * * *', '* * * * *', batch_size => 7)" >/dev/null
expect_eq "$(q -c "SELECT count(*) FROM cron.job")" "2" "rescheduling replaces"
# Both jobs run at the next minute boundary.
wait_for 75 "SELECT count(DISTINCT jobid) = 2 AND bool_and(status = 'succeeded') FROM cron.job_run_details WHERE status IN ('succeeded', 'failed')" \
    || fail "jobs did not run: $(q -c "SELECT string_agg(command || ' -> ' || status || ' ' || coalesce(return_message, ''), '; ') FROM cron.job_run_details")"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE key LIKE 'old%'")" "0" "cleanup job deleted the old runs"
# (re-driven: the dead lock is gone; the worker may have completed it since)
expect_eq "$(q -c "SELECT state IN ('idle', 'running', 'completed') AND locked_by IS DISTINCT FROM 'w:dead' FROM chrono_forge.workflows WHERE key = 'stranded'")" "t" "reap job re-drove the stranded run"
expect_eq "$(q -c "SET ROLE mc_admin" -c "SELECT chrono_forge.unschedule_maintenance()")" "2" "unschedule"
expect_eq "$(q -c "SELECT count(*) FROM cron.job")" "0" "no job left"
echo ok
INNER
