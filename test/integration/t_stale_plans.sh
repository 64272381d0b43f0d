# Workers whose plans were made while the engine's tables were small (here:
# analyzed empty, autovacuum off so nothing re-analyzes them) replan as the
# tables grow: a burst of runs must not read execution_logs whole once per
# pass.  Counted by pg_stat_user_tables.seq_scan on execution_logs: one per
# pass if the pass's replay read kept its first plan.
. "$CF_INTEGRATION_DIR/lib.sh"
N=10000
TABLES="chrono_forge.workflows, chrono_forge.execution_logs, chrono_forge.wakeups"
q <<SQL >/dev/null
CREATE TABLE sp_out (k text);
CREATE FUNCTION sp_step() RETURNS void LANGUAGE sql AS \$\$ INSERT INTO sp_out VALUES (chrono_forge.key()) \$\$;
CREATE PROCEDURE sp_wf(args jsonb) LANGUAGE plpgsql AS \$\$
BEGIN
    CALL chrono_forge.durably_execute('sp_step');
END \$\$;
ALTER TABLE chrono_forge.workflows SET (autovacuum_enabled = off);
ALTER TABLE chrono_forge.execution_logs SET (autovacuum_enabled = off);
ALTER TABLE chrono_forge.wakeups SET (autovacuum_enabled = off);
DELETE FROM chrono_forge.workflows;
SQL
q -c "VACUUM ANALYZE $TABLES" >/dev/null
# The workers make their plans on the small tables.
q -c "SELECT count(chrono_forge.start('sp_wf', 'warm' || i)) FROM generate_series(1, 20) i" >/dev/null
wait_for 60 "SELECT count(*) = 20 FROM chrono_forge.workflows WHERE workflow = 'public.sp_wf' AND state = 'completed'" \
    || fail "warm-up runs did not complete"
seq_scans() {
    sleep 2     # the workers report their counts about once a second
    q -c "SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'chrono_forge.execution_logs'::regclass"
}
S0=$(seq_scans)
q -c "SELECT count(chrono_forge.start('sp_wf', 'k' || i)) FROM generate_series(1, $N) i" >/dev/null
wait_for 600 "SELECT count(*) = $N + 20 FROM chrono_forge.workflows WHERE workflow = 'public.sp_wf' AND state = 'completed'" \
    || fail "the burst did not complete"
S1=$(seq_scans)
echo "execution_logs sequential scans during $N passes: $((S1 - S0))"
[ $((S1 - S0)) -lt $((N / 2)) ] || fail "$((S1 - S0)) sequential scans of execution_logs for $N passes: plans made on the small table were kept"
expect_eq "$(q -c "SELECT count(*) FROM sp_out")" "$((N + 20))" "every step ran once"

q <<'SQL' >/dev/null
DELETE FROM chrono_forge.workflows WHERE workflow = 'public.sp_wf';
ALTER TABLE chrono_forge.workflows RESET (autovacuum_enabled);
ALTER TABLE chrono_forge.execution_logs RESET (autovacuum_enabled);
ALTER TABLE chrono_forge.wakeups RESET (autovacuum_enabled);
SQL
q -c "ANALYZE $TABLES" >/dev/null
