# A worker's session user is the bootstrap superuser: a pass must not be
# able to use it.  tenant_a's step tries every way to change identity
# (SET ROLE, SET SESSION AUTHORIZATION, set_config, RESET, DISCARD ALL)
# to the superuser and to tenant_b; each must be refused, and the step
# keeps running as tenant_a.  Reached from the workers, from run_pending()
# at top level and in a DO block.
. "$CF_SECURITY_DIR/lib.sh"
super=$(q -c "SELECT rolname FROM pg_roles WHERE oid = 10")
as tenant_a >/dev/null <<SQL
CREATE TABLE tenant_a.tries (how text, outcome text, now_user name);
CREATE FUNCTION tenant_a.try_all() RETURNS int LANGUAGE plpgsql AS \$\$
DECLARE
    how text;
BEGIN
    FOREACH how IN ARRAY ARRAY['SET ROLE $super', 'SET ROLE tenant_b',
        'SET SESSION AUTHORIZATION $super', 'SET SESSION AUTHORIZATION tenant_b',
        'SELECT set_config(''role'', ''$super'', false)',
        'SELECT set_config(''session_authorization'', ''$super'', false)',
        'RESET ROLE', 'RESET SESSION AUTHORIZATION', 'DISCARD ALL',
        'ALTER ROLE tenant_a SUPERUSER'] LOOP
        BEGIN
            EXECUTE how;
            INSERT INTO tenant_a.tries VALUES (how, 'allowed', current_user);
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO tenant_a.tries VALUES (how, SQLSTATE, current_user);
        END;
    END LOOP;
    RETURN 1;
END \$\$;
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS \$\$
BEGIN CALL chrono_forge.durably_execute('tenant_a.try_all'); END \$\$;
SELECT chrono_forge.start('tenant_a.wf', 'w1');
SQL
wait_for 60 "SELECT count(*) = 10 FROM tenant_a.tries" || fail "the step did not run"
# The same from a session of tenant_a's own, driving its passes itself.
q -c "ALTER SYSTEM SET chrono_forge.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
as tenant_a >/dev/null <<'SQL'
SELECT chrono_forge.start('tenant_a.wf', 'p1');
SELECT chrono_forge.start('tenant_a.wf', 'p2');
SQL
as tenant_a "CALL chrono_forge.run_pending(max_passes => 1);" >/dev/null
as tenant_a "DO \$\$ BEGIN CALL chrono_forge.run_pending(max_passes => 1); END \$\$;" >/dev/null
q -c "ALTER SYSTEM RESET chrono_forge.enabled" -c "SELECT pg_reload_conf()" >/dev/null
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.tries")" 30 "attempts recorded"
allowed=$(q -c "SELECT string_agg(how, '; ') FROM tenant_a.tries WHERE outcome = 'allowed' OR now_user <> 'tenant_a'")
[ -z "$allowed" ] || fail "identity changes allowed in a pass: $allowed"
is_super tenant_a && fail "tenant_a became superuser"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE state::text = 'completed'")" 3 "runs completed"
