# A worker terminated mid-step: the launcher re-drives its run at once; the
# interrupted step's writes happen exactly once; the run completes.
. "$CF_INTEGRATION_DIR/lib.sh"
q <<'SQL' >/dev/null
CREATE TABLE wt_out (step text);
CREATE FUNCTION wt_a() RETURNS void LANGUAGE sql AS $$ INSERT INTO wt_out VALUES ('a') $$;
CREATE FUNCTION wt_b() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO wt_out VALUES ('b');
    -- Long only the first time: the test terminates the worker here.
    IF (SELECT recoveries FROM chrono_forge.workflows WHERE key = 'wt') = 0 THEN
        PERFORM pg_sleep(30);
    END IF;
END $$;
CREATE FUNCTION wt_c() RETURNS void LANGUAGE sql AS $$ INSERT INTO wt_out VALUES ('c') $$;
CREATE PROCEDURE wt_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('wt_a');
    CALL chrono_forge.durably_execute('wt_b');
    CALL chrono_forge.durably_execute('wt_c');
END $$;
SELECT chrono_forge.start('wt_wf', 'wt');
SQL
wait_for 20 "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' AND wait_event = 'PgSleep')" \
    || fail "the step never started"
pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' AND wait_event = 'PgSleep'")
q -c "SELECT pg_terminate_backend($pid)" >/dev/null
# Re-driven at once, not after a stale-lock timeout (30 min by default).
wait_for 15 "SELECT state = 'completed' FROM chrono_forge.workflows WHERE key = 'wt'" \
    || { q -c "SELECT state, recoveries, locked_by FROM chrono_forge.workflows WHERE key = 'wt'"; fail "run not completed after its worker was terminated"; }
expect_eq "$(q -c "SELECT string_agg(step, ',' ORDER BY step) FROM wt_out")" "a,b,c" "each step's writes exactly once"
expect_eq "$(q -c "SELECT recoveries FROM chrono_forge.workflows WHERE key = 'wt'")" 1 "one recovery counted"
wait_for 20 "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "the worker was not replaced"
