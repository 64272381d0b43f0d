# Item 4: every spelling of a procedure names the same run: qualified,
# quoted, upper case, and found on the search_path.  Actions by any
# spelling reach it.
. "$CF_SECURITY_DIR/identity_lib.sh"
sql_as tenant_a >/dev/null <<'SQL'
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.wait('1 hour', 'park'); END $$;
SQL
ids=$(sql_as tenant_a <<'SQL'
SELECT chrono_forge.start('tenant_a.wf', 'k1');
SELECT chrono_forge.start('"tenant_a".wf', 'k1');
SELECT chrono_forge.start('TENANT_A.WF', 'k1');
SELECT chrono_forge.start('"tenant_a"."wf"', 'k1');
SET search_path = tenant_a;
SELECT chrono_forge.start('wf', 'k1');
SELECT chrono_forge.start('Wf', 'k1');
SQL
)
expect_eq "$(echo "$ids" | sort -u | wc -l)" 1 "ids for six spellings ($ids)"
expect_eq "$(q -c "SELECT count(*) || ' ' || min(workflow) FROM chrono_forge.workflows")" "1 tenant_a.wf" "runs stored"
wait_for 30 "SELECT EXISTS (SELECT FROM chrono_forge.execution_logs WHERE step_name = 'wait\$park')" || fail "run did not park"
out=$(answer_as tenant_a "SELECT chrono_forge.wake('\"TENANT_A\".wf', 'k1')" 2>&1)
case "$out" in *CF014*) ;; *) fail "\"TENANT_A\".wf should be another (missing) procedure: $out" ;; esac
expect_eq "$(sql_as tenant_a <<'SQL'
SET search_path = tenant_a;
SELECT chrono_forge.send_event('WF', 'k1', 'e');
SELECT chrono_forge.cancel('tenant_a.WF', 'k1');
SQL
)" "t
1" "send_event and cancel by other spellings"
# The event woke the run: a pass may hold it when cancel() commits, and
# then the run becomes cancelled as that pass ends (a cancel request).
wait_for 30 "SELECT state = 'cancelled' FROM chrono_forge.workflows" \
    || fail "the one run: expected 'cancelled', got '$(q -c "SELECT state FROM chrono_forge.workflows")'"
exit 0
