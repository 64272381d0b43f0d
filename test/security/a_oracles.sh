# Item 8: another role's run, branch or schedule answers exactly as a
# missing one: every action, lookup and probe gives the same SQLSTATE,
# message, detail and hint for tenant_a's run as for a run that does not
# exist (names differ only by the key, masked).  An admin still acts.
. "$CF_SECURITY_DIR/identity_lib.sh"
sql_as tenant_a >/dev/null <<'SQL'
GRANT USAGE ON SCHEMA tenant_a TO PUBLIC;   -- tenant_b resolves the name as tenant_a does
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('b');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.wait('1 hour', 'park');
END $$;
SELECT chrono_forge.start('tenant_a.wf', 'secret');
SQL
wait_for 30 "SELECT EXISTS (SELECT FROM chrono_forge.execution_logs WHERE step_name = 'wait\$park')" || fail "run did not park"
branch=$(q -c "SELECT id FROM chrono_forge.execution_logs WHERE step_name = 'branch\$b'")
notbranch=$(q -c "SELECT id FROM chrono_forge.execution_logs WHERE step_name = 'wait\$park'")

for call in \
    "SELECT chrono_forge.wake('tenant_a.wf', 'KEY')" \
    "SELECT chrono_forge.retry('tenant_a.wf', 'KEY')" \
    "SELECT chrono_forge.send_event('tenant_a.wf', 'KEY', 'e')" \
    "SELECT chrono_forge.cancel('tenant_a.wf', 'KEY')" \
    "SELECT chrono_forge.cancel('tenant_a.wf', 'KEY', with_children => true)" \
    "SELECT chrono_forge.reap('tenant_a.wf', 'KEY')" \
    "SELECT chrono_forge.force_unlock('tenant_a.wf', 'KEY')" \
    "SELECT chrono_forge.retry_blocked_children('tenant_a.wf', 'KEY', 'b')" \
    "SELECT * FROM chrono_forge.branches('tenant_a.wf', 'KEY')" \
    "SELECT (chrono_forge.visible_run('tenant_a.wf', 'KEY')).id" \
    "SELECT * FROM chrono_forge.parent_chain('tenant_a.wf', 'KEY')" \
    "SELECT * FROM chrono_forge.wait_for_run('tenant_a.wf', 'KEY', '0')"; do
    theirs=$(answer_as tenant_b "${call//KEY/secret}" 2>&1 | sed 's/secret/KEY/g')
    missing=$(answer_as tenant_b "${call//KEY/nosuch}" 2>&1 | sed 's/nosuch/KEY/g')
    expect_eq "$theirs" "$missing" "$call: another role's run vs a missing one"
    case "$theirs" in *CF014*) ;; *) fail "$call: expected CF014, got $theirs" ;; esac
done
# start() of the same key is tenant_b's own new run, never tenant_a's id.
a_id=$(q -c "SELECT id FROM chrono_forge.workflows WHERE key = 'secret'")
sql_as tenant_b >/dev/null <<'SQL'
CREATE PROCEDURE tenant_b.wf(args jsonb) LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
SQL
b_id=$(sql_as tenant_b <<<"SELECT chrono_forge.start('tenant_b.wf', 'secret')")
[ "$b_id" != "$a_id" ] || fail "start() returned another role's run"
# Branch probes: tenant_a's branch vs a log that is not a branch.
for probe in branch_sealed branch_pending branch_done; do
    theirs=$(answer_as tenant_b "SELECT chrono_forge.$probe($branch)" 2>&1 | sed "s/log $branch /log ID /")
    missing=$(answer_as tenant_b "SELECT chrono_forge.$probe($notbranch)" 2>&1 | sed "s/log $notbranch /log ID /")
    expect_eq "$theirs" "$missing" "$probe: another role's branch vs a non-branch"
    case "$theirs" in *CF008*) ;; *) fail "$probe: expected CF008, got $theirs" ;; esac
done
# An admin acts on tenant_a's run.
q -c "CREATE ROLE sec_admin; GRANT chrono_forge_admin TO sec_admin" >/dev/null
expect_eq "$(answer_as sec_admin "SELECT chrono_forge.wake('tenant_a.wf', 'secret')" 2>&1)" "NOTICE:  ok" "admin's wake"
# Two owners' runs of one (workflow, key) and neither the admin's: ambiguous.
sql_as tenant_a >/dev/null <<<"GRANT EXECUTE ON PROCEDURE tenant_a.wf(jsonb) TO tenant_b"
sql_as tenant_b >/dev/null <<<"SELECT chrono_forge.start('tenant_a.wf', 'secret')"
amb=$(answer_as sec_admin "SELECT chrono_forge.wake('tenant_a.wf', 'secret')" 2>&1)
q -c "DROP OWNED BY sec_admin; DROP ROLE sec_admin" >/dev/null
case "$amb" in *CF012*ambiguous*) ;; *) fail "admin on two owners' runs: expected ambiguity, got $amb" ;; esac
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE key = 'secret' AND workflow = 'tenant_a.wf'")" 2 \
    "tenant_a's and tenant_b's runs of tenant_a.wf"
exit 0
