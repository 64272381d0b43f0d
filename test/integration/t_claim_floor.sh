# A busy worker claims from shortly before the wake-up it claimed last
# (its floor), not from the start of the wake-up index.  A wake-up due
# well before that floor (here: written by a transaction that committed
# late) must still be claimed at once, by the next claim from the start,
# not after the backlog above the floor has drained.
. "$CF_INTEGRATION_DIR/lib.sh"
N=6000
q <<'SQL' >/dev/null
CREATE PROCEDURE fl_wf(args jsonb) LANGUAGE plpgsql AS $$ BEGIN PERFORM 1; END $$;
SQL
gate=$(mktemp -u /tmp/cf-floor-gate.XXXXXX)
# The late run: started (its wake-up due now), committed only once the
# workers are well into a backlog due later.
{
    echo "BEGIN;"
    echo "SELECT chrono_forge.start('fl_wf', 'late') > 0;"
    while [ ! -f "$gate" ]; do sleep 0.05; done
    echo "COMMIT;"
} | q >/dev/null &
late=$!
wait_for 30 "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE state = 'idle in transaction')" \
    || fail "the late run's transaction did not start"
sleep 0.5
q -c "SELECT count(chrono_forge.start('fl_wf', 'b' || i)) FROM generate_series(1, $N) i" >/dev/null
wait_for 120 "SELECT count(*) >= 500 FROM chrono_forge.workflows WHERE workflow = 'public.fl_wf' AND state = 'completed'" \
    || fail "the backlog did not start"
touch "$gate"
wait "$late" || fail "the late run's transaction failed"
rm -f "$gate"
wait_for 120 "SELECT count(*) = $N + 1 FROM chrono_forge.workflows WHERE workflow = 'public.fl_wf' AND state = 'completed'" \
    || fail "the runs did not complete"

# Its wake-up was due before every backlog run's: it must not wait for
# the backlog to drain (a rescan is due every 100 ms).
after=$(q -c "SELECT count(*) FROM chrono_forge.workflows b, chrono_forge.workflows l
               WHERE l.workflow = 'public.fl_wf' AND l.key = 'late'
                 AND b.workflow = 'public.fl_wf' AND b.key <> 'late' AND b.ended_at > l.ended_at")
[ "$after" -ge $((N / 5)) ] \
    || fail "the late run ended after all but $after of $N backlog runs (it was due first, and committed with 500 or so ended)"
echo "ok: the late run ended with $after of $N backlog runs still to end"
