-- start(): validation before any write, idempotency, ownership.
SET chrono_forge.fake_now = '2030-01-01 00:00:00+00';
CREATE PROCEDURE start_wf(args jsonb) LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
CREATE PROCEDURE start_wf_setpath(args jsonb) LANGUAGE plpgsql SET search_path = public
    AS $$ BEGIN NULL; END $$;
CREATE PROCEDURE start_wf_twoargs(a jsonb, b int) LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
CREATE FUNCTION start_fn(args jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;

-- Bad input: each has its SQLSTATE and writes nothing.
\set VERBOSITY sqlstate
SELECT chrono_forge.start('start_wf', NULL);
SELECT chrono_forge.start('start_wf', '');
SELECT chrono_forge.start(NULL, 'k');
SELECT chrono_forge.start('start_wf', 'k', '[1, 2]');
SELECT chrono_forge.start('start_wf', 'k', NULL);
SELECT chrono_forge.start('start_wf', 'k', '{}', '"x"');
SELECT chrono_forge.start('no_such_wf', 'k');
SELECT chrono_forge.start('start_fn', 'k');
SELECT chrono_forge.start('start_wf_twoargs', 'k');
SELECT chrono_forge.start('start_wf_setpath', 'k');
SELECT chrono_forge.start('start_wf', 'k', '{"a": 1', '{}');
\set VERBOSITY default
SELECT chrono_forge.start('no_such_wf', 'k');
SELECT chrono_forge.start('start_wf_setpath', 'k');
SELECT count(*) AS nothing_written FROM chrono_forge.workflows;

-- A run: idle, owned by the caller, one wake-up due now.
SELECT chrono_forge.start('start_wf', 'k1', '{"n": 1}', '{"tier": "low"}') AS id \gset
SELECT workflow, key, procedure, args, options, context, state, owner = current_user::regrole AS owned,
       locked_by, started_at, completed_at, created_at AT TIME ZONE 'UTC' AS created
  FROM chrono_forge.workflows WHERE id = :id;
SELECT due_at AT TIME ZONE 'UTC' AS due, reason FROM chrono_forge.wakeups WHERE workflow_id = :id;

-- Idempotent on (workflow, key): same id, nothing changed.
SELECT chrono_forge.start('start_wf', 'k1', '{"n": 2}') = :id AS same_id;
SELECT args FROM chrono_forge.workflows WHERE id = :id;
SELECT count(*) AS wakeups FROM chrono_forge.wakeups WHERE workflow_id = :id;

-- Since 0.5.0 a run is (owner, procedure, key): every spelling of the
-- procedure names the same run, stored under one canonical name.
SELECT chrono_forge.start('public.start_wf', 'k1') = :id AS same_run,
       chrono_forge.start('"public".START_WF', 'k1') = :id AS same_run_quoted;
-- Keys beginning with '$' are reserved for children (CF012).
SELECT chrono_forge.start('start_wf', '$1$k1$b$c');
SELECT workflow, procedure FROM chrono_forge.workflows ORDER BY id;

-- The pass stamps started_at and completes the (empty) body.
CALL chrono_forge.run_pending();
SELECT key, state, started_at AT TIME ZONE 'UTC' AS started, completed_at AT TIME ZONE 'UTC' AS completed
  FROM chrono_forge.workflows ORDER BY id;
SELECT w.key, l.step_name, l.state FROM chrono_forge.execution_logs l
  JOIN chrono_forge.workflows w ON w.id = l.workflow_id ORDER BY w.id, l.id;
SELECT count(*) AS wakeups_left FROM chrono_forge.wakeups;
DELETE FROM chrono_forge.workflows;
