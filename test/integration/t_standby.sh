# A streaming standby shares the primary's settings (chrono_forge preloaded,
# its database served): it must wait quietly while in recovery (no launcher,
# no workers, no errors, no log lines of its own), and serve at promotion,
# re-driving the runs the lost primary's workers held: every run completes
# on the promoted node, timers fire, and no step's effect is there twice.
# Own clusters (own_cluster.sh): a primary and a pg_basebackup -R standby.
set -uo pipefail
. "$CF_INTEGRATION_DIR/lib.sh"
. "$CF_INTEGRATION_DIR/own_cluster.sh"
P=57411
S=57412
RUNS=10
STEPS=5

oc_init primary $P "shared_preload_libraries = 'chrono_forge'" "chrono_forge.workers = 2" \
    "chrono_forge.database = postgres" "wal_level = replica" || fail "initdb"
oc_start primary || fail "primary did not start"
oc_q $P <<SQL || fail "setup"
CREATE EXTENSION chrono_forge;
CREATE TABLE effects (run text, step int);
CREATE FUNCTION sb_step(args jsonb) RETURNS void LANGUAGE sql AS
  \$\$ SELECT pg_sleep(CASE WHEN (args->>'i')::int > 1 THEN 1 ELSE 0 END);
      INSERT INTO effects (run, step) VALUES (args->>'k', (args->>'i')::int) \$\$;
CREATE PROCEDURE sb_wf(args jsonb) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1..$STEPS LOOP
        CALL chrono_forge.durably_execute('sb_step', name => 's' || i::text,
            args => jsonb_build_object('k', args->>'k', 'i', i));
    END LOOP;
END \$\$;
CREATE PROCEDURE sb_timer(args jsonb) LANGUAGE plpgsql AS \$\$
BEGIN
    CALL chrono_forge.wait('15 seconds', 'nap');
    CALL chrono_forge.durably_execute('sb_step', name => 'after_nap',
        args => jsonb_build_object('k', chrono_forge.key(), 'i', 0));
END \$\$;
SELECT count(chrono_forge.start('sb_timer', 't' || i)) FROM generate_series(1, 3) i;
SQL

oc_as "$OC_BIN/pg_basebackup" -h "$OC_DIR" -p $P -U postgres -D "$OC_DIR/standby" -R -X stream \
    || fail "pg_basebackup"
echo "port = $S" >> "$OC_DIR/standby/postgresql.conf"
OC_CLUSTERS+=("$OC_DIR/standby")
oc_start standby || fail "standby did not start"
oc_wait_for $S 30 "SELECT pg_is_in_recovery() AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')" \
    || fail "standby not streaming"

# The workload on the primary; the standby follows it.
oc_q $P -c "SELECT count(chrono_forge.start('sb_wf', 'r' || i, jsonb_build_object('k', 'r' || i)))
            FROM generate_series(1, $RUNS) i" >/dev/null || fail "start"
oc_wait_for $S 30 "SELECT count(*) = $RUNS FROM chrono_forge.workflows WHERE workflow = 'public.sb_wf'" \
    || fail "the standby never saw the runs"
# Stop the primary while its workers hold runs: a pass's lock is committed
# with its first step (quick), and held through the slow ones (a second
# each, so that the runs seen running are still running a moment later).
oc_wait_for $S 60 "SELECT (SELECT count(*) FROM effects) > $RUNS / 2
                   AND (SELECT count(*) >= 2 FROM chrono_forge.workflows WHERE state = 'running')" \
    || fail "nothing ran on the primary"

# While in recovery: no chrono_forge process, and nothing in the log.
expect_eq "$(oc_q $S -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'chrono_forge%'")" 0 \
    "chrono_forge processes on the standby"

# Lose the primary mid-workload; the standby has replayed what it received.
oc_stop primary immediate || fail "stop primary"
sleep 1
running=$(oc_q $S -c "SELECT count(*) FROM chrono_forge.workflows WHERE state = 'running' AND locked_by IS NOT NULL")
echo "runs locked by the lost primary: $running"
[ "$running" -gt 0 ] || fail "no run was locked when the primary went (the test proves nothing)"
standby_lines=$(grep -ci 'chrono_forge' "$OC_DIR/standby.log")
echo "chrono_forge lines in the standby's log before promotion: $standby_lines"
[ "$standby_lines" -le 3 ] || { grep -i chrono_forge "$OC_DIR/standby.log" | head; fail "the standby logged chrono_forge lines"; }
grep -E 'ERROR|FATAL|WARNING' "$OC_DIR/standby.log" | grep -vE 'WAL stream|connect to the primary|walreceiver' \
    && fail "errors in the standby's log"

oc_as "$OC_BIN/pg_ctl" -D "$OC_DIR/standby" -w promote >/dev/null || fail "promote"
oc_wait_for $S 90 "SELECT count(*) = $RUNS + 3 FROM chrono_forge.workflows WHERE state = 'completed'" \
    || { oc_q $S -c "SELECT state, locked_by IS NULL, count(*) FROM chrono_forge.workflows GROUP BY 1, 2"; \
         fail "runs did not complete on the promoted node"; }
expect_eq "$(oc_q $S -c "SELECT count(*) FROM effects")" $((RUNS * STEPS + 3)) "one effect per step"
expect_eq "$(oc_q $S -c "SELECT count(*) FROM (SELECT DISTINCT run, step FROM effects) d")" $((RUNS * STEPS + 3)) \
    "no step repeated"
expect_eq "$(oc_q $S -c "SELECT count(*) FROM chrono_forge.error_logs")" 0 "no errors recorded"
grep -q 're-drove [0-9]* interrupted workflow run' "$OC_DIR/standby.log" || fail "no re-drive logged at promotion"
grep -iE '(ERROR|FATAL).*chrono_forge|chrono_forge.*(ERROR|FATAL)' "$OC_DIR/standby.log" \
    && fail "chrono_forge errors on the promoted node"
exit 0
