# Item 3: a worker carries nothing from one owner's pass to the next: no
# temporary object (a temporary view named like another owner's table),
# no session advisory lock, prepared statement, LISTEN, holdable cursor or
# setting.  intruder's runs leave all of these behind in every worker they
# reach; tenant_a's runs that come after must see none of them.
. "$CF_SECURITY_DIR/lib.sh"
q >/dev/null <<'SQL'
CREATE TABLE intruder.calls (who name, at timestamptz DEFAULT now());
ALTER TABLE intruder.calls OWNER TO intruder;
GRANT INSERT ON intruder.calls TO PUBLIC;
SQL
as intruder >/dev/null <<'SQL'
CREATE FUNCTION intruder.leave_state() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    -- A temporary function and a view over it, named like tenant_a's table.
    EXECUTE $f$CREATE FUNCTION pg_temp.spy() RETURNS SETOF int LANGUAGE sql
        AS 'INSERT INTO intruder.calls (who) VALUES (current_user) RETURNING 1'$f$;
    EXECUTE 'CREATE TEMP VIEW orders AS SELECT * FROM pg_temp.spy() AS id';
    PERFORM pg_advisory_lock(4242);
    EXECUTE 'PREPARE leaked AS SELECT 1';
    EXECUTE 'LISTEN leaked_channel';
    PERFORM set_config('search_path', 'intruder, public', false);
    PERFORM set_config('app.tenant', 'intruder', false);
    RETURN 1;
END $$;
CREATE PROCEDURE intruder.wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('intruder.leave_state'); END $$;
SELECT count(chrono_forge.start('intruder.wf', 'i' || g)) FROM generate_series(1, 16) g;
SQL
wait_for 60 "SELECT count(*) = 16 FROM chrono_forge.workflows WHERE state IN ('completed', 'failed', 'stalled')" \
    || fail "intruder's runs did not end"
as tenant_a >/dev/null <<'SQL'
CREATE TABLE tenant_a.orders (id int);
INSERT INTO tenant_a.orders VALUES (1), (2), (3);
CREATE TABLE tenant_a.seen (orders bigint, lock_free boolean, prepared bigint,
    listening bigint, path text, tenant text, who name);
CREATE FUNCTION tenant_a.look() RETURNS int LANGUAGE sql AS $$
    INSERT INTO tenant_a.seen
    SELECT (SELECT count(*) FROM orders),
           NOT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
           (SELECT count(*) FROM pg_prepared_statements),
           (SELECT count(*) FROM pg_listening_channels()),
           current_setting('search_path'), current_setting('app.tenant', true), current_user
    RETURNING 1 $$;
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_a.look'); END $$;
SELECT count(chrono_forge.start('tenant_a.wf', 'a' || g)) FROM generate_series(1, 16) g;
SQL
wait_for 60 "SELECT count(*) = 16 FROM chrono_forge.workflows WHERE owner = 'tenant_a'::regrole AND state = 'completed'" \
    || fail "tenant_a's runs did not complete: $(q -c "SELECT state, count(*) FROM chrono_forge.workflows GROUP BY 1") $(q -c "SELECT error_message FROM chrono_forge.error_logs LIMIT 2")"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.seen")" 16 "tenant_a's observations"
expect_eq "$(q -c "SELECT count(*) FROM intruder.calls WHERE who <> 'intruder'")" 0 "intruder's temporary function called by another role"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.seen WHERE orders <> 3")" 0 "tenant_a read intruder's temporary view"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.seen WHERE NOT lock_free")" 0 "intruder's advisory lock outlived its pass"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.seen WHERE prepared > 0 OR listening > 0")" 0 "prepared statements or LISTEN outlived a pass"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.seen WHERE path LIKE '%intruder%' OR coalesce(tenant, '') <> ''")" 0 "settings outlived a pass"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.seen WHERE who <> 'tenant_a'")" 0 "tenant_a's step ran as someone else"
