#!/usr/bin/env bash
# run_pending() driven by a pg_cron job from a DO block, a pass failing
# its step: the server survives (its start time is unchanged: before
# 0.6.0 the backend crashed and the postmaster restarted every session)
# and the run records the step's error.  The same job cancels a saga
# parked with an undo step registered (0.12.0): the run compensates, its
# undo step run by the job's run_pending(), once.  In a database of its
# own, which the workers do not serve, so that only the job runs the pass.
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
CREATE TABLE cc_ledger (what text);
CREATE FUNCTION cc_charge() RETURNS void LANGUAGE sql AS $$ INSERT INTO cc_ledger VALUES ('charge') $$;
CREATE FUNCTION cc_refund() RETURNS void LANGUAGE sql AS $$ INSERT INTO cc_ledger VALUES ('refund') $$;
CREATE PROCEDURE cc_saga(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cc_charge', compensate => 'cc_refund');
    CALL chrono_forge.await_event('shipped');
END $$;
SELECT chrono_forge.start('cc_saga', 's-1');
SQL
# The saga's first pass: charged, parked on its event.
q -d "$db" -c "CALL chrono_forge.run_pending()" >/dev/null
expect_eq "$(q -d "$db" -c "SELECT string_agg(what, ',') FROM cc_ledger")" "charge" "the saga's charge before the job"
# The run whose pass only the job runs.
q -d "$db" -c "SELECT chrono_forge.start('cc_wf', 'x-1')" >/dev/null
started=$(q -c "SELECT pg_postmaster_start_time()")
job=$(q -c "SELECT cron.schedule_in_database('cf_cron_ctx', '* * * * *',
            'DO \$\$ BEGIN PERFORM chrono_forge.cancel(''cc_saga'', ''s-1'', ''from cron'');
                          CALL chrono_forge.run_pending(); END \$\$', '$db')")
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
expect_eq "$(q -d "$db" -c "SELECT state FROM chrono_forge.workflows WHERE key = 's-1'")" compensated "the saga cancelled by the job"
expect_eq "$(q -d "$db" -c "SELECT string_agg(what, ',' ORDER BY what) FROM cc_ledger")" "charge,refund" "the saga's ledger"
q -c "DROP DATABASE $db" >/dev/null
echo ok
