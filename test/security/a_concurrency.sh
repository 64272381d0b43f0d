# Concurrency limits (0.11.0) as an attacker: intruder, an ordinary role
# with its own schema and CREATE on public, goes after tenant_a's gates.
#  - Gates are per owner: intruder's limit on tenant_a's key name, and on
#    tenant_a's workflow by every spelling, makes its own gate; tenant_a's
#    runs are neither held back nor let through by it.
#  - intruder filling a key of the same name (1,000 runs waiting) does not
#    hold up tenant_a's runs of that key.
#  - The gate tables show intruder only its own rows; it can write none
#    of them (42501), so it can neither free a place nor lock a gate (a
#    row lock needs UPDATE).
#  - wake() and send_event() of its own waiting run do not let it jump
#    its own queue; of tenant_a's, they answer as for a missing run.
. "$CF_SECURITY_DIR/identity_lib.sh"
sql_as tenant_a >/dev/null <<'SQL'
GRANT USAGE ON SCHEMA tenant_a TO PUBLIC;
CREATE PROCEDURE tenant_a.job(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.await_event('go');
END $$;
GRANT EXECUTE ON PROCEDURE tenant_a.job(jsonb) TO PUBLIC;
SELECT chrono_forge.set_concurrency_limit(2, concurrency_key => 'shared-name');
SELECT chrono_forge.start('tenant_a.job', 'a' || g, '{}', '{"concurrency_key": "shared-name"}')
  FROM generate_series(1, 3) g;
SQL
wait_for 60 "SELECT count(*) = 2 FROM chrono_forge.execution_logs WHERE step_name = 'await_event\$go'" \
    || fail "tenant_a's two admitted runs did not reach their event"

# intruder: limits of its own under tenant_a's names, and a flood of runs.
for name in tenant_a.job '"tenant_a".job' TENANT_A.JOB; do
    as intruder -c "SELECT chrono_forge.set_concurrency_limit(1, workflow => '$name')" >/dev/null \
        || fail "intruder could not limit its own runs of $name"
done
as intruder >/dev/null <<'SQL'
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'shared-name');
SELECT count(chrono_forge.start('tenant_a.job', 'i' || g, '{}', '{"concurrency_key": "shared-name"}'))
  FROM generate_series(1, 1000) g;
SQL
expect_eq "$(q -c "SELECT owner || ':' || coalesce(concurrency_key, workflow) || ':' || coalesce(max_running::text, '-')
                   FROM chrono_forge.concurrency_gates ORDER BY 1")" \
    "intruder:shared-name:1
intruder:tenant_a.job:1
tenant_a:shared-name:2" "the gates, one per owner and name"

# tenant_a's places go on as before: one of its runs ends, its third runs.
as tenant_a -c "SELECT chrono_forge.send_event('tenant_a.job', 'a1', 'go')" >/dev/null
wait_for 60 "SELECT count(*) = 3 FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
              WHERE w.owner = 'tenant_a'::regrole AND l.step_name = 'await_event\$go'" \
    || fail "tenant_a's waiting run was held up by intruder's gate"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows w WHERE owner = 'intruder'::regrole
                   AND EXISTS (SELECT FROM chrono_forge.concurrency_waiting q WHERE q.workflow_id = w.id)")" 999 \
    "intruder's runs waiting behind its own limit"

# What intruder sees and may do.
expect_eq "$(as intruder -c "SELECT count(*) FROM chrono_forge.concurrency_gates WHERE owner <> 'intruder'::regrole")" 0 \
    "other roles' gates visible to intruder"
expect_eq "$(as intruder -c "SELECT count(*) FROM chrono_forge.concurrency_waiting q
                             JOIN chrono_forge.workflows w ON w.id = q.workflow_id WHERE w.owner <> 'intruder'::regrole")" 0 \
    "other roles' waiting runs visible to intruder"
for stmt in "UPDATE chrono_forge.concurrency_gates SET running = 0" \
            "SELECT 1 FROM chrono_forge.concurrency_gates FOR UPDATE" \
            "DELETE FROM chrono_forge.concurrency_waiting" \
            "INSERT INTO chrono_forge.concurrency_releases (gate_id) SELECT id FROM chrono_forge.concurrency_gates" \
            "SELECT count(*) FROM chrono_forge.concurrency_releases" \
            "UPDATE chrono_forge.workflows SET gate_id = NULL"; do
    ans=$(answer_as intruder "$stmt")
    case "$ans" in *42501*) ;; *) fail "intruder: $stmt answered: $ans" ;; esac
done

# wake() and send_event(): its own waiting run stays waiting; tenant_a's
# runs answer as missing.
as intruder -c "SELECT chrono_forge.wake('tenant_a.job', 'i500')" >/dev/null
as intruder -c "SELECT chrono_forge.send_event('tenant_a.job', 'i500', 'go')" >/dev/null
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.wakeups k JOIN chrono_forge.workflows w ON w.id = k.workflow_id
                   WHERE w.owner = 'intruder'::regrole AND w.key = 'i500'")" 0 "wake-ups of intruder's waiting run"
for call in "SELECT chrono_forge.wake('tenant_a.job', 'a3')" "SELECT chrono_forge.send_event('tenant_a.job', 'a3', 'go')"; do
    ans=$(answer_as intruder "$call")
    case "$ans" in *CF014*'does not exist'*) ;; *) fail "intruder: $call answered: $ans" ;; esac
done
echo ok
