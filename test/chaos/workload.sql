-- Chaos workload (test/chaos/run loads it into the workers' database):
-- workflows whose every step writes one row of chaos.effects, keyed by
-- (run, step) with a unique constraint, so a step whose effect commits
-- twice fails (23505) and shows; the clock time of each effect orders
-- a parent's merge after its children.
CREATE SCHEMA chaos;
CREATE TABLE chaos.effects (run text, step text, at timestamptz NOT NULL DEFAULT clock_timestamp(),
                            UNIQUE (run, step));
CREATE TABLE chaos.gates (run text PRIMARY KEY);

CREATE FUNCTION chaos.effect(args jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO chaos.effects (run, step) VALUES (args->>'run', args->>'step')
    RETURNING jsonb_build_object('at', at) $$;
-- Fails about one attempt in three: the retries with backoff.
CREATE FUNCTION chaos.flaky(args jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF random() < 0.35 THEN
        RAISE EXCEPTION 'flaky step of %', args->>'run';
    END IF;
    RETURN chaos.effect(args);
END $$;
CREATE FUNCTION chaos.gate_open(args jsonb) RETURNS boolean LANGUAGE sql AS $$
    SELECT EXISTS (SELECT FROM chaos.gates WHERE run = args->>'run') $$;
CREATE FUNCTION chaos.tick(at timestamptz) RETURNS jsonb LANGUAGE sql AS $$
    SELECT chaos.effect(jsonb_build_object('run', chrono_forge.key(),
                                           'step', 'tick' || extract(epoch FROM at)::bigint)) $$;
CREATE FUNCTION chaos.ticked(args jsonb) RETURNS boolean LANGUAGE sql AS $$
    SELECT count(*) >= 3 FROM chaos.effects WHERE run = args->>'run' AND step LIKE 'tick%' $$;

-- Helper for bodies: the step writing (run, step).
CREATE FUNCTION chaos.a(args jsonb, step text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('run', args->>'run', 'step', step) $$;

-- Steps, one of them flaky (retried with a short backoff).
CREATE PROCEDURE chaos.steps(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..4 LOOP
        CALL chrono_forge.durably_execute('chaos.effect', name => 's' || i::text, args => chaos.a(args, 's' || i::text));
    END LOOP;
    CALL chrono_forge.durably_execute('chaos.flaky', name => 'flaky', args => chaos.a(args, 'flaky'),
        retry_policy => chrono_forge.retry_policy(max_attempts => 60, base => '50 milliseconds', cap => '1 second'));
END $$;
CREATE PROCEDURE chaos.waiter(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('chaos.effect', name => 'before', args => chaos.a(args, 'before'));
    CALL chrono_forge.wait('1 second', 'w');
    CALL chrono_forge.durably_execute('chaos.effect', name => 'after', args => chaos.a(args, 'after'));
END $$;
CREATE PROCEDURE chaos.evented(args jsonb) LANGUAGE plpgsql AS $$
DECLARE p jsonb;
BEGIN
    CALL chrono_forge.await_event('go', p, timeout => '1 hour');
    CALL chrono_forge.durably_execute('chaos.effect', name => 'got', args => chaos.a(args, 'got:' || (p->>'n')));
END $$;
CREATE PROCEDURE chaos.gated(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.continue_if('chaos.gate_open', 'gate');
    CALL chrono_forge.durably_execute('chaos.effect', name => 'through', args => chaos.a(args, 'through'));
END $$;
CREATE PROCEDURE chaos.repeater(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('chaos.tick', '1 second', 'chaos.ticked');
    CALL chrono_forge.durably_execute('chaos.effect', name => 'done', args => chaos.a(args, 'done'));
END $$;
CREATE PROCEDURE chaos.child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('chaos.effect', name => 'c', args => chaos.a(args, 'c'));
END $$;
CREATE PROCEDURE chaos.fan(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('items');
    CALL chrono_forge.spawn_each('item', 'chaos.child',
        format('SELECT g AS item_key, jsonb_build_object(''run'', %L || '':'' || g) AS args
                  FROM generate_series(1, %s) g', args->>'run', (args->>'n')::int), batch_size => 500);
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['items'], min_interval => '1 second', max_interval => '5 seconds');
    CALL chrono_forge.durably_execute('chaos.effect', name => 'merged', args => chaos.a(args, 'merged'));
END $$;
-- Cancelled by the driver while it waits (a second step never runs).
CREATE PROCEDURE chaos.doomed(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('chaos.effect', name => 'first', args => chaos.a(args, 'first'));
    CALL chrono_forge.wait('1 hour', 'forever');
    CALL chrono_forge.durably_execute('chaos.effect', name => 'never', args => chaos.a(args, 'never'));
END $$;
