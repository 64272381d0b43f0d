# Concurrency limits with the workers on, under load: 300 runs of three
# steps and a short timed wait (parked, a run keeps its place) over a key
# limited to 1, a key limited to 2 and no key, a worker
# SIGKILLed in the middle.  Each run notes when its first step began and
# when its last step ended: no two runs of the key limited to 1 overlap,
# never more than two of the other's do, all runs complete, and the
# gates count nothing in flight at the end.  Then a rate limit, which only
# the launcher's timer can serve.
. "$CF_INTEGRATION_DIR/lib.sh"
q <<'SQL' >/dev/null
CREATE TABLE cc_spans (run text, gate text, what text, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION cc_mark(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO cc_spans (run, gate, what) VALUES (args->>'run', args->>'gate', args->>'what') $$;
CREATE FUNCTION cc_work() RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(0.005) $$;
CREATE PROCEDURE cc_job(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cc_mark', name => 'begin', args => args || '{"what": "begin"}');
    CALL chrono_forge.durably_execute('cc_work');
    CALL chrono_forge.wait('50 milliseconds', 'nap');   -- parked, its place held
    CALL chrono_forge.durably_execute('cc_mark', name => 'end', args => args || '{"what": "end"}');
END $$;
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'one');
SELECT chrono_forge.set_concurrency_limit(2, concurrency_key => 'two');
SQL
q -c "SELECT count(chrono_forge.start('cc_job', g || '-' || i, jsonb_build_object('run', g || '-' || i, 'gate', g),
        CASE WHEN g = 'none' THEN '{}' ELSE jsonb_build_object('concurrency_key', g) END))
        FROM generate_series(1, 100) i, unnest(ARRAY['one', 'two', 'none']) g" >/dev/null

# A worker dies while runs of the gated keys are in flight.
wait_for 120 "SELECT count(*) > 20 FROM chrono_forge.workflows WHERE key LIKE 'one-%' AND state = 'completed'" \
    || fail "the runs limited to one did not progress"
pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' LIMIT 1")
[ -n "$pid" ] || fail "no worker to kill"
kill -9 "$pid"
sleep 1
cf_wait_ready 60 || fail "server did not come back"

wait_for 300 "SELECT count(*) = 300 FROM chrono_forge.workflows WHERE workflow = 'public.cc_job' AND state = 'completed'" \
    || fail "not every run completed: $(q -c "SELECT state, count(*) FROM chrono_forge.workflows GROUP BY 1")"
# The spans of each run (the last ones noted: a step rolled back with a
# killed pass noted nothing).
q <<'SQL' >/dev/null
CREATE VIEW cc_run_spans AS
SELECT run, gate, max(at) FILTER (WHERE what = 'begin') AS b, max(at) FILTER (WHERE what = 'end') AS e
  FROM cc_spans GROUP BY run, gate;
SQL
expect_eq "$(q -c "SELECT count(*) FROM cc_run_spans WHERE b IS NOT NULL AND e IS NOT NULL")" 300 "runs with a span"
# At each run's beginning, how many runs of its gate were between their
# beginning and their end.
most() {
    q -c "SELECT max((SELECT count(*) FROM cc_run_spans o WHERE o.gate = s.gate AND o.b <= s.b AND o.e >= s.b))
            FROM cc_run_spans s WHERE s.gate = '$1'"
}
expect_eq "$(most one)" 1 "most runs of the key limited to 1 in flight at once"
[ "$(most two)" -le 2 ] || fail "more than two runs of the key limited to 2 at once: $(most two)"
echo "most in flight at once: one=$(most one) two=$(most two) none=$(most none)"
# (Without a limit, parked runs pile up: the spans can tell.)
[ "$(most none)" -gt 2 ] || fail "the runs without a key never overlapped more than twice: the check proves nothing"
expect_eq "$(q -c "SELECT string_agg(concurrency_key || '=' || running, ',' ORDER BY concurrency_key)
                   FROM chrono_forge.concurrency_gates")" "one=0,two=0" "the gates' counts at the end"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.concurrency_waiting")" 0 "runs still waiting"

# A rate limit with nothing else due: 20 runs at most 5 a second.  The
# launcher alone admits each batch when the window frees (it sleeps until
# then), so the runs cannot all start within less than three windows.
q -c "SELECT chrono_forge.set_concurrency_limit(NULL, concurrency_key => 'rate', max_starts => 5, per => '1 second')" >/dev/null
q -c "SELECT count(chrono_forge.start('cc_job', 'rate-' || i, jsonb_build_object('run', 'rate-' || i, 'gate', 'rate'),
        '{\"concurrency_key\": \"rate\"}')) FROM generate_series(1, 20) i" >/dev/null
wait_for 60 "SELECT count(*) = 20 FROM chrono_forge.workflows WHERE key LIKE 'rate-%' AND state = 'completed'" \
    || fail "the rate-limited runs did not all complete: $(q -c "SELECT state, count(*) FROM chrono_forge.workflows WHERE key LIKE 'rate-%' GROUP BY 1")"
span=$(q -c "SELECT extract(epoch FROM max(started_at) - min(started_at)) FROM chrono_forge.workflows WHERE key LIKE 'rate-%'")
echo "20 runs at 5 a second started over $span s"
[ "$(q -c "SELECT $span >= 2")" = t ] || fail "20 runs limited to 5 a second all started within $span s"
echo ok
