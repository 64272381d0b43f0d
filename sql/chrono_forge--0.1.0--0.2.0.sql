/* chrono_forge 0.1.0 -> 0.2.0: periodic work (durably_repeat, pg_cron
 * schedules), operations (retention, views, actions, the admin role) and
 * fan-out (branches, spawns, merges).
 * A fresh CREATE EXTENSION runs the 0.1.0 script and then this one. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.2.0'" to load this file. \quit

-- =====================================================================
-- Periodic work
-- =====================================================================

-- durably_repeat: a step run once per tick.  A C procedure that commits,
-- so no SET clause (see the 0.1.0 script); it pins its own search path.
CREATE PROCEDURE chrono_forge.durably_repeat(step text, every interval, till text,
    start_at timestamptz DEFAULT NULL, retry_policy jsonb DEFAULT NULL,
    timeout interval DEFAULT '1 hour', on_error text DEFAULT 'continue',
    name text DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_durably_repeat';

-- The replay cache reads a run's step logs but never its repeat ticks:
-- without this index that read would walk every tick the run ever had.
-- The predicate names step_name only (fixed per row), so updates of a log
-- stay HOT; it must match the executor's query word for word.
CREATE INDEX execution_logs_replay_idx ON chrono_forge.execution_logs (workflow_id)
    WHERE step_name NOT LIKE 'durably\_repeat$%$%';

-- Cron expressions (UTC minutes, as pg_cron 1.4 fires them).
CREATE FUNCTION chrono_forge.cron_next(cron text, after timestamptz) RETURNS timestamptz
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cf_cron_next_sql';
CREATE FUNCTION chrono_forge.cron_prev(cron text, at timestamptz) RETURNS timestamptz
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cf_cron_prev_sql';

-- Schedules: pg_cron jobs that start one run per tick.  last_tick is the
-- newest tick handled (started or skipped by the catch-up policy).
CREATE TABLE chrono_forge.schedules (
    name          text PRIMARY KEY,
    cron          text NOT NULL,
    workflow      text NOT NULL,
    args          jsonb NOT NULL DEFAULT '{}',
    catch_up      text NOT NULL,
    owner         regrole NOT NULL,   -- the jobs and the runs are this role's
    jobid         bigint,             -- cron.job: the ticks
    reboot_jobid  bigint,             -- cron.job: catch-up at pg_cron's start
    last_tick     timestamptz NOT NULL,
    last_fired_at timestamptz,
    runs_started  bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT schedules_name_check CHECK (name <> ''),
    CONSTRAINT schedules_catch_up_check CHECK (catch_up IN ('none', 'latest', 'all'))
);
ALTER TABLE chrono_forge.schedules ENABLE ROW LEVEL SECURITY;
CREATE POLICY schedules_owner ON chrono_forge.schedules FOR SELECT
    USING (pg_catalog.pg_has_role(current_user, owner, 'MEMBER'));
GRANT SELECT ON chrono_forge.schedules TO PUBLIC;

CREATE FUNCTION chrono_forge.schedule(name text, cron text, workflow text,
    args jsonb DEFAULT '{}', catch_up text DEFAULT 'latest') RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_schedule';
CREATE FUNCTION chrono_forge.unschedule(name text) RETURNS void
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_unschedule';
-- What the pg_cron jobs call; only the schedule's owner may.
CREATE FUNCTION chrono_forge.schedule_fire(name text, reboot boolean DEFAULT false)
    RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_schedule_fire';

-- Schedules with their last and next tick and the last tick's run.
CREATE VIEW chrono_forge.schedule_status WITH (security_invoker = true) AS
SELECT s.name, s.cron, s.workflow, s.args, s.catch_up, s.owner, s.last_tick,
       chrono_forge.cron_next(s.cron, GREATEST(s.last_tick, chrono_forge.now())) AS next_tick,
       s.last_fired_at, s.runs_started, r.id AS last_run_id, r.state AS last_run_state,
       s.jobid, s.reboot_jobid
  FROM chrono_forge.schedules s
  LEFT JOIN chrono_forge.workflows r
    ON r.workflow = s.workflow
   AND r.key = s.name || '@' || pg_catalog.to_char(s.last_tick AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"');
GRANT SELECT ON chrono_forge.schedule_status TO PUBLIC;

-- (end of periodic work)

-- =====================================================================
-- Operations
-- =====================================================================

-- (end of operations)

-- =====================================================================
-- Fan-out
-- =====================================================================

-- Branches: a durable step branch$<name> of the parent (pending while it
-- dispatches, completed once sealed); children are runs whose
-- parent_execution_log_id is that log's id.  C procedures that commit: no
-- SET clause (see the 0.1.0 script); they pin their own search path.
CREATE PROCEDURE chrono_forge.branch(name text, automerge boolean DEFAULT false)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_branch';
CREATE PROCEDURE chrono_forge.spawn(name text, workflow text, args jsonb DEFAULT '{}')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_spawn';
CREATE PROCEDURE chrono_forge.spawn_each(name text, workflow text, source text,
    batch_size integer DEFAULT 1000)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_spawn_each';
CREATE PROCEDURE chrono_forge.seal_branch()
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_seal_branch';
CREATE PROCEDURE chrono_forge.merge_branches(names text[],
    min_interval interval DEFAULT '5 seconds', max_interval interval DEFAULT '5 minutes')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_merge_branches';

-- Probes (the caller must own the branch's run).  Index-only on
-- workflows_parent_state_idx: they count the children that are not
-- completed, never the completed ones.
CREATE FUNCTION chrono_forge.branch_sealed(branch_log_id bigint) RETURNS boolean
    LANGUAGE c STABLE STRICT
    AS 'MODULE_PATHNAME', 'cf_branch_sealed';
CREATE FUNCTION chrono_forge.branch_pending(branch_log_id bigint, cap integer DEFAULT 5000)
    RETURNS bigint
    LANGUAGE c STABLE STRICT
    AS 'MODULE_PATHNAME', 'cf_branch_pending';
CREATE FUNCTION chrono_forge.branch_done(branch_log_id bigint) RETURNS boolean
    LANGUAGE c STABLE STRICT
    AS 'MODULE_PATHNAME', 'cf_branch_done';

-- Merge polls: one row per parked merge (the poller's next visit).  The
-- launcher runs due polls itself, so they never queue behind passes;
-- run_pending() runs the caller's.  token fences a superseded chain: it
-- must equal the poll_token stamped on every branch log it watches.
CREATE TABLE chrono_forge.merge_polls (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id    bigint NOT NULL REFERENCES chrono_forge.workflows ON DELETE CASCADE,
    merge_step     text NOT NULL,
    branch_log_ids bigint[] NOT NULL,
    min_interval   interval NOT NULL,
    max_interval   interval NOT NULL,
    token          text NOT NULL,
    due_at         timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT merge_polls_workflow_step_key UNIQUE (workflow_id, merge_step)
);
CREATE INDEX merge_polls_due_at_idx ON chrono_forge.merge_polls (due_at);
ALTER TABLE chrono_forge.merge_polls ENABLE ROW LEVEL SECURITY;
CREATE POLICY merge_polls_owner ON chrono_forge.merge_polls FOR SELECT
    USING (workflow_id IN (SELECT id FROM chrono_forge.workflows));
GRANT SELECT ON chrono_forge.merge_polls TO PUBLIC;

-- (end of fan-out)
