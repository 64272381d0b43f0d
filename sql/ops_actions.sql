-- Actions: cancel (with or without children), reap one, force-unlock,
-- retry all blocked children of a branch, retry one.
-- Start from no runs (earlier suites in this database leave theirs).
DELETE FROM chrono_forge.workflows;
SET chrono_forge.fake_now = '2030-03-01 00:00:00+00';
CREATE TABLE ac_effects (what text);
CREATE FUNCTION ac_mark(args jsonb) RETURNS void LANGUAGE sql AS $$ INSERT INTO ac_effects VALUES (args->>'what') $$;
CREATE FUNCTION ac_boom() RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
CREATE PROCEDURE ac_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('1 hour', 'first');
    CALL chrono_forge.durably_execute('ac_mark');
END $$;
CREATE PROCEDURE ac_fragile(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF NOT coalesce((SELECT true FROM ac_effects WHERE what = 'fixed'), false) THEN
        CALL chrono_forge.durably_execute('ac_boom', retry_policy => chrono_forge.retry_policy(1));
    END IF;
    CALL chrono_forge.durably_execute('ac_mark');
END $$;

-- Cancel an idle run parked on a timer: it never runs again, its
-- wake-ups go, a marker records why and who.
SELECT chrono_forge.start('ac_wf', 'c1', '{"what": "c1"}') AS c1 \gset
CALL chrono_forge.run_pending();
SELECT count(*) AS wakeups FROM chrono_forge.wakeups WHERE workflow_id = :c1;
SELECT chrono_forge.cancel('ac_wf', 'c1', 'customer left');
SELECT state, locked_by, ended_at IS NOT NULL AS ended FROM chrono_forge.workflows WHERE id = :c1;
SELECT count(*) AS wakeups FROM chrono_forge.wakeups WHERE workflow_id = :c1;
SELECT step_name, state, metadata - 'cancelled_run' AS metadata,
       (metadata->>'cancelled_run')::bigint = :c1 AS names_the_run
  FROM chrono_forge.execution_logs WHERE workflow_id = :c1 ORDER BY id;
SET chrono_forge.fake_now = '2030-03-01 02:00:00+00';
SELECT chrono_forge.wake('ac_wf', 'c1');
SELECT chrono_forge.send_event('ac_wf', 'c1', 'x');
CALL chrono_forge.run_pending();
SELECT count(*) AS effects FROM ac_effects;
SELECT chrono_forge.retry('ac_wf', 'c1');
-- Cancelling again, or a completed run, changes nothing.
SELECT chrono_forge.cancel('ac_wf', 'c1');
SELECT chrono_forge.start('ac_wf', 'done', '{"what": "done"}') > 0 AS ok;
CALL chrono_forge.run_pending();
SET chrono_forge.fake_now = '2030-03-01 03:00:00+00';
CALL chrono_forge.run_pending();
SELECT state FROM chrono_forge.workflows WHERE key = 'done';
SELECT chrono_forge.cancel('ac_wf', 'done');
SELECT state FROM chrono_forge.workflows WHERE key = 'done';
-- A stalled or failed run can be cancelled (then it is not retryable).
SELECT chrono_forge.start('ac_fragile', 'f1', '{"what": "f1"}') > 0 AS ok;
CALL chrono_forge.run_pending();
SELECT state FROM chrono_forge.workflows WHERE key = 'f1';
SELECT chrono_forge.cancel('ac_fragile', 'f1', NULL);
SELECT state FROM chrono_forge.workflows WHERE key = 'f1';
SELECT chrono_forge.retry('ac_fragile', 'f1');
SELECT chrono_forge.cancel('ac_wf', 'nope');
SELECT chrono_forge.cancel('ac_wf', NULL);

-- Cancel with children: the run, its branches' children and theirs
-- (fixture in the fan-out data model); without, the children stay.
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner)
VALUES ('public.ac_wf', 'p1', 'public.ac_wf', 'idle', 'postgres'), ('public.ac_wf', 'p2', 'public.ac_wf', 'idle', 'postgres');
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state)
SELECT id, 'branch$kids', 'completed' FROM chrono_forge.workflows WHERE key IN ('p1', 'p2');
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, parent_execution_log_id)
SELECT 'public.ac_wf', p.key || '$kids$' || s, 'public.ac_wf', s::chrono_forge.workflow_state, 'postgres', l.id
  FROM chrono_forge.workflows p JOIN chrono_forge.execution_logs l ON l.workflow_id = p.id,
       unnest(ARRAY['idle', 'completed', 'stalled']) s
 WHERE p.key IN ('p1', 'p2');
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state)
SELECT id, 'branch$sub', 'pending' FROM chrono_forge.workflows WHERE key IN ('p1$kids$idle', 'p2$kids$idle');
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, parent_execution_log_id)
SELECT 'public.ac_wf', w.key || '$sub$g', 'public.ac_wf', 'idle', 'postgres', l.id
  FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id AND l.step_name = 'branch$sub';
INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason)
SELECT id, '2030-03-01', 'start' FROM chrono_forge.workflows WHERE key LIKE 'p_%' AND state = 'idle';
-- Children not started yet (spawn_batches): two under each parent's
-- branch, one under p1's child's branch.
INSERT INTO chrono_forge.spawn_batches (branch_log_id, owner, due_at, n, taken, workflows, keys, procedures, args)
SELECT l.id, 'postgres', '2030-03-01', 3, 3 - (CASE WHEN w.key LIKE '%$%' THEN 1 ELSE 2 END),
       ARRAY['ac_wf', 'ac_wf', 'ac_wf'], ARRAY[w.key || '$x$1', w.key || '$x$2', w.key || '$x$3'],
       ARRAY['public.ac_wf', 'public.ac_wf', 'public.ac_wf'], ARRAY['{}', '{}', '{}']::jsonb[]
  FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id
 WHERE w.key IN ('p1', 'p2', 'p1$kids$idle');
SELECT w.key, b.n - b.taken AS not_started FROM chrono_forge.spawn_batches b
  JOIN chrono_forge.execution_logs l ON l.id = b.branch_log_id JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 ORDER BY 1;
-- p1: itself, its idle and stalled children, the grandchild (4 runs) and
-- the 3 children not started.
SELECT chrono_forge.cancel('ac_wf', 'p1', 'bulk', with_children => true);
SELECT chrono_forge.cancel('ac_wf', 'p2', 'just the parent');
SELECT w.key, b.n - b.taken AS not_started FROM chrono_forge.spawn_batches b
  JOIN chrono_forge.execution_logs l ON l.id = b.branch_log_id JOIN chrono_forge.workflows w ON w.id = l.workflow_id
 ORDER BY 1;
DELETE FROM chrono_forge.spawn_batches;
SELECT key, state FROM chrono_forge.workflows WHERE key LIKE 'p_%' ORDER BY key;
SELECT w.key FROM chrono_forge.wakeups k JOIN chrono_forge.workflows w ON w.id = k.workflow_id
 WHERE w.key LIKE 'p_%' ORDER BY 1;

-- Reap one running run (whatever its lock's age) and force-unlock one.
SELECT chrono_forge.start('ac_wf', 'r1', '{"what": "r1"}') AS r1 \gset
SELECT chrono_forge.start('ac_wf', 'u1', '{"what": "u1"}') AS u1 \gset
SELECT (chrono_forge.acquire_lock(:r1, 'w:gone')).state, (chrono_forge.acquire_lock(:u1, 'w:gone')).state;
DELETE FROM chrono_forge.wakeups WHERE workflow_id IN (:r1, :u1);
SELECT chrono_forge.reap('ac_wf', 'r1');
SELECT state, locked_by FROM chrono_forge.workflows WHERE id = :r1;
SELECT reason FROM chrono_forge.wakeups WHERE workflow_id = :r1;
SELECT chrono_forge.reap('ac_wf', 'r1');
SELECT chrono_forge.force_unlock('ac_wf', 'u1');
SELECT state, locked_by FROM chrono_forge.workflows WHERE id = :u1;
SELECT count(*) AS wakeups FROM chrono_forge.wakeups WHERE workflow_id = :u1;
SELECT chrono_forge.force_unlock('ac_wf', 'u1');
-- The reaped run resumes; the unlocked one waits for a wake.
CALL chrono_forge.run_pending();
SELECT key, state, (SELECT string_agg(step_name, ',') FROM chrono_forge.execution_logs l
                    WHERE l.workflow_id = w.id) AS steps
  FROM chrono_forge.workflows w WHERE id IN (:r1, :u1) ORDER BY key;
SELECT chrono_forge.wake('ac_wf', 'u1');
CALL chrono_forge.run_pending();
SELECT key, state, (SELECT string_agg(step_name, ',') FROM chrono_forge.execution_logs l
                    WHERE l.workflow_id = w.id) AS steps
  FROM chrono_forge.workflows w WHERE id IN (:r1, :u1) ORDER BY key;
-- reap_stalled() (all stranded runs) for the admin.
SELECT (chrono_forge.acquire_lock(:u1, 'w:gone')).state;
SET chrono_forge.fake_now = '2030-03-01 04:00:00+00';
SELECT chrono_forge.reap_stalled();
SELECT state FROM chrono_forge.workflows WHERE id = :u1;

-- Retry every blocked child of a branch: failed and stalled ones only.
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner)
VALUES ('public.ac_wf', 'p3', 'public.ac_wf', 'idle', 'postgres');
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state)
SELECT id, 'branch$work', 'completed' FROM chrono_forge.workflows WHERE key = 'p3';
SELECT count(chrono_forge.start('ac_fragile', 'p3$work$' || i, jsonb_build_object('what', 'child ' || i)))
  FROM generate_series(1, 3) i;
UPDATE chrono_forge.workflows SET parent_execution_log_id =
       (SELECT id FROM chrono_forge.execution_logs WHERE step_name = 'branch$work')
 WHERE key LIKE 'p3$work$%';
CALL chrono_forge.run_pending();
-- child 3 is made failed instead of stalled; child 2 is made idle.
UPDATE chrono_forge.workflows SET state = 'failed' WHERE key = 'p3$work$3';
UPDATE chrono_forge.workflows SET state = 'idle' WHERE key = 'p3$work$2';
SELECT key, state FROM chrono_forge.branch_children('ac_wf', 'p3', 'work');
INSERT INTO ac_effects VALUES ('fixed');
SELECT chrono_forge.retry_blocked_children('ac_wf', 'p3', 'work');
SELECT key, state FROM chrono_forge.branch_children('ac_wf', 'p3', 'work');
CALL chrono_forge.run_pending();
SELECT key, state FROM chrono_forge.branch_children('ac_wf', 'p3', 'work');
SELECT what FROM ac_effects WHERE what LIKE 'child%' ORDER BY 1;
SELECT chrono_forge.retry_blocked_children('ac_wf', 'p3', 'work');
SELECT chrono_forge.retry_blocked_children('ac_wf', 'p3', 'nope');
SELECT chrono_forge.retry_blocked_children('ac_wf', 'p3', NULL);

-- Leave no runs behind.
RESET ROLE;
DELETE FROM chrono_forge.workflows;
DELETE FROM chrono_forge.workflow_defaults;
