-- The upgrade path: a database on 0.1.0 with runs in it moves to the
-- current version, its data intact and the new API usable.
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE FUNCTION up_step() RETURNS jsonb LANGUAGE sql AS $$ SELECT '{"ok": 1}'::jsonb $$;
CREATE PROCEDURE up_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('up_step');
    CALL chrono_forge.wait('1 hour', 'later');
END $$;
SELECT chrono_forge.start('up_wf', 'u1') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state FROM chrono_forge.workflows WHERE key = 'u1';

ALTER EXTENSION chrono_forge UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';

-- The run parked on 0.1.0 finishes on the new version.
SELECT step_name, state, result FROM chrono_forge.execution_logs
 WHERE workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'u1') ORDER BY id;
SET chrono_forge.fake_now = '2030-01-01 01:00:00+00';
CALL chrono_forge.run_pending();
SELECT key, state FROM chrono_forge.workflows WHERE key = 'u1';

-- Operations objects after the upgrade: the run that finished on the new
-- version has its ended_at; the admin role and its policies exist; the
-- views and retention work on the upgraded data.
SELECT key, state, ended_at = completed_at AS ended_when_completed
  FROM chrono_forge.workflows WHERE key = 'u1';
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = 'chrono_forge_admin';
SELECT tablename, policyname, roles FROM pg_policies
 WHERE schemaname = 'chrono_forge' AND policyname LIKE '%admin' ORDER BY 1;
SELECT workflow, state, runs FROM chrono_forge.overview WHERE workflow = 'up_wf';
SELECT chrono_forge.cleanup(older_than => '0') ->> 'workflows' AS cleaned;

-- Periodic work after the upgrade: a repeat ticks, cron expressions parse.
CREATE FUNCTION up_tick(t timestamptz) RETURNS jsonb LANGUAGE sql AS $$ SELECT to_jsonb(t) $$;
CREATE FUNCTION up_never() RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE PROCEDURE up_repeat_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_repeat('up_tick', '1 hour', 'up_never',
        start_at => '2030-01-01 01:00:00+00');
END $$;
SELECT chrono_forge.start('up_repeat_wf', 'r1') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT step_name, state, result FROM chrono_forge.execution_logs
 WHERE workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'r1') ORDER BY id;
SELECT chrono_forge.cron_next('0 * * * *', '2030-01-01 01:30:00+00') = '2030-01-01 02:00:00+00' AS cron_next_ok;
DELETE FROM chrono_forge.workflows WHERE key = 'r1';
