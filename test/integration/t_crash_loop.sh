# A pass that kills its worker every time is stopped: after
# chrono_forge.max_recoveries (3) recoveries the run is stalled with CF015.
. "$CF_INTEGRATION_DIR/lib.sh"
q <<'SQL' >/dev/null
CREATE SEQUENCE cl_passes;
CREATE FUNCTION cl_kill() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('cl_passes');
    PERFORM pg_terminate_backend(pg_backend_pid());
    PERFORM pg_sleep(5);
END $$;
CREATE PROCEDURE cl_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cl_kill');
END $$;
SELECT chrono_forge.start('cl_wf', 'loop');
SQL
wait_for 60 "SELECT state = 'stalled' FROM chrono_forge.workflows WHERE key = 'loop'" \
    || { q -c "SELECT state, recoveries FROM chrono_forge.workflows WHERE key = 'loop'"; fail "run never stalled"; }
expect_eq "$(q -c "SELECT recoveries FROM chrono_forge.workflows WHERE key = 'loop'")" 4 "recoveries"
# Four passes died; another worker may claim the run again before the
# launcher has counted a death, so up to one more pass per worker.
passes=$(q -c "SELECT last_value FROM cl_passes")
[ "$passes" -ge 4 ] && [ "$passes" -le 6 ] || fail "passes before it was stopped: $passes, expected 4..6"
expect_eq "$(q -c "SELECT error_class FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key = 'loop'")" CF015 "error recorded"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.wakeups k JOIN chrono_forge.workflows w ON w.id = k.workflow_id WHERE w.key = 'loop'")" 0 "nothing left scheduled"
