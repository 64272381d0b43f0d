-- Who may see what: every view and action for the run's owner, another
-- role, and a member of chrono_forge_admin.
-- Start from no runs (earlier suites in this database leave theirs).
DELETE FROM chrono_forge.workflows;
SET chrono_forge.fake_now = '2030-04-01 00:00:00+00';
CREATE ROLE pv_owner;
CREATE ROLE pv_other;
CREATE ROLE pv_admin;
GRANT chrono_forge_admin TO pv_admin;
GRANT USAGE, CREATE ON SCHEMA public TO pv_owner, pv_other;

SET ROLE pv_owner;
CREATE FUNCTION pv_boom() RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
CREATE FUNCTION pv_no() RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE PROCEDURE pv_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF args ? 'gate' THEN CALL chrono_forge.continue_if('pv_no', 'gate'); END IF;
    CALL chrono_forge.durably_execute('pv_boom', retry_policy => chrono_forge.retry_policy(1));
END $$;
SELECT chrono_forge.start('pv_wf', 'mine') > 0 AS ok;
SELECT chrono_forge.start('pv_wf', 'gated', '{"gate": 1}') > 0 AS ok;
SELECT chrono_forge.start('pv_wf', 'locked') AS locked_id \gset
CALL chrono_forge.run_pending();
RESET ROLE;
-- Fixture: a branch with one stalled child, a repeat, a stale lock, all pv_owner's.
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state, metadata)
SELECT id, v.s, 'pending', v.m::jsonb FROM chrono_forge.workflows w,
       (VALUES ('branch$b', NULL), ('durably_repeat$t', '{"every": "1 hour", "last_execution_at": "2030-03-31T00:00:00Z"}')) v(s, m)
 WHERE key = 'mine';
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, parent_execution_log_id)
SELECT 'public.pv_wf', 'mine$b$1', 'public.pv_wf', 'stalled', 'pv_owner', id
  FROM chrono_forge.execution_logs WHERE step_name = 'branch$b';
UPDATE chrono_forge.workflows SET state = 'running', locked_by = 'w:x', locked_at = '2030-03-31' WHERE id = :locked_id;

-- The same questions, asked by each role.  Views: how many rows each sees.
CREATE FUNCTION pv_views() RETURNS TABLE (view text, rows bigint) LANGUAGE sql AS $$
    SELECT 'workflows', count(*) FROM chrono_forge.workflows
    UNION ALL SELECT 'execution_logs', count(*) FROM chrono_forge.execution_logs
    UNION ALL SELECT 'error_logs', count(*) FROM chrono_forge.error_logs
    UNION ALL SELECT 'wakeups', count(*) FROM chrono_forge.wakeups
    UNION ALL SELECT 'overview', count(*) FROM chrono_forge.overview
    UNION ALL SELECT 'run_counts', sum(runs::int) FROM chrono_forge.run_counts(include_children => true)
    UNION ALL SELECT 'runs', count(*) FROM chrono_forge.runs(include_children => true)
    UNION ALL SELECT 'waiting', count(*) FROM chrono_forge.waiting_runs
    UNION ALL SELECT 'stranded', count(*) FROM chrono_forge.stranded_runs
    UNION ALL SELECT 'periodic', count(*) FROM chrono_forge.periodic_tasks
    UNION ALL SELECT 'daily_outcomes', count(*) FROM chrono_forge.daily_outcomes()
    UNION ALL SELECT 'top_errors', count(*) FROM chrono_forge.top_errors()
$$;
-- Per-run views: the run's timeline etc., or the error.
CREATE FUNCTION pv_try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    EXECUTE 'SELECT count(*) FROM (' || sql || ') x' INTO n;
    RETURN n || ' rows';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE FUNCTION pv_run_views() RETURNS TABLE (view text, result text) LANGUAGE sql AS $$
    SELECT 'timeline', pv_try($q$SELECT * FROM chrono_forge.timeline('pv_wf', 'mine')$q$)
    UNION ALL SELECT 'branches', pv_try($q$SELECT * FROM chrono_forge.branches('pv_wf', 'mine')$q$)
    UNION ALL SELECT 'branch_children', pv_try($q$SELECT * FROM chrono_forge.branch_children('pv_wf', 'mine', 'b')$q$)
    UNION ALL SELECT 'parent_chain', pv_try($q$SELECT * FROM chrono_forge.parent_chain('pv_wf', 'mine$b$1')$q$)
    UNION ALL SELECT 'periodic_health', pv_try($q$SELECT * FROM chrono_forge.periodic_health('pv_wf', 'mine')$q$)
$$;
GRANT EXECUTE ON FUNCTION pv_views(), pv_try(text), pv_run_views() TO PUBLIC;

SET ROLE pv_owner;
SELECT * FROM pv_views();
SELECT * FROM pv_run_views();
SET ROLE pv_other;
SELECT * FROM pv_views();
SELECT * FROM pv_run_views();
SET ROLE pv_admin;
SELECT * FROM pv_views();
SELECT * FROM pv_run_views();
RESET ROLE;

-- Actions by another role fail with a permission error and change nothing.
SET ROLE pv_other;
SELECT chrono_forge.cancel('pv_wf', 'mine');
SELECT chrono_forge.cancel('pv_wf', 'mine', with_children => true);
SELECT chrono_forge.reap('pv_wf', 'locked');
SELECT chrono_forge.force_unlock('pv_wf', 'locked');
SELECT chrono_forge.retry('pv_wf', 'mine');
SELECT chrono_forge.retry_blocked_children('pv_wf', 'mine', 'b');
SELECT chrono_forge.wake('pv_wf', 'gated');
SELECT chrono_forge.reap_stalled();
SELECT chrono_forge.cleanup();
CALL chrono_forge.cleanup_in_batches();
SELECT chrono_forge.schedule_maintenance();
SELECT chrono_forge.unschedule_maintenance();
-- Nor may it write the tables, even through the new columns.
UPDATE chrono_forge.workflows SET ended_at = now();
RESET ROLE;
SELECT key, state, locked_by FROM chrono_forge.workflows ORDER BY key;

-- The owner may act on its runs (not on maintenance, which is the admin's).
SET ROLE pv_owner;
SELECT chrono_forge.retry('pv_wf', 'mine');
SELECT chrono_forge.retry_blocked_children('pv_wf', 'mine', 'b');
SELECT chrono_forge.reap('pv_wf', 'locked');
SELECT chrono_forge.wake('pv_wf', 'gated');
SELECT chrono_forge.cancel('pv_wf', 'gated');
SELECT chrono_forge.reap_stalled();
SELECT chrono_forge.cleanup();
RESET ROLE;
SELECT key, state, locked_by FROM chrono_forge.workflows ORDER BY key;

-- The admin acts on anyone's runs, and on maintenance.
SELECT (chrono_forge.acquire_lock(:locked_id, 'w:y')).state;
SET ROLE pv_admin;
SELECT chrono_forge.force_unlock('pv_wf', 'locked');
SELECT chrono_forge.wake('pv_wf', 'locked');
SELECT chrono_forge.cancel('pv_wf', 'mine', 'by admin', with_children => true);
SELECT chrono_forge.reap_stalled();
RESET ROLE;
SELECT key, state, locked_by FROM chrono_forge.workflows ORDER BY key;
SELECT metadata->>'requested_by' AS requested_by FROM chrono_forge.execution_logs
 WHERE step_name = '$workflow_cancelled$' ORDER BY id;
SET ROLE pv_admin;
SELECT chrono_forge.cleanup(older_than => '0') ->> 'workflows' AS cleaned;
RESET ROLE;
SELECT key, state FROM chrono_forge.workflows ORDER BY key;

-- A child another role owns stops a cancel with children: nothing changes.
SET chrono_forge.fake_now = '2030-04-02 00:00:00+00';
SET ROLE pv_owner;
SELECT chrono_forge.start('pv_wf', 'parent2', '{"gate": 1}') AS p2 \gset
RESET ROLE;
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state) VALUES (:p2, 'branch$x', 'pending');
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, parent_execution_log_id)
SELECT 'public.pv_wf', 'parent2$x$' || r, 'public.pv_wf', 'idle', r::regrole, currval(pg_get_serial_sequence('chrono_forge.execution_logs', 'id'))
  FROM unnest(ARRAY['pv_owner', 'pv_other']) r;
SET ROLE pv_owner;
SELECT chrono_forge.cancel('pv_wf', 'parent2', with_children => true);
RESET ROLE;
SELECT key, state FROM chrono_forge.workflows WHERE key LIKE 'parent2%' ORDER BY key;

-- Nothing lets a role run code as another: the admin's wake() of
-- pv_owner's run does not make the admin's session run it (run_pending
-- runs only the caller's own runs); it runs as its owner.
CREATE TABLE pv_who (who text);
GRANT INSERT ON pv_who TO PUBLIC;
SET ROLE pv_owner;
CREATE FUNCTION pv_whoami() RETURNS void LANGUAGE sql AS $$ INSERT INTO pv_who VALUES (current_user) $$;
CREATE PROCEDURE pv_who_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.continue_if('pv_no', 'gate');
    CALL chrono_forge.durably_execute('pv_whoami');
END $$;
SELECT chrono_forge.start('pv_who_wf', 'w1') > 0 AS ok;
CALL chrono_forge.run_pending();
RESET ROLE;
UPDATE chrono_forge.execution_logs SET state = 'completed'
 WHERE step_name = 'continue_if$gate' AND workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'w1');
SET ROLE pv_admin;
SELECT chrono_forge.wake('pv_who_wf', 'w1');
CALL chrono_forge.run_pending();
RESET ROLE;
SELECT count(*) AS ran_in_admin_session FROM pv_who;
SET ROLE pv_owner;
CALL chrono_forge.run_pending();
RESET ROLE;
SELECT who FROM pv_who;

-- A run whose procedure is in a schema the reader has no USAGE on: an
-- admin still reads it and acts on it by its qualified name, however
-- spelled (the name is not looked up: 0.7.0 raised "permission denied for
-- schema").  Another role still finds nothing.
CREATE SCHEMA pv_private AUTHORIZATION pv_owner;
SET ROLE pv_owner;
CREATE PROCEDURE pv_private.wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.continue_if('public.pv_no', 'gate'); END $$;
SELECT chrono_forge.start('pv_private.wf', 'p') > 0 AS ok;
CALL chrono_forge.run_pending();
RESET ROLE;
SET ROLE pv_admin;
SELECT has_schema_privilege('pv_private', 'USAGE') AS admin_has_usage;
SELECT workflow, state FROM chrono_forge.visible_run('pv_private.wf', 'p');
SELECT count(*) > 0 AS has_timeline FROM chrono_forge.timeline('PV_PRIVATE.WF', 'p');
SELECT chrono_forge.wake('"pv_private".wf', 'p') AS woken;
RESET ROLE;
SET ROLE pv_other;
SELECT pv_try($q$SELECT * FROM chrono_forge.timeline('pv_private.wf', 'p')$q$) AS other_reads;
RESET ROLE;

-- Leave no runs behind.
RESET ROLE;
DELETE FROM chrono_forge.workflows;
DELETE FROM chrono_forge.workflow_defaults;
DROP OWNED BY pv_owner, pv_other, pv_admin;
DROP ROLE pv_owner, pv_other, pv_admin;
