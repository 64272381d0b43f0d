# Item 6 / Deliver 5: one role cannot hold every worker while another
# role's runs are due.  tenant_b's runs whose step sleeps an hour are due
# first, tenant_a's trivial runs just after: with two workers and the
# default share (all workers but one per owner), one worker sleeps in
# tenant_b's pass and the other serves tenant_a (0.4.0 put both workers to
# sleep and tenant_a waited an hour).  The share binds only while another
# owner's work is due, so afterwards tenant_b may have both.  With a small
# max_duration, the sleeping passes are stopped, their error (CF021)
# recorded, and their runs go on by their retry policy (here: fail after
# two attempts); a pass of run_pending() is bounded the same way.  When
# tenant_b alone has taken both workers and tenant_a's work becomes due,
# one of tenant_b's passes is preempted.
. "$CF_SECURITY_DIR/lib.sh"
trap 'q -c "ALTER SYSTEM RESET chrono_forge.max_duration" -c "ALTER SYSTEM RESET chrono_forge.enabled" -c "SELECT pg_reload_conf()" >/dev/null' EXIT
q -c "ALTER SYSTEM SET chrono_forge.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "workers did not stop"

as tenant_b -f - >/dev/null <<'SQL'
CREATE FUNCTION tenant_b.nap() RETURNS int LANGUAGE sql AS 'SELECT 1 FROM pg_sleep(3600)';
CREATE PROCEDURE tenant_b.sleeper(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_b.nap'); END $$;
SELECT chrono_forge.start('tenant_b.sleeper', 'hold' || g) FROM generate_series(1, 4) g;
SQL
as tenant_a -f - >/dev/null <<'SQL'
CREATE FUNCTION tenant_a.step() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_a.step'); END $$;
SELECT chrono_forge.start('tenant_a.wf', 'k' || g) FROM generate_series(1, 20) g;
SQL
q -c "ALTER SYSTEM RESET chrono_forge.enabled" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "workers not running"
wait_for 30 "SELECT count(*) = 20 FROM chrono_forge.workflows WHERE workflow LIKE 'tenant_a.%' AND state = 'completed'" \
    || fail "tenant_a's runs did not complete while tenant_b slept: $(q -c "SELECT workflow, state, count(*) FROM chrono_forge.workflows GROUP BY 1, 2")"
wait_for 30 "SELECT count(*) >= 1 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' AND wait_event = 'PgSleep'" \
    || fail "tenant_b's pass did not start"

# Alone, tenant_b takes both workers (tenant_b's four sleepers are due).
# Once tenant_a's work is due again, the share takes one back at once:
# tenant_b's newest pass is stopped (preempted) and its run is due again,
# with no attempt counted and no error; tenant_a's runs complete.
wait_for 30 "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' AND wait_event = 'PgSleep'" \
    || fail "tenant_b alone did not take both workers"
pids=$(q -c "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'")
as tenant_a -c "SELECT chrono_forge.start('tenant_a.wf', 'late' || g) FROM generate_series(1, 5) g" >/dev/null
wait_for 30 "SELECT count(*) = 5 FROM chrono_forge.workflows WHERE key LIKE 'late%' AND state = 'completed'" \
    || fail "tenant_a's runs were not served while tenant_b held both workers: $(q -c "SELECT key, state FROM chrono_forge.workflows WHERE key LIKE 'late%'")"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.error_logs")" 0 "errors of the preempted pass"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE key LIKE 'hold%' AND state IN ('idle', 'running') AND attempt = 0")" 4 \
    "tenant_b's runs after the preemption"
expect_eq "$(q -c "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'")" \
    "$pids" "worker processes after the preemption"

# max_duration stops the sleeping passes.
as tenant_b -c "SELECT chrono_forge.configure('tenant_b.sleeper', chrono_forge.retry_policy(max_attempts => 2, base => '1 second', cap => '1 second', jitter => false))" >/dev/null
q -c "ALTER SYSTEM SET chrono_forge.max_duration = '2s'" -c "SELECT pg_reload_conf()" >/dev/null
# The passes already sleeping armed their timers under the old setting
# (which two of the four runs they are is not known): cancel all four,
# which stops those passes too; two new runs start under the new setting.
pids_before=$(q -c "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'")
sleep 1
as tenant_b -c "SELECT chrono_forge.cancel('tenant_b.sleeper', 'hold' || g) FROM generate_series(1, 4) g" >/dev/null
wait_for 60 "SELECT count(*) = 4 FROM chrono_forge.workflows WHERE key LIKE 'hold%' AND state = 'cancelled'" \
    || fail "cancel did not stop the sleeping passes: $(q -c "SELECT key, state FROM chrono_forge.workflows WHERE key LIKE 'hold%'")"
as tenant_b -c "SELECT chrono_forge.start('tenant_b.sleeper', 'short' || g) FROM generate_series(1, 2) g" >/dev/null
wait_for 120 "SELECT count(*) = 2 FROM chrono_forge.workflows WHERE workflow = 'tenant_b.sleeper' AND state = 'failed'" \
    || fail "tenant_b's sleeping runs did not fail by their policy: $(q -c "SELECT key, state, attempt FROM chrono_forge.workflows WHERE workflow = 'tenant_b.sleeper'") errors: $(q -c "SELECT workflow_id, error_class, error_message FROM chrono_forge.error_logs")"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key IN ('short1', 'short2') AND e.error_class = 'CF021' AND e.error_message LIKE '%exceeded chrono_forge.max_duration%'")" 4 \
    "CF021 errors recorded (two attempts of two runs)"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.key IN ('short1', 'short2') AND l.step_name LIKE '\$workflow_failure\$%'")" 2 \
    "failure markers"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.workflow = 'tenant_b.sleeper' AND l.step_name = 'durably_execute\$tenant_b.nap' AND l.state = 'completed'")" 0 \
    "sleeping steps completed"
expect_eq "$(q -c "SELECT state FROM chrono_forge.workflows WHERE key = 'hold1'")" cancelled "cancelled run"
# Stopping passes never cost a worker its life.
expect_eq "$(q -c "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'")" \
    "$pids_before" "worker processes"
# Nothing is left for reap_stalled() to find.
expect_eq "$(q -c "SELECT chrono_forge.reap_stalled('1 second')")" 0 "runs reaped"

# run_pending() (workers off): the caller's own pass is stopped too.
q -c "ALTER SYSTEM SET chrono_forge.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "workers did not stop"
as tenant_b -c "SELECT chrono_forge.start('tenant_b.sleeper', 'pending1')" >/dev/null
start=$(date +%s)
timeout 60 psql -XAtq -v ON_ERROR_STOP=1 -c "SET ROLE tenant_b" -c "CALL chrono_forge.run_pending(1)" \
    || fail "run_pending() failed or was not stopped"
[ $(( $(date +%s) - start )) -lt 30 ] || fail "run_pending() pass outlived max_duration"
expect_eq "$(q -c "SELECT string_agg(e.error_class || ' ' || w.state, ',') FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key = 'pending1'")" \
    "CF021 idle" "run_pending() pass stopped at max_duration"
# Leave no sleeping run behind for the workers coming back (the next
# test's reset would wait for its pass).
as tenant_b -c "SELECT chrono_forge.cancel('tenant_b.sleeper', 'pending1')" >/dev/null
