# Server crash mid-run (pg_ctl stop -m immediate): after restart every run
# resumes by itself, none is lost, no committed step repeats.
. "$CF_INTEGRATION_DIR/lib.sh"
RUNS=200
STEPS=20
q <<SQL >/dev/null
CREATE TABLE cr_out (run_key text, step int);
CREATE FUNCTION cr_step(args jsonb) RETURNS void LANGUAGE sql
    AS \$\$ INSERT INTO cr_out VALUES (args->>'k', (args->>'i')::int) \$\$;
CREATE PROCEDURE cr_wf(args jsonb) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1..$STEPS LOOP
        CALL chrono_forge.durably_execute('cr_step', name => 's' || i,
            args => jsonb_build_object('k', args->>'k', 'i', i));
    END LOOP;
END \$\$;
SELECT count(chrono_forge.start('cr_wf', 'k' || i, jsonb_build_object('k', 'k' || i)))
  FROM generate_series(1, $RUNS) i;
SQL
# Let some runs finish and many be mid-flight, then crash.
wait_for 30 "SELECT count(*) > 50 FROM cr_out" || fail "nothing ran"
cf_stop_immediate
cf_start || fail "server did not come back"
done_before=$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.cr_wf' AND state = 'completed'")
echo "completed at restart: $done_before of $RUNS"
wait_for 120 "SELECT count(*) = $RUNS FROM chrono_forge.workflows WHERE workflow = 'public.cr_wf' AND state = 'completed'" \
    || { q -c "SELECT state, count(*) FROM chrono_forge.workflows WHERE workflow = 'public.cr_wf' GROUP BY 1"; fail "runs lost after the crash"; }
expect_eq "$(q -c "SELECT count(*) FROM cr_out")" "$((RUNS * STEPS))" "one row per step"
expect_eq "$(q -c "SELECT count(*) FROM (SELECT DISTINCT run_key, step FROM cr_out) d")" "$((RUNS * STEPS))" "no step repeated"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.workflow = 'public.cr_wf'")" 0 "no errors"
