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
