# durably_repeat with the workers and a server crash between ticks: 20
# runs tick every second until each has 8 ticks; after the crash the ticks
# go on from where they were, each tick ran once (a second run of a tick
# would violate the primary key and be logged as an error), all on the
# grid, and no tick is skipped (the downtime is well inside the timeout).
. "$CF_INTEGRATION_DIR/lib.sh"
RUNS=20
TICKS=8
q <<SQL >/dev/null
CREATE TABLE rp_out (run_key text, tick timestamptz, PRIMARY KEY (run_key, tick));
CREATE FUNCTION rp_step(t timestamptz) RETURNS void LANGUAGE sql
    AS \$\$ INSERT INTO rp_out VALUES (chrono_forge.key(), t) \$\$;
CREATE FUNCTION rp_enough() RETURNS boolean LANGUAGE sql
    AS \$\$ SELECT count(*) >= $TICKS FROM rp_out WHERE run_key = chrono_forge.key() \$\$;
CREATE PROCEDURE rp_wf(args jsonb) LANGUAGE plpgsql AS \$\$
BEGIN
    CALL chrono_forge.durably_repeat('rp_step', '1 second', 'rp_enough');
END \$\$;
SELECT count(chrono_forge.start('rp_wf', 'k' || i)) FROM generate_series(1, $RUNS) i;
SQL
wait_for 30 "SELECT count(*) >= $((RUNS * 3)) FROM rp_out" || fail "no ticks ran"
cf_stop_immediate
sleep 2
cf_start || fail "server did not come back"
wait_for 90 "SELECT count(*) = $RUNS FROM chrono_forge.workflows WHERE workflow = 'public.rp_wf' AND state = 'completed'" \
    || { q -c "SELECT state, count(*) FROM chrono_forge.workflows WHERE workflow = 'public.rp_wf' GROUP BY 1"; fail "runs did not complete"; }
expect_eq "$(q -c "SELECT count(*) FROM rp_out")" "$((RUNS * TICKS))" "ticks run"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.workflow = 'public.rp_wf'")" 0 "no errors"
# On the grid: consecutive ticks of a run are exactly one second apart.
expect_eq "$(q -c "SELECT bool_and(gap = interval '1 second') FROM (SELECT tick - lag(tick) OVER (PARTITION BY run_key ORDER BY tick) AS gap FROM rp_out) g WHERE gap IS NOT NULL")" t "ticks on the grid"
# Each tick's log is completed and the coordination knows the last one.
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.workflow = 'public.rp_wf' AND l.step_name LIKE 'durably\_repeat\$rp\_step\$%' AND l.state = 'completed'")" "$((RUNS * TICKS))" "tick logs"
expect_eq "$(q -c "SELECT bool_and((l.metadata->>'last_execution_at')::timestamptz = (SELECT max(tick) FROM rp_out o WHERE o.run_key = w.key)) FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.workflow = 'public.rp_wf' AND l.step_name = 'durably_repeat\$rp_step'")" t "coordination frontier"
