# Item 1: a trigger that the owner's step queues for commit (deferred
# constraint trigger) fires as the owner, not as the worker's superuser,
# at every commit the engine makes: a step's commit, the pass's last
# commit, and a shared commit of batched passes.
. "$CF_SECURITY_DIR/lib.sh"
as tenant_a >/dev/null <<'SQL'
CREATE TABLE tenant_a.t (x int, fired_as name);
CREATE TABLE tenant_a.seen (who name, super boolean);
CREATE FUNCTION tenant_a.trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tenant_a.seen SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE tenant_a SUPERUSER';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER t_def AFTER INSERT ON tenant_a.t DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION tenant_a.trg();
CREATE FUNCTION tenant_a.step() RETURNS int LANGUAGE sql AS 'INSERT INTO tenant_a.t VALUES (1) RETURNING 1';
-- A run whose only commit is the pass's end (batched), and one that
-- commits after its step (a wait follows).
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_a.step'); END $$;
CREATE PROCEDURE tenant_a.wf_wait(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('tenant_a.step');
    CALL chrono_forge.wait('1 second', 'w');
    INSERT INTO tenant_a.t VALUES (2);
END $$;
SELECT chrono_forge.start('tenant_a.wf', 'k' || g) FROM generate_series(1, 20) g;
SELECT chrono_forge.start('tenant_a.wf_wait', 'w1');
SQL
wait_for 60 "SELECT count(*) = 21 FROM chrono_forge.workflows WHERE state = 'completed'" \
    || fail "runs did not complete: $(q -c "SELECT state, count(*) FROM chrono_forge.workflows GROUP BY 1")"
is_super tenant_a && fail "tenant_a became superuser through a deferred trigger"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.seen")" 22 "deferred trigger firings"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.seen WHERE who <> 'tenant_a' OR super")" 0 \
    "firings as anyone but tenant_a"

# The same when tenant_a drives its passes itself: run_pending() from a DO
# block and from a procedure (workers off).
q -c "ALTER SYSTEM SET chrono_forge.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "workers did not stop"
as tenant_a >/dev/null <<'SQL'
CREATE PROCEDURE tenant_a.drive() LANGUAGE plpgsql AS $$ BEGIN CALL chrono_forge.run_pending(); END $$;
SELECT chrono_forge.start('tenant_a.wf', 'do1');
SQL
as tenant_a 'DO $$ BEGIN CALL chrono_forge.run_pending(); END $$' >/dev/null
as tenant_a "SELECT chrono_forge.start('tenant_a.wf', 'proc1')" >/dev/null
as tenant_a 'CALL tenant_a.drive()' >/dev/null
q -c "ALTER SYSTEM RESET chrono_forge.enabled" -c "SELECT pg_reload_conf()" >/dev/null
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE key IN ('do1', 'proc1') AND state = 'completed'")" 2 \
    "runs driven by run_pending()"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.seen")" 24 "deferred trigger firings"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.seen WHERE who <> 'tenant_a' OR super")" 0 \
    "firings as anyone but tenant_a"
is_super tenant_a && fail "tenant_a became superuser through a deferred trigger"
exit 0
