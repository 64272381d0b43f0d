# Deadlines (0.11.0) as an attacker: intruder, an ordinary role with its
# own schema and CREATE on public, goes after tenant_a's runs through
# their deadlines.
#  - set_deadline() of tenant_a's run, by every spelling, answers as for a
#    missing run (CF014); the run keeps its deadline and goes on.
#  - cancel_requests, where a held run's deadline is kept, is neither
#    readable nor writable; intruder cannot plant a request of kind
#    'deadline' for tenant_a's run.
#  - intruder's own run of tenant_a's key, with a deadline, ends alone.
#  - intruder's children, cancelled by its deadline, are its own: tenant_a's
#    children of the same branch name are not touched.
#  - A flood of 3,000 of intruder's runs all past their deadline at once
#    does not hold up tenant_a's timer (the sweep ends them in batches).
#  - intruder's run_pending() ends only intruder's runs.
. "$CF_SECURITY_DIR/identity_lib.sh"
sql_as tenant_a >/dev/null <<'SQL'
GRANT USAGE ON SCHEMA tenant_a TO PUBLIC;
CREATE PROCEDURE tenant_a.nap(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('1 hour', 'nap');
END $$;
CREATE PROCEDURE tenant_a.tick(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('3 seconds', 'short');
END $$;
CREATE PROCEDURE tenant_a.parent(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn_each('c', 'tenant_a.nap', 'SELECT g AS item_key FROM generate_series(1, 5) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['kids']);
END $$;
SELECT chrono_forge.start('tenant_a.nap', 'victim', '{}', '{"timeout": "1 hour"}');
SELECT chrono_forge.start('tenant_a.parent', 'family');
SQL
wait_for 60 "SELECT count(*) = 5 FROM chrono_forge.workflows WHERE key LIKE '\$%' AND state::text = 'idle'" \
    || fail "tenant_a's children did not park"
deadline_before=$(q -c "SELECT deadline FROM chrono_forge.workflows WHERE key = 'victim'")

# set_deadline() of tenant_a's run: as missing, by every spelling.
for name in tenant_a.nap '"tenant_a".nap' TENANT_A.NAP nap; do
    for when in "'2000-01-01'" NULL; do
        ans=$(answer_as intruder "SELECT chrono_forge.set_deadline('$name', 'victim', $when)")
        case "$ans" in
            *CF014*'does not exist'*) ;;
            *) fail "set_deadline('$name', victim, $when) as intruder answered: $ans" ;;
        esac
    done
done
ans=$(answer_as intruder "SELECT chrono_forge.set_deadline('tenant_a.nap', 'no-such-run', NULL)")
case "$ans" in *CF014*'does not exist'*) ;; *) fail "a missing run answered otherwise: $ans" ;; esac

# The requests table: no read, no write.
for stmt in "SELECT count(*) FROM chrono_forge.cancel_requests" \
            "INSERT INTO chrono_forge.cancel_requests (workflow_id, requested_by, cancelled_run, requested_at, kind) SELECT id, 'intruder', id, now(), 'deadline' FROM chrono_forge.workflows" \
            "UPDATE chrono_forge.workflows SET deadline = '2000-01-01'" \
            "DELETE FROM chrono_forge.cancel_requests"; do
    ans=$(answer_as intruder "$stmt")
    case "$ans" in *42501*) ;; *) fail "intruder: $stmt answered: $ans" ;; esac
done

# intruder's own run of the same key ends at its deadline; tenant_a's not.
as intruder >/dev/null <<'SQL'
CREATE PROCEDURE intruder.nap(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('1 hour', 'nap');
END $$;
CREATE PROCEDURE intruder.parent(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn_each('c', 'intruder.nap', 'SELECT g AS item_key FROM generate_series(1, 5) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['kids']);
END $$;
SELECT chrono_forge.start('tenant_a.nap', 'victim', '{}', '{"timeout": "1 second"}');
SELECT chrono_forge.start('intruder.parent', 'family', '{}', '{"timeout": "2 seconds"}');
SQL
wait_for 30 "SELECT state::text = 'failed' FROM chrono_forge.workflows WHERE key = 'victim' AND owner = 'intruder'::regrole" \
    || fail "intruder's own run did not end at its deadline"
wait_for 30 "SELECT state::text = 'failed' FROM chrono_forge.workflows WHERE key = 'family' AND owner = 'intruder'::regrole" \
    || fail "intruder's parent did not end at its deadline"
wait_for 30 "SELECT count(*) = 5 FROM chrono_forge.workflows WHERE key LIKE '\$%' AND owner = 'intruder'::regrole AND state::text = 'cancelled'" \
    || fail "intruder's children were not cancelled"
expect_eq "$(q -c "SELECT state || ' ' || deadline FROM chrono_forge.workflows WHERE key = 'victim' AND owner = 'tenant_a'::regrole")" \
    "idle $deadline_before" "tenant_a's run"
expect_eq "$(q -c "SELECT string_agg(DISTINCT state::text, ',') FROM chrono_forge.workflows WHERE key LIKE '\$%' AND owner = 'tenant_a'::regrole")" \
    idle "tenant_a's children"

# A flood: 3,000 of intruder's runs past their deadline at once, while
# tenant_a's three-second timer is due.
as tenant_a -c "SELECT chrono_forge.start('tenant_a.tick', 'timer')" >/dev/null
as intruder -c "SELECT count(chrono_forge.start('intruder.nap', 'flood-' || g, '{}', '{\"timeout\": \"2 seconds\"}'))
                FROM generate_series(1, 3000) g" >/dev/null
wait_for 60 "SELECT state::text = 'completed' FROM chrono_forge.workflows WHERE key = 'timer'" \
    || fail "tenant_a's timer was held up by the flood"
wait_for 120 "SELECT count(*) = 3000 FROM chrono_forge.workflows WHERE key LIKE 'flood-%' AND state::text = 'failed'" \
    || fail "the flood did not end: $(q -c "SELECT state, count(*) FROM chrono_forge.workflows WHERE key LIKE 'flood-%' GROUP BY 1")"

# intruder's run_pending() ends only intruder's runs, even with tenant_a's
# deadline past on intruder's clock (fake_now is the superuser's; intruder
# moves its own deadline into the past instead).
as tenant_a -c "SELECT chrono_forge.set_deadline('tenant_a.nap', 'victim', chrono_forge.now() + interval '1 hour')" >/dev/null
as intruder -c "SELECT chrono_forge.start('intruder.nap', 'mine')" >/dev/null
as intruder -c "SELECT chrono_forge.set_deadline('intruder.nap', 'mine', chrono_forge.now() - interval '1 second')" >/dev/null
as intruder -c "CALL chrono_forge.run_pending()" >/dev/null
wait_for 30 "SELECT state::text = 'failed' FROM chrono_forge.workflows WHERE key = 'mine'" || fail "intruder's own run did not end"
expect_eq "$(q -c "SELECT state FROM chrono_forge.workflows WHERE key = 'victim' AND owner = 'tenant_a'::regrole")" idle \
    "tenant_a's run after intruder's run_pending()"
echo ok
