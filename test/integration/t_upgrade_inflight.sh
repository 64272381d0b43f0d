# ALTER EXTENSION chrono_forge UPDATE from 0.4.0 to the current version
# with the workers on and runs in every state: parked on a timer, parked on
# an event, in a pass (a step sleeping), fan-out children not started yet
# in spawn_batches, of two owners.  The update (its table locks wait for
# the transactions of passes in flight) loses nothing: afterwards every run
# completes exactly once, under its owner, and the identity rules of 0.5.0
# hold for new runs.
. "$CF_INTEGRATION_DIR/lib.sh"
q -c "DROP EXTENSION chrono_forge CASCADE" -c "CREATE EXTENSION chrono_forge VERSION '0.4.0'" >/dev/null 2>&1
q <<'SQL' >/dev/null
DROP ROLE IF EXISTS up_bob;
CREATE ROLE up_bob;
GRANT USAGE, CREATE ON SCHEMA public TO up_bob;
CREATE TABLE up_done (key text, who name, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT ON up_done TO PUBLIC;
CREATE FUNCTION up_mark(args jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO up_done (key, who) VALUES (args->>'k', current_user) $$;
CREATE FUNCTION up_nap() RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(3) $$;
CREATE PROCEDURE up_timer(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('4 seconds', 'w');
    CALL chrono_forge.durably_execute('public.up_mark', args => args);
END $$;
CREATE PROCEDURE up_event(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.await_event('go');
    CALL chrono_forge.durably_execute('public.up_mark', args => args);
END $$;
CREATE PROCEDURE up_busy(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('public.up_nap');
    CALL chrono_forge.durably_execute('public.up_mark', args => args);
END $$;
CREATE PROCEDURE up_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('public.up_mark', args => args); END $$;
CREATE PROCEDURE up_fan(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('2 seconds', 'w');
    CALL chrono_forge.branch('b');
    CALL chrono_forge.spawn_each('i', 'up_child',
        'SELECT g AS item_key, jsonb_build_object(''k'', ''child'' || g) AS args FROM generate_series(1, 300) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['b']);
    CALL chrono_forge.durably_execute('public.up_mark', args => args);
END $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO up_bob;
GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA public TO up_bob;
SELECT chrono_forge.start('up_timer', 't' || g, jsonb_build_object('k', 't' || g)) FROM generate_series(1, 20) g;
SELECT chrono_forge.start('up_event', 'e1', '{"k": "e1"}');
SELECT chrono_forge.start('up_busy', 'b' || g, jsonb_build_object('k', 'b' || g)) FROM generate_series(1, 2) g;
SELECT chrono_forge.start('up_fan', 'f1', '{"k": "f1"}');
SET ROLE up_bob;
SELECT chrono_forge.start('up_timer', 'bob1', '{"k": "bob1"}');
RESET ROLE;
SQL
# Wait until a pass is in flight and the fan-out has children waiting.
wait_for 30 "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' AND wait_event = 'PgSleep')" \
    || fail "no pass in flight"
wait_for 30 "SELECT count(*) > 0 FROM chrono_forge.spawn_batches" || true
q -c "ALTER EXTENSION chrono_forge UPDATE" >/dev/null || fail "update failed"
expect_eq "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge'")" \
    "$(q -c "SELECT default_version FROM pg_available_extensions WHERE name = 'chrono_forge'")" "version after the update"
q -c "SELECT chrono_forge.send_event('up_event', 'e1', 'go')" >/dev/null || fail "send_event after the update"
wait_for 120 "SELECT count(*) = 325 FROM up_done" \
    || fail "not every run completed: $(q -c "SELECT count(*) FROM up_done") of 325; $(q -c "SELECT state, count(*) FROM chrono_forge.workflows GROUP BY 1") $(q -c "SELECT error_message FROM chrono_forge.error_logs LIMIT 3")"
q -c "SELECT pg_sleep(1)" >/dev/null
expect_eq "$(q -c "SELECT count(*) FROM up_done")" 325 "each run's last step once"
expect_eq "$(q -c "SELECT count(DISTINCT key) FROM up_done")" 325 "no run's last step twice"
expect_eq "$(q -c "SELECT who FROM up_done WHERE key = 'bob1'")" up_bob "bob's run as bob"
expect_eq "$(q -c "SELECT count(*) FROM up_done WHERE key <> 'bob1' AND who <> current_user")" 0 "the others as their owner"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE state <> 'completed'")" 0 "every run completed"
# After the update, another owner's start with the same workflow and key
# is a run of its own.
a=$(q -c "SELECT chrono_forge.start('up_timer', 'same', '{\"k\": \"same-a\"}')")
b=$(q -c "SET ROLE up_bob; SELECT chrono_forge.start('up_timer', 'same', '{\"k\": \"same-b\"}')" | tail -1)
[ -n "$a" ] && [ -n "$b" ] && [ "$a" != "$b" ] || fail "two owners' starts of one key gave '$a' and '$b'"
wait_for 60 "SELECT count(*) = 2 FROM up_done WHERE key LIKE 'same-%'" || fail "the two runs did not both complete"
q -c "DROP EXTENSION chrono_forge CASCADE" -c "CREATE EXTENSION chrono_forge" >/dev/null 2>&1
q -c "DROP OWNED BY up_bob CASCADE" -c "DROP ROLE up_bob" >/dev/null
