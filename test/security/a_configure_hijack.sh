# Item 5: configure() defaults belong to the procedure.  tenant_b
# configures its own 'flow' with unlimited attempts and no backoff;
# tenant_a's runs of tenant_a.flow keep tenant_a's own policy, tenant_a's
# configure('flow') is not refused, and tenant_b's configure() of
# tenant_a's procedure answers exactly as for a missing procedure.
. "$CF_SECURITY_DIR/identity_lib.sh"
sql_as tenant_a >/dev/null <<'SQL'
GRANT USAGE ON SCHEMA tenant_a TO PUBLIC;
CREATE FUNCTION tenant_a.boom() RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
CREATE PROCEDURE tenant_a.flow(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_a.boom'); END $$;
SQL
sql_as tenant_b >/dev/null <<'SQL'
CREATE PROCEDURE tenant_b.flow(args jsonb) LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
SET search_path = tenant_b, tenant_a;
SELECT chrono_forge.configure('flow', chrono_forge.retry_policy(max_attempts => 1000, base => '0', cap => '0', jitter => false));
SQL
expect_eq "$(q -c "SELECT string_agg(workflow || ':' || owner, ',') FROM chrono_forge.workflow_defaults")" \
    "tenant_b.flow:tenant_b" "tenant_b's default is its own procedure's"
# tenant_b on tenant_a's procedure, and on one that does not exist.
theirs=$(answer_as tenant_b "SELECT chrono_forge.configure('tenant_a.flow', chrono_forge.retry_policy())" 2>&1)
missing=$(answer_as tenant_b "SELECT chrono_forge.configure('tenant_a.flw0', chrono_forge.retry_policy())" 2>&1)
expect_eq "$(echo "$theirs" | sed 's/tenant_a\.flow/NAME/g')" "$(echo "$missing" | sed 's/tenant_a\.flw0/NAME/g')" "configure() of another's procedure vs a missing one"
case "$theirs" in *CF012*) ;; *) fail "configure() of another's procedure: $theirs" ;; esac
sql_as tenant_a >/dev/null <<'SQL'
SET search_path = tenant_a;
SELECT chrono_forge.configure('flow', chrono_forge.retry_policy(max_attempts => 2, base => '10 milliseconds', cap => '10 milliseconds', jitter => false));
SELECT chrono_forge.start('flow', 'f1');
SQL
wait_for 30 "SELECT state = 'stalled' FROM chrono_forge.workflows WHERE key = 'f1'" \
    || fail "tenant_a's run did not stall under its own policy: $(q -c "SELECT state, (SELECT count(*) FROM chrono_forge.error_logs) FROM chrono_forge.workflows")"
sleep 1
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.error_logs WHERE step_name IS NOT NULL")" 2 "step attempts of tenant_a's run"
exit 0
