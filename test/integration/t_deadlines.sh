# Deadlines with the workers on: runs parked on timers fail at their
# deadline with nothing due to wake the launcher but the deadline itself;
# passes in the middle of a step are stopped, and a step whose pass was
# stopped leaves nothing behind (its effect commits with its log or not
# at all); a parent's deadline cancels its children; a deadline that
# passes while the server is down ends the run after the restart.  The
# bounds only catch a hang; lateness is printed, not asserted.
. "$CF_INTEGRATION_DIR/lib.sh"
q <<'SQL' >/dev/null
CREATE TABLE dl_effects (run text, n int, at timestamptz DEFAULT clock_timestamp());
-- A short step: its effect and its log commit together, or neither.
CREATE FUNCTION dl_tick(args jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dl_effects (run, n) VALUES (args->>'run', (args->>'n')::int);
    PERFORM pg_sleep(0.01);
END $$;
-- Steps until stopped.
CREATE PROCEDURE dl_busy(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..100000 LOOP
        CALL chrono_forge.durably_execute('dl_tick', name => 't' || i,
                                          args => jsonb_build_object('run', args->>'run', 'n', i));
    END LOOP;
END $$;
-- One long step: its effect is written at once, then it sleeps.
CREATE FUNCTION dl_long(args jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dl_effects (run, n) VALUES (args->>'run', 0);
    PERFORM pg_sleep(60);
END $$;
CREATE PROCEDURE dl_stuck(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('dl_long', args => args);
END $$;
CREATE PROCEDURE dl_nap(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('1 hour', 'nap');
END $$;
CREATE PROCEDURE dl_parent(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn_each('c', 'dl_nap',
        'SELECT g AS item_key, ''{}''::jsonb AS args FROM generate_series(1, 20) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['kids'], '1 second', '1 minute');
END $$;
SQL

# 1. Parked on a one-hour timer, deadlines 1 to 3 s away: nothing else is
# due, so only the deadlines wake the launcher.
q -c "SELECT count(chrono_forge.start('dl_nap', 'nap-' || g, '{}',
        jsonb_build_object('timeout', (1 + g % 3) || ' seconds')))
        FROM generate_series(1, 100) g" >/dev/null
wait_for 30 "SELECT count(*) = 100 FROM chrono_forge.workflows WHERE key LIKE 'nap-%' AND state = 'failed'" \
    || fail "runs parked on timers did not fail at their deadlines"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id
                   WHERE w.key LIKE 'nap-%' AND e.error_class = 'CF029'")" 100 "one CF029 per run"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.wakeups k JOIN chrono_forge.workflows w ON w.id = k.workflow_id
                   WHERE w.key LIKE 'nap-%'")" 0 "their timers are gone"
echo "parked runs ended after their deadline: $(q -c "SELECT 'p50 ' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)) || ' ms, max ' || round(max(ms)) || ' ms'
  FROM (SELECT extract(epoch FROM ended_at - deadline) * 1000 AS ms FROM chrono_forge.workflows WHERE key LIKE 'nap-%') s")"
[ "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE key LIKE 'nap-%' AND ended_at < deadline")" = 0 ] \
    || fail "a run ended before its deadline"

# 2. Busy runs, stopped in the middle of their steps: each step's effect
# is there exactly when its log completed.
q -c "SELECT count(chrono_forge.start('dl_busy', 'busy-' || g, jsonb_build_object('run', 'busy-' || g),
        jsonb_build_object('timeout', (1 + g % 3) || ' seconds')))
        FROM generate_series(1, 20) g" >/dev/null
wait_for 60 "SELECT count(*) = 20 FROM chrono_forge.workflows WHERE key LIKE 'busy-%' AND state = 'failed'" \
    || fail "busy runs did not fail at their deadlines"
sleep 1   # a stopped pass's last statements
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows w WHERE key LIKE 'busy-%' AND
                     (SELECT count(*) FROM dl_effects e WHERE e.run = w.key) <>
                     (SELECT count(*) FROM chrono_forge.execution_logs l
                       WHERE l.workflow_id = w.id AND l.step_name LIKE 'durably_execute\$t%' AND l.state = 'completed')")" \
    0 "runs whose effects and step logs disagree"
[ "$(q -c "SELECT count(*) FROM dl_effects WHERE run LIKE 'busy-%'")" -gt 0 ] || fail "the busy runs never stepped"
steps_then=$(q -c "SELECT count(*) FROM dl_effects WHERE run LIKE 'busy-%'")
sleep 1
expect_eq "$(q -c "SELECT count(*) FROM dl_effects WHERE run LIKE 'busy-%'")" "$steps_then" "no step after the deadline"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE key LIKE 'busy-%' AND locked_by IS NOT NULL")" 0 \
    "stopped runs hold no lock"

# 3. One long step: the pass is stopped in the middle of it; its effect
# rolls back with it.
q -c "SELECT chrono_forge.start('dl_stuck', 'stuck', '{\"run\": \"stuck\"}', '{\"timeout\": \"2 seconds\"}')" >/dev/null
wait_for 10 "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND backend_type LIKE 'chrono_forge%')" \
    || fail "the long step never started"
wait_for 20 "SELECT state = 'failed' FROM chrono_forge.workflows WHERE key = 'stuck'" || fail "the long step's run did not fail"
wait_for 10 "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND backend_type LIKE 'chrono_forge%')" \
    || fail "the long step went on after the deadline"
expect_eq "$(q -c "SELECT count(*) FROM dl_effects WHERE run = 'stuck'")" 0 "the stopped step's effect"

# 4. A parent's deadline cancels its twenty children.
# (Other tests' children share the database: these are found by their
# parent's id, which prefixes their keys.)
parent=$(q -c "SELECT chrono_forge.start('dl_parent', 'dl-parent', '{}', '{\"timeout\": \"3 seconds\"}')")
kids="workflow = 'public.dl_nap' AND key LIKE '\$$parent\$%'"
wait_for 20 "SELECT count(*) = 20 FROM chrono_forge.workflows WHERE $kids AND state = 'idle'" \
    || fail "the children did not park"
wait_for 20 "SELECT state = 'failed' FROM chrono_forge.workflows WHERE id = $parent" || fail "the parent did not fail"
wait_for 10 "SELECT count(*) = 20 FROM chrono_forge.workflows WHERE $kids AND state = 'cancelled'" \
    || fail "the children were not cancelled"

# 5. The server dies in the middle of a step; the deadline passes while it
# is down; after the restart the run fails, the step's effect never seen.
q -c "SELECT chrono_forge.start('dl_stuck', 'crash', '{\"run\": \"crash\"}', '{\"timeout\": \"3 seconds\"}')" >/dev/null
wait_for 10 "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND backend_type LIKE 'chrono_forge%')" \
    || fail "the step before the crash never started"
cf_stop_immediate
sleep 3
cf_start || fail "the server did not come back"
wait_for 30 "SELECT state = 'failed' FROM chrono_forge.workflows WHERE key = 'crash'" || fail "the run did not fail after the restart"
expect_eq "$(q -c "SELECT count(*) FROM dl_effects WHERE run = 'crash'")" 0 "the crashed step's effect"
expect_eq "$(q -c "SELECT string_agg(e.error_class, ',') FROM chrono_forge.error_logs e
                   JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key = 'crash'")" CF029 "the crashed run's errors"
echo ok
