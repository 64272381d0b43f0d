# wait_for_run() with the workers on: a session blocked in it returns as
# soon as the run completes or is cancelled from another session (well
# before its timeout), a run ended by COMMIT PREPARED within 5 s, a waiter cancelled or terminated leaves no slot in
# the registry behind, and many waiters on many runs (a commit ending more
# runs than the per-transaction list holds included) each return their own
# run's end, while waiters on runs that did not end wait out their timeout.
. "$CF_INTEGRATION_DIR/lib.sh"
D=$(mktemp -d)
q <<'SQL' >/dev/null
CREATE PROCEDURE wr_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.await_event('go');
    PERFORM chrono_forge.context_set('went', 'true');
END $$;
SQL

# wait_bg NAME KEY TIMEOUT: a session waiting for run KEY, in the background;
# its output (state|context|seconds waited) in $D/NAME.
wait_bg() {
    psql -XAtq -c "SELECT state, context, round(extract(epoch FROM clock_timestamp() - statement_timestamp())::numeric, 1)
                     FROM chrono_forge.wait_for_run('wr_wf', '$2', $3)" > "$D/$1" 2>&1 &
}
waiters() { q -c "SELECT chrono_forge.run_waiters()"; }
# The waiters are registered (the registry's count) and asleep on their latch.
wait_registered() {
    wait_for 30 "SELECT chrono_forge.run_waiters() = $1 AND (SELECT count(*) FROM pg_stat_activity
                   WHERE backend_type = 'client backend' AND wait_event = 'Extension'
                     AND query LIKE '%wait_for_run%') = $1" || fail "expected $1 waiters, registry says $(waiters)"
}
expect_returned() {
    local f=$D/$1 state=$2 max=$3
    [ "$(cut -d'|' -f1 "$f")" = "$state" ] || fail "$1: expected $state, got: $(cat "$f")"
    awk -F'|' -v max="$max" '{ exit !($3 < max) }' "$f" || fail "$1 returned too late: $(cat "$f")"
}

# A run that completes later: the waiter returns completed, long before its timeout.
q -c "SELECT chrono_forge.start('wr_wf', 'done')" >/dev/null
wait_bg done done "'120 s'"
pid_done=$!
wait_registered 1
sleep 0.5
q -c "SELECT chrono_forge.send_event('wr_wf', 'done', 'go')" >/dev/null
wait $pid_done
expect_returned done completed 60
expect_eq "$(cut -d'|' -f2 "$D/done")" '{"went": true}' "the completed run's context"

# A run cancelled from another session.
q -c "SELECT chrono_forge.start('wr_wf', 'cancelled')" >/dev/null
wait_bg cancelled cancelled "'120 s'"
pid=$!
wait_registered 1
q -c "SELECT chrono_forge.cancel('wr_wf', 'cancelled')" >/dev/null
wait $pid
expect_returned cancelled cancelled 60

# A waiter cancelled (ERROR) or terminated (FATAL) leaves no slot behind,
# and a later wait still works.
q -c "SELECT chrono_forge.start('wr_wf', 'later')" >/dev/null
wait_bg killed later NULL
pid=$!
wait_registered 1
q -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '%wait_for_run%'" >/dev/null
wait $pid
grep -q "canceling statement" "$D/killed" || fail "cancelled waiter: $(cat "$D/killed")"
expect_eq "$(waiters)" 0 "registry after a cancelled waiter"
wait_bg terminated later NULL
pid=$!
wait_registered 1
q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'Extension' AND query LIKE '%wait_for_run%'" >/dev/null
wait $pid
wait_for 10 "SELECT chrono_forge.run_waiters() = 0" || fail "registry after a terminated waiter: $(waiters)"
wait_bg later later "'120 s'"
pid=$!
wait_registered 1
q -c "SELECT chrono_forge.send_event('wr_wf', 'later', 'go')" >/dev/null
wait $pid
expect_returned later completed 60

# A run ended by a prepared transaction: its COMMIT PREPARED tells nobody
# (the callbacks ran at PREPARE), so the waiter, with no timeout, finds it
# ended on its next periodic read (every 5 s) instead of sleeping forever.
[ "$(q -c "SHOW max_prepared_transactions")" != 0 ] || fail "the integration cluster needs max_prepared_transactions"
q -c "SELECT chrono_forge.start('wr_wf', 'prepared')" >/dev/null
wait_bg prepared prepared NULL
pid=$!
wait_registered 1
q -c "BEGIN" -c "SELECT chrono_forge.cancel('wr_wf', 'prepared')" -c "PREPARE TRANSACTION 'cf_wait_prepared'" >/dev/null
sleep 0.5
q -c "COMMIT PREPARED 'cf_wait_prepared'" >/dev/null
wait $pid
expect_returned prepared cancelled 30

# Many waiters on many runs: m1..m6 complete, m7..m80 are cancelled in one
# transaction (more runs than one commit lists: every waiter is woken and
# re-checks), x1..x4 do not end: their waiters wait out their 10 s.
q -c "SELECT count(chrono_forge.start('wr_wf', 'm' || i)) FROM generate_series(1, 80) i" \
  -c "SELECT count(chrono_forge.start('wr_wf', 'x' || i)) FROM generate_series(1, 4) i" >/dev/null
pids=
for i in $(seq 1 12); do wait_bg "m$i" "m$i" "'120 s'"; pids="$pids $!"; done
for i in $(seq 1 4); do wait_bg "x$i" "x$i" "'10 s'"; pids="$pids $!"; done
wait_registered 16
q -c "SELECT count(chrono_forge.send_event('wr_wf', 'm' || i, 'go')) FROM generate_series(1, 6) i" >/dev/null
q -c "SELECT sum(chrono_forge.cancel('wr_wf', 'm' || i)) FROM generate_series(7, 80) i" >/dev/null
for p in $pids; do wait "$p"; done
for i in $(seq 1 6); do expect_returned "m$i" completed 60; done
for i in $(seq 7 12); do expect_returned "m$i" cancelled 60; done
for i in $(seq 1 4); do
    expect_returned "x$i" idle 60
    awk -F'|' '{ exit !($3 >= 10) }' "$D/x$i" || fail "x$i returned before its timeout: $(cat "$D/x$i")"
done
expect_eq "$(waiters)" 0 "registry after every waiter returned"
rm -rf "$D"
