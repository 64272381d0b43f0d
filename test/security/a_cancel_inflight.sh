# Item 6 / Deliver 5: the owner's cancel() of a run whose pass is in
# flight returns at once and stops the pass (reap() and force_unlock()
# do not wait for it either): while the pass's claim has
# not committed (its first step sleeps) and after it has (its second step
# sleeps).  The run ends cancelled, the sleeping step never completes, no
# later step runs, and the worker survives.
. "$CF_SECURITY_DIR/lib.sh"
# The workers restart after the extension is created again: wait for both.
wait_for 30 "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "workers not running"
as tenant_a -f - >/dev/null <<'SQL'
CREATE TABLE tenant_a.done (step text);
CREATE FUNCTION tenant_a.quick() RETURNS int LANGUAGE sql AS $$INSERT INTO tenant_a.done VALUES ('quick') RETURNING 1$$;
CREATE FUNCTION tenant_a.nap() RETURNS int LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(3600); INSERT INTO tenant_a.done VALUES ('nap'); RETURN 1; END $$;
CREATE FUNCTION tenant_a.after() RETURNS int LANGUAGE sql AS $$INSERT INTO tenant_a.done VALUES ('after') RETURNING 1$$;
CREATE PROCEDURE tenant_a.first_sleeps(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('tenant_a.nap');
    CALL chrono_forge.durably_execute('tenant_a.after');
END $$;
CREATE PROCEDURE tenant_a.second_sleeps(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('tenant_a.quick');
    CALL chrono_forge.durably_execute('tenant_a.nap');
    CALL chrono_forge.durably_execute('tenant_a.after');
END $$;
SQL
pids_before=$(q -c "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'")

for wf in first_sleeps second_sleeps; do
    as tenant_a -c "SELECT chrono_forge.start('tenant_a.$wf', 'k')" >/dev/null
    wait_for 30 "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' AND wait_event = 'PgSleep'" \
        || fail "$wf: pass did not start"
    sleep 0.5
    if [ $wf = first_sleeps ]; then
        # The pass holds the run (its claim commits with the first step):
        # reap() and force_unlock() leave it alone, without waiting.
        for action in reap force_unlock; do
            r=$(timeout 10 psql -XAtq -v ON_ERROR_STOP=1 -c "SET ROLE tenant_a" -c "SELECT chrono_forge.$action('tenant_a.$wf', 'k')" 2>&1) \
                || fail "$action waited for the pass: $r"
            expect_eq "$(echo "$r" | tail -1)" f "$action of a held run"
        done
    fi
    start=$(date +%s%N)
    n=$(timeout 20 psql -XAtq -v ON_ERROR_STOP=1 -c "SET ROLE tenant_a" -c "SELECT chrono_forge.cancel('tenant_a.$wf', 'k', 'stop it')") \
        || fail "$wf: cancel() failed or hung"
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    [ "$ms" -lt 5000 ] || fail "$wf: cancel() took ${ms} ms"
    expect_eq "$n" 1 "$wf: runs cancelled"
    wait_for 15 "SELECT state = 'cancelled' FROM chrono_forge.workflows WHERE workflow = 'tenant_a.$wf'" \
        || fail "$wf: run did not end cancelled: $(q -c "SELECT state, locked_by FROM chrono_forge.workflows WHERE workflow = 'tenant_a.$wf'")"
    wait_for 15 "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' AND wait_event = 'PgSleep'" \
        || fail "$wf: the pass still sleeps"
    expect_eq "$(q -c "SELECT l.metadata->>'reason' FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.workflow = 'tenant_a.$wf' AND l.step_name = '\$workflow_cancelled\$'")" \
        "stop it" "$wf: cancel marker"
    expect_eq "$(as tenant_a -c "SELECT chrono_forge.wake('tenant_a.$wf', 'k')")" f "$wf: wake() after cancel"
    expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.cancel_requests")" 0 "$wf: requests left"
done
sleep 1
expect_eq "$(q -c "SELECT string_agg(step, ',' ORDER BY step) FROM tenant_a.done")" quick "steps that ran"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.execution_logs WHERE step_name LIKE '%nap' OR step_name LIKE '%after'")" 0 \
    "step logs of the stopped and later steps"
expect_eq "$(q -c "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'")" \
    "$pids_before" "worker processes"

# A pass of run_pending() is stopped the same way: cancel() returns at
# once, the session's pass ends (its CALL returns, the session lives on),
# the run ends cancelled and no later step runs.
trap 'q -c "ALTER SYSTEM RESET chrono_forge.enabled" -c "SELECT pg_reload_conf()" >/dev/null' EXIT
q -c "ALTER SYSTEM SET chrono_forge.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "workers did not stop"
as tenant_a -c "SELECT chrono_forge.start('tenant_a.first_sleeps', 'session')" >/dev/null
out=$(mktemp)
psql -XAtq -v ON_ERROR_STOP=1 -c "SET ROLE tenant_a" -c "SET application_name = 'cf_pending_victim'" \
    -c "CALL chrono_forge.run_pending()" -c "SELECT 'session lives'" > "$out" 2>&1 &
victim=$!
wait_for 30 "SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'cf_pending_victim' AND wait_event = 'PgSleep'" \
    || fail "run_pending() pass did not start"
n=$(timeout 20 psql -XAtq -v ON_ERROR_STOP=1 -c "SET ROLE tenant_a" -c "SELECT chrono_forge.cancel('tenant_a.first_sleeps', 'session', 'gone')") \
    || fail "cancel() failed or hung against a run_pending() pass"
expect_eq "$n" 1 "runs cancelled (run_pending pass)"
wait_for 15 "SELECT state = 'cancelled' FROM chrono_forge.workflows WHERE key = 'session'" \
    || fail "run_pending() pass not stopped: $(q -c "SELECT state FROM chrono_forge.workflows WHERE key = 'session'")"
timeout 15 tail --pid=$victim -f /dev/null || fail "run_pending() still runs"
wait $victim || fail "run_pending() session failed: $(cat "$out")"
expect_eq "$(tail -1 "$out")" "session lives" "the session after its pass was stopped"
expect_eq "$(q -c "SELECT l.metadata->>'reason' FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.key = 'session' AND l.step_name = '\$workflow_cancelled\$'")" \
    "gone" "cancel marker of the run_pending() pass"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.cancel_requests")" 0 "requests left"
expect_eq "$(q -c "SELECT string_agg(step, ',' ORDER BY step) FROM tenant_a.done")" quick "steps that ran"
