-- Retention: cleanup() deletes terminal runs by the time they ended, in
-- batches, and prunes repetition logs behind their frontier.
-- Start from no runs (earlier suites in this database leave theirs).
DELETE FROM chrono_forge.workflows;
SET chrono_forge.fake_now = '2029-01-01 00:00:00+00';
CREATE FUNCTION cl_ok() RETURNS jsonb LANGUAGE sql AS $$ SELECT '1'::jsonb $$;
CREATE FUNCTION cl_boom() RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
CREATE PROCEDURE cl_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('cl_ok');
    IF (args->>'stall')::boolean THEN
        CALL chrono_forge.durably_execute('cl_boom', retry_policy => chrono_forge.retry_policy(1));
    END IF;
    IF (args->>'park')::boolean THEN
        CALL chrono_forge.wait('3650 days', 'forever');
    END IF;
    IF (args->>'fail')::boolean THEN
        PERFORM cl_boom();
    END IF;
END $$;
SELECT chrono_forge.configure('cl_wf', chrono_forge.retry_policy(1));

-- A year ago: runs that complete, fail, stall, park (idle) at once.
SELECT chrono_forge.start('cl_wf', 'old-completed') > 0 AS ok;
SELECT chrono_forge.start('cl_wf', 'old-failed', '{"fail": true}') > 0 AS ok;
SELECT chrono_forge.start('cl_wf', 'old-stalled', '{"stall": true}') > 0 AS ok;
SELECT chrono_forge.start('cl_wf', 'old-idle', '{"park": true}') > 0 AS ok;
SELECT chrono_forge.start('cl_wf', 'old-running', '{"park": true}') AS running_id \gset
CALL chrono_forge.run_pending();
-- Created a year ago, runs (and completes) only yesterday.
SELECT chrono_forge.start('cl_wf', 'late') > 0 AS ok;
SET chrono_forge.fake_now = '2029-12-31 00:00:00+00';
CALL chrono_forge.run_pending();
-- A pass holds this one (a year-old run, running now).
SELECT (chrono_forge.acquire_lock(:running_id, 'someone')).state;
SELECT key, state, created_at, completed_at, ended_at FROM chrono_forge.workflows ORDER BY key;

SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
SELECT count(*) AS logs_before FROM chrono_forge.execution_logs;
SELECT count(*) AS errors_before FROM chrono_forge.error_logs;
SELECT chrono_forge.cleanup();
-- Idle, running and stalled runs stay, whatever their age; 'late' ended
-- yesterday.
SELECT key, state FROM chrono_forge.workflows ORDER BY key;
SELECT count(*) AS orphan_logs FROM chrono_forge.execution_logs l
 WHERE NOT EXISTS (SELECT FROM chrono_forge.workflows w WHERE w.id = l.workflow_id);
-- Nothing more to do: a second run deletes nothing.
SELECT chrono_forge.cleanup();

-- ended_at follows the state: set on failure and on cancel (a stalled
-- run is not terminal), cleared by a retry.
SET chrono_forge.fake_now = '2030-01-02 00:00:00+00';
SELECT chrono_forge.start('cl_wf', 'retried', '{"fail": true}') > 0 AS ok;
CALL chrono_forge.run_pending();
SELECT key, state, ended_at FROM chrono_forge.workflows WHERE key = 'retried';
SELECT chrono_forge.retry('cl_wf', 'retried');
SELECT key, state, ended_at FROM chrono_forge.workflows WHERE key = 'retried';
SELECT chrono_forge.cancel('cl_wf', 'old-stalled', 'test');
SELECT key, state, ended_at FROM chrono_forge.workflows WHERE key = 'old-stalled';

-- Separate thresholds for completed and for failed (and cancelled) runs.
-- Fixture: terminal runs inserted directly, ended N days before 2030-02-01.
SET chrono_forge.fake_now = '2030-02-01 00:00:00+00';
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, created_at, updated_at, completed_at, ended_at)
SELECT 'fx', s || '-' || d, 'public.cl_wf', s::chrono_forge.workflow_state, 'postgres',
       '2029-01-01', timestamptz '2030-02-01' - d * interval '1 day',
       CASE WHEN s = 'completed' THEN timestamptz '2030-02-01' - d * interval '1 day' END,
       timestamptz '2030-02-01' - d * interval '1 day'
  FROM unnest(ARRAY['completed', 'failed', 'cancelled']) s, unnest(ARRAY[5, 20, 40]) d;
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state)
SELECT id, 'durably_execute$a', 'completed' FROM chrono_forge.workflows WHERE workflow = 'fx';
INSERT INTO chrono_forge.error_logs (workflow_id, error_class, error_message)
SELECT id, 'P0001', 'x' FROM chrono_forge.workflows WHERE workflow = 'fx' AND state = 'failed';
SELECT chrono_forge.cleanup(older_than => '1000 days', completed_older_than => '10 days');
SELECT key FROM chrono_forge.workflows WHERE workflow = 'fx' ORDER BY key;
SELECT chrono_forge.cleanup(older_than => '1000 days', failed_older_than => '30 days');
SELECT key FROM chrono_forge.workflows WHERE workflow = 'fx' ORDER BY key;
-- older_than applies to both when no specific threshold is given.
SELECT chrono_forge.cleanup(older_than => '6 days');
SELECT key FROM chrono_forge.workflows WHERE workflow = 'fx' ORDER BY key;
SELECT chrono_forge.cleanup(older_than => '0');
SELECT count(*) AS fx_left FROM chrono_forge.workflows WHERE workflow = 'fx';

-- Batches smaller than the work: 25 runs with 3 logs, 1 error each.
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, updated_at, completed_at, ended_at)
SELECT 'bx', 'b' || i, 'public.cl_wf', 'completed', 'postgres', '2029-01-01', '2029-01-01', '2029-01-01'
  FROM generate_series(1, 25) i;
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state)
SELECT id, 'durably_execute$' || j, 'completed' FROM chrono_forge.workflows, generate_series(1, 3) j
 WHERE workflow = 'bx';
INSERT INTO chrono_forge.error_logs (workflow_id, step_name, error_class)
SELECT id, 'durably_execute$1', 'P0001' FROM chrono_forge.workflows WHERE workflow = 'bx';
SELECT chrono_forge.cleanup(batch_size => 4);
-- The same through the committing procedure.
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, updated_at, completed_at, ended_at)
SELECT 'bx', 'c' || i, 'public.cl_wf', 'failed', 'postgres', '2029-01-01', NULL, '2029-01-01'
  FROM generate_series(1, 7) i;
CALL chrono_forge.cleanup_in_batches(batch_size => 3);
SELECT count(*) AS bx_left FROM chrono_forge.workflows WHERE workflow = 'bx';

-- Children of a deleted run lose their parent reference (and stay).
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, updated_at, completed_at, ended_at)
VALUES ('px', 'parent', 'public.cl_wf', 'completed', 'postgres', '2029-01-01', '2029-01-01', '2029-01-01');
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state)
SELECT id, 'branch$kids', 'completed' FROM chrono_forge.workflows WHERE key = 'parent';
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, parent_execution_log_id)
SELECT 'px', 'parent$kids$' || i, 'public.cl_wf', 'idle', 'postgres',
       (SELECT id FROM chrono_forge.execution_logs WHERE step_name = 'branch$kids')
  FROM generate_series(1, 3) i;
SELECT chrono_forge.cleanup();
SELECT key, state, parent_execution_log_id FROM chrono_forge.workflows WHERE workflow = 'px' ORDER BY key;

-- Repetition logs: pruned only strictly behind the coordination's
-- frontier (last_execution_at) and before the cutoff, by scheduled time;
-- pending ticks, the coordination, other tasks and runs without a
-- frontier stay.  The run itself is in flight.
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner)
VALUES ('rx', 'ticking', 'public.cl_wf', 'idle', 'postgres'),
       ('rx', 'no-frontier', 'public.cl_wf', 'idle', 'postgres');
-- frontier 2030-02-01 00:00 = epoch 1896134400; ticks hourly.
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state, metadata, error_class)
SELECT w.id, v.name, v.state::chrono_forge.step_state, v.metadata::jsonb, v.error_class
  FROM chrono_forge.workflows w,
       (VALUES ('durably_repeat$tick', 'pending', '{"every": "1 hour", "last_execution_at": "2030-02-01T00:00:00Z"}', NULL),
               ('durably_repeat$tick$' || (1896134400 - 4 * 3600), 'failed', '{}', 'CF016'),
               ('durably_repeat$tick$' || (1896134400 - 3 * 3600), 'completed', '{}', NULL),
               ('durably_repeat$tick$' || (1896134400 - 2 * 3600), 'failed', '{}', 'P0001'),
               ('durably_repeat$tick$' || (1896134400 - 1 * 3600), 'completed', '{}', NULL),
               ('durably_repeat$tick$' || 1896134400, 'completed', '{}', NULL),
               ('durably_repeat$tick$' || (1896134400 + 3600), 'pending', '{}', NULL),
               ('durably_repeat$tick2', 'pending', '{"every": "1 hour"}', NULL),
               ('durably_repeat$tick2$' || (1896134400 - 4 * 3600), 'completed', '{}', NULL)) v(name, state, metadata, error_class)
 WHERE w.key = 'ticking';
INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state, metadata)
SELECT id, v.name, v.state::chrono_forge.step_state, v.metadata::jsonb
  FROM chrono_forge.workflows w,
       (VALUES ('durably_repeat$nf', 'pending', '{"every": "1 hour"}'),
               ('durably_repeat$nf$' || (1896134400 - 4 * 3600), 'completed', '{}')) v(name, state, metadata)
 WHERE w.key = 'no-frontier';
-- Cutoff 2030-01-31 21:30: only the ticks of 20:00 and 21:00 go, one per batch.
SELECT chrono_forge.cleanup(prune_repetition_logs_older_than => '150 minutes', batch_size => 1);
-- Cutoff now: everything strictly behind the frontier goes.
SELECT chrono_forge.cleanup(prune_repetition_logs_older_than => '0');
SELECT w.key, l.step_name, l.state FROM chrono_forge.execution_logs l
  JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.workflow = 'rx' ORDER BY l.step_name;
-- Without the option, no repetition log is touched.
UPDATE chrono_forge.execution_logs SET metadata = '{"last_execution_at": "2031-01-01T00:00:00Z"}'
 WHERE step_name = 'durably_repeat$tick';
SELECT chrono_forge.cleanup();
SELECT count(*) AS rx_logs FROM chrono_forge.execution_logs l
  JOIN chrono_forge.workflows w ON w.id = l.workflow_id WHERE w.workflow = 'rx';

-- Bad input is refused before anything is deleted.
SELECT chrono_forge.cleanup(batch_size => 0);
SELECT chrono_forge.cleanup(older_than => NULL);
SELECT chrono_forge.cleanup(older_than => '-1 day');
SELECT chrono_forge.cleanup(prune_repetition_logs_older_than => '-1 day');
CALL chrono_forge.cleanup_in_batches(batch_size => -1);
-- The committing form refuses to run inside a transaction block.
BEGIN;
CALL chrono_forge.cleanup_in_batches();
ROLLBACK;
-- older_than may be NULL when both specific thresholds are given.
SELECT chrono_forge.cleanup(NULL, '1000 days', '1000 days');

-- Leave no runs behind.
RESET ROLE;
DELETE FROM chrono_forge.workflows;
DELETE FROM chrono_forge.workflow_defaults;
