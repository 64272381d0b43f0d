#!/usr/bin/env bash
# run_pending() driven by a pg_cron job from a DO block, a pass failing
# its step: the server survives (its start time is unchanged: before
# 0.6.0 the backend crashed and the postmaster restarted every session)
# and the run records the step's error.  In a database of its own, which
# the workers do not serve, so that only the job runs the pass.
set -euo pipefail
. "$CF_INTEGRATION_DIR/lib.sh"

db=cf_cron_ctx
q -c "DROP DATABASE IF EXISTS $db" >/dev/null
q -c "CREATE DATABASE $db" >/dev/null
q -c "CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null
q -d "$db" <<'SQL' >/dev/null
CREATE EXTENSION chrono_forge;
CREATE FUNCTION cc_fail() RETURNS void LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'ZZ001'; END $$;
CREATE PROCEDURE cc_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cc_fail', retry_policy => '{"max_attempts": 1}');
END $$;
SELECT chrono_forge.start('cc_wf', 'x-1');
SQL
started=$(q -c "SELECT pg_postmaster_start_time()")
job=$(q -c "SELECT cron.schedule_in_database('cf_cron_ctx', '* * * * *',
            'DO \$\$ BEGIN CALL chrono_forge.run_pending(); END \$\$', '$db')")
# pg_cron fires at the top of the minute.
ok=0
wait_for 90 "SELECT count(*) > 0 FROM cron.job_run_details WHERE jobid = $job AND status IN ('succeeded', 'failed')" || ok=1
details=$(q -c "SELECT string_agg(status || ': ' || coalesce(return_message, ''), '; ') FROM cron.job_run_details WHERE jobid = $job" 2>&1 || true)
q -c "SELECT cron.unschedule($job)" >/dev/null 2>&1 || true
[ $ok -eq 0 ] || fail "the job did not run: $details"
cf_wait_ready 60 || fail "server did not come back"
expect_eq "$(q -c "SELECT pg_postmaster_start_time()")" "$started" "postmaster not restarted"
expect_eq "$(q -c "SELECT bool_and(status = 'succeeded') FROM cron.job_run_details WHERE jobid = $job")" t \
    "job succeeded ($details)"
expect_eq "$(q -d "$db" -c "SELECT w.state || ' ' || l.error_class || ' ' || l.error_message
                            FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id
                            WHERE w.key = 'x-1' AND l.step_name = 'durably_execute\$cc_fail'")" \
    "stalled ZZ001 boom" "the run recorded the step's error"
q -c "DROP DATABASE $db" >/dev/null
echo ok
