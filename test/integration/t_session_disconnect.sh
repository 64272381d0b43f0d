# A run_pending() session that dies mid-pass: its run is re-driven by the
# launcher's next maintenance round (once a minute), not after the 30-minute
# stale-lock threshold, and completes on the workers.
. "$CF_INTEGRATION_DIR/lib.sh"
q <<'SQL' >/dev/null
CREATE TABLE sd_out (step text);
CREATE FUNCTION sd_a() RETURNS void LANGUAGE sql AS $$ INSERT INTO sd_out VALUES ('a') $$;
CREATE FUNCTION sd_b() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('application_name') = 'sd_session' THEN
        PERFORM pg_sleep(60);
    END IF;
    INSERT INTO sd_out VALUES ('b');
END $$;
CREATE PROCEDURE sd_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('sd_a');
    CALL chrono_forge.durably_execute('sd_b');
END $$;
SQL
# Start it where the workers cannot take it first: disabled, then started.
q -c "ALTER SYSTEM SET chrono_forge.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 20 "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" || fail "workers did not stop"
q -c "SELECT chrono_forge.start('sd_wf', 'sd')" >/dev/null
PGAPPNAME=sd_session psql -XAtq -c "CALL chrono_forge.run_pending()" >/dev/null 2>&1 &
wait_for 20 "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'sd_session' AND wait_event = 'PgSleep')" \
    || fail "session pass did not reach the long step"
q -c "ALTER SYSTEM RESET chrono_forge.enabled" -c "SELECT pg_reload_conf()" >/dev/null
q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sd_session'" >/dev/null
wait
expect_eq "$(q -c "SELECT state FROM chrono_forge.workflows WHERE key = 'sd'")" running "left running by the dead session"
wait_for 90 "SELECT state = 'completed' FROM chrono_forge.workflows WHERE key = 'sd'" \
    || { q -c "SELECT state, locked_by FROM chrono_forge.workflows WHERE key = 'sd'"; fail "not re-driven"; }
expect_eq "$(q -c "SELECT string_agg(step, ',' ORDER BY step) FROM sd_out")" "a,b" "each step once"
