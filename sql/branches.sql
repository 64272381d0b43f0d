-- Fan-out: branch, spawn, spawn_each, seal_branch, merge_branches, probes,
-- the merge poller (driven by run_pending with fake_now), nesting.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE TABLE br_log (id serial, what text);
CREATE FUNCTION br_note(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO br_log (what) VALUES (coalesce(args->>'what', args::text)) $$;
CREATE PROCEDURE br_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('br_note');
END $$;
CREATE PROCEDURE br_other_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('br_note', name => 'other', args => jsonb_build_object('what', 'other ' || (args->>'n')));
END $$;
-- Runs of this suite, with their steps and their parent's branch.
CREATE VIEW br_runs AS
SELECT regexp_replace(w.key, '^(\$[0-9]+\$)+', '') AS key, w.workflow, w.state,
       (SELECT p.step_name FROM chrono_forge.execution_logs p WHERE p.id = w.parent_execution_log_id) AS parent_step,
       (SELECT string_agg(l.step_name || ':' || l.state, ', ' ORDER BY l.id)
          FROM chrono_forge.execution_logs l WHERE l.workflow_id = w.id) AS steps
  FROM chrono_forge.workflows w WHERE w.workflow LIKE 'public.br\_%' ORDER BY 1;

-- Single spawn, automerge: the child is linked and runnable at once; the
-- parent joins at seal_branch(), before its next step.
CREATE PROCEDURE br_single_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('grp', automerge => true);
    CALL chrono_forge.spawn('child', 'br_child', '{"foo": "bar"}');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.durably_execute('br_note', name => 'after', args => '{"what": "after merge"}');
END $$;
SELECT chrono_forge.start('br_single_wf', 'ss-1') > 0 AS started;
CALL chrono_forge.run_pending(1);
SELECT * FROM br_runs WHERE key LIKE 'ss-1%';
SELECT c.args, c.owner = p.owner AS same_owner, (SELECT count(*) FROM chrono_forge.wakeups k WHERE k.workflow_id = c.id) AS wakeups
  FROM chrono_forge.workflows c JOIN chrono_forge.workflows p ON p.key = 'ss-1'
 WHERE c.key LIKE '$%$ss-1$grp$child';
CALL chrono_forge.run_pending();
SELECT * FROM br_runs WHERE key LIKE 'ss-1%';
-- automerge ordering: the merge log precedes the next step's.
SELECT (SELECT id FROM chrono_forge.execution_logs WHERE step_name = 'merge$grp' AND workflow_id = w.id)
     < (SELECT id FROM chrono_forge.execution_logs WHERE step_name = 'durably_execute$after' AND workflow_id = w.id) AS merge_first
  FROM chrono_forge.workflows w WHERE w.key = 'ss-1';
SELECT what FROM br_log ORDER BY id;

-- spawn_each over a table, in batches of 2: keys from item_key, one cursor
-- per spawn on the branch log, an explicit merge.
CREATE TABLE br_items (id int PRIMARY KEY, label text);
INSERT INTO br_items SELECT g, 'item ' || g FROM generate_series(1, 5) g;
CREATE SEQUENCE br_source_reads;
CREATE FUNCTION br_counted_items() RETURNS TABLE (item_key int, args jsonb) LANGUAGE sql AS $$
    SELECT i.id, jsonb_build_object('what', i.label) FROM br_items i WHERE nextval('br_source_reads') > 0
$$;
CREATE PROCEDURE br_each_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('grp');
    CALL chrono_forge.spawn_each('items', 'br_child', 'SELECT * FROM br_counted_items()', batch_size => 2);
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['grp']);
    CALL chrono_forge.continue_if('br_flag');
END $$;
CREATE TABLE br_flags (on_ boolean);
INSERT INTO br_flags VALUES (false);
CREATE FUNCTION br_flag() RETURNS boolean LANGUAGE sql AS $$ SELECT on_ FROM br_flags $$;
SELECT chrono_forge.start('br_each_wf', 'se-1') > 0 AS started;
CALL chrono_forge.run_pending(1);
-- Dispatched children wait in spawn_batches (one row per child for a
-- dispatch batch under 64) and become runs when a pass takes them; the
-- probes count them.
SELECT n, taken, array(SELECT regexp_replace(k, '^(\$[0-9]+\$)+', '') FROM unnest(keys) k) AS keys, workflows, args FROM chrono_forge.spawn_batches ORDER BY id;
SELECT count(*) AS child_runs FROM chrono_forge.workflows WHERE key LIKE '$%$se-1$%';
SELECT metadata->'cursors' AS cursors FROM chrono_forge.execution_logs WHERE step_name = 'branch$grp'
   AND workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'se-1');
SELECT chrono_forge.branch_pending(id) AS pending, chrono_forge.branch_done(id) AS done
  FROM chrono_forge.execution_logs WHERE step_name = 'branch$grp'
   AND workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'se-1');
SELECT branch, spawned, pending, never_started FROM chrono_forge.branches('br_each_wf', 'se-1');
-- A pass takes the oldest batch's next child; a child whose key is
-- already a run is passed over (its run is not the branch's).
SELECT chrono_forge.start('br_child', 'se-1$grp$items_2') > 0 AS started;
CALL chrono_forge.run_pending(1);
SELECT n, taken FROM chrono_forge.spawn_batches ORDER BY id;
SELECT regexp_replace(key, '^(\$[0-9]+\$)+', '') AS key, state, parent_execution_log_id IS NOT NULL AS child
  FROM chrono_forge.workflows WHERE key LIKE '$%$se-1$%' ORDER BY key;
CALL chrono_forge.run_pending(1);
SELECT n, taken FROM chrono_forge.spawn_batches ORDER BY id;
SELECT regexp_replace(key, '^(\$[0-9]+\$)+', '') AS key, state, parent_execution_log_id IS NOT NULL AS child
  FROM chrono_forge.workflows WHERE key LIKE '$%$se-1$%' ORDER BY key;
SELECT chrono_forge.branch_pending(id) AS pending
  FROM chrono_forge.execution_logs WHERE step_name = 'branch$grp'
   AND workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'se-1');
CALL chrono_forge.run_pending();
SELECT count(*) AS batches_left FROM chrono_forge.spawn_batches;
SELECT regexp_replace(key, '^(\$[0-9]+\$)+', '') AS key, state, parent_execution_log_id IS NOT NULL AS child, created_at = (
         SELECT started_at FROM chrono_forge.execution_logs WHERE step_name = 'branch$grp'
            AND workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key = 'se-1')) AS created_at_dispatch
  FROM chrono_forge.workflows WHERE key LIKE '$%$se-1$%' ORDER BY key;
SELECT * FROM br_runs WHERE key = 'se-1';
SELECT count(*) FILTER (WHERE state = 'completed') AS children_completed
  FROM chrono_forge.workflows WHERE key LIKE '$%$se-1$%';
-- A dispatch batch of 64 is spread over 32 rows of two children; a pass
-- takes a row's next child, and the row goes with its last child.
CREATE PROCEDURE br_quiet_child(args jsonb) LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE PROCEDURE br_pairs_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('p', automerge => true);
    CALL chrono_forge.spawn_each('p', 'br_quiet_child', 'SELECT g AS item_key FROM generate_series(1, 64) g',
                                 batch_size => 64);
    CALL chrono_forge.seal_branch();
END $$;
SELECT chrono_forge.start('br_pairs_wf', 'pairs') > 0 AS started;
CALL chrono_forge.run_pending(1);
SELECT count(*) AS rows_, min(n) AS min_n, max(n) AS max_n, sum(n) AS children,
       (SELECT array_agg(regexp_replace(k, '^(\$[0-9]+\$)+', '')) FROM unnest((SELECT keys FROM chrono_forge.spawn_batches ORDER BY id LIMIT 1)) k) AS first_row
  FROM chrono_forge.spawn_batches;
CALL chrono_forge.run_pending(1);
SELECT count(*) AS rows_, sum(taken) AS taken FROM chrono_forge.spawn_batches;
CALL chrono_forge.run_pending(1);
SELECT count(*) AS rows_, sum(taken) AS taken FROM chrono_forge.spawn_batches;
CALL chrono_forge.run_pending();
SELECT state, (SELECT count(*) FROM chrono_forge.workflows WHERE key LIKE '$%$pairs$%' AND state = 'completed') AS children
  FROM chrono_forge.workflows WHERE key = 'pairs';

-- A child whose first pass fails: its run is written when the failure is
-- (the same child, the same run id), with the context the pass set, and
-- a workflow-level retry is scheduled; a child that waits is written as
-- it parks.
CREATE PROCEDURE br_failing_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM chrono_forge.context_set('seen', to_jsonb(chrono_forge.key()));
    RAISE EXCEPTION 'child % fails', chrono_forge.key() USING ERRCODE = 'P0001';
END $$;
CREATE FUNCTION br_false() RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE PROCEDURE br_parking_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.continue_if('br_false');
END $$;
CREATE PROCEDURE br_mixed_first_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('m');
    CALL chrono_forge.spawn_each('x', NULL,
        'SELECT * FROM (VALUES (1, ''br_failing_child''), (2, ''br_parking_child'')) v(item_key, workflow)');
    CALL chrono_forge.seal_branch();
END $$;
SELECT chrono_forge.start('br_mixed_first_wf', 'mf') > 0 AS started;
CALL chrono_forge.run_pending(3);
SELECT regexp_replace(w.key, '^(\$[0-9]+\$)+', '') AS key, w.state, regexp_replace(w.context::text, '\$[0-9]+\$', '', 'g') AS context, w.attempt,
       (SELECT count(*) FROM chrono_forge.wakeups k WHERE k.workflow_id = w.id) AS wakeups,
       (SELECT regexp_replace(string_agg(e.error_class || ' ' || e.error_message, '; '), '\$[0-9]+\$', '', 'g')
          FROM chrono_forge.error_logs e WHERE e.workflow_id = w.id) AS errors,
       (SELECT string_agg(l.step_name || ':' || l.state, ', ' ORDER BY l.id)
          FROM chrono_forge.execution_logs l WHERE l.workflow_id = w.id) AS steps
  FROM chrono_forge.workflows w WHERE w.key LIKE '$%$mf$%' ORDER BY 1;
SELECT count(*) AS batches_left FROM chrono_forge.spawn_batches;
SELECT chrono_forge.cancel('br_mixed_first_wf', 'mf', with_children => true);

-- Replay (three wakes): the sealed branch re-runs neither its source nor
-- its spawns.
SELECT nextval('br_source_reads') AS reads_before;
SELECT chrono_forge.wake('br_each_wf', 'se-1');
CALL chrono_forge.run_pending();
SELECT chrono_forge.wake('br_each_wf', 'se-1');
CALL chrono_forge.run_pending();
SELECT chrono_forge.wake('br_each_wf', 'se-1');
CALL chrono_forge.run_pending();
SELECT nextval('br_source_reads') AS reads_after;
SELECT count(*) AS children FROM chrono_forge.workflows WHERE key LIKE '$%$se-1$%';
UPDATE br_flags SET on_ = true;
SELECT chrono_forge.wake('br_each_wf', 'se-1');
CALL chrono_forge.run_pending();
SELECT * FROM br_runs WHERE key = 'se-1';
UPDATE br_flags SET on_ = false;

-- Replay costs the same for 3 or 3,000 children: the rows a replay pass
-- reads from the runs table do not depend on the fan-out.
CREATE PROCEDURE br_many_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('grp');
    CALL chrono_forge.spawn_each('n', 'br_child',
        format('SELECT g AS item_key FROM generate_series(1, %s) g', args->>'n'));
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['grp']);
    CALL chrono_forge.continue_if('br_flag');
END $$;
SELECT chrono_forge.start('br_many_wf', 'm3', '{"n": 3}') > 0 AS started;
SELECT chrono_forge.start('br_many_wf', 'm3000', '{"n": 3000}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT key, state, (SELECT count(*) FROM chrono_forge.workflows c
                     JOIN chrono_forge.execution_logs l ON l.id = c.parent_execution_log_id
                    WHERE l.workflow_id = w.id AND c.state = 'completed') AS children_completed
  FROM chrono_forge.workflows w WHERE key IN ('m3', 'm3000') ORDER BY key;
-- Children that completed in their first pass were written completed:
-- each has its end (ended_at), as any run that ends.
SELECT count(*) AS children, count(c.ended_at) AS ended, count(*) FILTER (WHERE c.ended_at = c.completed_at) AS at_completion
  FROM chrono_forge.workflows c JOIN chrono_forge.execution_logs l ON l.id = c.parent_execution_log_id
  JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key IN ('m3', 'm3000') AND c.state = 'completed';
-- (Statistics are flushed when the session goes idle: flush, then read.)
CREATE TABLE br_reads (key text, n bigint);
CREATE VIEW br_runs_read AS
SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS n
  FROM pg_stat_all_tables WHERE relid = 'chrono_forge.workflows'::regclass;
SELECT pg_stat_force_next_flush();
SELECT pg_stat_force_next_flush();
INSERT INTO br_reads SELECT 'm3 before', n FROM br_runs_read;
SELECT chrono_forge.wake('br_many_wf', 'm3');
CALL chrono_forge.run_pending();
SELECT pg_stat_force_next_flush();
SELECT pg_stat_force_next_flush();
INSERT INTO br_reads SELECT 'm3 after', n FROM br_runs_read;
SELECT chrono_forge.wake('br_many_wf', 'm3000');
CALL chrono_forge.run_pending();
SELECT pg_stat_force_next_flush();
SELECT pg_stat_force_next_flush();
INSERT INTO br_reads SELECT 'm3000 after', n FROM br_runs_read;
SELECT (SELECT n FROM br_reads WHERE key = 'm3 after') - (SELECT n FROM br_reads WHERE key = 'm3 before') AS m3_reads,
       (SELECT n FROM br_reads WHERE key = 'm3000 after') - (SELECT n FROM br_reads WHERE key = 'm3 after') AS m3000_reads;
SELECT (SELECT n FROM br_reads WHERE key = 'm3 after') - (SELECT n FROM br_reads WHERE key = 'm3 before')
     = (SELECT n FROM br_reads WHERE key = 'm3000 after') - (SELECT n FROM br_reads WHERE key = 'm3 after')
       AS same_replay_cost;

-- spawn_each over a VALUES list with a workflow per row; an empty source
-- seals and the run continues.
CREATE PROCEDURE br_mixed_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('mix');
    CALL chrono_forge.spawn_each('v', NULL,
        $q$SELECT * FROM (VALUES ('a', 'br_child', '{"what": "child a"}'::jsonb),
                                 ('b', 'br_other_child', '{"n": 2}'),
                                 ('c', 'br_child', '{"what": "child c"}')) AS v(item_key, workflow, args)$q$);
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.branch('empty', automerge => true);
    CALL chrono_forge.spawn_each('none', 'br_child', 'SELECT 1 AS item_key WHERE false');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['mix']);
    CALL chrono_forge.durably_execute('br_note', name => 'done', args => '{"what": "mixed done"}');
END $$;
SELECT chrono_forge.start('br_mixed_wf', 'mx') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM br_runs WHERE key LIKE 'mx%';

-- Programming errors fail the run at once, with their SQLSTATE.
CREATE PROCEDURE br_bad_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CASE args->>'case'
    WHEN 'spawn outside' THEN CALL chrono_forge.spawn('c', 'br_child');
    WHEN 'seal outside' THEN CALL chrono_forge.seal_branch();
    WHEN 'nested' THEN
        CALL chrono_forge.branch('outer');
        CALL chrono_forge.branch('inner');
    WHEN 'dollar branch' THEN CALL chrono_forge.branch('a$b');
    WHEN 'dollar spawn' THEN
        CALL chrono_forge.branch('g');
        CALL chrono_forge.spawn('a$b', 'br_child');
    WHEN 'comma merge' THEN CALL chrono_forge.merge_branches(ARRAY['a,b']);
    WHEN 'unknown branch' THEN CALL chrono_forge.merge_branches(ARRAY['nope']);
    WHEN 'min over max' THEN
        CALL chrono_forge.branch('g', automerge => true);
        CALL chrono_forge.seal_branch();
        CALL chrono_forge.merge_branches(ARRAY['g'], '10 minutes', '1 minute');
    WHEN 'unmerged' THEN
        CALL chrono_forge.branch('x');
        CALL chrono_forge.seal_branch();
        CALL chrono_forge.branch('y');
        CALL chrono_forge.seal_branch();
    WHEN 'duplicate item_key' THEN
        CALL chrono_forge.branch('g');
        CALL chrono_forge.spawn_each('d', 'br_child', 'SELECT * FROM (VALUES (1), (2), (2)) v(item_key)', batch_size => 2);
    WHEN 'no item_key' THEN
        CALL chrono_forge.branch('g');
        CALL chrono_forge.spawn_each('d', 'br_child', 'SELECT 1 AS id');
    WHEN 'merge open branch' THEN
        CALL chrono_forge.branch('g');
        CALL chrono_forge.merge_branches(ARRAY['g']);
    WHEN 'unknown workflow' THEN
        CALL chrono_forge.branch('g');
        CALL chrono_forge.spawn('c', 'br_no_such_wf');
    END CASE;
END $$;
SELECT count(chrono_forge.start('br_bad_wf', c, jsonb_build_object('case', c)))
  FROM unnest(ARRAY['spawn outside', 'seal outside', 'nested', 'dollar branch', 'dollar spawn',
                    'comma merge', 'unknown branch', 'min over max', 'unmerged',
                    'duplicate item_key', 'no item_key', 'merge open branch', 'unknown workflow']) c;
CALL chrono_forge.run_pending();
SELECT w.key, w.state, e.error_class, e.error_message,
       (SELECT count(*) FROM chrono_forge.workflows c WHERE c.key LIKE '$' || w.id || '$' || w.key || '$%') AS children
  FROM chrono_forge.workflows w JOIN chrono_forge.error_logs e ON e.workflow_id = w.id
 WHERE w.workflow = 'public.br_bad_wf' ORDER BY w.id;

-- A stalled child keeps the branch (and the parent) pending until it is
-- retried; its completion then wakes the parent.
CREATE FUNCTION br_maybe_boom() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT br_flag() THEN RAISE EXCEPTION 'boom'; END IF;
END $$;
CREATE PROCEDURE br_fragile_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('br_maybe_boom', retry_policy => chrono_forge.retry_policy(max_attempts => 1));
END $$;
CREATE PROCEDURE br_park_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('g');
    CALL chrono_forge.spawn('ok', 'br_child');
    CALL chrono_forge.spawn('fragile', 'br_fragile_child');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['g']);
    CALL chrono_forge.durably_execute('br_note', name => 'finalize', args => '{"what": "park finalized"}');
END $$;
SELECT chrono_forge.start('br_park_wf', 'pk') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM br_runs WHERE key LIKE 'pk%';
SELECT l.id AS pk_branch FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'pk' AND l.step_name = 'branch$g' \gset
SELECT chrono_forge.branch_sealed(:pk_branch) AS sealed, chrono_forge.branch_pending(:pk_branch) AS pending,
       chrono_forge.branch_pending(:pk_branch, 0) AS capped, chrono_forge.branch_done(:pk_branch) AS done;
SELECT merge_step, branch_log_ids = ARRAY[:pk_branch]::bigint[] AS watches,
       to_char(due_at AT TIME ZONE 'UTC', 'HH24:MI:SS') AS due_at FROM chrono_forge.merge_polls;
SELECT metadata->>'poll_token' = (SELECT token FROM chrono_forge.merge_polls) AS token_stamped
  FROM chrono_forge.execution_logs WHERE id = :pk_branch;
-- The child's stall made the poll due at once (0.6.0): it found the child
-- blocked, not moving, and backed off to max_interval.
SET chrono_forge.fake_now = '2030-01-01 00:00:05+00';
CALL chrono_forge.run_pending();
SELECT (metadata->'poll') - 'last_polled_at'::text - 'next_poll_at'::text AS poll FROM chrono_forge.execution_logs WHERE id = :pk_branch;
SELECT to_char(due_at AT TIME ZONE 'UTC', 'HH24:MI:SS') AS next_poll FROM chrono_forge.merge_polls;
SELECT * FROM br_runs WHERE key = 'pk';
UPDATE br_flags SET on_ = true;
SELECT chrono_forge.retry('br_fragile_child', (SELECT key FROM chrono_forge.workflows WHERE key LIKE '$%$pk$g$fragile'));
CALL chrono_forge.run_pending();
SELECT * FROM br_runs WHERE key LIKE 'pk%';
SELECT chrono_forge.branch_done(:pk_branch) AS done, count(*) AS polls_left FROM chrono_forge.merge_polls;
UPDATE br_flags SET on_ = false;

-- The poller on its own (children completed behind the engine's back, so
-- no completion nudges the parent): children that wait (started, idle)
-- hold no floor; a drain rate sets the cadence; the poll that finds the
-- branch done wakes the parent.
CREATE PROCEDURE br_waiting_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.continue_if('br_flag');
END $$;
CREATE PROCEDURE br_poll_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('g');
    CALL chrono_forge.spawn_each('w', 'br_waiting_child', 'SELECT g AS item_key FROM generate_series(1, 3) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['g'], '10 seconds', '1 minute');
END $$;
SET chrono_forge.fake_now = '2030-01-02 00:00:00+00';
SELECT chrono_forge.start('br_poll_wf', 'po') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT l.id AS po_branch FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'po' AND l.step_name = 'branch$g' \gset
SELECT to_char(due_at AT TIME ZONE 'UTC', 'HH24:MI:SS') AS first_poll FROM chrono_forge.merge_polls;
SET chrono_forge.fake_now = '2030-01-02 00:00:10+00';
CALL chrono_forge.run_pending();
SELECT metadata->'poll'->>'pending' AS pending, metadata->'poll'->>'interval' AS interval,
       metadata->'poll'->>'polls' AS polls, metadata->'poll'->>'spawned' AS spawned
  FROM chrono_forge.execution_logs WHERE id = :po_branch;
SELECT to_char(due_at AT TIME ZONE 'UTC', 'HH24:MI:SS') AS next_poll FROM chrono_forge.merge_polls;
-- Two children finish between polls: the rate sets the cadence (half the ETA).
UPDATE chrono_forge.workflows SET state = 'completed' WHERE key LIKE ANY (ARRAY['$%$po$g$w_1', '$%$po$g$w_2']);
SET chrono_forge.fake_now = '2030-01-02 00:01:10+00';
CALL chrono_forge.run_pending();
SELECT metadata->'poll'->>'pending' AS pending, metadata->'poll'->>'rate' AS rate,
       metadata->'poll'->>'eta_seconds' AS eta, metadata->'poll'->>'interval' AS interval,
       metadata->'poll'->>'polls' AS polls
  FROM chrono_forge.execution_logs WHERE id = :po_branch;
-- The last one, again behind the engine's back: the next poll wakes the parent.
UPDATE chrono_forge.workflows SET state = 'completed' WHERE key LIKE '$%$po$g$w_3';
SET chrono_forge.fake_now = '2030-01-02 00:02:10+00';
CALL chrono_forge.run_pending();
SELECT metadata->'poll'->>'pending' AS pending, metadata->'poll'->'next_poll_at' AS next_poll_at,
       metadata->'poll'->>'polls' AS polls
  FROM chrono_forge.execution_logs WHERE id = :po_branch;
SELECT * FROM br_runs WHERE key = 'po';

-- Re-dispatch: a child that lost its wake-up and sat idle, never started,
-- for five minutes is kicked again, at most once per window.
CREATE PROCEDURE br_kick_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('g');
    CALL chrono_forge.spawn('lost', 'br_child');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['g'], '10 seconds', '1 minute');
END $$;
SET chrono_forge.fake_now = '2030-01-03 00:00:00+00';
SELECT chrono_forge.start('br_kick_wf', 'kk') > 0 AS started;
CALL chrono_forge.run_pending(1);
DELETE FROM chrono_forge.wakeups WHERE workflow_id = (SELECT id FROM chrono_forge.workflows WHERE key LIKE '$%$kk$g$lost');
SELECT l.id AS kk_branch FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'kk' AND l.step_name = 'branch$g' \gset
SET chrono_forge.fake_now = '2030-01-03 00:00:10+00';
CALL chrono_forge.run_pending();
SELECT metadata->'poll'->>'never_started' AS never_started, metadata->'poll'->>'rekicked' AS rekicked
  FROM chrono_forge.execution_logs WHERE id = :kk_branch;
SELECT state FROM chrono_forge.workflows WHERE key LIKE '$%$kk$g$lost';
-- Five minutes on, still never started: kicked; it runs and the parent joins.
SET chrono_forge.fake_now = '2030-01-03 00:06:00+00';
UPDATE chrono_forge.merge_polls SET due_at = chrono_forge.now();
CALL chrono_forge.run_pending();
SELECT metadata->'poll'->>'rekicked' AS rekicked, metadata->'poll'->>'rekick_total' AS rekick_total,
       metadata->'poll' ? 'last_rekick_at' AS has_last_rekick
  FROM chrono_forge.execution_logs WHERE id = :kk_branch;
SELECT * FROM br_runs WHERE key LIKE 'kk%';

-- Cross-workflow nesting: a child opens its own branch; grandchildren
-- complete bottom-up.
CREATE PROCEDURE br_nest_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('sub', automerge => true);
    CALL chrono_forge.spawn('gc', 'br_child');
    CALL chrono_forge.seal_branch();
END $$;
CREATE PROCEDURE br_nest_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('top', automerge => true);
    CALL chrono_forge.spawn('c', 'br_nest_child');
    CALL chrono_forge.seal_branch();
END $$;
SET chrono_forge.fake_now = '2030-01-04 00:00:00+00';
SELECT chrono_forge.start('br_nest_wf', 'nest-1') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM br_runs WHERE key LIKE 'nest-1%';
SELECT string_agg(regexp_replace(w.key, '^(\$[0-9]+\$)+', ''), ' < ' ORDER BY l.id) AS completion_order
  FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l
    ON l.workflow_id = w.id AND l.step_name = '$workflow_completion$'
 WHERE regexp_replace(w.key, '^(\$[0-9]+\$)+', '') LIKE 'nest-1%';

-- What a failed, stalled or cancelled child means to a merge
-- (on_child_failure, 0.6.0).  'wait' (the default): a cancelled child
-- blocks the merge as a failed one does, is shown blocked, and can be
-- retried; its cancel makes the merge's poll due at once.
CREATE VIEW br_kids AS
SELECT regexp_replace(w.key, '^(\$[0-9]+\$)+', '') AS key, w.state
  FROM chrono_forge.workflows w WHERE w.key ~ '^\$' AND w.workflow LIKE 'public.br\_%';
CREATE PROCEDURE br_policy_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('g');
    IF args ? 'slow_first' THEN
        CALL chrono_forge.spawn('slow', coalesce(args->>'slow', 'br_waiting_child'));
    END IF;
    CALL chrono_forge.spawn('ok', 'br_child');
    IF NOT args ? 'slow_first' THEN
        CALL chrono_forge.spawn('slow', coalesce(args->>'slow', 'br_waiting_child'));
    END IF;
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['g'], '10 seconds', '1 hour',
                                     on_child_failure => coalesce(args->>'policy', 'wait'));
    CALL chrono_forge.durably_execute('br_note', name => 'after', args => jsonb_build_object('what', 'merged ' || chrono_forge.key()));
END $$;
SET chrono_forge.fake_now = '2030-01-05 00:00:00+00';
SELECT chrono_forge.start('br_policy_wf', 'cw') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM br_kids WHERE key LIKE 'cw$%' ORDER BY 1;
SELECT to_char(due_at AT TIME ZONE 'UTC', 'HH24:MI:SS') AS due_at FROM chrono_forge.merge_polls;
SELECT chrono_forge.cancel('br_waiting_child', (SELECT key FROM chrono_forge.workflows WHERE key LIKE '$%$cw$g$slow'));
SELECT to_char(due_at AT TIME ZONE 'UTC', 'HH24:MI:SS') AS due_now FROM chrono_forge.merge_polls;
SELECT chrono_forge.branch_done(l.id) AS done_under_wait
  FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'cw' AND l.step_name = 'branch$g';
CALL chrono_forge.run_pending();
SELECT branch, merged, pending, blocked, poll->>'blocked' AS poll_blocked FROM chrono_forge.branches('br_policy_wf', 'cw');
SELECT blocked, regexp_replace(key, '^(\$[0-9]+\$)+', '') AS key, state FROM chrono_forge.branch_children('br_policy_wf', 'cw', 'g');
SELECT to_char(due_at AT TIME ZONE 'UTC', 'HH24:MI:SS') AS next_poll FROM chrono_forge.merge_polls;
SELECT state FROM chrono_forge.workflows WHERE key = 'cw';
-- retry() re-drives the cancelled child (and a later cancel writes its own marker).
UPDATE br_flags SET on_ = true;
SELECT chrono_forge.retry('br_waiting_child', (SELECT key FROM chrono_forge.workflows WHERE key LIKE '$%$cw$g$slow'));
SELECT step_name ~ '^\$workflow_cancelled\$[0-9]+$' AS marker_renamed
  FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key LIKE '$%$cw$g$slow' AND l.step_name LIKE '$workflow\_cancelled$%';
CALL chrono_forge.run_pending();
SELECT * FROM br_runs WHERE key = 'cw';
UPDATE br_flags SET on_ = false;

-- retry_blocked_children() takes cancelled children too, not those of a
-- cancelled run (nor does retry()).
SELECT chrono_forge.start('br_policy_wf', 'cr') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT chrono_forge.cancel('br_waiting_child', (SELECT key FROM chrono_forge.workflows WHERE key LIKE '$%$cr$g$slow'));
SELECT chrono_forge.retry_blocked_children('br_policy_wf', 'cr', 'g') AS retried;
SELECT * FROM br_kids WHERE key LIKE 'cr$%' ORDER BY 1;
SELECT chrono_forge.cancel('br_policy_wf', 'cr', with_children => true);
SELECT chrono_forge.retry_blocked_children('br_policy_wf', 'cr', 'g') AS retried;
DO $$
BEGIN
    PERFORM chrono_forge.retry('br_waiting_child', (SELECT key FROM chrono_forge.workflows WHERE key LIKE '$%$cr$g$slow'));
EXCEPTION WHEN SQLSTATE 'CF004' THEN
    RAISE NOTICE 'CF004: %', SQLERRM ~ 'not retryable';
END $$;

-- 'fail': a child that stalls fails the parent at once (CF025), naming it;
-- retried children and a retried parent then merge.
SELECT chrono_forge.start('br_policy_wf', 'cf', '{"policy": "fail", "slow": "br_fragile_child"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM br_kids WHERE key LIKE 'cf$%' ORDER BY 1;
SELECT w.state, e.error_class, regexp_replace(e.error_message, '\$[0-9]+\$', '$', 'g') AS error_message,
       regexp_replace(e.error_detail, '\$[0-9]+\$', '$', 'g') AS error_detail, e.error_hint
  FROM chrono_forge.workflows w JOIN chrono_forge.error_logs e ON e.workflow_id = w.id WHERE w.key = 'cf';
SELECT count(*) AS polls_left FROM chrono_forge.merge_polls;
UPDATE br_flags SET on_ = true;
SELECT chrono_forge.retry_blocked_children('br_policy_wf', 'cf', 'g') AS retried;
CALL chrono_forge.run_pending();
SELECT chrono_forge.retry('br_policy_wf', 'cf');
CALL chrono_forge.run_pending();
SELECT key, state, regexp_replace(steps, '[0-9]+', 'N', 'g') AS steps FROM br_runs WHERE key = 'cf';
UPDATE br_flags SET on_ = false;
-- ... and a cancelled child likewise.
SELECT chrono_forge.start('br_policy_wf', 'cc', '{"policy": "fail"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT chrono_forge.cancel('br_waiting_child', (SELECT key FROM chrono_forge.workflows WHERE key LIKE '$%$cc$g$slow'));
CALL chrono_forge.run_pending();
SELECT w.state, e.error_class, regexp_replace(e.error_detail, '\$[0-9]+\$', '$', 'g') AS error_detail
  FROM chrono_forge.workflows w JOIN chrono_forge.error_logs e ON e.workflow_id = w.id WHERE w.key = 'cc';

-- 'ignore': failed, stalled and cancelled children count as ended; the
-- merge notes how many it passed over.
SELECT chrono_forge.start('br_policy_wf', 'ci', '{"policy": "ignore", "slow": "br_fragile_child"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM br_kids WHERE key LIKE 'ci$%' ORDER BY 1;
SELECT * FROM br_runs WHERE key = 'ci';
SELECT l.metadata FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'ci' AND l.step_name = 'merge$g';
-- (The same with the child that stalls running first.)
SELECT chrono_forge.start('br_policy_wf', 'ci2', '{"policy": "ignore", "slow": "br_fragile_child", "slow_first": true}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT * FROM br_kids WHERE key LIKE 'ci2$%' ORDER BY 1;
SELECT key, state FROM br_runs WHERE key = 'ci2';
SELECT chrono_forge.start('br_policy_wf', 'cx', '{"policy": "ignore"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT chrono_forge.cancel('br_waiting_child', (SELECT key FROM chrono_forge.workflows WHERE key LIKE '$%$cx$g$slow'));
-- branch_done() by the parked merge's rules (0.12.0): under 'ignore' only
-- a blocked child is left, so done; the same branch under 'wait' (cw
-- above, its slow child cancelled) would not be.
SELECT chrono_forge.branch_done(l.id) AS done, chrono_forge.branch_pending(l.id) AS pending
  FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 WHERE w.key = 'cx' AND l.step_name = 'branch$g';
CALL chrono_forge.run_pending();
SELECT * FROM br_runs WHERE key = 'cx';
-- A bad policy fails the run (CF012).
SELECT chrono_forge.start('br_policy_wf', 'cb', '{"policy": "skip"}') > 0 AS started;
CALL chrono_forge.run_pending();
SELECT w.state, e.error_class, e.error_message
  FROM chrono_forge.workflows w JOIN chrono_forge.error_logs e ON e.workflow_id = w.id WHERE w.key = 'cb';
DROP VIEW br_kids;

-- spawn_each keys and cursors in canonical form (0.6.0): a dispatch that
-- stops after its first batch and resumes in a session with other
-- DateStyle, TimeZone and float settings misses and repeats no child, and
-- every child's key reads the same (ISO, UTC, shortest exact floats).
CREATE SEQUENCE br_gate_calls;
CREATE TABLE br_gate (open boolean);
INSERT INTO br_gate VALUES (false);
CREATE FUNCTION br_gated_keys() RETURNS TABLE (item_key timestamptz) LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('br_gate_calls') >= 2 AND NOT (SELECT open FROM br_gate) THEN
        RAISE EXCEPTION 'gate closed';
    END IF;
    RETURN QUERY SELECT t FROM unnest(ARRAY[timestamptz '2030-03-05 12:00:00+00',
        '2030-04-01 00:00:00+00', '2030-06-01 00:00:00.25+00']) t;
END $$;
CREATE PROCEDURE br_canon_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('k');
    CALL chrono_forge.spawn_each('f', 'br_quiet_child',
        'SELECT x AS item_key FROM unnest(ARRAY[0.3::float8, 0.1::float8 + 0.2::float8]) x');
    CALL chrono_forge.spawn_each('t', 'br_quiet_child', 'SELECT * FROM br_gated_keys()', batch_size => 1);
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['k']);
END $$;
SET DateStyle = 'SQL, DMY';
SET TimeZone = 'America/New_York';
SET extra_float_digits = -3;
SELECT chrono_forge.start('br_canon_wf', 'canon', '{}', '{"retry_policy": {"max_attempts": 1}}') > 0 AS started;
CALL chrono_forge.run_pending(1);
SELECT state FROM chrono_forge.workflows WHERE key = 'canon';
SELECT l.metadata->'cursors'->'t' AS cursor FROM chrono_forge.execution_logs l
  JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.key = 'canon' AND l.step_name = 'branch$k';
SET DateStyle = 'ISO, MDY';
SET TimeZone = 'Europe/Paris';
RESET extra_float_digits;
UPDATE br_gate SET open = true;
SELECT chrono_forge.retry('br_canon_wf', 'canon');
CALL chrono_forge.run_pending();
RESET DateStyle;
RESET TimeZone;
SELECT regexp_replace(key, '^(\$[0-9]+\$)+', '') AS key, state FROM chrono_forge.workflows
 WHERE key LIKE '$%$canon$%' ORDER BY 1;
SELECT state FROM chrono_forge.workflows WHERE key = 'canon';

-- Probes check ownership.
CREATE ROLE br_stranger;
SELECT set_config('br.pk_branch', :'pk_branch', false) IS NOT NULL AS noted;
SET ROLE br_stranger;
-- (the id in the message shown as <id>: it depends on what ran before)
DO $$
BEGIN
    PERFORM chrono_forge.branch_done(current_setting('br.pk_branch')::bigint);
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE '% %', SQLSTATE, regexp_replace(SQLERRM, '[0-9]+', '<id>');
END $$;
RESET ROLE;
DROP ROLE br_stranger;
SELECT chrono_forge.branch_done(-1);

DELETE FROM chrono_forge.workflows WHERE workflow LIKE 'public.br\_%';
DROP VIEW br_runs, br_runs_read;
-- Later suites print error log ids: leave the counter as we found it.
ALTER TABLE chrono_forge.error_logs ALTER COLUMN id RESTART;
