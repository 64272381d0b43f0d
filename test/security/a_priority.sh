# Priorities (0.13.0) as an attacker: intruder gives its own backlog the
# highest priority there is, to starve tenant_a.
#  - With two workers and the default share (all workers but one per
#    owner), tenant_a's runs without a priority are served while
#    intruder's prioritized backlog is still mostly due: a priority orders
#    claims, the share still binds between owners.
#  - intruder cannot see tenant_a's priorities, nor raise or forge one
#    (the runs' and wake-ups' tables are not writable: 42501); a priority
#    that is not an integer in range is refused (CF012), nothing written.
. "$CF_SECURITY_DIR/lib.sh"
trap 'q -c "ALTER SYSTEM RESET chrono_forge.enabled" -c "SELECT pg_reload_conf()" >/dev/null' EXIT
q -c "ALTER SYSTEM SET chrono_forge.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "workers did not stop"

as intruder -f - >/dev/null <<'SQL'
CREATE FUNCTION intruder.slow() RETURNS int LANGUAGE sql AS 'SELECT 1 FROM pg_sleep(0.05)';
CREATE PROCEDURE intruder.flood(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('intruder.slow'); END $$;
SELECT count(chrono_forge.start('intruder.flood', 'f' || g, '{}', '{"priority": 2147483647}'))
  FROM generate_series(1, 200) g;
SQL
as tenant_a -f - >/dev/null <<'SQL'
CREATE FUNCTION tenant_a.step() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_a.step'); END $$;
SELECT count(chrono_forge.start('tenant_a.wf', 'k' || g, '{}', '{"priority": 1}')) FROM generate_series(1, 5) g;
SELECT count(chrono_forge.start('tenant_a.wf', 'plain' || g)) FROM generate_series(1, 5) g;
SQL

# Neither sees the other's runs or wake-ups, so neither their priorities.
expect_eq "$(as tenant_a "SELECT count(*) FROM chrono_forge.wakeups WHERE priority > 1")" 0 "intruder's wake-ups seen by tenant_a"
expect_eq "$(as intruder "SELECT count(*) FROM chrono_forge.workflows WHERE workflow LIKE 'tenant_a.%'")" 0 "tenant_a's runs seen by intruder"
# Raising or forging a priority: not writable.
for stmt in \
    "UPDATE chrono_forge.workflows SET priority = 2147483647" \
    "UPDATE chrono_forge.wakeups SET priority = NULL" \
    "INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason, priority) SELECT id, now(), 'x', 5 FROM chrono_forge.workflows LIMIT 1"; do
    ans=$(as intruder -c "$stmt" 2>&1 || true)
    case "$ans" in
        *'permission denied'*) ;;
        *) fail "as intruder, $stmt answered: $ans" ;;
    esac
done
for bad in '"2147483647"' '-1' '2147483648' '1.5' '"1; DROP TABLE x"' '{"a": 1}'; do
    ans=$(as intruder -v VERBOSITY=sqlstate -c "SELECT chrono_forge.start('intruder.flood', 'bad', '{}', '{\"priority\": $bad}')" 2>&1 || true)
    case "$ans" in
        *CF012*) ;;
        *) fail "priority $bad answered: $ans" ;;
    esac
done
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE key = 'bad'")" 0 "runs of refused starts"

# The workers on: tenant_a's ten runs complete while most of intruder's
# backlog (10 s of one worker's time) is still due.
q -c "ALTER SYSTEM RESET chrono_forge.enabled" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 60 "SELECT count(*) = 10 FROM chrono_forge.workflows WHERE workflow = 'tenant_a.wf' AND state = 'completed'" \
    || fail "tenant_a's runs were not served: $(q -c "SELECT workflow, state, count(*) FROM chrono_forge.workflows GROUP BY 1, 2")"
left=$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'intruder.flood' AND state <> 'completed'")
echo "intruder's runs not completed when tenant_a's were: $left of 200"
[ "$left" -ge 100 ] || fail "tenant_a's runs waited for $((200 - left)) of intruder's prioritized runs"
echo ok
