# Priorities with the workers on: a backlog committed at once is worked
# highest priority first; prioritized runs whose timers come due in the
# middle of a backlog go before the rest of it; after a worker is SIGKILLed
# (the server restarts all backends) prioritized runs still go first, and
# every run's step ran exactly once.
. "$CF_INTEGRATION_DIR/lib.sh"
q <<'SQL' >/dev/null
CREATE TABLE pr_done (seq bigserial, phase text, key text, prio int);
CREATE FUNCTION pr_mark(args jsonb) RETURNS void LANGUAGE sql AS $$
    SELECT pg_sleep(0.002);
    INSERT INTO pr_done (phase, key, prio) VALUES (args->>'phase', args->>'key', (args->>'prio')::int)
$$;
CREATE PROCEDURE pr_job(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF args ? 'nap' THEN
        CALL chrono_forge.wait((args->>'nap')::interval, 'nap');
    END IF;
    CALL chrono_forge.durably_execute('pr_mark', args => args);
END $$;
-- Start n runs of phase ph at priority p (0: none).
CREATE FUNCTION pr_start(ph text, p int, n int, extra jsonb DEFAULT '{}') RETURNS bigint LANGUAGE sql AS $$
    SELECT count(chrono_forge.start('pr_job', ph || '-' || p || '-' || i,
             jsonb_build_object('phase', ph, 'key', ph || '-' || p || '-' || i, 'prio', p) || extra,
             CASE WHEN p = 0 THEN '{}'::jsonb ELSE jsonb_build_object('priority', p) END))
      FROM generate_series(1, n) i
$$;
-- Runs of phase ph and priority p done before the last of priority hi.
CREATE FUNCTION pr_before_last(ph text, p int, hi int) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pr_done d WHERE d.phase = ph AND d.prio = p
       AND d.seq < (SELECT max(seq) FROM pr_done h WHERE h.phase = ph AND h.prio = hi)
$$;
SQL
done_phase() {
    wait_for 300 "SELECT count(*) = $2 FROM pr_done WHERE phase = '$1'" \
        || fail "phase $1: $(q -c "SELECT count(*) FROM pr_done WHERE phase = '$1'") of $2 done"
}

# 1. One commit: 400 runs without a priority, then 30 at 5, then 30 at 10.
q <<'SQL' >/dev/null
BEGIN;
SELECT pr_start('bulk', 0, 400);
SELECT pr_start('bulk', 5, 30);
SELECT pr_start('bulk', 10, 30);
COMMIT;
SQL
done_phase bulk 460
p5=$(q -c "SELECT pr_before_last('bulk', 5, 10)")
p0=$(q -c "SELECT pr_before_last('bulk', 0, 5)")
echo "bulk: done before the last priority 10: $p5 of priority 5; before the last priority 5: $p0 of none"
# (With two workers, a claim that finds every higher run taken by the
# other worker takes the next one: at most a few.)
[ "$p5" -le 4 ] || fail "$p5 runs of priority 5 were done before the last of priority 10"
[ "$p0" -le 4 ] || fail "$p0 runs without a priority were done before the last of priority 5"

# 2. Timers: 20 runs at priority 3 nap 300 ms, then a backlog of 800 runs
# without one; the napping runs go before what is left of it.
q -c "SELECT pr_start('timers', 3, 20, '{\"nap\": \"300 milliseconds\"}')" >/dev/null
q -c "SELECT pr_start('timers', 0, 800)" >/dev/null
done_phase timers 820
after=$(q -c "SELECT count(*) FROM pr_done WHERE phase = 'timers' AND prio = 0
                AND seq > (SELECT max(seq) FROM pr_done WHERE phase = 'timers' AND prio = 3)")
echo "timers: $after runs without a priority done after the last napping run"
[ "$after" -ge 200 ] || fail "only $after of 800 runs without a priority were left after the napping runs"

# 3. A worker SIGKILLed just after 300 runs without a priority and 20 at 7
# commit: after the restart the prioritized runs still go first, and each
# step ran exactly once.
q <<'SQL' >/dev/null
BEGIN;
SELECT pr_start('crash', 0, 300);
SELECT pr_start('crash', 7, 20);
COMMIT;
SQL
pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' LIMIT 1")
[ -n "$pid" ] || fail "no worker to kill"
kill -9 "$pid"
sleep 1
cf_wait_ready 60 || fail "server did not come back"
done_phase crash 320
expect_eq "$(q -c "SELECT count(DISTINCT key) FROM pr_done WHERE phase = 'crash'")" 320 "distinct runs done"
p0=$(q -c "SELECT pr_before_last('crash', 0, 7)")
echo "crash: $p0 runs without a priority done before the last priority 7"
[ "$p0" -le 10 ] || fail "$p0 runs without a priority were done before the last of priority 7"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.pr_job' AND state <> 'completed'")" 0 "runs not completed"
echo ok
