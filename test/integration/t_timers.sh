# With the workers on: waits, polls, events and wakes resume their runs by
# themselves.  The bounds here only catch a hang; lateness is measured by
# the benchmarks (BENCHMARKS.md).
. "$CF_INTEGRATION_DIR/lib.sh"
q <<'SQL' >/dev/null
CREATE TABLE tm_seen (key text, what text, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION tm_mark(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO tm_seen (key, what) VALUES (args->>'k', args->>'what') $$;
CREATE TABLE tm_flag (go boolean);
INSERT INTO tm_flag VALUES (false);
CREATE SEQUENCE tm_polls;
CREATE FUNCTION tm_third_poll() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RAISE LOG 'TMPOLL %', nextval('tm_polls'); RETURN currval('tm_polls') >= 3; END $$;
CREATE FUNCTION tm_go() RETURNS boolean LANGUAGE sql AS $$ SELECT go FROM tm_flag $$;
CREATE PROCEDURE tm_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE p jsonb;
BEGIN
    CALL chrono_forge.wait('1 second', 'one_second');
    CALL chrono_forge.durably_execute('tm_mark', name => 'after_wait', args => jsonb_build_object('k', args->>'k', 'what', 'after wait'));
    CALL chrono_forge.wait_until('tm_third_poll', check_interval => '200 milliseconds');
    CALL chrono_forge.continue_if('tm_go');
    CALL chrono_forge.await_event('go', p);
    CALL chrono_forge.durably_execute('tm_mark', name => 'done', args => jsonb_build_object('k', args->>'k', 'what', p->>'what'));
END $$;
SELECT chrono_forge.start('tm_wf', 't1', '{"k": "t1"}');
SQL
wait_for 10 "SELECT EXISTS (SELECT 1 FROM tm_seen WHERE what = 'after wait')" || fail "the 1 s wait never resumed"
late=$(q -c "SELECT round(extract(epoch FROM s.at - (l.metadata->>'wait_until')::timestamptz) * 1000)
               FROM tm_seen s, chrono_forge.execution_logs l WHERE s.what = 'after wait' AND l.step_name = 'wait\$one_second'")
echo "1 s wait resumed ${late} ms after its due time"
[ "$late" -ge 0 ] || fail "resumed before its due time"
wait_for 10 "SELECT state = 'completed' FROM chrono_forge.execution_logs WHERE step_name = 'wait_until\$tm_third_poll'" \
    || fail "wait_until never saw its third poll"
wait_for 10 "SELECT state = 'pending' FROM chrono_forge.execution_logs WHERE step_name = 'continue_if\$tm_go'" \
    || fail "continue_if not reached"
q -c "UPDATE tm_flag SET go = true" -c "SELECT chrono_forge.wake('tm_wf', 't1')" >/dev/null
wait_for 10 "SELECT EXISTS (SELECT 1 FROM chrono_forge.execution_logs WHERE step_name = 'await_event\$go')" \
    || fail "wake() did not resume continue_if"
q -c "SELECT chrono_forge.send_event('tm_wf', 't1', 'go', '{\"what\": \"event payload\"}')" >/dev/null
wait_for 10 "SELECT state = 'completed' FROM chrono_forge.workflows WHERE key = 't1'" || fail "the event did not resume the run"
expect_eq "$(q -c "SELECT what FROM tm_seen WHERE what <> 'after wait'")" "event payload" "payload delivered"
expect_eq "$(q -c "SELECT attempts FROM chrono_forge.execution_logs WHERE step_name = 'wait_until\$tm_third_poll'")" 3 "polled exactly three times"
