-- The browser tests' data (test/browser/run feeds this to psql as a
-- superuser, in the database the cluster's workers serve).  It owns the
-- tenants' workflow procedures and the runs the tests look at:
--   tenant_a: completed runs a-order-1..5, a failed run a-doomed, runs
--     stalled on a closed gate (a-stalled-1 for the retry test,
--     a-stalled-2 for the CSRF test), a parent a-fanout with a branch
--     "items" of 1,000 children (every 100th stalls), a parent a-holder
--     with three waiting children in branch "kids" (the cancel test), a run
--     a-waiter waiting for event "go" (the event test);
--   tenant_b: completed runs b-order-1..3.
-- Roles tenant_a, tenant_b (LOGIN, not members of each other) and
-- dash_admin (a member of chrono_forge_admin) are made by the runner,
-- with passwords.  psql variables: none.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS tenant_a, tenant_b CASCADE;
DROP EXTENSION IF EXISTS chrono_forge CASCADE;
CREATE EXTENSION chrono_forge;
GRANT chrono_forge_admin TO dash_admin;
-- An on-call role reads the server's activity too (the overview's workers
-- alive: pg_stat_activity shows other roles' backend types only to it).
GRANT pg_monitor TO dash_admin;
CREATE SCHEMA tenant_a AUTHORIZATION tenant_a;
CREATE SCHEMA tenant_b AUTHORIZATION tenant_b;

SET ROLE tenant_a;
CREATE FUNCTION tenant_a.noop(args jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_build_object('ok', true, 'args', args) $$;
CREATE PROCEDURE tenant_a.order_flow(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.durably_execute('tenant_a.noop', r, name => 'validate', args => args);
    PERFORM chrono_forge.context_set('validated', r);
    CALL chrono_forge.durably_execute('tenant_a.noop', r, name => 'ship', args => args);
END $$;

-- A gate an operator opens: the step fails while its row is closed.
CREATE TABLE tenant_a.gates (name text PRIMARY KEY, open boolean NOT NULL);
INSERT INTO tenant_a.gates VALUES ('a-stalled-1', false), ('a-stalled-2', false);
CREATE FUNCTION tenant_a.pass_gate(args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (SELECT open FROM tenant_a.gates WHERE name = args->>'gate') THEN
        RAISE EXCEPTION 'gate % is closed', args->>'gate' USING ERRCODE = 'P0002',
            HINT = 'open it: UPDATE tenant_a.gates SET open = true';
    END IF;
    RETURN jsonb_build_object('passed', args->>'gate');
END $$;
CREATE PROCEDURE tenant_a.gated(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('tenant_a.noop', name => 'prepare', args => args);
    CALL chrono_forge.durably_execute('tenant_a.pass_gate', name => 'gate', args => args,
        retry_policy => chrono_forge.retry_policy(1));
    CALL chrono_forge.durably_execute('tenant_a.noop', name => 'finish');
END $$;

-- A run that fails: its body raises and its policy allows one attempt.
CREATE PROCEDURE tenant_a.doomed(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the warehouse is on fire' USING ERRCODE = '22012';
END $$;
SELECT chrono_forge.configure('tenant_a.doomed', chrono_forge.retry_policy(1));

-- Fan-out: 1,000 children; every 100th child's step fails (stalled).
CREATE FUNCTION tenant_a.item_step(args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF (args->>'n')::int % 100 = 0 THEN
        RAISE EXCEPTION 'item % is out of stock', args->>'n' USING ERRCODE = 'P0002';
    END IF;
    RETURN args;
END $$;
CREATE PROCEDURE tenant_a.item(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('tenant_a.item_step', args => args,
        retry_policy => chrono_forge.retry_policy(1));
END $$;
CREATE PROCEDURE tenant_a.fanout(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('items');
    CALL chrono_forge.spawn_each('item', 'tenant_a.item',
        'SELECT n AS item_key, jsonb_build_object(''n'', n) AS args FROM generate_series(1, 1000) n');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['items'], min_interval => '1 second', max_interval => '5 seconds');
END $$;

-- A parent whose three children wait for an event that never comes.
CREATE PROCEDURE tenant_a.sleeper(args jsonb) LANGUAGE plpgsql AS $$
DECLARE p jsonb;
BEGIN
    CALL chrono_forge.await_event('never', p, timeout => '1 hour');
END $$;
-- A run waiting for event "go", keeping its payload (the event test).
CREATE PROCEDURE tenant_a.waiter(args jsonb) LANGUAGE plpgsql AS $$
DECLARE p jsonb;
BEGIN
    CALL chrono_forge.await_event('go', p, timeout => '1 hour');
    PERFORM chrono_forge.context_set('got', p);
END $$;
CREATE PROCEDURE tenant_a.holder(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn('k1', 'tenant_a.sleeper');
    CALL chrono_forge.spawn('k2', 'tenant_a.sleeper');
    CALL chrono_forge.spawn('k3', 'tenant_a.sleeper');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['kids']);
END $$;

SELECT count(chrono_forge.start('tenant_a.order_flow', 'a-order-' || i,
                                jsonb_build_object('order', i, 'tenant', 'a')))
  FROM generate_series(1, 5) i;
SELECT chrono_forge.start('tenant_a.gated', g, jsonb_build_object('gate', g))
  FROM (VALUES ('a-stalled-1'), ('a-stalled-2')) AS v(g);
SELECT chrono_forge.start('tenant_a.doomed', 'a-doomed');
SELECT chrono_forge.start('tenant_a.fanout', 'a-fanout');
SELECT chrono_forge.start('tenant_a.holder', 'a-holder');
SELECT chrono_forge.start('tenant_a.waiter', 'a-waiter');
RESET ROLE;

SET ROLE tenant_b;
CREATE FUNCTION tenant_b.noop(args jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT args $$;
CREATE PROCEDURE tenant_b.invoice(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('tenant_b.noop', name => 'bill', args => args);
END $$;
SELECT count(chrono_forge.start('tenant_b.invoice', 'b-order-' || i, jsonb_build_object('invoice', i)))
  FROM generate_series(1, 3) i;
RESET ROLE;
