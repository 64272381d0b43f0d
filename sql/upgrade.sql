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
SELECT workflow, state, runs FROM chrono_forge.overview WHERE workflow = 'public.up_wf';
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

-- 0.2.0 -> 0.3.0: a run parked on 0.2.0 finishes after the update; the
-- two redundant indexes are gone and the branch probes still work (they
-- now walk workflows_children_idx).
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.2.0';
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
SELECT chrono_forge.start('up_wf', 'u2') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state FROM chrono_forge.workflows WHERE key = 'u2';
ALTER EXTENSION chrono_forge UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';
SELECT indexname FROM pg_indexes
 WHERE schemaname = 'chrono_forge' AND tablename = 'workflows' ORDER BY 1;
SET chrono_forge.fake_now = '2030-01-01 01:00:00+00';
CALL chrono_forge.run_pending();
SELECT key, state, started_at IS NOT NULL AS started, ended_at = completed_at AS ended_when_completed
  FROM chrono_forge.workflows WHERE key = 'u2';
-- state_code is now kept by a trigger (no longer a generated column),
-- with the same values; a write to it alone is overruled by the state.
SELECT attgenerated = '' AS plain_column, attnotnull FROM pg_attribute
 WHERE attrelid = 'chrono_forge.workflows'::regclass AND attname = 'state_code';
UPDATE chrono_forge.workflows SET state_code = 1 WHERE key = 'u2';
SELECT state, state_code FROM chrono_forge.workflows WHERE key = 'u2';
INSERT INTO chrono_forge.workflows (workflow, key, procedure, owner, state)
SELECT 'up_wf', 'st-' || s, 'public.up_wf', 'postgres', s
  FROM unnest(enum_range(NULL::chrono_forge.workflow_state)) AS s;
UPDATE chrono_forge.workflows SET state = 'failed' WHERE key = 'st-idle';
UPDATE chrono_forge.workflows SET state = 'idle', updated_at = '2030-01-02' WHERE key = 'st-completed';
SELECT key, state, state_code, ended_at IS NOT NULL AS ended FROM chrono_forge.workflows
 WHERE key LIKE 'st-%' ORDER BY state_code, key;
CREATE FUNCTION up_child_step() RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE PROCEDURE up_child_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('up_child_step');
END $$;
CREATE PROCEDURE up_parent_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn('a', 'up_child_wf');
    CALL chrono_forge.spawn('b', 'up_child_wf');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['kids']);
END $$;
SELECT chrono_forge.start('up_parent_wf', 'p') AS pid \gset
CALL chrono_forge.run_pending(max_passes => 1);
SELECT chrono_forge.branch_pending(id) AS pending, chrono_forge.branch_done(id) AS done
  FROM chrono_forge.execution_logs WHERE workflow_id = :pid AND step_name LIKE 'branch$%';
CALL chrono_forge.run_pending();
SELECT chrono_forge.branch_pending(id) AS pending, chrono_forge.branch_done(id) AS done
  FROM chrono_forge.execution_logs WHERE workflow_id = :pid AND step_name LIKE 'branch$%';
SELECT state FROM chrono_forge.workflows WHERE id = :pid;
DELETE FROM chrono_forge.workflows;

-- 0.3.0 -> 0.4.0: before the update the new library dispatches spawn_each
-- the 0.3.0 way (children are runs with wake-ups); that fan-out finishes
-- after the update, and the next one waits in spawn_batches until its
-- children run.
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.3.0';
CREATE PROCEDURE up_each_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn_each('i', 'up_child_wf', 'SELECT g AS item_key FROM generate_series(1, 3) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['kids']);
END $$;
SELECT chrono_forge.start('up_each_wf', 'e1') > 0 AS started;
CALL chrono_forge.run_pending(max_passes => 1);
SELECT count(*) AS child_runs, count(*) FILTER (WHERE state = 'idle') AS idle
  FROM chrono_forge.workflows WHERE key LIKE '$%$e1$%';
ALTER EXTENSION chrono_forge UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';
CALL chrono_forge.run_pending();
SELECT regexp_replace(key, '^\$[0-9]+\$', '') AS key, state FROM chrono_forge.workflows WHERE key LIKE 'e1%' OR key LIKE '$%$e1$%' ORDER BY 1;
SET chrono_forge.fake_now = '2030-01-01 02:00:00+00';
SELECT chrono_forge.start('up_each_wf', 'e2') > 0 AS started;
CALL chrono_forge.run_pending(max_passes => 1);
SELECT count(*) AS child_runs FROM chrono_forge.workflows WHERE key LIKE '$%$e2$%';
SELECT sum(n - taken) AS children_waiting FROM chrono_forge.spawn_batches;
CALL chrono_forge.run_pending();
SELECT regexp_replace(key, '^\$[0-9]+\$', '') AS key, state FROM chrono_forge.workflows WHERE key LIKE 'e2%' OR key LIKE '$%$e2$%' ORDER BY 1;
SELECT count(*) AS batches_left FROM chrono_forge.spawn_batches;
DELETE FROM chrono_forge.workflows;
RESET chrono_forge.fake_now;

-- 0.4.0 -> 0.5.0: run identity becomes (owner, canonical procedure, key).
-- Runs parked on 0.4.0 (a timer, a merge with a spawned child, children of
-- spawn_each not started yet) and configured defaults keep working after
-- the update: workflows become canonical, children take keys unique to
-- their parent, and the parked runs finish.
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.4.0';
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE PROCEDURE up_mixed_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn('a', 'up_child_wf');
    CALL chrono_forge.spawn_each('i', 'up_child_wf', 'SELECT g AS item_key FROM generate_series(1, 2) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['kids']);
END $$;
-- (0.4.0 rows as the 0.4.0 library wrote them: typed names, old child keys.)
INSERT INTO chrono_forge.workflows (workflow, key, procedure, owner, state)
VALUES ('up_wf', 'timer', 'public.up_wf', 'postgres', 'idle');
INSERT INTO chrono_forge.workflow_defaults (workflow, retry_policy, owner)
VALUES ('up_child_wf', chrono_forge.retry_policy(max_attempts => 7), 'postgres');
SELECT chrono_forge.start('up_mixed_wf', 'm1') AS mid \gset
UPDATE chrono_forge.workflows SET workflow = 'up_mixed_wf' WHERE id = :mid;
CALL chrono_forge.run_pending(max_passes => 1);
UPDATE chrono_forge.workflows SET workflow = 'up_child_wf', key = 'm1$kids$a' WHERE key LIKE '$%$m1$kids$a';
UPDATE chrono_forge.spawn_batches
   SET workflows = array(SELECT 'up_child_wf' FROM unnest(keys)),
       keys = array(SELECT regexp_replace(k, '^\$[0-9]+\$', '') FROM unnest(keys) k);
SELECT workflow, key, state FROM chrono_forge.workflows ORDER BY id;
SELECT keys, workflows FROM chrono_forge.spawn_batches ORDER BY id;
ALTER EXTENSION chrono_forge UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';
SELECT workflow, regexp_replace(key, '^\$[0-9]+\$', '') AS key, key LIKE '$' || :mid || '$%' AS keyed_by_parent
  FROM chrono_forge.workflows ORDER BY id;
SELECT array(SELECT regexp_replace(k, '^\$[0-9]+\$', '') FROM unnest(keys) k) AS keys,
       keys[1] LIKE '$' || :mid || '$%' AS keyed_by_parent, workflows
  FROM chrono_forge.spawn_batches ORDER BY id;
SELECT workflow, retry_policy->>'max_attempts' AS max_attempts FROM chrono_forge.workflow_defaults;
SELECT conname FROM pg_constraint WHERE conrelid = 'chrono_forge.workflows'::regclass AND contype = 'u';
-- Every spelling finds the parked run; a wake and the timer's end finish it.
SELECT chrono_forge.wake('up_wf', 'timer') AS woken, chrono_forge.start('public.up_wf', 'timer') =
       (SELECT id FROM chrono_forge.workflows WHERE key = 'timer') AS same_run;
SET chrono_forge.fake_now = '2030-01-01 02:00:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 04:00:00+00';
CALL chrono_forge.run_pending();
SELECT workflow, regexp_replace(key, '^\$[0-9]+\$', '') AS key, state FROM chrono_forge.workflows ORDER BY id;
SELECT count(*) AS batches_left FROM chrono_forge.spawn_batches;
DELETE FROM chrono_forge.workflows;
DELETE FROM chrono_forge.workflow_defaults;
RESET chrono_forge.fake_now;

-- 0.5.0 -> 0.6.0: a spawn_each cursor written by 0.5.0 (item_key as text
-- in the writer's session settings) resumes after the update with no
-- child missing or repeated, and later batches write canonical keys
-- (ISO, UTC) whatever the session's settings; a merge parked on 0.5.0
-- (no policy on its log) finishes.  (The library
-- runs 0.5.0's merge_branches, without on_child_failure, and error logs
-- without their new columns, until the update.)
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.5.0';
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE SEQUENCE up_gate_calls;
CREATE TABLE up_gate (open boolean);
INSERT INTO up_gate VALUES (false);
-- The source fails on its second read while the gate is closed.
CREATE FUNCTION up_gated_keys() RETURNS TABLE (item_key timestamptz) LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('up_gate_calls') >= 2 AND NOT (SELECT open FROM up_gate) THEN
        RAISE EXCEPTION 'gate closed';
    END IF;
    RETURN QUERY SELECT t FROM unnest(ARRAY[timestamptz '2030-03-05 12:00:00+00',
        '2030-04-01 00:00:00+00', '2030-06-01 00:00:00+00']) t;
END $$;
CREATE PROCEDURE up_quiet_wf(args jsonb) LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE PROCEDURE up_keys_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('k');
    CALL chrono_forge.spawn_each('t', 'up_quiet_wf', 'SELECT * FROM up_gated_keys()', batch_size => 1);
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['k']);
END $$;
SET DateStyle = 'SQL, DMY';
SET TimeZone = 'America/New_York';
SELECT chrono_forge.start('up_keys_wf', 'k1', '{}', '{"retry_policy": {"max_attempts": 1}}') AS kid \gset
CALL chrono_forge.run_pending(max_passes => 1);
SELECT state FROM chrono_forge.workflows WHERE id = :kid;
-- (The cursor as 0.5.0 wrote it: the key's text in this session's settings.)
UPDATE chrono_forge.execution_logs
   SET metadata = jsonb_set(metadata, '{cursors,t}', jsonb_build_object('after',
           (timestamptz '2030-03-05 12:00:00+00')::text, 'spawned', 1, 'done', false))
 WHERE workflow_id = :kid AND step_name = 'branch$k';
UPDATE chrono_forge.spawn_batches
   SET keys = array(SELECT regexp_replace(k, '_.*$', '_' || (timestamptz '2030-03-05 12:00:00+00')::text) FROM unnest(keys) k);
SELECT metadata->'cursors' AS cursor_050 FROM chrono_forge.execution_logs
 WHERE workflow_id = :kid AND step_name = 'branch$k';
-- A merge parked on 0.5.0.
CREATE PROCEDURE up_merge_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('m');
    CALL chrono_forge.spawn('c', 'up_quiet_wf');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['m'], '1 second', '1 minute');
END $$;
SELECT chrono_forge.start('up_merge_wf', 'm2') AS mid \gset
CALL chrono_forge.run_pending(max_passes => 1);
UPDATE chrono_forge.execution_logs SET metadata = NULL WHERE workflow_id = :mid AND step_name = 'merge$m';
SELECT merge_step FROM chrono_forge.merge_polls WHERE workflow_id = :mid;
ALTER EXTENSION chrono_forge UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';
UPDATE up_gate SET open = true;
SELECT chrono_forge.retry('up_keys_wf', 'k1');
CALL chrono_forge.run_pending();
SELECT metadata->'cursors' AS cursor_060 FROM chrono_forge.execution_logs
 WHERE workflow_id = :kid AND step_name = 'branch$k';
SELECT regexp_replace(key, '^\$[0-9]+\$', '') AS key, state FROM chrono_forge.workflows ORDER BY id;
SELECT l.metadata FROM chrono_forge.execution_logs l WHERE l.workflow_id = :kid AND l.step_name = 'merge$k';
SELECT error_class, error_message, error_hint, error_context IS NOT NULL AS has_context
  FROM chrono_forge.error_logs ORDER BY id;
RESET DateStyle;
RESET TimeZone;
DELETE FROM chrono_forge.workflows;
RESET chrono_forge.fake_now;

-- 0.5.0 -> 0.6.0: outcome summaries written under typed names (before
-- 0.5.0) take the canonical name, merged with the rows already under it;
-- a name that resolves to nothing stays.
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.5.0';
CREATE PROCEDURE up_od_wf(args jsonb) LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
INSERT INTO chrono_forge.outcome_days (day, workflow, owner, completed, failed, cancelled) VALUES
    ('2030-01-01', 'up_od_wf', 'postgres', 1, 2, 3),
    ('2030-01-01', 'public.up_od_wf', 'postgres', 10, 20, 30),
    ('2030-01-02', 'UP_OD_WF', 'postgres', 100, 0, 0),
    ('2030-01-02', 'gone_wf', 'postgres', 7, 0, 0);
ALTER EXTENSION chrono_forge UPDATE;
SELECT day, workflow, completed, failed, cancelled FROM chrono_forge.outcome_days ORDER BY day, workflow;
DROP PROCEDURE up_od_wf(jsonb);
DELETE FROM chrono_forge.outcome_days;

-- 0.5.0 -> 0.6.0, backups: the tables of user data and their sequences
-- are configuration tables, so pg_dump keeps their rows (the cache of
-- workflow owners is rebuilt, not dumped); who asked for a cancel is a role.
SELECT c.relname FROM pg_extension e, unnest(e.extconfig) x(oid)
  JOIN pg_class c ON c.oid = x.oid
 WHERE e.extname = 'chrono_forge' ORDER BY 1;
SELECT atttypid::regtype FROM pg_attribute
 WHERE attrelid = 'chrono_forge.cancel_requests'::regclass AND attname = 'requested_by';

-- 0.6.0 -> 0.7.0: wait_for_run() on a run from before the update: as it
-- is (still parked) at once with timeout 0, then ended.
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.6.0';
CREATE PROCEDURE up_wait_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.await_event('go');
END $$;
SELECT chrono_forge.start('up_wait_wf', 'parked') > 0 AS started;
CALL chrono_forge.run_pending();
ALTER EXTENSION chrono_forge UPDATE;
SELECT state FROM chrono_forge.wait_for_run('up_wait_wf', 'parked', '0');
SELECT chrono_forge.send_event('up_wait_wf', 'parked', 'go');
CALL chrono_forge.run_pending();
SELECT state FROM chrono_forge.wait_for_run('up_wait_wf', 'parked');
DELETE FROM chrono_forge.workflows;
DROP PROCEDURE up_wait_wf(jsonb);

-- 0.7.0 -> 0.8.0: children that completed in their first pass were
-- written without ended_at (0.7.0's library; this one sets it, so the
-- rows are made as 0.7.0 left them); the update gives them their end.
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.7.0';
CREATE PROCEDURE up_end_child(args jsonb) LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE PROCEDURE up_end_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('c');
    CALL chrono_forge.spawn_each('n', 'up_end_child', 'SELECT g AS item_key FROM generate_series(1, 2) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['c']);
END $$;
SELECT chrono_forge.start('up_end_wf', 'p') > 0 AS started;
CALL chrono_forge.run_pending();
UPDATE chrono_forge.workflows SET ended_at = NULL WHERE parent_execution_log_id IS NOT NULL;
SELECT parent_execution_log_id IS NOT NULL AS child, state, count(*), count(ended_at) AS ended
  FROM chrono_forge.workflows GROUP BY 1, 2 ORDER BY 1;
ALTER EXTENSION chrono_forge UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';
SELECT parent_execution_log_id IS NOT NULL AS child, state, count(*), count(ended_at) AS ended,
       count(*) FILTER (WHERE ended_at = completed_at) AS at_completion
  FROM chrono_forge.workflows GROUP BY 1, 2 ORDER BY 1;
DELETE FROM chrono_forge.workflows;
DROP PROCEDURE up_end_wf(jsonb);
DROP PROCEDURE up_end_child(jsonb);

-- 0.8.0 -> 0.9.0: the key-prefix index is built anew over the runs there
-- are (blocks of ids), and runs() by key prefix reads it.
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.8.0';
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner)
SELECT 'public.up_keys', k, 'public.up_keys', 'completed', current_user::regrole
  FROM unnest(ARRAY['k-1', 'k-2', 'x-1', 'k-3']) k;
ALTER EXTENSION chrono_forge UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';
SELECT key FROM chrono_forge.runs(key_prefix => 'k-');
SELECT state, runs FROM chrono_forge.run_counts(key_prefix => 'k-') WHERE runs <> '0';
SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
 WHERE i.indrelid = 'chrono_forge.workflows'::regclass
   AND pg_get_indexdef(i.indexrelid) LIKE '%text_pattern_ops%';
DELETE FROM chrono_forge.workflows;

-- 0.9.0 -> 0.10.0: results.  On 0.9.0 the new library answers
-- wait_for_run() with the four columns the function declares; after the
-- update a run parked on 0.9.0 completes with its result, which
-- wait_for_run() hands back, and its parent merges with results.
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.9.0';
CREATE PROCEDURE up_res_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('1 hour', 'later');
END $$;
CREATE PROCEDURE up_res_parent(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn('a', 'up_res_child');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.wait('1 hour', 'later');
END $$;
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
SELECT chrono_forge.start('up_res_parent', 'p') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM chrono_forge.wait_for_run('up_res_parent', 'p', '0');
ALTER EXTENSION chrono_forge UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';
CREATE OR REPLACE PROCEDURE up_res_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('1 hour', 'later');
    CALL chrono_forge.set_result('"child done"');
END $$;
CREATE OR REPLACE PROCEDURE up_res_parent(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn('a', 'up_res_child');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.wait('1 hour', 'later');
    CALL chrono_forge.merge_branches(r, ARRAY['kids']);
    CALL chrono_forge.set_result(r);
END $$;
SET chrono_forge.fake_now = '2030-01-01 01:00:00+00';
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 01:10:00+00';
CALL chrono_forge.run_pending();
SELECT * FROM chrono_forge.wait_for_run('up_res_parent', 'p', '0');
DELETE FROM chrono_forge.workflows;
DROP PROCEDURE up_res_parent(jsonb);
DROP PROCEDURE up_res_child(jsonb);

-- 0.10.0 -> 0.11.0: deadlines.  On 0.10.0 the new library starts runs as
-- before and refuses a deadline it has nowhere to keep (0A000); after the
-- update a run parked on 0.10.0 takes one with set_deadline() and fails
-- past it, and a start() with a timeout gets one.
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.10.0';
CREATE PROCEDURE up_dl(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('1 hour', 'later');
END $$;
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
SELECT chrono_forge.start('up_dl', 'parked') > 0 AS started;
SELECT chrono_forge.start('up_dl', 'early', '{}', '{"timeout": "1 minute"}');
CALL chrono_forge.run_pending();
ALTER EXTENSION chrono_forge UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';
SELECT chrono_forge.set_deadline('up_dl', 'parked', '2030-01-01 00:10:00+00');
SELECT chrono_forge.start('up_dl', 'late', '{}', '{"timeout": "5 minutes"}') > 0 AS started;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-01-01 00:10:00+00';
CALL chrono_forge.run_pending();
SELECT w.key, w.state, e.error_class FROM chrono_forge.workflows w
  LEFT JOIN chrono_forge.error_logs e ON e.workflow_id = w.id ORDER BY w.key;
-- Concurrency limits after the update: runs started on 0.10.0 have no
-- gate; a new one waits for its place.
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'up');
SELECT chrono_forge.start('up_dl', 'gated-' || g, '{}', '{"concurrency_key": "up"}') > 0 AS started
  FROM generate_series(1, 2) g;
SELECT w.key, w.gate_id IS NOT NULL AS gated,
       EXISTS (SELECT FROM chrono_forge.concurrency_waiting q WHERE q.workflow_id = w.id) AS waiting
  FROM chrono_forge.workflows w ORDER BY w.key;
DELETE FROM chrono_forge.workflows;
DELETE FROM chrono_forge.concurrency_gates;
DROP PROCEDURE up_dl(jsonb);

-- 0.11.0 -> 0.12.0: compensation.  On 0.11.0 the new library runs the
-- old durably_execute (no compensate argument); after the update a run
-- parked on 0.11.0 registers an undo step in its next step, and a
-- cancel() compensates only what registered one.
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.11.0';
CREATE TABLE up_cp_ledger (what text);
CREATE FUNCTION up_cp_do(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO up_cp_ledger VALUES (args->>'what') $$;
CREATE FUNCTION up_cp_undo(a jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO up_cp_ledger VALUES ('undo ' || (a->'args'->>'what')) $$;
CREATE PROCEDURE up_cp(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('up_cp_do', name => 'old', args => '{"what": "old"}');
    CALL chrono_forge.wait('1 hour', 'later');
END $$;
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
SELECT chrono_forge.start('up_cp', 'parked') > 0 AS started;
CALL chrono_forge.run_pending();
ALTER EXTENSION chrono_forge UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';
CREATE OR REPLACE PROCEDURE up_cp(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('up_cp_do', name => 'old', args => '{"what": "old"}');
    CALL chrono_forge.wait('1 hour', 'later');
    CALL chrono_forge.durably_execute('up_cp_do', name => 'new', args => '{"what": "new"}',
                                      compensate => 'up_cp_undo');
    CALL chrono_forge.wait('1 hour', 'later still');
END $$;
SET chrono_forge.fake_now = '2030-01-01 01:00:00+00';
CALL chrono_forge.run_pending();
SELECT chrono_forge.cancel('up_cp', 'parked');
CALL chrono_forge.run_pending();
SELECT w.key, w.state, w.state_code FROM chrono_forge.workflows w;
SELECT what FROM up_cp_ledger ORDER BY what;
DELETE FROM chrono_forge.workflows;
DROP PROCEDURE up_cp(jsonb);
DROP FUNCTION up_cp_do(jsonb);
DROP FUNCTION up_cp_undo(jsonb);
DROP TABLE up_cp_ledger;

-- 0.12.0 -> 0.13.0: priorities.  On 0.12.0 the new library writes
-- wake-ups without a priority and refuses the option (0A000, nothing
-- written); after the update a prioritized run goes before a run parked
-- on 0.12.0 whose timer was due earlier.
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.12.0';
CREATE TABLE up_pr_order (seq serial, what text);
CREATE FUNCTION up_pr_note(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO up_pr_order (what) VALUES (args->>'what') $$;
CREATE PROCEDURE up_pr(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF args->>'what' = 'parked' THEN
        CALL chrono_forge.wait('1 hour', 'nap');
    END IF;
    CALL chrono_forge.durably_execute('up_pr_note', args => args);
END $$;
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
SELECT chrono_forge.start('up_pr', 'parked', '{"what": "parked"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT chrono_forge.start('up_pr', 'early', '{"what": "early"}', '{"priority": 1}');
SELECT count(*) AS runs FROM chrono_forge.workflows;
ALTER EXTENSION chrono_forge UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';
SET chrono_forge.fake_now = '2030-01-01 02:00:00+00';
SELECT chrono_forge.start('up_pr', 'urgent', '{"what": "urgent"}', '{"priority": 1}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT string_agg(what, ' ' ORDER BY seq) AS taken FROM up_pr_order;
SELECT w.key, w.state, w.priority FROM chrono_forge.workflows w ORDER BY w.key;
DELETE FROM chrono_forge.workflows;
DROP PROCEDURE up_pr(jsonb);
DROP FUNCTION up_pr_note(jsonb);
DROP TABLE up_pr_order;

-- 0.13.0 -> 0.14.0: scale-out on Citus.  Without Citus the new library
-- checks nothing (a run parked on 0.13.0 goes on after the update);
-- distribute() refuses (CF030); the run list by key prefix ends its walk
-- at the oldest run's bucket.
DROP EXTENSION chrono_forge;
CREATE EXTENSION chrono_forge VERSION '0.13.0';
CREATE TABLE up_ci_done (what text);
CREATE FUNCTION up_ci_note(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO up_ci_done VALUES (args->>'what') $$;
CREATE PROCEDURE up_ci(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('1 hour', 'nap');
    CALL chrono_forge.durably_execute('up_ci_note', args => args);
END $$;
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
SELECT chrono_forge.start('up_ci', 'parked', '{"what": "parked"}') > 0 AS started;
CALL chrono_forge.run_pending();
ALTER EXTENSION chrono_forge UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge';
SELECT pg_catalog.array_length(chrono_forge.routed_functions(), 1) AS routed;
DO $$
BEGIN
    PERFORM chrono_forge.distribute();
EXCEPTION WHEN SQLSTATE 'CF030' THEN
    RAISE NOTICE 'distribute() refused: %', SQLERRM;
END $$;
SELECT chrono_forge.start('up_ci', 'after', '{"what": "after"}') > 0 AS started;
SELECT chrono_forge.first_run_bucket() = chrono_forge.run_bucket(min(id)) AS first_bucket
  FROM chrono_forge.workflows;
SELECT key, state FROM chrono_forge.runs(key_prefix => 'parked');
SET chrono_forge.fake_now = '2030-01-01 02:00:00+00';
CALL chrono_forge.run_pending();
SELECT what FROM up_ci_done ORDER BY what;
DELETE FROM chrono_forge.workflows;
DROP PROCEDURE up_ci(jsonb);
DROP FUNCTION up_ci_note(jsonb);
DROP TABLE up_ci_done;
