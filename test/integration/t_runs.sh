# 10,000 trivial runs complete with the 2 workers, each step exactly once.
. "$CF_INTEGRATION_DIR/lib.sh"
N=${CF_RUNS:-10000}
q <<'SQL' >/dev/null
CREATE TABLE runs_out (run_key text PRIMARY KEY);
CREATE FUNCTION runs_step(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO runs_out VALUES (args->>'k') $$;
CREATE PROCEDURE runs_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('runs_step');
END $$;
SQL
q -c "SELECT count(chrono_forge.start('runs_wf', 'k' || i, jsonb_build_object('k', 'k' || i))) FROM generate_series(1, $N) i" >/dev/null
wait_for 300 "SELECT count(*) = $N FROM chrono_forge.workflows WHERE workflow = 'public.runs_wf' AND state = 'completed'" \
    || { q -c "SELECT state, count(*) FROM chrono_forge.workflows GROUP BY 1"; fail "not all runs completed"; }
expect_eq "$(q -c 'SELECT count(*) FROM runs_out')" "$N" "one output row per run"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.wakeups k JOIN chrono_forge.workflows w ON w.id = k.workflow_id WHERE w.workflow = 'public.runs_wf'")" 0 "no wake-up left behind"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.workflow = 'public.runs_wf'")" 0 "no errors"
