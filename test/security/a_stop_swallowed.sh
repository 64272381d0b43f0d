# Deliver 5: a pass is stopped even when the body's code catches the stop.
# The stop (a query cancel) is delivered again every tick until the body
# ends, and a worker whose body keeps catching it for 5 s is ended (a FATAL
# no handler catches); the launcher re-drives or cancels its run.  This
# holds for cancel() and for max_duration.
. "$CF_SECURITY_DIR/lib.sh"
wait_for 30 "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "workers not running"
as tenant_a -f - >/dev/null <<'SQL'
CREATE TABLE tenant_a.done (step text);
-- Catches the first stop, then sleeps again.
CREATE FUNCTION tenant_a.catch_once() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    BEGIN PERFORM pg_sleep(3600); EXCEPTION WHEN query_canceled THEN NULL; END;
    PERFORM pg_sleep(3600);
    INSERT INTO tenant_a.done VALUES ('catch_once');
    RETURN 1;
END $$;
-- Catches every stop.
CREATE FUNCTION tenant_a.catch_all() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    LOOP
        BEGIN PERFORM pg_sleep(3600); EXCEPTION WHEN query_canceled THEN NULL; END;
    END LOOP;
END $$;
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('tenant_a.' || (args->>'step'));
    INSERT INTO tenant_a.done VALUES ('after');
END $$;
SQL
worker_pids() { q -c "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'"; }
sleeping() { wait_for 30 "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' AND wait_event = 'PgSleep'"; }

# cancel() of a body that catches the first stop: the second stop ends it;
# the worker lives on.
pids=$(worker_pids)
as tenant_a -c "SELECT chrono_forge.start('tenant_a.wf', 'once', '{\"step\": \"catch_once\"}')" >/dev/null
sleeping || fail "catch_once: pass did not start"
expect_eq "$(as tenant_a -c "SELECT chrono_forge.cancel('tenant_a.wf', 'once')")" 1 "catch_once: cancelled"
wait_for 15 "SELECT state = 'cancelled' FROM chrono_forge.workflows WHERE key = 'once'" \
    || fail "catch_once: not cancelled: $(q -c "SELECT state FROM chrono_forge.workflows WHERE key = 'once'")"
wait_for 15 "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' AND wait_event = 'PgSleep'" \
    || fail "catch_once: the pass still sleeps"
expect_eq "$(worker_pids)" "$pids" "catch_once: worker processes"

# cancel() of a body that catches every stop: its worker is ended, the
# run ends cancelled, the other worker is untouched.
as tenant_a -c "SELECT chrono_forge.start('tenant_a.wf', 'all', '{\"step\": \"catch_all\"}')" >/dev/null
sleeping || fail "catch_all: pass did not start"
victim=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' AND wait_event = 'PgSleep'")
expect_eq "$(as tenant_a -c "SELECT chrono_forge.cancel('tenant_a.wf', 'all')")" 1 "catch_all: cancelled"
wait_for 30 "SELECT state = 'cancelled' FROM chrono_forge.workflows WHERE key = 'all'" \
    || fail "catch_all: not cancelled: $(q -c "SELECT state FROM chrono_forge.workflows WHERE key = 'all'")"
wait_for 30 "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $victim" || fail "catch_all: its worker still runs"
wait_for 30 "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "catch_all: workers not back"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.cancel_requests")" 0 "catch_all: requests left"

# max_duration of a body that catches every stop: its worker is ended and
# the run is re-driven (recoveries counted), never left running.
q -c "ALTER SYSTEM SET chrono_forge.max_duration = 1" -c "SELECT pg_reload_conf()" >/dev/null
trap 'q -c "ALTER SYSTEM RESET chrono_forge.max_duration" -c "SELECT pg_reload_conf()" >/dev/null' EXIT
sleep 1
as tenant_a -c "SELECT chrono_forge.start('tenant_a.wf', 'timer', '{\"step\": \"catch_all\"}')" >/dev/null
wait_for 60 "SELECT recoveries >= 1 FROM chrono_forge.workflows WHERE key = 'timer'" \
    || fail "max_duration: pass not ended: $(q -c "SELECT state, recoveries FROM chrono_forge.workflows WHERE key = 'timer'")"
expect_eq "$(as tenant_a -c "SELECT chrono_forge.cancel('tenant_a.wf', 'timer')")" 1 "max_duration: cancelled"
wait_for 30 "SELECT state = 'cancelled' FROM chrono_forge.workflows WHERE key = 'timer'" \
    || fail "max_duration: not cancelled"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.done")" 0 "steps or bodies that went on"
