/* chrono_forge — the current schema, in one place.
 *
 * The Makefile copies this file to chrono_forge--<default_version>.sql,
 * which a fresh CREATE EXTENSION runs.  Databases installed at an earlier
 * version get here by the upgrade chain (chrono_forge--0.1.0.sql, then
 * each chrono_forge--A--B.sql), which stays as released.  Both must leave
 * the same catalog: test/integration/t_catalog_match.sh compares a fresh
 * install with one updated from 0.1.0 and fails with the difference.  So
 * a change to the current upgrade script is made here too, and each
 * function's body is copied from its latest definition character for
 * character.
 *
 * Order: types; the admin role; tables, each with its indexes,
 * constraints, row-level security policies and grants; what pg_dump
 * keeps; then functions by concern (clock, retry policies, control, the
 * lock, inside a workflow, args and context, periodic work, fan-out,
 * operations), views beside the functions they read.
 */

\echo Use "CREATE EXTENSION chrono_forge" to load this file. \quit

-- =====================================================================
-- Types
-- =====================================================================

CREATE TYPE chrono_forge.workflow_state AS ENUM
    ('idle', 'running', 'completed', 'failed', 'stalled', 'cancelled', 'compensated');

CREATE TYPE chrono_forge.step_state AS ENUM ('pending', 'completed', 'failed');

-- A row of runs().
CREATE TYPE chrono_forge.run_row AS (
    id bigint, workflow text, key text, state chrono_forge.workflow_state,
    owner regrole, created_at timestamptz, started_at timestamptz,
    ended_at timestamptz, duration interval, locked_by text,
    stranded boolean, parent_execution_log_id bigint);

-- A row of periodic_health(): one durably_repeat task.
CREATE TYPE chrono_forge.periodic_row AS (
    id bigint, workflow text, key text, task text, state text,
    every text, last_tick_at timestamptz, next_tick_at timestamptz,
    late_by interval, missed_ticks bigint, failed_ticks bigint,
    avg_lateness interval);

-- =====================================================================
-- The admin role.  Roles are cluster-wide: create it only if no other
-- database's chrono_forge did.  DBAs GRANT it to on-call roles; its
-- members see and act on every role's runs.
-- =====================================================================

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'chrono_forge_admin') THEN
        CREATE ROLE chrono_forge_admin NOLOGIN;
    END IF;
END
$$;

-- =====================================================================
-- Tables.  Who may read what: each role sees its own rows (the owner
-- policies), chrono_forge_admin members and superusers see all (the
-- admin policies).  Nobody but the extension owner writes; the API does
-- it on the callers' behalf.
-- =====================================================================

GRANT USAGE ON SCHEMA chrono_forge TO PUBLIC;

-- ---------------------------------------------------------------------
-- workflows: the runs.  Identity is (owner, canonical procedure, key).
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.workflows (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow                text NOT NULL,      -- the procedure, canonical (canonical_workflow())
    key                     text NOT NULL,
    procedure               text NOT NULL,      -- schema-qualified, resolved by start()
    args                    jsonb NOT NULL DEFAULT '{}',
    options                 jsonb NOT NULL DEFAULT '{}',
    context                 jsonb NOT NULL DEFAULT '{}',
    state                   chrono_forge.workflow_state NOT NULL DEFAULT 'idle',
    owner                   regrole NOT NULL,   -- passes run as this role
    locked_by               text,
    locked_at               timestamptz,
    started_at              timestamptz,
    completed_at            timestamptz,
    parent_execution_log_id bigint,
    attempt                 integer NOT NULL DEFAULT 0,   -- workflow-level failures in a row
    retry_counts            jsonb NOT NULL DEFAULT '{}',  -- composite budgets, workflow level
    recoveries              integer NOT NULL DEFAULT 0,   -- passes lost with their worker
    created_at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- When the run became terminal.  completed_at is the contract's
    -- (completed runs only); ended_at is set on every move into completed,
    -- failed or cancelled (from the engine clock, as updated_at) and
    -- cleared when a run leaves them (retry).
    ended_at                timestamptz,
    -- The state as a small integer (1..6, in the enum's order).  The views
    -- filter and index on it rather than on the enum: under row-level
    -- security a non-leakproof comparison (enum equality is not marked
    -- leakproof) cannot be an index condition ahead of the policy, so
    -- every view would scan all of a caller's runs; smallint equality is
    -- leakproof.
    state_code              smallint NOT NULL,
    -- The definition hash of the procedure the run started with (0.10.0;
    -- the runs' trigger stamps it, definitions.c): changed_definitions()
    -- compares it with the procedure's now.  NULL for earlier runs.
    definition_hash         bigint,
    -- The run's deadline (0.11.0; NULL: none): past it the run fails with
    -- CF029 whatever it was doing (deadlines.c).
    deadline                timestamptz,
    -- The run's concurrency key (0.11.0; start() option "concurrency_key")
    -- and the gate that admitted it, or holds it waiting (NULL: none).
    concurrency_key         text,
    gate_id                 bigint,
    -- The run's priority (0.13.0; start() option "priority"; NULL: none,
    -- the lowest): claims take due runs of a higher priority first.
    priority                integer,
    -- (workflow, key, owner): lookups by (workflow, key) use its prefix.
    CONSTRAINT workflows_workflow_key_owner_key UNIQUE (workflow, key, owner),
    -- (args, options and context are JSON objects: start() and
    -- context_replace() check it; a CHECK here would be re-planned on every
    -- update of a run, several per pass.)
    CONSTRAINT workflows_key_check CHECK (key <> ''),
    CONSTRAINT workflows_lock_check CHECK ((locked_by IS NULL) = (locked_at IS NULL))
);

-- state_code and ended_at, kept by one C trigger with no WHEN clause: a
-- stored generated column's expression and a trigger's WHEN clause are
-- both rebuilt from their catalog text for every statement that writes a
-- run, several per pass.  A trigger rather than the engine's statements,
-- so every path that ends a run (passes, cancel, retry) sets them.  It
-- also notes in outcome_days_changed a change to a run that ended in a
-- summarised day (see outcome_days_refresh()).
CREATE FUNCTION chrono_forge.workflows_state_columns() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_workflows_state_columns';
REVOKE ALL ON FUNCTION chrono_forge.workflows_state_columns() FROM PUBLIC;
CREATE TRIGGER workflows_state_columns
    BEFORE INSERT OR UPDATE OF state, state_code ON chrono_forge.workflows
    FOR EACH ROW EXECUTE FUNCTION chrono_forge.workflows_state_columns();

-- Every state change of a run is an update that PostgreSQL cannot make
-- HOT (the state is indexed), so it inserts into every index of the
-- table: each index here is paid twice per trivial run.  Each view reads
-- a bounded range of one of them; none counts or skips without a bound.
-- Stranded runs (the reaper).
CREATE INDEX workflows_running_locked_at_idx
    ON chrono_forge.workflows (locked_at) WHERE state = 'running';
-- Retention and analytics: terminal runs by when they ended.  Partial: a
-- run in flight has no entry, so a pass's own updates never touch it.
CREATE INDEX workflows_state_ended_at_idx ON chrono_forge.workflows (state_code, ended_at)
    INCLUDE (owner) WHERE ended_at IS NOT NULL;
-- Run list by state, newest first (keyset on id); capped counts per state
-- index-only (children hidden, owner for row-level security).
CREATE INDEX workflows_state_id_idx ON chrono_forge.workflows (state_code, id)
    INCLUDE (parent_execution_log_id, owner);
-- Overview (capped counts per workflow and state, index-only) and the run
-- list filtered by workflow.
CREATE INDEX workflows_workflow_state_id_idx ON chrono_forge.workflows (workflow, state_code, id)
    INCLUDE (owner);
-- Run list by key prefix, newest first: the runs in blocks of 16,384 ids
-- (run_bucket()), each block's keys in order.  runs() walks the blocks
-- from the newest and reads in each only the runs whose key has the
-- prefix: a prefix matching 100,000 old runs costs what a block of them
-- does, not a walk past every newer run.  (run_bucket() is LEAKPROOF, so
-- its condition stays an index condition under row-level security.)  No
-- INCLUDE columns: with the filters' columns it served the list
-- index-only, for 5 % more WAL per run in every workload.
CREATE FUNCTION chrono_forge.run_bucket(id bigint) RETURNS bigint
    LANGUAGE c IMMUTABLE STRICT LEAKPROOF PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cf_run_bucket';
CREATE INDEX workflows_key_bucket_idx
    ON chrono_forge.workflows (chrono_forge.run_bucket(id), key text_pattern_ops);
-- Run list by creation time: runs are inserted in time order, so a BRIN
-- index is small and costs inserts next to nothing.
CREATE INDEX workflows_created_at_brin ON chrono_forge.workflows USING brin (created_at);
-- A branch's children by state, in id order (top-level runs stay out);
-- the branch probes count from it.
-- Runs in flight with a deadline, by deadline: what the launcher (and
-- run_pending() for its caller) ends.  Runs without one are not in it.
CREATE INDEX workflows_deadline_idx ON chrono_forge.workflows (deadline)
    WHERE deadline IS NOT NULL AND ended_at IS NULL;
CREATE INDEX workflows_children_idx ON chrono_forge.workflows (parent_execution_log_id, state_code, id)
    WHERE parent_execution_log_id IS NOT NULL;

-- The roles the caller is a member of are computed once per query and
-- each row compared with that short list (not pg_has_role() per row).
ALTER TABLE chrono_forge.workflows ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflows_owner ON chrono_forge.workflows FOR SELECT
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));
CREATE POLICY workflows_admin ON chrono_forge.workflows FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.workflows TO PUBLIC;

-- ---------------------------------------------------------------------
-- execution_logs: a run's durable steps, by name.
-- ---------------------------------------------------------------------

-- The foreign key is deferrable: a child taken from spawn_batches writes
-- its step logs before its run's row, which is written when the pass
-- first commits or ends (once, when the child completes in that pass):
-- the engine defers this check to the commit for that transaction (SET
-- CONSTRAINTS); everyone else's stays immediate.
CREATE TABLE chrono_forge.execution_logs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id      bigint NOT NULL REFERENCES chrono_forge.workflows ON DELETE CASCADE
                     DEFERRABLE INITIALLY IMMEDIATE,
    step_name        text NOT NULL,
    state            chrono_forge.step_state NOT NULL DEFAULT 'pending',
    attempts         integer NOT NULL DEFAULT 0,
    started_at       timestamptz,
    last_executed_at timestamptz,
    completed_at     timestamptz,
    metadata         jsonb,
    result           jsonb,
    error_class      text,
    error_message    text,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT execution_logs_workflow_step_key UNIQUE (workflow_id, step_name),
    CONSTRAINT execution_logs_attempts_check CHECK (attempts >= 0)
);
-- The replay cache reads a run's step logs but never its repeat ticks:
-- without this index that read would walk every tick the run ever had.
-- The predicate names step_name only (fixed per row), so updates of a log
-- stay HOT; it must match the executor's query word for word.
CREATE INDEX execution_logs_replay_idx ON chrono_forge.execution_logs (workflow_id)
    WHERE step_name NOT LIKE 'durably\_repeat$%$%';
-- Runs parked on a condition or an event, oldest first.
CREATE INDEX execution_logs_pending_waits_idx ON chrono_forge.execution_logs (started_at, id)
    WHERE state = 'pending' AND (step_name LIKE 'wait\_until$%' OR step_name LIKE 'continue\_if$%'
                                 OR step_name LIKE 'await\_event$%');
-- durably_repeat coordination logs (not their ticks).
CREATE INDEX execution_logs_repeat_coordination_idx ON chrono_forge.execution_logs (workflow_id, id)
    WHERE step_name LIKE 'durably\_repeat$%' AND step_name NOT LIKE 'durably\_repeat$%$%';

-- The logs' owner policies (here and below) probe the run with a
-- correlated EXISTS: one index probe per log row, which is what the
-- per-run views read.
ALTER TABLE chrono_forge.execution_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY execution_logs_owner ON chrono_forge.execution_logs FOR SELECT
    USING (EXISTS (SELECT 1 FROM chrono_forge.workflows w WHERE w.id = workflow_id));
CREATE POLICY execution_logs_admin ON chrono_forge.execution_logs FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.execution_logs TO PUBLIC;

-- ---------------------------------------------------------------------
-- error_logs: every error a step or a run raised.
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.error_logs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id   bigint NOT NULL REFERENCES chrono_forge.workflows ON DELETE CASCADE,
    step_name     text,                 -- NULL for workflow-level errors
    attempt       integer,
    error_class   text NOT NULL,        -- SQLSTATE
    error_message text,
    error_detail  text,
    context       jsonb,                -- snapshot of the run's context
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    error_hint    text,
    error_context text                  -- where it was raised (PostgreSQL's error context)
);
CREATE INDEX error_logs_workflow_id_idx ON chrono_forge.error_logs (workflow_id);
-- Top errors over a window.
CREATE INDEX error_logs_created_at_idx ON chrono_forge.error_logs (created_at);
ALTER TABLE chrono_forge.error_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY error_logs_owner ON chrono_forge.error_logs FOR SELECT
    USING (EXISTS (SELECT 1 FROM chrono_forge.workflows w WHERE w.id = workflow_id));
CREATE POLICY error_logs_admin ON chrono_forge.error_logs FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.error_logs TO PUBLIC;

-- ---------------------------------------------------------------------
-- wakeups: a pending pass for a run, due at due_at.  Several rows for one
-- run coalesce into one pass (a claim deletes every due row of the run).
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.wakeups (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id bigint NOT NULL REFERENCES chrono_forge.workflows ON DELETE CASCADE,
    due_at      timestamptz NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- Its run's priority (0.13.0; NULL: none), copied when it is written.
    priority    integer
);
CREATE INDEX wakeups_due_at_idx ON chrono_forge.wakeups (due_at);
-- Prioritized wake-ups only, by priority then due time: a claim finds the
-- priorities present one index descent each (claim.c).  The due time is
-- indexed as UTC wall time, an expression no other index has: the claim
-- orders by it, so that no plan can walk the due index instead.
CREATE INDEX wakeups_priority_idx
    ON chrono_forge.wakeups (priority DESC, pg_catalog.timezone('UTC', due_at))
    WHERE priority IS NOT NULL;
-- (workflow_id, due_at): a claim deletes the run's due rows by one range scan.
CREATE INDEX wakeups_workflow_id_due_at_idx ON chrono_forge.wakeups (workflow_id, due_at);
ALTER TABLE chrono_forge.wakeups ENABLE ROW LEVEL SECURITY;
CREATE POLICY wakeups_owner ON chrono_forge.wakeups FOR SELECT
    USING (EXISTS (SELECT 1 FROM chrono_forge.workflows w WHERE w.id = workflow_id));
CREATE POLICY wakeups_admin ON chrono_forge.wakeups FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.wakeups TO PUBLIC;

-- ---------------------------------------------------------------------
-- events: durable events, kept until an await_event step consumes them.
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id      bigint NOT NULL REFERENCES chrono_forge.workflows ON DELETE CASCADE,
    name             text NOT NULL,
    payload          jsonb,
    sent_at          timestamptz NOT NULL,
    consumed_at      timestamptz,
    consumed_by_step text
);
CREATE INDEX events_unconsumed_idx ON chrono_forge.events (workflow_id, name, id)
    WHERE consumed_at IS NULL;
-- Deleting a run's events (the index above covers unconsumed ones only).
CREATE INDEX events_workflow_id_idx ON chrono_forge.events (workflow_id);
ALTER TABLE chrono_forge.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY events_owner ON chrono_forge.events FOR SELECT
    USING (EXISTS (SELECT 1 FROM chrono_forge.workflows w WHERE w.id = workflow_id));
CREATE POLICY events_admin ON chrono_forge.events FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.events TO PUBLIC;

-- ---------------------------------------------------------------------
-- workflow_defaults: per-procedure defaults (the gem's class-level
-- retry_policy DSL), under the procedure's canonical name.
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.workflow_defaults (
    workflow     text PRIMARY KEY,
    retry_policy jsonb NOT NULL,
    owner        regrole NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);
ALTER TABLE chrono_forge.workflow_defaults ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflow_defaults_owner ON chrono_forge.workflow_defaults FOR SELECT
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));
CREATE POLICY workflow_defaults_admin ON chrono_forge.workflow_defaults FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.workflow_defaults TO PUBLIC;

-- ---------------------------------------------------------------------
-- schedules: pg_cron jobs that start one run per tick.  last_tick is the
-- newest tick handled (started or skipped by the catch-up policy).  A
-- name is unique per owner; the pg_cron jobs are named by the schedule's
-- id (pg_cron truncates job names to 63 bytes).
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.schedules (
    name          text NOT NULL,
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
    id            bigint GENERATED ALWAYS AS IDENTITY,
    CONSTRAINT schedules_pkey PRIMARY KEY (id),
    CONSTRAINT schedules_owner_name_key UNIQUE (owner, name),
    CONSTRAINT schedules_name_check CHECK (name <> ''),
    CONSTRAINT schedules_catch_up_check CHECK (catch_up IN ('none', 'latest', 'all'))
);
ALTER TABLE chrono_forge.schedules ENABLE ROW LEVEL SECURITY;
CREATE POLICY schedules_owner ON chrono_forge.schedules FOR SELECT
    USING (pg_catalog.pg_has_role(current_user, owner, 'MEMBER'));
CREATE POLICY schedules_admin ON chrono_forge.schedules FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.schedules TO PUBLIC;

-- ---------------------------------------------------------------------
-- merge_polls: one row per parked merge (the poller's next visit).  The
-- launcher runs due polls itself, so they never queue behind passes;
-- run_pending() runs the caller's.  token fences a superseded chain: it
-- must equal the poll_token stamped on every branch log it watches.
-- ---------------------------------------------------------------------

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

-- ---------------------------------------------------------------------
-- spawn_batches: children dispatched by spawn_each that no worker has
-- started yet, up to 32 per row in dispatch order.  A run is an indexed
-- row of workflows (seven B-tree entries) plus a wake-up (three more and
-- a foreign-key check): written per child at dispatch, that capped
-- dispatch at about 20,000 children/s.  Here a dispatch batch costs a few
-- rows; a worker takes the next child of the oldest batch (taken counts
-- them, FOR UPDATE SKIP LOCKED) and inserts its run, already claimed, in
-- the transaction of its first pass: a crash loses or repeats no child.
-- The branch probes count what is left here (n - taken) beside the
-- children's runs.  No foreign key to the branch log: a worker updates
-- one row several times per transaction, and each update after the first
-- would re-check it (5% of a child's pass).  Like the children's runs,
-- which outlive a deleted parent, children not started yet still run if
-- it goes.
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.spawn_batches (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    branch_log_id bigint NOT NULL,
    owner         regrole NOT NULL,     -- the parent's owner: the children run as it
    due_at        timestamptz NOT NULL, -- when dispatched (the children's created_at)
    n             integer NOT NULL,     -- children in this row
    taken         integer NOT NULL DEFAULT 0,   -- the first `taken` have become runs
    workflows     text[] NOT NULL,
    keys          text[] NOT NULL,      -- the children's run keys ("$<parent run id>$<key>")
    procedures    text[] NOT NULL,
    args          jsonb[] NOT NULL
);
CREATE INDEX spawn_batches_branch_log_id_idx ON chrono_forge.spawn_batches (branch_log_id);
ALTER TABLE chrono_forge.spawn_batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY spawn_batches_owner ON chrono_forge.spawn_batches FOR SELECT
    USING (pg_catalog.pg_has_role(current_user, owner, 'MEMBER'));
CREATE POLICY spawn_batches_admin ON chrono_forge.spawn_batches FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.spawn_batches TO PUBLIC;

-- ---------------------------------------------------------------------
-- cancel_requests: cancel() of a run whose row a pass holds does not wait
-- for the pass: it records the cancel here (durably, with the caller's
-- transaction) and the worker running that pass is told to stop it.  The
-- pass, or the launcher once no pass holds the run, makes the run
-- cancelled and deletes the row.  Internal: written and read by the
-- engine only.  requested_by is a role (dumped by name, like every owner
-- column), not a bare oid that would name nobody, or somebody else, in
-- the cluster a dump is restored into.
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.cancel_requests (
    workflow_id   bigint PRIMARY KEY
                  REFERENCES chrono_forge.workflows (id) ON DELETE CASCADE,
    reason        text,
    requested_by  regrole NOT NULL,
    cancelled_run bigint NOT NULL,
    requested_at  timestamptz NOT NULL,
    -- 'deadline' (0.11.0): the run passed its deadline and fails (CF029)
    -- rather than being cancelled.
    kind          text NOT NULL DEFAULT 'cancel'
                  CONSTRAINT cancel_requests_kind_check CHECK (kind IN ('cancel', 'deadline'))
);
ALTER TABLE chrono_forge.cancel_requests ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON chrono_forge.cancel_requests FROM PUBLIC;

-- ---------------------------------------------------------------------
-- concurrency_gates (0.11.0): how many of an owner's runs of one
-- concurrency key (start() option "concurrency_key") or of one workflow
-- may be in flight at once (admitted and not ended).  A key's gate is
-- made by the first start() that names the key (max_running NULL: no
-- limit, counted all the same, so that a limit set later knows how many
-- are in flight); a workflow's by set_concurrency_limit().  A run's gate
-- is its key's, else its workflow's, else none (workflows.gate_id).
-- running is kept by start() and retry() (admission) and by the runs'
-- trigger (a run that ends gives its place to the oldest waiting run).
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.concurrency_gates (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner           regrole NOT NULL,
    workflow        text,
    concurrency_key text,
    max_running     integer,
    running         integer NOT NULL,
    updated_at      timestamptz NOT NULL,
    max_starts      integer,        -- at most this many admissions ...
    per             interval,       -- ... in any window this long (NULL: no rate limit)
    CONSTRAINT concurrency_gates_scope_check CHECK ((workflow IS NULL) <> (concurrency_key IS NULL)),
    CONSTRAINT concurrency_gates_max_running_check CHECK (max_running >= 1),
    CONSTRAINT concurrency_gates_rate_check
        CHECK ((max_starts IS NULL) = (per IS NULL) AND max_starts >= 1 AND per > '0'),
    CONSTRAINT concurrency_gates_running_check CHECK (running >= 0),
    CONSTRAINT concurrency_gates_owner_workflow_key_key
        UNIQUE NULLS NOT DISTINCT (owner, workflow, concurrency_key)
);
ALTER TABLE chrono_forge.concurrency_gates ENABLE ROW LEVEL SECURITY;
CREATE POLICY concurrency_gates_owner ON chrono_forge.concurrency_gates FOR SELECT
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));
CREATE POLICY concurrency_gates_admin ON chrono_forge.concurrency_gates FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.concurrency_gates TO PUBLIC;

-- concurrency_waiting (0.11.0): the runs started over their gate's limit,
-- in the order they were started (seq).  Such a run is idle with no
-- wake-up and no started_at; it is admitted (its row deleted, a wake-up
-- written) when a run of its gate ends or the limit is raised.
CREATE TABLE chrono_forge.concurrency_waiting (
    workflow_id bigint PRIMARY KEY REFERENCES chrono_forge.workflows ON DELETE CASCADE,
    gate_id     bigint NOT NULL REFERENCES chrono_forge.concurrency_gates ON DELETE CASCADE,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    queued_at   timestamptz NOT NULL
);
CREATE INDEX concurrency_waiting_gate_seq_idx ON chrono_forge.concurrency_waiting (gate_id, seq);
ALTER TABLE chrono_forge.concurrency_waiting ENABLE ROW LEVEL SECURITY;
CREATE POLICY concurrency_waiting_owner ON chrono_forge.concurrency_waiting FOR SELECT
    USING (EXISTS (SELECT 1 FROM chrono_forge.workflows w WHERE w.id = workflow_id));
CREATE POLICY concurrency_waiting_admin ON chrono_forge.concurrency_waiting FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.concurrency_waiting TO PUBLIC;

-- concurrency_releases (0.11.0): places given back by runs that ended,
-- written by the runs' trigger (no lock taken in the ending run's
-- transaction) and taken by the launcher (or run_pending()), which admits
-- the waiting runs into them.  Until then a gate counts the place as
-- taken: a limit is never exceeded, only filled a moment later.
CREATE TABLE chrono_forge.concurrency_releases (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gate_id     bigint NOT NULL REFERENCES chrono_forge.concurrency_gates ON DELETE CASCADE
);
ALTER TABLE chrono_forge.concurrency_releases ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON chrono_forge.concurrency_releases FROM PUBLIC;

-- concurrency_admissions (0.11.0): when the runs of a gate with a rate
-- limit were admitted, over its last window (older rows are pruned by
-- the next admission).  Internal.
CREATE TABLE chrono_forge.concurrency_admissions (
    gate_id     bigint NOT NULL REFERENCES chrono_forge.concurrency_gates ON DELETE CASCADE,
    admitted_at timestamptz NOT NULL
);
CREATE INDEX concurrency_admissions_gate_at_idx
    ON chrono_forge.concurrency_admissions (gate_id, admitted_at);
ALTER TABLE chrono_forge.concurrency_admissions ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON chrono_forge.concurrency_admissions FROM PUBLIC;

-- ---------------------------------------------------------------------
-- workflow_owners: the (owner, workflow) pairs that have runs, for every
-- run up to an id horizon (see workflow_owners_refresh()): overview()
-- reads the caller's pairs (an index range per role) and the workflows of
-- its runs past the horizon.  A pair stays when its runs are cleaned up.
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.workflow_owners (
    owner    regrole NOT NULL,
    workflow text NOT NULL,
    CONSTRAINT workflow_owners_pkey PRIMARY KEY (owner, workflow)
);
-- last_id: every run with an id up to it has its pair above.  candidate
-- (an id handed out by candidate_at) becomes last_id once every
-- transaction older than candidate_at has ended.
CREATE TABLE chrono_forge.workflow_owners_horizon (
    last_id      bigint NOT NULL,
    candidate    bigint,
    candidate_at timestamptz
);
INSERT INTO chrono_forge.workflow_owners_horizon (last_id) VALUES (0);
ALTER TABLE chrono_forge.workflow_owners ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflow_owners_owner ON chrono_forge.workflow_owners FOR SELECT
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));
CREATE POLICY workflow_owners_admin ON chrono_forge.workflow_owners FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.workflow_owners, chrono_forge.workflow_owners_horizon TO PUBLIC;

-- ---------------------------------------------------------------------
-- outcome_days: a summary of closed days for daily_outcomes().  A day
-- that has closed keeps its counts per workflow and owner here;
-- daily_outcomes() adds those up and counts only the window's partial
-- days and the days not (or no longer) summarised.  Nothing is added to
-- a pass: runs end today; a run whose end lies in a closed day changes
-- only by a retry, a cancel after it failed or cleanup, which note the
-- day (and the run's owner) in outcome_days_changed; a noted day is
-- counted again until it is summarised anew.
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.outcome_days (
    day       date NOT NULL,          -- UTC
    workflow  text NOT NULL,
    owner     regrole NOT NULL,
    completed bigint NOT NULL,
    failed    bigint NOT NULL,
    cancelled bigint NOT NULL,
    CONSTRAINT outcome_days_pkey PRIMARY KEY (day, workflow, owner)
);
-- The days summarised (a day without ended runs has no outcome_days row).
CREATE TABLE chrono_forge.outcome_days_summarised (
    day date CONSTRAINT outcome_days_summarised_pkey PRIMARY KEY
);
-- Days whose ended runs of an owner changed after they closed.
CREATE TABLE chrono_forge.outcome_days_changed (
    day   date NOT NULL,
    owner regrole NOT NULL
);
CREATE INDEX outcome_days_changed_day_idx ON chrono_forge.outcome_days_changed (day);

-- Each role sees the counts and changes of the runs it sees, so a change
-- to another role's runs does not make it count a day again.
ALTER TABLE chrono_forge.outcome_days ENABLE ROW LEVEL SECURITY;
ALTER TABLE chrono_forge.outcome_days_changed ENABLE ROW LEVEL SECURITY;
CREATE POLICY outcome_days_owner ON chrono_forge.outcome_days FOR SELECT
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));
CREATE POLICY outcome_days_admin ON chrono_forge.outcome_days FOR SELECT
    TO chrono_forge_admin USING (true);
CREATE POLICY outcome_days_changed_owner ON chrono_forge.outcome_days_changed FOR SELECT
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));
CREATE POLICY outcome_days_changed_admin ON chrono_forge.outcome_days_changed FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.outcome_days, chrono_forge.outcome_days_summarised,
    chrono_forge.outcome_days_changed TO PUBLIC;

-- ---------------------------------------------------------------------
-- What pg_dump keeps.  It leaves an extension's tables out of a dump
-- unless they are marked as configuration tables.  Marked: every table
-- whose rows are the users' data or state the engine cannot rebuild
-- (runs, step logs, errors, wake-ups, events, defaults, schedules, parked
-- merges, children not started yet, cancel requests, the per-day outcome
-- summaries, which outlive the runs cleanup deletes), and their identity
-- sequences, so ids go on after a restore.  Not marked: workflow_owners
-- and workflow_owners_horizon, a cache of the (workflow, owner) pairs
-- that overview() rebuilds from the runs (a fresh install's horizon, 0,
-- makes the first call read every run once).  pg_dump orders the marked
-- tables by their foreign keys.  See doc/operations.md, "Backup, restore
-- and standbys".
-- ---------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('chrono_forge.workflows', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.workflows_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.execution_logs', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.execution_logs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.error_logs', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.error_logs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.wakeups', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.wakeups_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.events', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.workflow_defaults', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.schedules', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.schedules_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.merge_polls', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.merge_polls_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.spawn_batches', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.spawn_batches_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.cancel_requests', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.outcome_days', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.outcome_days_summarised', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.outcome_days_changed', '');

-- =====================================================================
-- Clock
-- =====================================================================

CREATE FUNCTION chrono_forge.now() RETURNS timestamptz
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cf_now';

-- =====================================================================
-- Retry policies
-- =====================================================================

CREATE FUNCTION chrono_forge.retry_policy(
    max_attempts integer DEFAULT 3,
    base interval DEFAULT '1 second',
    cap interval DEFAULT '30 seconds',
    jitter boolean DEFAULT true,
    retry_on text[] DEFAULT NULL) RETURNS jsonb
    LANGUAGE c IMMUTABLE
    AS 'MODULE_PATHNAME', 'cf_retry_policy';

CREATE FUNCTION chrono_forge.retry_backoff(policy jsonb, attempts integer,
    jitter_fraction double precision DEFAULT NULL) RETURNS interval
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_retry_backoff';

-- =====================================================================
-- Control API
-- =====================================================================

-- The canonical spelling of a workflow name (the procedure it resolves to,
-- schema-qualified, quoted only where it must be), with the client's
-- search_path: what runs are stored under.
CREATE FUNCTION chrono_forge.canonical_workflow(workflow text) RETURNS text
    LANGUAGE c STABLE STRICT
    AS 'MODULE_PATHNAME', 'cf_canonical_workflow_sql';

CREATE FUNCTION chrono_forge.start(workflow text, key text,
    args jsonb DEFAULT '{}', options jsonb DEFAULT '{}') RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_start';

CREATE FUNCTION chrono_forge.configure(workflow text, retry_policy jsonb)
    RETURNS void
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_configure';

CREATE FUNCTION chrono_forge.wake(workflow text, key text) RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_wake';

CREATE FUNCTION chrono_forge.retry(workflow text, key text) RETURNS void
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_retry';

CREATE FUNCTION chrono_forge.send_event(workflow text, key text, name text,
    payload jsonb DEFAULT NULL) RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_send_event';

CREATE PROCEDURE chrono_forge.run_pending(max_passes integer DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_run_pending';

-- Entry point of the executor workers; refuses any other caller.
CREATE PROCEDURE chrono_forge.worker_drain(max_passes integer)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_worker_drain';

CREATE FUNCTION chrono_forge.reap_stalled(stale_after interval DEFAULT NULL)
    RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_reap_stalled';

REVOKE ALL ON PROCEDURE chrono_forge.worker_drain(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION chrono_forge.reap_stalled(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chrono_forge.reap_stalled(interval) TO chrono_forge_admin;

-- =====================================================================
-- Lock (SQL-callable; the executor uses the same functions)
-- =====================================================================

CREATE FUNCTION chrono_forge.acquire_lock(workflow_id bigint, locked_by text,
    max_duration interval DEFAULT NULL)
    RETURNS chrono_forge.workflows
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    w chrono_forge.workflows;
    ts timestamptz := chrono_forge.now();
    limit_ interval := coalesce(max_duration,
        pg_catalog.current_setting('chrono_forge.max_duration')::interval);
BEGIN
    SELECT * INTO w FROM chrono_forge.workflows AS t
     WHERE t.id = acquire_lock.workflow_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow run % does not exist', workflow_id
            USING ERRCODE = 'CF014';
    END IF;
    IF w.state NOT IN ('idle', 'running') THEN
        RAISE EXCEPTION 'workflow run % is not executable', workflow_id
            USING ERRCODE = 'CF003',
                  DETAIL = pg_catalog.format('Its state is %s.', w.state);
    END IF;
    IF w.locked_at IS NOT NULL AND w.locked_at > ts - limit_ THEN
        RAISE EXCEPTION 'workflow run % is already being executed', workflow_id
            USING ERRCODE = 'CF001',
                  DETAIL = pg_catalog.format('Locked by %s since %s.', w.locked_by, w.locked_at);
    END IF;
    UPDATE chrono_forge.workflows AS t
       SET locked_by = acquire_lock.locked_by, locked_at = ts, state = 'running',
           started_at = coalesce(t.started_at, ts), updated_at = ts
     WHERE t.id = acquire_lock.workflow_id
    RETURNING * INTO w;
    RETURN w;
END
$$;

CREATE FUNCTION chrono_forge.release_lock(workflow_id bigint, locked_by text,
    force boolean DEFAULT false) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    holder text;
BEGIN
    SELECT t.locked_by INTO holder FROM chrono_forge.workflows AS t
     WHERE t.id = release_lock.workflow_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow run % does not exist', workflow_id
            USING ERRCODE = 'CF014';
    END IF;
    IF holder IS DISTINCT FROM release_lock.locked_by AND NOT force THEN
        RAISE EXCEPTION 'workflow run % ran longer than chrono_forge.max_duration and lost its lock', workflow_id
            USING ERRCODE = 'CF002',
                  DETAIL = pg_catalog.format('The lock is now held by %s.', coalesce(holder, 'nobody'));
    END IF;
    UPDATE chrono_forge.workflows AS t
       SET locked_by = NULL, locked_at = NULL, updated_at = chrono_forge.now(),
           state = CASE WHEN t.state = 'running' OR force THEN 'idle' ELSE t.state END
     WHERE t.id = release_lock.workflow_id;
    RETURN true;
END
$$;

REVOKE ALL ON FUNCTION chrono_forge.acquire_lock(bigint, text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION chrono_forge.release_lock(bigint, text, boolean) FROM PUBLIC;

-- =====================================================================
-- Workflow API (called from workflow procedures).  These C procedures
-- commit, so they carry no SET clause (it would force an atomic context);
-- they pin their own search path internally.
-- =====================================================================

-- durably_execute: compensate and compensate_policy since 0.12.0 (see
-- compensate()).
CREATE PROCEDURE chrono_forge.durably_execute(step text, name text DEFAULT NULL,
    args jsonb DEFAULT NULL, retry_policy jsonb DEFAULT NULL,
    compensate text DEFAULT NULL, compensate_policy jsonb DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_durably_execute';

CREATE PROCEDURE chrono_forge.durably_execute(step text, INOUT result jsonb,
    name text DEFAULT NULL, args jsonb DEFAULT NULL, retry_policy jsonb DEFAULT NULL,
    compensate text DEFAULT NULL, compensate_policy jsonb DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_durably_execute';

CREATE PROCEDURE chrono_forge.wait(duration interval, name text)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_wait';

CREATE PROCEDURE chrono_forge.wait_until(condition text,
    timeout interval DEFAULT '1 hour', check_interval interval DEFAULT '15 minutes',
    retry_policy jsonb DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_wait_until';

CREATE PROCEDURE chrono_forge.continue_if(condition text, name text DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_continue_if';

CREATE PROCEDURE chrono_forge.await_event(name text, timeout interval DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_await_event';

CREATE PROCEDURE chrono_forge.await_event(name text, INOUT payload jsonb,
    timeout interval DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_await_event';

-- durably_repeat: a step run once per tick.
CREATE PROCEDURE chrono_forge.durably_repeat(step text, every interval, till text,
    start_at timestamptz DEFAULT NULL, retry_policy jsonb DEFAULT NULL,
    timeout interval DEFAULT '1 hour', on_error text DEFAULT 'continue',
    name text DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_durably_repeat';

-- =====================================================================
-- Args and context (from the body and from steps)
-- =====================================================================

CREATE FUNCTION chrono_forge.args() RETURNS jsonb
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'cf_args';
CREATE FUNCTION chrono_forge.key() RETURNS text
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'cf_key';
CREATE FUNCTION chrono_forge.workflow_id() RETURNS bigint
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'cf_workflow_id';
CREATE FUNCTION chrono_forge.context() RETURNS jsonb
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'cf_context';
-- Replaces the run's context after validating every value (16 KB each).
CREATE FUNCTION chrono_forge.context_replace(new_context jsonb) RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'cf_context_replace';

CREATE FUNCTION chrono_forge.arg(name text) RETURNS jsonb
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT chrono_forge.args() -> name $$;

CREATE FUNCTION chrono_forge.context_get(key text) RETURNS jsonb
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT chrono_forge.context() -> key $$;

CREATE FUNCTION chrono_forge.context_has(key text) RETURNS boolean
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT chrono_forge.context() ? key $$;

CREATE FUNCTION chrono_forge.context_fetch(key text, "default" jsonb) RETURNS jsonb
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT CASE WHEN c ? key THEN c -> key ELSE "default" END
          FROM chrono_forge.context() AS c $$;

-- A NULL key is refused (CF012).
CREATE FUNCTION chrono_forge.context_set(key text, value jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    ctx jsonb := chrono_forge.context();    -- CF013 outside a pass
BEGIN
    IF key IS NULL THEN
        RAISE EXCEPTION 'context key must not be NULL' USING ERRCODE = 'CF012';
    END IF;
    PERFORM chrono_forge.context_replace(ctx OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(key, value));
END
$$;

CREATE FUNCTION chrono_forge.context_set_once(key text, value jsonb) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF chrono_forge.context() ? key THEN
        RETURN false;
    END IF;
    PERFORM chrono_forge.context_set(key, value);
    RETURN true;
END
$$;

CREATE FUNCTION chrono_forge.context_merge(values_ jsonb) RETURNS void
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT chrono_forge.context_replace(chrono_forge.context() || values_) $$;

-- Keys already present are kept (and not validated again).
CREATE FUNCTION chrono_forge.context_merge_once(values_ jsonb) RETURNS void
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT chrono_forge.context_replace(values_ || chrono_forge.context()) $$;

-- =====================================================================
-- Periodic work: cron expressions and schedules
-- =====================================================================

-- Cron expressions (UTC minutes, as pg_cron 1.4 fires them).
CREATE FUNCTION chrono_forge.cron_next(cron text, after timestamptz) RETURNS timestamptz
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cf_cron_next_sql';
CREATE FUNCTION chrono_forge.cron_prev(cron text, at timestamptz) RETURNS timestamptz
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cf_cron_prev_sql';

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

-- Schedules with their last and next tick and the last tick's run (its
-- owner's: names and keys are per owner).
CREATE VIEW chrono_forge.schedule_status WITH (security_invoker = true) AS
SELECT s.name, s.cron, s.workflow, s.args, s.catch_up, s.owner, s.last_tick,
       chrono_forge.cron_next(s.cron, GREATEST(s.last_tick, chrono_forge.now())) AS next_tick,
       s.last_fired_at, s.runs_started, r.id AS last_run_id, r.state AS last_run_state,
       s.jobid, s.reboot_jobid, s.id
  FROM chrono_forge.schedules s
  LEFT JOIN chrono_forge.workflows r
    ON r.workflow = s.workflow
   AND r.key = s.name || '@' || pg_catalog.to_char(s.last_tick AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"')
   AND r.owner = s.owner;
GRANT SELECT ON chrono_forge.schedule_status TO PUBLIC;

-- =====================================================================
-- Fan-out
-- =====================================================================

-- Branches: a durable step branch$<name> of the parent (pending while it
-- dispatches, completed once sealed); children are runs whose
-- parent_execution_log_id is that log's id, keyed "$<parent run id>$<key>"
-- (start() refuses keys beginning with '$').  C procedures that commit:
-- no SET clause; they pin their own search path.
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

-- merge_branches(..., on_child_failure, quorum, timeout, on_timeout):
-- what a failed, stalled or cancelled child means to the merge: 'wait'
-- (the default: until it is retried; a cancelled child can be retried),
-- 'fail' (the parent fails at once, CF025) or 'ignore' (it counts as
-- ended); quorum (0.10.0): that many completed children are enough (the
-- others go on); timeout (0.10.0): past it, from when the merge first
-- waited, the run stalls (on_timeout 'stall', CF010; retry() waits a
-- whole timeout again) or fails ('fail').  One procedure with every
-- argument defaulted, so that earlier calls, by position or by name, keep
-- working (an overload beside the old one would make them ambiguous).
-- The rules are kept on the merge step's log.
CREATE PROCEDURE chrono_forge.merge_branches(names text[],
    min_interval interval DEFAULT '5 seconds', max_interval interval DEFAULT '5 minutes',
    on_child_failure text DEFAULT 'wait', quorum integer DEFAULT NULL,
    timeout interval DEFAULT NULL, on_timeout text DEFAULT 'stall')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_merge_branches';

-- Probes (the caller must own the branch's run).  Index-only on
-- workflows_children_idx: they count the children that are not
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

-- =====================================================================
-- Operations
-- =====================================================================

-- ---------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------

-- 'N' below the cap, 'cap+' at it.
CREATE FUNCTION chrono_forge.capped_count(n bigint, cap integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT CASE WHEN n > cap THEN cap::text || '+' ELSE n::text END $$;

-- The reaper's threshold: chrono_forge.reap_stale_after, -1 = 3 x max_duration.
CREATE FUNCTION chrono_forge.reap_stale_after() RETURNS interval
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN pg_catalog.current_setting('chrono_forge.reap_stale_after') = '-1'
                THEN 3 * pg_catalog.current_setting('chrono_forge.max_duration')::interval
                ELSE pg_catalog.current_setting('chrono_forge.reap_stale_after')::interval END
$$;

-- The states a run-list filter names: a state, 'blocked' (failed,
-- stalled), 'in_flight' (idle, running), or NULL/'all' (every state).
CREATE FUNCTION chrono_forge.state_filter(state text) RETURNS chrono_forge.workflow_state[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF state IS NULL OR state = 'all' THEN
        RETURN pg_catalog.enum_range(NULL::chrono_forge.workflow_state);
    ELSIF state = 'blocked' THEN
        RETURN ARRAY['failed', 'stalled']::chrono_forge.workflow_state[];
    ELSIF state = 'in_flight' THEN
        RETURN ARRAY['idle', 'running']::chrono_forge.workflow_state[];
    ELSIF state = ANY (pg_catalog.enum_range(NULL::chrono_forge.workflow_state)::text[]) THEN
        RETURN ARRAY[state]::chrono_forge.workflow_state[];
    END IF;
    RAISE EXCEPTION 'unknown state filter "%"', state
        USING ERRCODE = 'CF012',
              HINT = 'Use a run state, blocked, in_flight or all.';
END
$$;

-- The same as state_code values.
CREATE FUNCTION chrono_forge.state_codes(state text) RETURNS smallint[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT pg_catalog.array_agg(pg_catalog.array_position(
               pg_catalog.enum_range(NULL::chrono_forge.workflow_state), s)::smallint ORDER BY 1)
      FROM pg_catalog.unnest(chrono_forge.state_filter(state)) AS s
$$;

-- A run the caller may see (row-level security decides), by (workflow,
-- key): the name canonicalized as start() stores it; the caller's own run
-- first; several others' (an admin's view) and none the caller's own is
-- ambiguous (CF012).  Another role's run answers as a missing one (CF014).
CREATE FUNCTION chrono_forge.visible_run(workflow text, key text) RETURNS chrono_forge.workflows
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    w chrono_forge.workflows;
    wf text := chrono_forge.canonical_workflow(visible_run.workflow);
    n integer;
BEGIN
    SELECT * INTO w FROM chrono_forge.workflows t
     WHERE t.workflow = wf AND t.key = visible_run.key AND t.owner = current_user::regrole;
    IF FOUND THEN
        RETURN w;
    END IF;
    SELECT pg_catalog.count(*)::integer INTO n FROM chrono_forge.workflows t
     WHERE t.workflow = wf AND t.key = visible_run.key;
    IF n > 1 THEN
        RAISE EXCEPTION 'workflow run (%, %) is ambiguous', workflow, key
            USING ERRCODE = 'CF012',
                  DETAIL = 'Several roles own a run of this workflow with this key, none of them you.',
                  HINT = 'SET ROLE to the run''s owner to act on its run.';
    END IF;
    SELECT * INTO w FROM chrono_forge.workflows t
     WHERE t.workflow = wf AND t.key = visible_run.key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow run (%, %) does not exist', workflow, key
            USING ERRCODE = 'CF014';
    END IF;
    RETURN w;
END
$$;

-- A page size, checked (used as the LIMIT, so it is checked even when
-- nothing else runs).
CREATE FUNCTION chrono_forge.page_limit(page_size integer) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF page_size IS NULL OR page_size < 1 OR page_size > 1000 THEN
        RAISE EXCEPTION 'page_size must be between 1 and 1000' USING ERRCODE = 'CF012';
    END IF;
    RETURN page_size;
END
$$;

-- The newest run id issued (0 before the first): where the run list by key
-- prefix starts its walk.  (The sequence is the extension owner's; any
-- role learns as much from the id of a run it starts.)
CREATE FUNCTION chrono_forge.newest_run_id() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END FROM chrono_forge.workflows_id_seq s
$$;

-- The bucket of the oldest run (0 without runs): where that walk ends.
-- Run ids need not start near 0: on a Citus cluster each node's come
-- from its own range (claim_node_id_range(), 0.14.0).
CREATE FUNCTION chrono_forge.first_run_bucket() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT COALESCE(chrono_forge.run_bucket(pg_catalog.min(w.id)), 0) FROM chrono_forge.workflows w
$$;

-- ---------------------------------------------------------------------
-- Retention: cleanup().  Terminal runs only (completed; failed and
-- cancelled), by the time they ended; idle, running and stalled runs are
-- never touched.  One batch = at most batch_size runs (and their logs,
-- errors, wake-ups, events) and at most batch_size repetition logs; it
-- notes the days of the runs it deletes (see daily_outcomes()).
-- ---------------------------------------------------------------------

CREATE FUNCTION chrono_forge.cleanup_batch(
    completed_before timestamptz, failed_before timestamptz,
    repetitions_before timestamptz, batch_size integer)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    ids bigint[];
    n_workflows bigint := 0;
    n_logs bigint := 0;
    n_errors bigint := 0;
    n_wakeups bigint := 0;
    n_events bigint := 0;
    n_reps bigint := 0;
    n_orphaned bigint := 0;
BEGIN
    -- Completed runs first, then failed, cancelled and compensated ones,
    -- oldest first.
    -- SKIP LOCKED: a run a retry or a cancel is changing is left for the
    -- next batch.
    SELECT pg_catalog.array_agg(v.id) INTO ids FROM (
        SELECT w.id FROM chrono_forge.workflows w
         WHERE w.id IN (
            (SELECT c.id FROM chrono_forge.workflows c
              WHERE c.state_code = 3 AND c.ended_at <= completed_before
              ORDER BY c.ended_at LIMIT batch_size)
            UNION ALL
            (SELECT f.id FROM chrono_forge.workflows f
              WHERE f.state_code = 4 AND f.ended_at <= failed_before
              ORDER BY f.ended_at LIMIT batch_size)
            UNION ALL
            (SELECT x.id FROM chrono_forge.workflows x
              WHERE x.state_code = 6 AND x.ended_at <= failed_before
              ORDER BY x.ended_at LIMIT batch_size)
            UNION ALL
            (SELECT p.id FROM chrono_forge.workflows p
              WHERE p.state_code = 7 AND p.ended_at <= failed_before
              ORDER BY p.ended_at LIMIT batch_size))
           AND w.state_code IN (3, 4, 6, 7)
         ORDER BY w.state <> 'completed', w.ended_at
         LIMIT batch_size
         FOR UPDATE SKIP LOCKED) v;

    IF ids IS NOT NULL THEN
        -- Their days may be summarised (see daily_outcomes()).
        INSERT INTO chrono_forge.outcome_days_changed (day, owner)
        SELECT DISTINCT pg_catalog.timezone('UTC', w.ended_at)::date, w.owner
          FROM chrono_forge.workflows w WHERE w.id = ANY (ids);
        -- Children of a deleted run's branches lose their parent reference.
        UPDATE chrono_forge.workflows c SET parent_execution_log_id = NULL
          FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = ANY (ids) AND l.step_name LIKE 'branch$%'
           AND c.parent_execution_log_id = l.id;
        GET DIAGNOSTICS n_orphaned = ROW_COUNT;
        DELETE FROM chrono_forge.error_logs WHERE workflow_id = ANY (ids);
        GET DIAGNOSTICS n_errors = ROW_COUNT;
        DELETE FROM chrono_forge.execution_logs WHERE workflow_id = ANY (ids);
        GET DIAGNOSTICS n_logs = ROW_COUNT;
        DELETE FROM chrono_forge.wakeups WHERE workflow_id = ANY (ids);
        GET DIAGNOSTICS n_wakeups = ROW_COUNT;
        DELETE FROM chrono_forge.events WHERE workflow_id = ANY (ids);
        GET DIAGNOSTICS n_events = ROW_COUNT;
        DELETE FROM chrono_forge.workflows WHERE id = ANY (ids)
           AND state_code IN (3, 4, 6, 7);
        GET DIAGNOSTICS n_workflows = ROW_COUNT;
    END IF;

    -- Repetition logs strictly behind their coordination's frontier
    -- (last_execution_at) and before the cutoff, by scheduled time (the
    -- epoch in the tick's name).  Pending ticks and the coordination log
    -- stay; a coordination without a frontier prunes nothing.
    IF repetitions_before IS NOT NULL AND n_workflows < batch_size THEN
        WITH coord AS (
            SELECT l.workflow_id, l.step_name || '$' AS prefix,
                   LEAST(
                       pg_catalog.date_part('epoch', (l.metadata->>'last_execution_at')::timestamptz),
                       pg_catalog.date_part('epoch', repetitions_before)) AS before_epoch
              FROM chrono_forge.execution_logs l
             WHERE l.step_name LIKE 'durably\_repeat$%' AND l.step_name NOT LIKE 'durably\_repeat$%$%'
               AND l.metadata->>'last_execution_at' IS NOT NULL),
        victims AS (
            SELECT t.id FROM coord c
              JOIN chrono_forge.execution_logs t ON t.workflow_id = c.workflow_id
             WHERE pg_catalog.left(t.step_name, pg_catalog.length(c.prefix)) = c.prefix
               AND t.state IN ('completed', 'failed')
               AND pg_catalog.substr(t.step_name, pg_catalog.length(c.prefix) + 1) ~ '^[0-9]{1,12}$'
               AND pg_catalog.substr(t.step_name, pg_catalog.length(c.prefix) + 1)::numeric < c.before_epoch
             LIMIT batch_size - n_workflows)
        DELETE FROM chrono_forge.execution_logs t USING victims v WHERE t.id = v.id;
        GET DIAGNOSTICS n_reps = ROW_COUNT;
    END IF;

    RETURN pg_catalog.jsonb_build_object(
        'workflows', n_workflows, 'execution_logs', n_logs, 'error_logs', n_errors,
        'wakeups', n_wakeups, 'events', n_events, 'repetition_logs', n_reps,
        'orphaned_children', n_orphaned);
END
$$;

CREATE FUNCTION chrono_forge.cleanup_cutoffs(
    older_than interval, completed_older_than interval, failed_older_than interval,
    prune_repetition_logs_older_than interval, batch_size integer,
    OUT completed_before timestamptz, OUT failed_before timestamptz,
    OUT repetitions_before timestamptz)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    ts timestamptz := chrono_forge.now();
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = 'CF012';
    END IF;
    IF coalesce(completed_older_than, older_than) IS NULL
       OR coalesce(failed_older_than, older_than) IS NULL THEN
        RAISE EXCEPTION 'older_than must not be NULL unless completed_older_than and failed_older_than are given'
            USING ERRCODE = 'CF012';
    END IF;
    IF coalesce(completed_older_than, older_than) < interval '0'
       OR coalesce(failed_older_than, older_than) < interval '0'
       OR prune_repetition_logs_older_than < interval '0' THEN
        RAISE EXCEPTION 'retention intervals must not be negative' USING ERRCODE = 'CF012';
    END IF;
    completed_before := ts - coalesce(completed_older_than, older_than);
    failed_before := ts - coalesce(failed_older_than, older_than);
    repetitions_before := ts - prune_repetition_logs_older_than;
END
$$;

CREATE FUNCTION chrono_forge.cleanup_add(a jsonb, b jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF pg_catalog.jsonb_typeof(coalesce(a, '{}')) OPERATOR(pg_catalog.<>) 'object'
       OR pg_catalog.jsonb_typeof(coalesce(b, '{}')) OPERATOR(pg_catalog.<>) 'object'
       OR EXISTS (SELECT FROM (SELECT value FROM pg_catalog.jsonb_each(a)
                               UNION ALL SELECT value FROM pg_catalog.jsonb_each(b)) e
                   WHERE pg_catalog.jsonb_typeof(e.value) OPERATOR(pg_catalog.<>) 'number') THEN
        RAISE EXCEPTION 'cleanup_add takes two objects of counts' USING ERRCODE = 'CF012';
    END IF;
    RETURN (SELECT coalesce(pg_catalog.jsonb_object_agg(k,
                coalesce((a OPERATOR(pg_catalog.->) k)::numeric, 0) OPERATOR(pg_catalog.+)
                coalesce((b OPERATOR(pg_catalog.->) k)::numeric, 0)), '{}')
              FROM (SELECT pg_catalog.jsonb_object_keys(coalesce(b, '{}'))
                    UNION SELECT pg_catalog.jsonb_object_keys(coalesce(a, '{}'))) AS t(k));
END
$$;

-- The contract's function: every batch in the caller's transaction.
CREATE FUNCTION chrono_forge.cleanup(
    older_than interval DEFAULT '90 days',
    completed_older_than interval DEFAULT NULL,
    failed_older_than interval DEFAULT NULL,
    prune_repetition_logs_older_than interval DEFAULT NULL,
    batch_size integer DEFAULT 1000)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c record;
    total jsonb := '{"workflows": 0, "execution_logs": 0, "error_logs": 0, "wakeups": 0,
                     "events": 0, "repetition_logs": 0, "orphaned_children": 0, "batches": 0}';
    b jsonb;
BEGIN
    c := chrono_forge.cleanup_cutoffs(older_than, completed_older_than, failed_older_than,
                                      prune_repetition_logs_older_than, batch_size);
    LOOP
        b := chrono_forge.cleanup_batch(c.completed_before, c.failed_before,
                                        c.repetitions_before, batch_size);
        EXIT WHEN (b->>'workflows')::bigint = 0 AND (b->>'repetition_logs')::bigint = 0;
        total := chrono_forge.cleanup_add(total, b || '{"batches": 1}');
    END LOOP;
    RETURN total;
END
$$;

-- The same, committing after every batch (CALL it outside a transaction
-- block): no lock outlives one batch.  (In C: a procedure that commits
-- cannot carry a SET search_path clause.)
CREATE PROCEDURE chrono_forge.cleanup_in_batches(
    older_than interval DEFAULT '90 days',
    completed_older_than interval DEFAULT NULL,
    failed_older_than interval DEFAULT NULL,
    prune_repetition_logs_older_than interval DEFAULT NULL,
    batch_size integer DEFAULT 1000,
    INOUT counts jsonb DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_cleanup_in_batches';

REVOKE ALL ON FUNCTION chrono_forge.cleanup_batch(timestamptz, timestamptz, timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION chrono_forge.cleanup(interval, interval, interval, interval, integer) FROM PUBLIC;
REVOKE ALL ON PROCEDURE chrono_forge.cleanup_in_batches(interval, interval, interval, interval, integer, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION chrono_forge.cleanup_cutoffs(interval, interval, interval, interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chrono_forge.cleanup_batch(timestamptz, timestamptz, timestamptz, integer) TO chrono_forge_admin;
GRANT EXECUTE ON FUNCTION chrono_forge.cleanup(interval, interval, interval, interval, integer) TO chrono_forge_admin;
GRANT EXECUTE ON PROCEDURE chrono_forge.cleanup_in_batches(interval, interval, interval, interval, integer, jsonb) TO chrono_forge_admin;
GRANT EXECUTE ON FUNCTION chrono_forge.cleanup_cutoffs(interval, interval, interval, interval, integer) TO chrono_forge_admin;

-- ---------------------------------------------------------------------
-- Maintenance schedules (pg_cron).  The jobs run as the extension owner;
-- callers choose only when they run and the retention settings, which are
-- validated as typed values before they are written into the commands.
-- ---------------------------------------------------------------------

CREATE FUNCTION chrono_forge.schedule_maintenance(
    cleanup_cron text DEFAULT '17 3 * * *',
    reap_cron text DEFAULT '* * * * *',
    older_than interval DEFAULT '90 days',
    completed_older_than interval DEFAULT NULL,
    failed_older_than interval DEFAULT NULL,
    prune_repetition_logs_older_than interval DEFAULT NULL,
    batch_size integer DEFAULT 1000,
    stale_after interval DEFAULT NULL)
    RETURNS TABLE (job text, jobid bigint, schedule text, command text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cleanup_cmd text;
    reap_cmd text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'schedule_maintenance() needs the pg_cron extension in this database'
            USING ERRCODE = 'CF020',
                  HINT = 'Install pg_cron (postgresql-15-cron), add it to shared_preload_libraries, set cron.database_name, then CREATE EXTENSION pg_cron.';
    END IF;
    IF cleanup_cron IS NULL AND reap_cron IS NULL THEN
        RAISE EXCEPTION 'nothing to schedule: cleanup_cron and reap_cron are both NULL'
            USING ERRCODE = 'CF012';
    END IF;
    -- Validate the retention arguments now rather than at 3 a.m.
    PERFORM chrono_forge.cleanup_cutoffs(older_than, completed_older_than, failed_older_than,
                                         prune_repetition_logs_older_than, batch_size);
    IF stale_after < interval '0' THEN
        RAISE EXCEPTION 'stale_after must not be negative' USING ERRCODE = 'CF012';
    END IF;
    cleanup_cmd := pg_catalog.format(
        'CALL chrono_forge.cleanup_in_batches(%s::interval, %s::interval, %s::interval, %s::interval, %s)',
        pg_catalog.quote_nullable(older_than::text), pg_catalog.quote_nullable(completed_older_than::text),
        pg_catalog.quote_nullable(failed_older_than::text),
        pg_catalog.quote_nullable(prune_repetition_logs_older_than::text), batch_size);
    reap_cmd := pg_catalog.format('SELECT chrono_forge.reap_stalled(%s::interval)',
        pg_catalog.quote_nullable(stale_after::text));
    IF cleanup_cron IS NOT NULL THEN
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jobid
            USING 'chrono_forge_cleanup', cleanup_cron, cleanup_cmd;
        job := 'chrono_forge_cleanup'; schedule := cleanup_cron; command := cleanup_cmd;
        RETURN NEXT;
    END IF;
    IF reap_cron IS NOT NULL THEN
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jobid
            USING 'chrono_forge_reap', reap_cron, reap_cmd;
        job := 'chrono_forge_reap'; schedule := reap_cron; command := reap_cmd;
        RETURN NEXT;
    END IF;
END
$$;

CREATE FUNCTION chrono_forge.unschedule_maintenance() RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    n integer := 0;
    ok boolean;
    name text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'unschedule_maintenance() needs the pg_cron extension in this database'
            USING ERRCODE = 'CF020',
                  HINT = 'Maintenance jobs exist only where pg_cron is installed.';
    END IF;
    FOREACH name IN ARRAY ARRAY['chrono_forge_cleanup', 'chrono_forge_reap'] LOOP
        EXECUTE 'SELECT EXISTS (SELECT FROM cron.job WHERE jobname = $1 AND username = current_user)'
            INTO ok USING name;
        IF ok THEN
            EXECUTE 'SELECT cron.unschedule($1)' USING name;
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION chrono_forge.schedule_maintenance(text, text, interval, interval, interval, interval, integer, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION chrono_forge.unschedule_maintenance() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chrono_forge.schedule_maintenance(text, text, interval, interval, interval, interval, integer, interval) TO chrono_forge_admin;
GRANT EXECUTE ON FUNCTION chrono_forge.unschedule_maintenance() TO chrono_forge_admin;

-- ---------------------------------------------------------------------
-- Observability.  (Each is planned per call and runs with jit off: the
-- planner's cost for these short reads can pass jit_above_cost, and
-- compiling would cost more than the query.)  Plain SECURITY INVOKER
-- functions over the tables: row-level security shows each role its own
-- runs (chrono_forge_admin members and superusers see all).  Counts are
-- capped (shown as 'N+'), lists are keyset-paginated and bounded.  A
-- workflow filter is any spelling of the procedure, as start() takes it:
-- each view canonicalizes it, on the caller's search_path, once per call.
-- ---------------------------------------------------------------------

-- Adds the (owner, workflow) pairs of the runs past the horizon and moves
-- it, once 1,000 runs have been started past it (overview() reads those
-- runs themselves meanwhile: a write per call would cost more).  Ids are
-- handed out before their run commits: an id the sequence has issued is
-- safe (its run committed or never will) once every transaction that was
-- open when it was issued has ended.  Nothing in a read-only transaction,
-- above READ COMMITTED, or while another transaction is at it.
CREATE FUNCTION chrono_forge.workflow_owners_refresh() RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
DECLARE
    h chrono_forge.workflow_owners_horizon;
    issued bigint;
    issued_at timestamptz;
    oldest timestamptz;
    safe bigint;
BEGIN
    -- (Each statement below must see what committed before it: only in
    -- READ COMMITTED.)
    IF pg_catalog.current_setting('transaction_read_only')::boolean
       OR pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN;
    END IF;
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END INTO issued
      FROM chrono_forge.workflows_id_seq s;
    issued_at := pg_catalog.clock_timestamp();
    SELECT * INTO h FROM chrono_forge.workflow_owners_horizon;
    IF issued - h.last_id < 1000
       OR NOT pg_catalog.pg_try_advisory_xact_lock(
                  'chrono_forge.workflow_owners_horizon'::regclass::oid::integer, 0) THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    -- (A transaction that wrote has an xid; without track_activities its
    -- start is not shown: take it as older than anything.)
    SELECT pg_catalog.min(coalesce(a.xact_start,
                                   CASE WHEN a.backend_xid IS NOT NULL THEN '-infinity'::timestamptz END))
      INTO oldest
      FROM pg_catalog.pg_stat_activity a
     WHERE a.pid <> pg_catalog.pg_backend_pid() AND a.datname = pg_catalog.current_database()
       AND a.backend_type <> 'autovacuum worker';
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts) THEN
        oldest := '-infinity';
    END IF;
    IF oldest IS NULL OR oldest > issued_at THEN
        safe := issued;
    ELSIF h.candidate_at < oldest THEN
        safe := h.candidate;
    END IF;
    IF safe > h.last_id THEN
        -- (A new snapshot: the runs up to safe have all committed or failed.)
        INSERT INTO chrono_forge.workflow_owners (owner, workflow)
        SELECT DISTINCT w.owner, w.workflow FROM chrono_forge.workflows w
         WHERE w.id > h.last_id AND w.id <= safe
        ON CONFLICT DO NOTHING;
    END IF;
    -- The next candidate: kept until it is safe (a newer one would wait
    -- for a quiet moment again), none once everything issued is safe.
    IF safe = issued THEN
        UPDATE chrono_forge.workflow_owners_horizon
           SET last_id = safe, candidate = NULL, candidate_at = NULL;
    ELSIF safe IS NOT NULL OR h.candidate IS NULL THEN
        UPDATE chrono_forge.workflow_owners_horizon
           SET last_id = GREATEST(last_id, coalesce(safe, 0)),
               candidate = issued, candidate_at = issued_at;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION chrono_forge.workflow_owners_refresh() TO PUBLIC;

-- Runs per workflow and state (capped counts; the grid's default cap is
-- 1,000 per cell, run_counts()' 5,000 per state), for the workflows the
-- caller has runs of (workflow_owners, and the runs past its horizon).
CREATE FUNCTION chrono_forge.overview(cap integer DEFAULT 1000)
    RETURNS TABLE (workflow text, state chrono_forge.workflow_state, runs text, capped boolean)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    states chrono_forge.workflow_state[] := pg_catalog.enum_range(NULL::chrono_forge.workflow_state);
    last_id bigint;
BEGIN
    PERFORM chrono_forge.workflow_owners_refresh();
    SELECT h.last_id INTO last_id FROM chrono_forge.workflow_owners_horizon h;
    RETURN QUERY
    WITH names(name) AS (
        SELECT o.workflow FROM chrono_forge.workflow_owners o
        UNION
        SELECT w.workflow FROM chrono_forge.workflows w WHERE w.id > last_id)
    SELECT n.name, states[s.code],
           CASE WHEN c.n > cap THEN cap::text || '+' ELSE c.n::text END, c.n > cap
      FROM names n
     CROSS JOIN pg_catalog.unnest('{1,2,3,4,5,6,7}'::smallint[]) AS s(code)
     CROSS JOIN LATERAL (SELECT pg_catalog.count(*) AS n FROM
                  (SELECT 1 FROM chrono_forge.workflows w
                    WHERE w.workflow = n.name AND w.state_code = s.code LIMIT cap + 1) x) c
     WHERE c.n > 0
     ORDER BY n.name, s.code;
END
$$;

-- Capped counts per state for a run-list filter (same filters as runs()).
-- One statement per state, each planned for its state (a rare state is
-- read from the index, a common one scanned until the cap); a key prefix
-- walks the blocks of the key-prefix index from the newest, as runs()
-- does (0.9.0).
CREATE FUNCTION chrono_forge.run_counts(
    workflow text DEFAULT NULL, key_prefix text DEFAULT NULL,
    created_from timestamptz DEFAULT NULL, created_to timestamptz DEFAULT NULL,
    include_children boolean DEFAULT false, cap integer DEFAULT 5000)
    RETURNS TABLE (state chrono_forge.workflow_state, runs text, capped boolean)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    states chrono_forge.workflow_state[] := pg_catalog.enum_range(NULL::chrono_forge.workflow_state);
    newest_bucket bigint := chrono_forge.run_bucket(chrono_forge.newest_run_id());
    first_bucket bigint := chrono_forge.first_run_bucket();
    n bigint;
BEGIN
    run_counts.workflow := chrono_forge.canonical_workflow(run_counts.workflow);
    FOR code IN 1..6 LOOP
        IF run_counts.key_prefix IS NOT NULL THEN
            SELECT pg_catalog.count(*) INTO n FROM
                (SELECT 1 FROM pg_catalog.generate_series(newest_bucket, first_bucket, -1) AS b(bucket)
                  CROSS JOIN LATERAL (
                     SELECT 1 FROM chrono_forge.workflows w
                      WHERE chrono_forge.run_bucket(w.id) = b.bucket
                        AND pg_catalog.starts_with(w.key, run_counts.key_prefix)
                        AND w.state_code = code::smallint
                        AND (run_counts.workflow IS NULL OR w.workflow = run_counts.workflow)
                        AND (run_counts.created_from IS NULL OR w.created_at >= run_counts.created_from)
                        AND (run_counts.created_to IS NULL OR w.created_at < run_counts.created_to)
                        AND (run_counts.include_children OR w.parent_execution_log_id IS NULL)) m
                  LIMIT cap + 1) x;
        ELSE
            SELECT pg_catalog.count(*) INTO n FROM
                (SELECT 1 FROM chrono_forge.workflows w
                  WHERE w.state_code = code::smallint
                    AND (run_counts.workflow IS NULL OR w.workflow = run_counts.workflow)
                    AND (run_counts.created_from IS NULL OR w.created_at >= run_counts.created_from)
                    AND (run_counts.created_to IS NULL OR w.created_at < run_counts.created_to)
                    AND (run_counts.include_children OR w.parent_execution_log_id IS NULL)
                  LIMIT cap + 1) x;
        END IF;
        state := states[code];
        runs := CASE WHEN n > cap THEN cap::text || '+' ELSE n::text END;
        capped := n > cap;
        RETURN NEXT;
    END LOOP;
END
$$;

-- The run list.  PL/pgSQL (not SQL) so that each call is planned for its
-- own filters: an absent filter drops out instead of defeating the index.
CREATE FUNCTION chrono_forge.runs(
    state text DEFAULT NULL, workflow text DEFAULT NULL, key_prefix text DEFAULT NULL,
    created_from timestamptz DEFAULT NULL, created_to timestamptz DEFAULT NULL,
    include_children boolean DEFAULT false,
    before_id bigint DEFAULT NULL, page_size integer DEFAULT 50)
    RETURNS SETOF chrono_forge.run_row
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    codes smallint[] := chrono_forge.state_codes(runs.state);
    lim integer := chrono_forge.page_limit(runs.page_size);
    by_time boolean := runs.created_from IS NOT NULL OR runs.created_to IS NOT NULL;
    ts timestamptz := chrono_forge.now();
    stale interval := chrono_forge.reap_stale_after();
    -- key_prefix as a LIKE pattern (escaped), which the key index serves.
    pattern text := pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
        runs.key_prefix, '\', '\\'), '%', '\%'), '_', '\_') || '%';
BEGIN
    runs.workflow := chrono_forge.canonical_workflow(runs.workflow);
    -- One ordered index range per state, merged: never more than
    -- page_size rows read per state (plus what the filters skip).
    IF by_time THEN
        -- A created range: read the range (BRIN) once, for every state,
        -- and keep the newest rows; walking each state's runs from the
        -- newest would skip everything created after a range in the past.
        -- (state_code + 0 and id + 0 keep the planner on the BRIN range.)
        RETURN QUERY
        SELECT t.id, t.workflow, t.key, t.state, t.owner, t.created_at, t.started_at, t.ended_at,
               CASE WHEN t.state = 'running' THEN ts - t.started_at
                    WHEN t.state IN ('completed', 'failed', 'cancelled', 'stalled') THEN
                         coalesce(t.ended_at, t.updated_at) - t.started_at END,
               t.locked_by,
               t.state = 'running' AND t.locked_at < ts - stale,
               t.parent_execution_log_id
          FROM chrono_forge.workflows t
         WHERE t.state_code + 0 = ANY (codes)
           AND (runs.before_id IS NULL OR t.id + 0 < runs.before_id)
           AND (runs.workflow IS NULL OR t.workflow = runs.workflow)
           AND (runs.key_prefix IS NULL
                OR (t.key LIKE pattern AND pg_catalog.starts_with(t.key, runs.key_prefix)))
           AND (runs.created_from IS NULL OR t.created_at >= runs.created_from)
           AND (runs.created_to IS NULL OR t.created_at < runs.created_to)
           AND (runs.include_children OR t.parent_execution_log_id IS NULL)
         ORDER BY t.id + 0 DESC
         LIMIT lim;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT w.id, w.workflow, w.key, w.state, w.owner, w.created_at, w.started_at, w.ended_at,
           CASE WHEN w.state = 'running' THEN ts - w.started_at
                WHEN w.state IN ('completed', 'failed', 'cancelled', 'stalled') THEN
                     coalesce(w.ended_at, w.updated_at) - w.started_at END,
           w.locked_by,
           w.state = 'running' AND w.locked_at < ts - stale,
           w.parent_execution_log_id
      FROM pg_catalog.unnest(codes) AS s(code)
     CROSS JOIN LATERAL (
        SELECT * FROM chrono_forge.workflows t
         WHERE t.state_code = s.code
           AND (runs.before_id IS NULL OR t.id < runs.before_id)
           AND (runs.workflow IS NULL OR t.workflow = runs.workflow)
           AND (runs.key_prefix IS NULL
                OR (t.key LIKE pattern AND pg_catalog.starts_with(t.key, runs.key_prefix)))
           AND (runs.created_from IS NULL OR t.created_at >= runs.created_from)
           AND (runs.created_to IS NULL OR t.created_at < runs.created_to)
           AND (runs.include_children OR t.parent_execution_log_id IS NULL)
         ORDER BY t.id DESC LIMIT lim) w
     ORDER BY w.id DESC
     LIMIT lim;
END
$$;

-- One run's timeline: its steps in the order they started, with attempts,
-- duration, result and errors attached (with each error's hint and
-- context); a durably_repeat coordination carries a summary of its ticks
-- instead of one row per tick; workflow-level errors come last; a
-- run_task step's task as it stands in the last column (no args or
-- result).
CREATE FUNCTION chrono_forge.timeline(workflow text, key text, max_errors integer DEFAULT 20)
    RETURNS TABLE (seq bigint, step_name text, kind text, state text, attempts integer,
                   started_at timestamptz, completed_at timestamptz, duration interval,
                   result jsonb, metadata jsonb, error_class text, error_message text,
                   errors jsonb, repetitions jsonb, task jsonb)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    run chrono_forge.workflows := chrono_forge.visible_run(workflow, key);
BEGIN
    RETURN QUERY
    WITH steps AS (
        SELECT l.* FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = run.id AND l.step_name NOT LIKE 'durably\_repeat$%$%')
    SELECT pg_catalog.row_number() OVER (ORDER BY l.started_at, l.id),
           l.step_name,
           CASE WHEN l.step_name LIKE '$%' THEN pg_catalog.split_part(l.step_name, '$', 2)
                ELSE pg_catalog.split_part(l.step_name, '$', 1) END,
           l.state::text, l.attempts, l.started_at, l.completed_at,
           l.completed_at - l.started_at, l.result, l.metadata, l.error_class, l.error_message,
           (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                       'id', e.id, 'attempt', e.attempt, 'error_class', e.error_class,
                       'error_message', e.error_message, 'at', e.created_at)
                       || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                              'error_detail', e.error_detail, 'error_hint', e.error_hint,
                              'error_context', e.error_context)) ORDER BY e.id)
              FROM (SELECT * FROM chrono_forge.error_logs e
                     WHERE e.workflow_id = run.id
                       AND (e.step_name = l.step_name
                            OR (l.step_name LIKE '$workflow\_failure$%'
                                AND e.id::text = pg_catalog.substr(l.step_name, 19)))
                     ORDER BY e.id DESC LIMIT max_errors) e),
           CASE WHEN l.step_name LIKE 'durably\_repeat$%' THEN
               (SELECT pg_catalog.jsonb_build_object(
                           'completed', pg_catalog.count(*) FILTER (WHERE t.state = 'completed'),
                           'failed', pg_catalog.count(*) FILTER (WHERE t.state = 'failed'),
                           'pending', pg_catalog.count(*) FILTER (WHERE t.state = 'pending'),
                           'fast_forwarded', coalesce(pg_catalog.sum((t.metadata->>'fast_forwarded')::bigint), 0),
                           'last_tick', pg_catalog.max(t.metadata->>'scheduled_for'))
                  FROM chrono_forge.execution_logs t
                 WHERE t.workflow_id = run.id
                   AND pg_catalog.starts_with(t.step_name, l.step_name || '$')) END,
           CASE WHEN l.step_name LIKE 'run\_task$%' THEN
               (SELECT pg_catalog.jsonb_build_object(
                           'task_id', t.id, 'queue', t.queue, 'state', t.state,
                           'attempt', t.attempt, 'available_at', t.available_at,
                           'claimed_by', t.claimed_by, 'claimed_at', t.claimed_at,
                           'lease_until', t.lease_until, 'timeout_at', t.timeout_at,
                           'error_class', t.error_class, 'error_message', t.error_message)
                  FROM chrono_forge.tasks t
                 WHERE t.workflow_id = run.id AND t.step = pg_catalog.substr(l.step_name, 10)) END
      FROM steps l
    UNION ALL
    SELECT NULL, NULL, 'workflow errors', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', e.id, 'attempt', e.attempt, 'error_class', e.error_class,
               'error_message', e.error_message, 'at', e.created_at)
                       || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                              'error_detail', e.error_detail, 'error_hint', e.error_hint,
                              'error_context', e.error_context)) ORDER BY e.id),
           NULL, NULL
      FROM (SELECT * FROM chrono_forge.error_logs e
             WHERE e.workflow_id = run.id AND e.step_name IS NULL
               AND NOT EXISTS (SELECT 1 FROM chrono_forge.execution_logs m
                                WHERE m.workflow_id = run.id
                                  AND m.step_name = '$workflow_failure$' || e.id::text)
             ORDER BY e.id DESC LIMIT max_errors) e
    HAVING pg_catalog.count(*) > 0
    ORDER BY 1 NULLS LAST;
END
$$;

-- A run's branches: sealed or dispatching, merged or not, children
-- spawned / pending / never started / blocked (from the poller's recorded
-- state when there is one, else capped live counts; children not started
-- yet count as spawned, pending and never started; a cancelled child is
-- blocked, as failed and stalled ones are), the poll state, and an
-- overdue poller (next_poll_at more than `grace` ago on an unmerged
-- branch) flagged.
CREATE FUNCTION chrono_forge.branches(workflow text, key text,
    grace interval DEFAULT '2 minutes', cap integer DEFAULT 5000)
    RETURNS TABLE (branch text, branch_log_id bigint, sealed boolean, merged boolean,
                   merge_step text, spawned text, pending text, never_started text,
                   blocked text, last_polled_at timestamptz, next_poll_at timestamptz,
                   polls bigint, rate double precision, eta_seconds double precision,
                   poll_overdue boolean, poll jsonb)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    run chrono_forge.workflows := chrono_forge.visible_run(workflow, key);
    ts timestamptz := chrono_forge.now();
BEGIN
    RETURN QUERY
    WITH b AS (
        SELECT l.id, pg_catalog.substr(l.step_name, 8) AS name, l.state, l.metadata->'poll' AS poll
          FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = run.id AND l.step_name LIKE 'branch$%'),
    m AS (
        SELECT l.step_name, l.state,
               pg_catalog.string_to_array(pg_catalog.substr(l.step_name, 7), ',') AS names
          FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = run.id AND l.step_name LIKE 'merge$%')
    SELECT b.name, b.id, b.state = 'completed',
           coalesce(mm.state = 'completed', false), mm.step_name,
           coalesce(b.poll->>'spawned',
                    chrono_forge.capped_count((SELECT pg_catalog.count(*) FROM
                        (SELECT 1 FROM chrono_forge.workflows c WHERE c.parent_execution_log_id = b.id
                          LIMIT cap + 1) x) + u.n, cap)),
           CASE WHEN b.poll ? 'pending' AND NOT coalesce(mm.state = 'completed', false)
                THEN b.poll->>'pending'
                ELSE chrono_forge.capped_count((SELECT pg_catalog.count(*) FROM
                        (SELECT 1 FROM chrono_forge.workflows c WHERE c.parent_execution_log_id = b.id
                            AND c.state_code <> 3 LIMIT cap + 1) x) + u.n, cap) END,
           CASE WHEN b.poll ? 'never_started' AND NOT coalesce(mm.state = 'completed', false)
                THEN b.poll->>'never_started'
                ELSE chrono_forge.capped_count((SELECT pg_catalog.count(*) FROM
                        (SELECT 1 FROM chrono_forge.workflows c WHERE c.parent_execution_log_id = b.id
                            AND c.state_code = 1 AND c.started_at IS NULL LIMIT cap + 1) x) + u.n, cap) END,
           chrono_forge.capped_count((SELECT pg_catalog.count(*) FROM
                (SELECT 1 FROM chrono_forge.workflows c WHERE c.parent_execution_log_id = b.id
                    AND c.state_code IN (4, 5, 6, 7) LIMIT cap + 1) x), cap),
           (b.poll->>'last_polled_at')::timestamptz, (b.poll->>'next_poll_at')::timestamptz,
           (b.poll->>'polls')::bigint, (b.poll->>'rate')::double precision,
           (b.poll->>'eta_seconds')::double precision,
           coalesce(NOT coalesce(mm.state = 'completed', false)
               AND (b.poll->>'next_poll_at')::timestamptz < ts - grace, false),
           b.poll
      FROM b
      CROSS JOIN LATERAL (SELECT coalesce(pg_catalog.sum(s.n - s.taken), 0)::bigint AS n
                            FROM chrono_forge.spawn_batches s WHERE s.branch_log_id = b.id) u
      LEFT JOIN LATERAL (SELECT m.step_name, m.state FROM m WHERE b.name = ANY (m.names)
                          ORDER BY m.state = 'completed' DESC LIMIT 1) mm ON true
     ORDER BY b.id;
END
$$;

-- A branch's log id, by its run and name.
CREATE FUNCTION chrono_forge.branch_log(workflow text, key text, branch text) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    run chrono_forge.workflows := chrono_forge.visible_run(workflow, key);
    log_id bigint;
BEGIN
    SELECT l.id INTO log_id FROM chrono_forge.execution_logs l
     WHERE l.workflow_id = run.id AND l.step_name = 'branch$' || branch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow run (%, %) has no branch "%"', workflow, key, branch
            USING ERRCODE = 'CF008';
    END IF;
    RETURN log_id;
END
$$;

-- A branch's children, blocked (failed, stalled, cancelled) first, then
-- by id.  Keyset: pass the last row's (blocked, id) as after_blocked,
-- after_id.
CREATE FUNCTION chrono_forge.branch_children(workflow text, key text, branch text,
    state text DEFAULT 'all', after_blocked boolean DEFAULT NULL, after_id bigint DEFAULT NULL,
    page_size integer DEFAULT 50)
    RETURNS TABLE (blocked boolean, id bigint, workflow text, key text,
                   state chrono_forge.workflow_state, owner regrole, created_at timestamptz,
                   started_at timestamptz, ended_at timestamptz, locked_by text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    WITH b AS MATERIALIZED (SELECT chrono_forge.branch_log(branch_children.workflow, branch_children.key,
                                              branch_children.branch) AS log_id)
    SELECT c.code IN (4, 5, 6, 7), w.id, w.workflow, w.key, w.state, w.owner,
           w.created_at, w.started_at, w.ended_at, w.locked_by
      FROM b, pg_catalog.unnest(chrono_forge.state_codes(branch_children.state)) AS c(code)
     CROSS JOIN LATERAL (
        SELECT * FROM chrono_forge.workflows t
         WHERE t.parent_execution_log_id = b.log_id AND t.state_code = c.code
           AND (branch_children.after_id IS NULL
                OR (c.code IN (4, 5, 6, 7)) < branch_children.after_blocked
                OR ((c.code IN (4, 5, 6, 7)) = branch_children.after_blocked
                    AND t.id > branch_children.after_id))
         ORDER BY t.id LIMIT branch_children.page_size) w
     ORDER BY 1 DESC, w.id
     LIMIT chrono_forge.page_limit(branch_children.page_size)
$$;

-- A child's ancestry, nearest parent first: the branch that spawned it
-- and the run that owns that branch, up to the top-level run.
CREATE FUNCTION chrono_forge.parent_chain(workflow text, key text)
    RETURNS TABLE (depth integer, id bigint, workflow text, key text,
                   state chrono_forge.workflow_state, branch text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    WITH RECURSIVE up(depth, parent_log, id, workflow, key, state, branch) AS (
        SELECT 0, r.parent_execution_log_id, r.id, r.workflow, r.key, r.state, NULL::text
          FROM chrono_forge.visible_run(parent_chain.workflow, parent_chain.key) r
        UNION ALL
        SELECT u.depth + 1, p.parent_execution_log_id, p.id, p.workflow, p.key, p.state,
               pg_catalog.substr(l.step_name, 8)
          FROM up u
          JOIN chrono_forge.execution_logs l ON l.id = u.parent_log
          JOIN chrono_forge.workflows p ON p.id = l.workflow_id
         WHERE u.depth < 100)
    SELECT depth, id, workflow, key, state, branch FROM up WHERE depth > 0 ORDER BY depth
$$;

-- Runs parked on wait_until, continue_if or an event, oldest first, and
-- for how long.  (A fixed wait() is a timer, not shown.)
CREATE FUNCTION chrono_forge.waiting(max_rows integer DEFAULT 500)
    RETURNS TABLE (id bigint, workflow text, key text, step_name text, kind text,
                   waiting_since timestamptz, waiting_for interval, timeout_at timestamptz,
                   next_check_at timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    SELECT w.id, w.workflow, w.key, l.step_name, pg_catalog.split_part(l.step_name, '$', 1),
           l.started_at, chrono_forge.now() - l.started_at,
           (l.metadata->>'timeout_at')::timestamptz,
           (SELECT pg_catalog.min(k.due_at) FROM chrono_forge.wakeups k WHERE k.workflow_id = w.id)
      FROM chrono_forge.execution_logs l
      JOIN chrono_forge.workflows w ON w.id = l.workflow_id
     WHERE l.state = 'pending'
       AND (l.step_name LIKE 'wait\_until$%' OR l.step_name LIKE 'continue\_if$%'
            OR l.step_name LIKE 'await\_event$%')
       AND w.state IN ('idle', 'running')
     ORDER BY l.started_at, l.id
     LIMIT max_rows
$$;

-- Stranded runs: running with a lock older than stale_after (default
-- chrono_forge.reap_stale_after), oldest lock first.  (An interval
-- reaching, within a year, past the first representable timestamp means
-- "all time"; one of -1000 years or less, "after the end of time".)
CREATE FUNCTION chrono_forge.stranded(stale_after interval DEFAULT NULL, max_rows integer DEFAULT 500)
    RETURNS TABLE (id bigint, workflow text, key text, owner regrole, locked_by text,
                   locked_at timestamptz, lock_age interval)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    SELECT w.id, w.workflow, w.key, w.owner, w.locked_by, w.locked_at,
           chrono_forge.now() OPERATOR(pg_catalog.-) w.locked_at
      FROM chrono_forge.workflows w
     WHERE w.state = 'running'
       AND w.locked_at OPERATOR(pg_catalog.<) (
           SELECT CASE WHEN s.i OPERATOR(pg_catalog.>=)
                            ((chrono_forge.now() OPERATOR(pg_catalog.-) '4713-01-01 00:00:00+00 BC'::timestamptz)
                             OPERATOR(pg_catalog.-) interval '1 year')
                       THEN '-infinity'::timestamptz
                       WHEN s.i OPERATOR(pg_catalog.<=) interval '-1000 years'
                       THEN 'infinity'::timestamptz
                       ELSE chrono_forge.now() OPERATOR(pg_catalog.-) s.i END
             FROM (SELECT coalesce(stale_after, chrono_forge.reap_stale_after()) AS i) s)
     ORDER BY w.locked_at
     LIMIT max_rows
$$;

-- A task's latest ticks, summarised in C: it checks in one statement that
-- the caller sees the tasks instead of paying the logs' row-level
-- security policy on every tick.
CREATE FUNCTION chrono_forge.repeat_ticks(coordination_ids bigint[], window_ integer)
    RETURNS TABLE (coordination_id bigint, next_at timestamptz, missed bigint, failed bigint,
                   avg_late interval)
    LANGUAGE c STABLE STRICT
    AS 'MODULE_PATHNAME', 'cf_repeat_ticks';

-- Periodic-task health, one row per durably_repeat coordination of a run
-- still in flight (or of the given run): last tick, next tick, missed
-- ticks (fast-forwarded, over the last 1,000 summaries), lateness.  The
-- tasks' runs are looked up one by one (a forced nested loop: LATERAL ...
-- LIMIT 1): under row-level security the planner may not use the
-- statistics of a non-leakproof operator (LIKE on step_name), and
-- guessed badly for the join.
CREATE FUNCTION chrono_forge.periodic_health(workflow text DEFAULT NULL, key text DEFAULT NULL,
    max_rows integer DEFAULT 500, tick_window integer DEFAULT NULL)
    RETURNS SETOF chrono_forge.periodic_row
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    only_id bigint;
    ts timestamptz := chrono_forge.now();
    -- Ticks read per task: the latest 1,000 for one run, the latest 20
    -- for the list of every task.
    window_ integer;
BEGIN
    IF periodic_health.workflow IS NOT NULL OR periodic_health.key IS NOT NULL THEN
        only_id := (chrono_forge.visible_run(periodic_health.workflow, periodic_health.key)).id;
    END IF;
    window_ := coalesce(tick_window, CASE WHEN only_id IS NULL THEN 20 ELSE 1000 END);
    IF window_ < 1 THEN
        RAISE EXCEPTION 'tick_window must be at least 1' USING ERRCODE = 'CF012';
    END IF;
    -- A task's ticks are named <coordination>$<epoch seconds>: within the
    -- run they sort by time on the (workflow_id, step_name) index, so the
    -- latest ones are read backwards from it, never the whole history
    -- (repeat_ticks()).  The next tick is the pending one (the latest);
    -- missed ticks, failed ticks and lateness are counted over the window.
    -- The tasks first (coordination logs, from their partial index; in
    -- the list only those still repeating), then their runs, then the
    -- latest ticks of each: the planner is not left to guess how rare
    -- coordination logs are.
    RETURN QUERY
    WITH coord AS MATERIALIZED (
        SELECT c.id, c.workflow_id, c.step_name, c.state, c.metadata
          FROM chrono_forge.execution_logs c
         WHERE c.step_name LIKE 'durably\_repeat$%' AND c.step_name NOT LIKE 'durably\_repeat$%$%'
           AND (only_id IS NULL OR c.workflow_id = only_id)
           AND (only_id IS NOT NULL OR c.state = 'pending')),
    sel AS MATERIALIZED (
        SELECT c.*, w.workflow, w.key FROM coord c
         CROSS JOIN LATERAL (
              SELECT w.workflow, w.key FROM chrono_forge.workflows w
               WHERE w.id = c.workflow_id AND (only_id IS NOT NULL OR w.state_code IN (1, 2, 5))
               LIMIT 1) w
         ORDER BY c.workflow_id, c.id
         LIMIT periodic_health.max_rows)
    SELECT c.workflow_id, c.workflow, c.key, pg_catalog.substr(c.step_name, 16), c.state::text,
           c.metadata->>'every',
           (c.metadata->>'last_execution_at')::timestamptz,
           nx.next_at,
           CASE WHEN nx.next_at < ts THEN ts - nx.next_at ELSE interval '0' END,
           f.missed, f.failed, f.avg_late
      FROM sel c
      LEFT JOIN chrono_forge.repeat_ticks(ARRAY(SELECT s.id FROM sel s), window_) f
        ON f.coordination_id = c.id
      -- The next tick: a pending (retrying) tick's, else the one after the
      -- last tick handled, else the anchor (a tick's log is written only
      -- when it runs); none once the task is done.
     CROSS JOIN LATERAL (
          SELECT CASE WHEN c.state = 'completed' THEN NULL::timestamptz
                      ELSE coalesce(f.next_at,
                                    (c.metadata->>'last_execution_at')::timestamptz
                                        + (c.metadata->>'every')::interval,
                                    (c.metadata->>'anchor')::timestamptz) END AS next_at) nx
     ORDER BY c.workflow_id, c.id;
END
$$;

-- A closed day is summarised only once it ended more than an hour ago
-- and before every open transaction began (see outcome_days_refresh());
-- so a change needs a note only when the run ended more than an hour
-- before it.  The workflows_state_columns trigger (C) writes the note:
-- a run leaving an ended state an hour or more after it ended, or
-- entering one with an updated_at an hour or more in the past.  No update
-- a pass makes is either, and a second trigger's WHEN clause would be
-- re-read for every statement that changes a run's state.

-- Summarises the closed days in [first_day, last_day] not summarised yet
-- or noted as changed since; returns how many.  daily_outcomes() calls it
-- for the whole days of its window; it does nothing in a read-only
-- transaction (a standby), above READ COMMITTED, or while another
-- transaction is summarising.  Clamped to the days that have ended runs;
-- one refresh summarises at most 366 days, and the days it leaves are
-- counted, exactly, until a later call summarises them.
-- A day is closed once it ended an hour ago (the trigger's margin) and
-- before the oldest open transaction began: a transaction that began
-- later ended its runs after that, so they were noted or are visible
-- here.  Prepared transactions have no start time: none may be pending.
CREATE FUNCTION chrono_forge.outcome_days_refresh(first_day date, last_day date)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
DECLARE
    horizon timestamptz;
    oldest timestamptz;
    days date[];
BEGIN
    -- (Each statement below must see what committed before it: only in
    -- READ COMMITTED.)
    IF pg_catalog.current_setting('transaction_read_only')::boolean
       OR pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN 0;
    END IF;
    -- No day before the oldest end of any run has anything to summarise:
    -- the range is clamped to the data, whatever the caller asked for
    -- (one index probe per ended state).
    SELECT LEAST((SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 3 AND w.ended_at IS NOT NULL
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 4 AND w.ended_at IS NOT NULL
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 6 AND w.ended_at IS NOT NULL
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 7 AND w.ended_at IS NOT NULL
                   ORDER BY w.ended_at LIMIT 1))
      INTO oldest;
    -- A day before it that was noted has lost its runs (cleanup): its
    -- summary goes (the day is then counted, and has nothing to count)
    -- rather than being summarised anew, since the clamp never reaches it.
    -- (Under the summarising lock, as any change to the summaries.)
    IF EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c
                WHERE oldest IS NULL OR c.day < pg_catalog.timezone('UTC', oldest)::date)
       AND pg_catalog.pg_try_advisory_xact_lock(
               'chrono_forge.outcome_days_summarised'::regclass::oid::integer, 0) THEN
        DELETE FROM chrono_forge.outcome_days_summarised s
         WHERE oldest IS NULL OR s.day < pg_catalog.timezone('UTC', oldest)::date;
        DELETE FROM chrono_forge.outcome_days o
         WHERE oldest IS NULL OR o.day < pg_catalog.timezone('UTC', oldest)::date;
        DELETE FROM chrono_forge.outcome_days_changed c
         WHERE oldest IS NULL OR c.day < pg_catalog.timezone('UTC', oldest)::date;
    END IF;
    IF oldest IS NULL OR first_day IS NULL OR last_day IS NULL THEN
        RETURN 0;
    END IF;
    -- Days that may be closed; the cheap test first: nothing to do in
    -- the usual call.
    first_day := GREATEST(first_day, pg_catalog.timezone('UTC', oldest)::date);
    last_day := LEAST(last_day, pg_catalog.timezone('UTC', pg_catalog.clock_timestamp() - interval '1 hour')::date - 1);
    IF first_day > last_day THEN
        RETURN 0;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.generate_series(0, last_day - first_day) i
                    WHERE NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s
                                       WHERE s.day = first_day + i))
       AND NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c
                        WHERE c.day BETWEEN first_day AND last_day) THEN
        RETURN 0;
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock(
               'chrono_forge.outcome_days_summarised'::regclass::oid::integer, 0)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts) THEN
        RETURN 0;
    END IF;
    -- The activity snapshot is per transaction: take a fresh one.
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    -- (A transaction that wrote has an xid; without track_activities its
    -- start is not shown: take it as older than anything.)
    SELECT LEAST(pg_catalog.clock_timestamp(),
                 pg_catalog.min(coalesce(a.xact_start,
                                         CASE WHEN a.backend_xid IS NOT NULL THEN '-infinity'::timestamptz END)))
           - interval '1 hour'
      INTO horizon
      FROM pg_catalog.pg_stat_activity a
     WHERE a.pid <> pg_catalog.pg_backend_pid() AND a.datname = pg_catalog.current_database()
       AND a.backend_type <> 'autovacuum worker';
    -- At most 366 days a call, the newest first: what one call writes is
    -- bounded, and the days left are counted by daily_outcomes() until a
    -- later call summarises them.
    SELECT pg_catalog.array_agg(d.day ORDER BY d.day) INTO days
      FROM (SELECT first_day + i AS day
              FROM pg_catalog.generate_series(0, LEAST(last_day, pg_catalog.timezone('UTC', horizon)::date - 1)
                                                 - first_day) i
             WHERE NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s WHERE s.day = first_day + i)
                OR EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c WHERE c.day = first_day + i)
             ORDER BY i DESC
             LIMIT 366) d;
    IF days IS NULL THEN
        RETURN 0;
    END IF;
    -- Notes of days not summarised say nothing: drop them.
    DELETE FROM chrono_forge.outcome_days_changed c
     WHERE NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s WHERE s.day = c.day);
    -- Notes first, then the counts, each statement with a newer snapshot:
    -- a change noted after the first is seen by the second, and its note
    -- stays (the day is counted once more, never wrongly).
    DELETE FROM chrono_forge.outcome_days_changed WHERE day = ANY (days);
    DELETE FROM chrono_forge.outcome_days WHERE day = ANY (days);
    INSERT INTO chrono_forge.outcome_days (day, workflow, owner, completed, failed, cancelled)
    SELECT pg_catalog.timezone('UTC', w.ended_at)::date, w.workflow, w.owner,
           pg_catalog.count(*) FILTER (WHERE w.state_code = 3),
           pg_catalog.count(*) FILTER (WHERE w.state_code IN (4, 7)),   -- compensated: failed (0.12.0)
           pg_catalog.count(*) FILTER (WHERE w.state_code = 6)
      FROM chrono_forge.workflows w
     WHERE w.state_code IN (3, 4, 6, 7)
       AND w.ended_at >= pg_catalog.timezone('UTC', days[1]::timestamp)
       AND w.ended_at < pg_catalog.timezone('UTC', (days[pg_catalog.array_upper(days, 1)] + 1)::timestamp)
       AND pg_catalog.timezone('UTC', w.ended_at)::date = ANY (days)
     GROUP BY 1, 2, 3;
    INSERT INTO chrono_forge.outcome_days_summarised (day)
    SELECT pg_catalog.unnest(days) ON CONFLICT DO NOTHING;
    RETURN pg_catalog.cardinality(days);
END
$$;
GRANT EXECUTE ON FUNCTION chrono_forge.outcome_days_refresh(date, date) TO PUBLIC;

-- Outcomes per UTC day [00:00, 24:00) over the window (now - window_,
-- now]: runs completed, failed and cancelled (by when they ended), rates,
-- and whether the day's failure rate reached spike_rate.  Whole days come
-- from outcome_days where summarised.
CREATE FUNCTION chrono_forge.daily_outcomes(window_ interval DEFAULT '7 days',
    workflow text DEFAULT NULL, spike_rate double precision DEFAULT 0.10)
    RETURNS TABLE (day date, completed bigint, failed bigint, cancelled bigint,
                   completion_rate double precision, failure_rate double precision,
                   spike boolean)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    until_ timestamptz := chrono_forge.now();
    since timestamptz;
    oldest timestamptz;
    first_whole date;
    last_whole date;
BEGIN
    daily_outcomes.workflow := chrono_forge.canonical_workflow(daily_outcomes.workflow);
    IF window_ IS NULL OR window_ OPERATOR(pg_catalog.<=) interval '0' THEN
        RAISE EXCEPTION 'window_ must be a positive interval' USING ERRCODE = 'CF012';
    END IF;
    -- A window reaching (within a year) past the first representable
    -- timestamp is all time ('300000 years' is not an error).
    IF window_ OPERATOR(pg_catalog.>=)
       ((until_ OPERATOR(pg_catalog.-) '4713-01-01 00:00:00+00 BC'::timestamptz)
        OPERATOR(pg_catalog.-) interval '1 year') THEN
        since := '-infinity';
    ELSE
        since := until_ OPERATOR(pg_catalog.-) window_;
    END IF;
    -- The window then starts no earlier than the oldest end of a run the
    -- caller sees in it: no day before has anything to count, so a window
    -- far wider than the data costs what the data costs.  (One index
    -- probe per ended state, from the window's start: the first visible
    -- entry ends it.)
    SELECT LEAST((SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 3 AND w.ended_at OPERATOR(pg_catalog.>) since
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 4 AND w.ended_at OPERATOR(pg_catalog.>) since
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 6 AND w.ended_at OPERATOR(pg_catalog.>) since
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 7 AND w.ended_at OPERATOR(pg_catalog.>) since
                   ORDER BY w.ended_at LIMIT 1))
      INTO oldest;
    IF oldest IS NULL OR oldest OPERATOR(pg_catalog.>) until_ THEN
        -- (Nothing to count; the refresh still drops the summaries of
        -- days whose runs are gone.)
        PERFORM chrono_forge.outcome_days_refresh(NULL, NULL);
        RETURN;
    END IF;
    -- (From the start of the oldest end's day, so that the day is whole
    -- and can be read from its summary.)
    since := GREATEST(since, pg_catalog.timezone('UTC', pg_catalog.timezone('UTC', oldest)::date::timestamp)
                             OPERATOR(pg_catalog.-) interval '1 microsecond');
    -- The window's whole days: (since, until_] holds all of them.
    first_whole := pg_catalog.timezone('UTC', since)::date + 1;
    last_whole := pg_catalog.timezone('UTC', until_)::date - 1;
    PERFORM chrono_forge.outcome_days_refresh(first_whole, last_whole);
    -- One statement (one snapshot): a whole day summarised and without a
    -- change the caller can see adds up its summary rows; any other day
    -- is one index-only range count of (state_code, ended_at).  (CASE
    -- runs only the subquery it picks; a lateral qual would be tested on
    -- every row of the other; OFFSET 0 keeps it from being copied into
    -- every reference to its result.  The days' bounds are computed
    -- apart (OFFSET 0 again) so that they reach the scans as values:
    -- under row-level security a condition computed with a function that
    -- is not leakproof, like timezone(), cannot be an index condition.)
    RETURN QUERY
    SELECT g.day, n.completed, n.failed, n.cancelled,
           n.completed::double precision / NULLIF(n.completed + n.failed, 0),
           n.failed::double precision / NULLIF(n.completed + n.failed, 0),
           coalesce(n.failed::double precision / NULLIF(n.completed + n.failed, 0) >= spike_rate, false)
      FROM (SELECT d.day, pg_catalog.timezone('UTC', d.day::timestamp) AS lo,
                   pg_catalog.timezone('UTC', (d.day + 1)::timestamp) AS hi,
                   d.day BETWEEN first_whole AND last_whole
                   AND EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s WHERE s.day = d.day)
                   AND NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c WHERE c.day = d.day)
                       AS summarised
              FROM (SELECT pg_catalog.timezone('UTC', since)::date + i AS day
                      FROM pg_catalog.generate_series(0, pg_catalog.timezone('UTC', until_)::date
                                                         - pg_catalog.timezone('UTC', since)::date) i) d
            OFFSET 0) g
     CROSS JOIN LATERAL (
          SELECT CASE WHEN g.summarised THEN
                     (SELECT ARRAY[coalesce(pg_catalog.sum(o.completed), 0), coalesce(pg_catalog.sum(o.failed), 0),
                                   coalesce(pg_catalog.sum(o.cancelled), 0)]::bigint[]
                        FROM chrono_forge.outcome_days o
                       WHERE o.day = g.day
                         AND (daily_outcomes.workflow IS NULL OR o.workflow = daily_outcomes.workflow))
                 ELSE
                     (SELECT ARRAY[pg_catalog.count(*) FILTER (WHERE w.state_code = 3),
                                   pg_catalog.count(*) FILTER (WHERE w.state_code IN (4, 7)),
                                   pg_catalog.count(*) FILTER (WHERE w.state_code = 6)]
                        FROM chrono_forge.workflows w
                       WHERE w.state_code IN (3, 4, 6, 7)
                         AND w.ended_at >= g.lo AND w.ended_at < g.hi
                         AND w.ended_at > since AND w.ended_at <= until_
                         AND (daily_outcomes.workflow IS NULL OR w.workflow = daily_outcomes.workflow))
                 END AS c
          OFFSET 0) x
     CROSS JOIN LATERAL (SELECT x.c[1] AS completed, x.c[2] AS failed, x.c[3] AS cancelled) n
     WHERE n.completed + n.failed + n.cancelled > 0
     ORDER BY g.day;
END
$$;

-- The most frequent error classes over a window, among its latest
-- `sample` errors.
CREATE FUNCTION chrono_forge.top_errors(window_ interval DEFAULT '7 days',
    workflow text DEFAULT NULL, max_rows integer DEFAULT 8, sample integer DEFAULT 2000)
    RETURNS TABLE (error_class text, errors bigint, runs bigint, last_seen timestamptz,
                   example_message text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    SELECT e.error_class, pg_catalog.count(*), pg_catalog.count(DISTINCT e.workflow_id),
           pg_catalog.max(e.created_at),
           (pg_catalog.array_agg(e.error_message ORDER BY e.id DESC))[1]
      FROM (SELECT e.* FROM chrono_forge.error_logs e
             WHERE e.created_at OPERATOR(pg_catalog.>) (
                   SELECT CASE WHEN window_ OPERATOR(pg_catalog.>=)
                                    ((chrono_forge.now() OPERATOR(pg_catalog.-) '4713-01-01 00:00:00+00 BC'::timestamptz)
                                     OPERATOR(pg_catalog.-) interval '1 year')
                               THEN '-infinity'::timestamptz
                               WHEN window_ OPERATOR(pg_catalog.<=) interval '-1000 years'
                               THEN 'infinity'::timestamptz
                               ELSE chrono_forge.now() OPERATOR(pg_catalog.-) window_ END)
               AND (top_errors.workflow IS NULL OR EXISTS (
                    SELECT 1 FROM chrono_forge.workflows w
                     WHERE w.id = e.workflow_id AND w.workflow = (SELECT chrono_forge.canonical_workflow(top_errors.workflow))))
             ORDER BY e.created_at DESC LIMIT sample) e
     GROUP BY e.error_class
     ORDER BY 2 DESC, 1
     LIMIT max_rows
$$;

-- Views over the functions (row-level security applies to the caller).
CREATE VIEW chrono_forge.overview WITH (security_invoker = true) AS
    SELECT * FROM chrono_forge.overview(1000);
CREATE VIEW chrono_forge.stranded_runs WITH (security_invoker = true) AS
    SELECT * FROM chrono_forge.stranded(NULL, 500);
CREATE VIEW chrono_forge.waiting_runs WITH (security_invoker = true) AS
    SELECT * FROM chrono_forge.waiting(500);
CREATE VIEW chrono_forge.periodic_tasks WITH (security_invoker = true) AS
    SELECT * FROM chrono_forge.periodic_health(NULL, NULL, 500, NULL);
GRANT SELECT ON chrono_forge.overview, chrono_forge.stranded_runs,
    chrono_forge.waiting_runs, chrono_forge.periodic_tasks TO PUBLIC;

-- ---------------------------------------------------------------------
-- Actions (C: they act for the caller, checked against each run's owner;
-- chrono_forge_admin members act on any run).
-- ---------------------------------------------------------------------

CREATE FUNCTION chrono_forge.cancel(workflow text, key text, reason text DEFAULT NULL,
    with_children boolean DEFAULT false) RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_cancel';

-- set_deadline(workflow, key, deadline) (0.11.0): move (NULL: remove)
-- the deadline of the caller's run not yet completed or cancelled.  True
-- if it was set; false for a completed or cancelled run.  A deadline
-- already past ends the run at the launcher's next look.
CREATE FUNCTION chrono_forge.set_deadline(workflow text, key text, deadline timestamptz)
    RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_set_deadline';

-- set_concurrency_limit(max_running, concurrency_key | workflow,
-- max_starts, per) (0.11.0): at most max_running of the caller's runs of
-- that concurrency key, or of that workflow, in flight at once, and at
-- most max_starts of them admitted in any window of length per (NULL: no
-- such limit); runs over them wait, in the order they were started,
-- without a worker.  Returns how many waiting runs it admitted (a raised
-- or removed limit).
CREATE FUNCTION chrono_forge.set_concurrency_limit(max_running integer,
    concurrency_key text DEFAULT NULL, workflow text DEFAULT NULL,
    max_starts integer DEFAULT NULL, per interval DEFAULT NULL) RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_set_concurrency_limit';

CREATE FUNCTION chrono_forge.reap(workflow text, key text) RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_reap';

CREATE FUNCTION chrono_forge.force_unlock(workflow text, key text) RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_force_unlock';

CREATE FUNCTION chrono_forge.retry_blocked_children(workflow text, key text, branch text)
    RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_retry_blocked_children';

-- =====================================================================
-- External tasks: steps worked by processes outside the database
-- =====================================================================

-- ---------------------------------------------------------------------
-- tasks: steps worked outside the database.  run_task() writes one row
-- per (run, step) and parks the run; a worker that speaks SQL claims it
-- (claim_tasks(): a lease and a claim token), heartbeats, and completes
-- or fails it; the run's next pass records the outcome on the step.  The
-- row is re-offered in place (a retry, an expired lease, retry()), so a
-- step has one task whatever its attempts.  owner is the run's owner:
-- only that role and its members may see or work the task.  Written by
-- the engine only.
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.tasks (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id   bigint NOT NULL REFERENCES chrono_forge.workflows ON DELETE CASCADE,
    step          text NOT NULL,          -- the step's name (the task's name), without run_task$
    queue         text NOT NULL,
    args          jsonb,
    state         text NOT NULL,
    attempt       integer NOT NULL,       -- 1-based; the attempt offered or in flight
    available_at  timestamptz NOT NULL,   -- due from (a retry's backoff ends)
    lease         interval NOT NULL,      -- a claim's length
    claim_token   uuid,                   -- the current (or last) claim's; fences stale workers
    claimed_by    text,                   -- the worker's name, as it gave it
    claimed_at    timestamptz,
    lease_until   timestamptz,            -- the claim's lease ends (heartbeats move it)
    timeout_at    timestamptz,            -- the step's overall timeout
    result        jsonb,
    error_class   text,                   -- the last failure's
    error_message text,
    retryable     boolean,
    owner         regrole NOT NULL,       -- the run's owner
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    completed_at  timestamptz,
    CONSTRAINT tasks_workflow_id_step_key UNIQUE (workflow_id, step),
    CONSTRAINT tasks_state_check
        CHECK (state IN ('pending', 'claimed', 'completed', 'failed', 'cancelled'))
);
-- The claim: due pending tasks of a queue, oldest first.
CREATE INDEX tasks_pending_idx ON chrono_forge.tasks (queue, available_at, id)
    WHERE state = 'pending';
-- In flight, by when their leases end (task_queues).
CREATE INDEX tasks_claimed_idx ON chrono_forge.tasks (queue, lease_until)
    WHERE state = 'claimed';
ALTER TABLE chrono_forge.tasks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tasks_owner ON chrono_forge.tasks FOR SELECT
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));
CREATE POLICY tasks_admin ON chrono_forge.tasks FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.tasks TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.tasks', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.tasks_id_seq', '');
-- The concurrency gates (0.11.0), dumped like the runs they count.
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_gates', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_gates_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_waiting', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_waiting_seq_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_releases', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_releases_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_admissions', '');

-- run_task: the step primitive (two overloads, as durably_execute).  A
-- third positional jsonb argument would match both (an error, never a
-- silent choice): name it (args => ..., result => ...).
-- compensate and compensate_policy since 0.12.0: the undo step the
-- completed task registers (its function gets the task's args and
-- result), as durably_execute's.
CREATE PROCEDURE chrono_forge.run_task(step text, queue text, args jsonb DEFAULT '{}',
    retry_policy jsonb DEFAULT NULL, timeout interval DEFAULT NULL,
    lease interval DEFAULT '30 seconds',
    compensate text DEFAULT NULL, compensate_policy jsonb DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_run_task';

CREATE PROCEDURE chrono_forge.run_task(step text, queue text, INOUT result jsonb,
    args jsonb DEFAULT '{}', retry_policy jsonb DEFAULT NULL,
    timeout interval DEFAULT NULL, lease interval DEFAULT '30 seconds',
    compensate text DEFAULT NULL, compensate_policy jsonb DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_run_task';

-- The worker protocol: each call one short statement, as the caller's
-- identity decides (the run's owner or a member of it).
CREATE FUNCTION chrono_forge.claim_tasks(queues text[], max_tasks integer DEFAULT 1,
    worker text DEFAULT NULL)
    RETURNS TABLE (task_id bigint, claim_token uuid, queue text, step text, workflow text,
                   key text, args jsonb, attempt integer, lease_until timestamptz,
                   timeout_at timestamptz, idempotency_key text)
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_claim_tasks';

CREATE FUNCTION chrono_forge.heartbeat_task(task_id bigint, claim_token uuid,
    extend interval DEFAULT NULL)
    RETURNS text
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_heartbeat_task';

CREATE FUNCTION chrono_forge.complete_task(task_id bigint, claim_token uuid,
    result jsonb DEFAULT NULL)
    RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_complete_task';

CREATE FUNCTION chrono_forge.fail_task(task_id bigint, claim_token uuid, error_class text,
    message text, retryable boolean DEFAULT true)
    RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_fail_task';

-- Queues as the caller sees them (its own and its roles' tasks; admins
-- all): due now, the oldest due, waiting for a backoff, in flight, leases
-- ending within 10 seconds, failed attempts in the last hour.  No args
-- or results.
CREATE VIEW chrono_forge.task_queues WITH (security_invoker = true) AS
WITH open AS (
    SELECT t.queue,
           pg_catalog.count(*) FILTER (WHERE t.state = 'pending'
                                         AND t.available_at <= chrono_forge.now()) AS due,
           pg_catalog.min(t.available_at) FILTER (WHERE t.state = 'pending'
                                         AND t.available_at <= chrono_forge.now()) AS oldest_due_at,
           pg_catalog.count(*) FILTER (WHERE t.state = 'pending'
                                         AND t.available_at > chrono_forge.now()) AS backing_off,
           pg_catalog.count(*) FILTER (WHERE t.state = 'claimed') AS in_flight,
           pg_catalog.count(*) FILTER (WHERE t.state = 'claimed'
                                         AND t.lease_until <= chrono_forge.now() + interval '10 seconds')
               AS leases_expiring
      FROM chrono_forge.tasks t
     WHERE t.state IN ('pending', 'claimed')
     GROUP BY t.queue),
failures AS (
    SELECT t.queue, pg_catalog.count(*) AS failed_last_hour
      FROM chrono_forge.error_logs e
      JOIN chrono_forge.tasks t
        ON t.workflow_id = e.workflow_id AND t.step = pg_catalog.substr(e.step_name, 10)
     WHERE e.created_at > chrono_forge.now() - interval '1 hour'
       AND e.step_name LIKE 'run\_task$%'
     GROUP BY t.queue)
SELECT coalesce(o.queue, f.queue) AS queue,
       coalesce(o.due, 0) AS due, o.oldest_due_at,
       coalesce(o.backing_off, 0) AS backing_off,
       coalesce(o.in_flight, 0) AS in_flight,
       coalesce(o.leases_expiring, 0) AS leases_expiring,
       coalesce(f.failed_last_hour, 0) AS failed_last_hour
  FROM open o FULL JOIN failures f ON f.queue = o.queue;
GRANT SELECT ON chrono_forge.task_queues TO PUBLIC;


-- (end of section: tasks)

-- =====================================================================
-- Waiting for a run from a client
-- =====================================================================

-- wait_for_run(): returns when the caller's run (found as the other run
-- functions find it) is completed, failed, cancelled or stalled, or when
-- timeout passes (then as it is; NULL: no timeout).  Blocks on its latch,
-- set by the commit that ends the run; the last error only for a failed
-- or stalled run; the result (set_result(), 0.10.0) only for a completed
-- one.
CREATE FUNCTION chrono_forge.wait_for_run(workflow text, key text, timeout interval DEFAULT NULL)
    RETURNS TABLE (state text, context jsonb, error_class text, error_message text, result jsonb)
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_wait_for_run';

-- Sessions blocked in wait_for_run() now (the shared registry's count).
CREATE FUNCTION chrono_forge.run_waiters() RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_run_waiters';
REVOKE ALL ON FUNCTION chrono_forge.run_waiters() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION chrono_forge.run_waiters() TO chrono_forge_admin;

-- (end of section: wait for run)

-- =====================================================================
-- The dashboard's reads (issue 18)
-- =====================================================================

-- runs() at 1,000,000 runs: the per-state scans read each state's
-- (state_code, id) index backwards from (state, before_id) (a range and
-- a row comparison, not state_code = s.code: with an equality the planner
-- took the state as constant, walked the primary key and filtered by
-- state, reading every newer run of other states to find an old idle
-- one: 0.6 s); a created range reads its range (BRIN); a key prefix walks
-- the blocks of the key-prefix index from the newest (0.9.0: before, a
-- prefix of more than 10,000 runs, all old, walked every newer run:
-- 0.12-0.25 s at 100,000).  (issue 18)
CREATE OR REPLACE FUNCTION chrono_forge.runs(
    state text DEFAULT NULL, workflow text DEFAULT NULL, key_prefix text DEFAULT NULL,
    created_from timestamptz DEFAULT NULL, created_to timestamptz DEFAULT NULL,
    include_children boolean DEFAULT false,
    before_id bigint DEFAULT NULL, page_size integer DEFAULT 50)
    RETURNS SETOF chrono_forge.run_row
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    codes smallint[] := chrono_forge.state_codes(runs.state);
    lim integer := chrono_forge.page_limit(runs.page_size);
    ts timestamptz := chrono_forge.now();
    stale interval := chrono_forge.reap_stale_after();
    top bigint := 9223372036854775807;
BEGIN
    runs.workflow := chrono_forge.canonical_workflow(runs.workflow);
    IF runs.created_from IS NOT NULL OR runs.created_to IS NOT NULL THEN
        -- A created range: read the range (BRIN) once, for every state,
        -- and keep the newest rows; walking each state's runs from the
        -- newest would skip everything created after a range in the past.
        -- (state_code + 0 and id + 0 keep the planner on the BRIN range.)
        RETURN QUERY
        SELECT t.id, t.workflow, t.key, t.state, t.owner, t.created_at, t.started_at, t.ended_at,
               CASE WHEN t.state = 'running' THEN ts - t.started_at
                    WHEN t.state_code IN (3, 4, 5, 6, 7) THEN
                         coalesce(t.ended_at, t.updated_at) - t.started_at END,
               t.locked_by,
               t.state = 'running' AND t.locked_at < ts - stale,
               t.parent_execution_log_id
          FROM chrono_forge.workflows t
         WHERE t.state_code + 0 = ANY (codes)
           AND (runs.before_id IS NULL OR t.id + 0 < runs.before_id)
           AND (runs.workflow IS NULL OR t.workflow = runs.workflow)
           AND (runs.key_prefix IS NULL OR pg_catalog.starts_with(t.key, runs.key_prefix))
           AND (runs.created_from IS NULL OR t.created_at >= runs.created_from)
           AND (runs.created_to IS NULL OR t.created_at < runs.created_to)
           AND (runs.include_children OR t.parent_execution_log_id IS NULL)
         ORDER BY t.id + 0 DESC
         LIMIT lim;
    ELSIF runs.key_prefix IS NOT NULL THEN
        -- A key prefix: the key-prefix index's blocks from the newest
        -- (the block of before_id, or of the newest id issued), in each
        -- only the keys with the prefix (starts_with is leakproof: an
        -- index condition under row-level security), the page's ids; then
        -- those runs.  (id + 0 keeps the planner off the primary key's
        -- order.)
        RETURN QUERY
        SELECT t.id, t.workflow, t.key, t.state, t.owner, t.created_at, t.started_at, t.ended_at,
               CASE WHEN t.state = 'running' THEN ts - t.started_at
                    WHEN t.state_code IN (3, 4, 5, 6, 7) THEN
                         coalesce(t.ended_at, t.updated_at) - t.started_at END,
               t.locked_by,
               t.state = 'running' AND t.locked_at < ts - stale,
               t.parent_execution_log_id
          FROM (SELECT p.id
                  FROM pg_catalog.generate_series(
                           chrono_forge.run_bucket(coalesce(runs.before_id - 1, chrono_forge.newest_run_id())),
                           chrono_forge.first_run_bucket(), -1) AS b(bucket)
                 CROSS JOIN LATERAL (
                    SELECT k.id FROM chrono_forge.workflows k
                     WHERE chrono_forge.run_bucket(k.id) = b.bucket
                       AND pg_catalog.starts_with(k.key, runs.key_prefix)
                       AND k.state_code = ANY (codes)
                       AND (runs.before_id IS NULL OR k.id + 0 < runs.before_id)
                       AND (runs.workflow IS NULL OR k.workflow = runs.workflow)
                       AND (runs.include_children OR k.parent_execution_log_id IS NULL)
                     ORDER BY k.id + 0 DESC LIMIT lim) p
                 LIMIT lim) page
          JOIN chrono_forge.workflows t ON t.id = page.id
         ORDER BY t.id DESC;
    ELSE
        -- One ordered index range per state, merged: never more than
        -- page_size rows read per state (plus what the filters skip).
        RETURN QUERY
        SELECT w.id, w.workflow, w.key, w.state, w.owner, w.created_at, w.started_at, w.ended_at,
               CASE WHEN w.state = 'running' THEN ts - w.started_at
                    WHEN w.state_code IN (3, 4, 5, 6, 7) THEN
                         coalesce(w.ended_at, w.updated_at) - w.started_at END,
               w.locked_by,
               w.state = 'running' AND w.locked_at < ts - stale,
               w.parent_execution_log_id
          FROM pg_catalog.unnest(codes) AS s(code)
         CROSS JOIN LATERAL (
            SELECT * FROM chrono_forge.workflows t
             WHERE t.state_code >= s.code
               AND (t.state_code, t.id) < (s.code, coalesce(runs.before_id, top))
               AND (runs.workflow IS NULL OR t.workflow = runs.workflow)
               AND (runs.include_children OR t.parent_execution_log_id IS NULL)
             ORDER BY t.state_code DESC, t.id DESC LIMIT lim) w
         ORDER BY w.id DESC
         LIMIT lim;
    END IF;
END
$$;

-- merge_polls' policy as an EXISTS per row, like the other tables': as
-- "workflow_id IN (SELECT id FROM workflows)" a reader's count of parked
-- merges hashed every run it may see (0.9 s at 1,000,000 runs).  Same rows.
ALTER POLICY merge_polls_owner ON chrono_forge.merge_polls
    USING (EXISTS (SELECT 1 FROM chrono_forge.workflows w
                    WHERE w.id OPERATOR(pg_catalog.=) merge_polls.workflow_id));

-- (end of section: dashboard)

-- =====================================================================
-- Engine (issue 17's throughput)
-- =====================================================================

-- (end of section: engine)

-- =====================================================================
-- Results (issue 19): a run's result, its children's results
-- =====================================================================

-- set_result(): the run's result, kept with its completion (the result of
-- its $workflow_completion$ log; NULL: none).  Called from the body, as
-- every primitive: the pass that completes the run replays the body, so
-- it calls set_result() again on its way.  At most 16 KB as JSON (CF028).
CREATE PROCEDURE chrono_forge.set_result(result jsonb)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_set_result';

-- merge_branches with results: as merge_branches, and hands back the
-- results of the branches' completed children, {branch: {child: result}},
-- a child named by its key after "$<run id>$<run key>$<branch>$".  At
-- most 1,000 children (CF028; child_results() pages through more).  The
-- results come first: an INOUT parameter second would make every call of
-- the other merge_branches that gives its intervals by position ambiguous.
-- The results are kept on the merge step's log, so a replay hands back
-- the same ones.
CREATE PROCEDURE chrono_forge.merge_branches(INOUT results jsonb, names text[],
    min_interval interval DEFAULT '5 seconds', max_interval interval DEFAULT '5 minutes',
    on_child_failure text DEFAULT 'wait', quorum integer DEFAULT NULL,
    timeout interval DEFAULT NULL, on_timeout text DEFAULT 'stall')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_merge_branches';

-- await_child(): the parent waits for one child of a branch (named as
-- merge_branches names it) and receives its result; a child that failed,
-- stalled or was cancelled fails the parent (CF025).  Polls the child
-- every check_interval; past the timeout the run stalls (CF010).
CREATE PROCEDURE chrono_forge.await_child(branch text, child text, INOUT result jsonb,
    timeout interval DEFAULT NULL, check_interval interval DEFAULT '1 second')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_await_child';

-- The current pass's branch of that name: its log and its children's key
-- prefix (child_results()).  CF013 outside a pass, CF008 for a branch the
-- run has not opened.
CREATE FUNCTION chrono_forge.pass_branch(branch text, OUT log_id bigint, OUT key_prefix text)
    LANGUAGE c STABLE
    AS 'MODULE_PATHNAME', 'cf_pass_branch';

-- child_results(): a page of the current run's completed children of a
-- branch, by run id (pass the last id seen as after_id), with each
-- child's name (as merge_branches names it) and result.  From the body or
-- a step of the parent.  Index ranges on workflows_children_idx (3:
-- completed) and the completion logs' key.
CREATE FUNCTION chrono_forge.child_results(branch text, after_id bigint DEFAULT 0,
    page_size integer DEFAULT 1000)
    RETURNS TABLE (id bigint, child text, result jsonb)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
#variable_conflict use_column
DECLARE
    b record := chrono_forge.pass_branch(child_results.branch);
    lim integer := chrono_forge.page_limit(child_results.page_size);
BEGIN
    -- PL/pgSQL, for its cached plan: a SQL function's query was planned
    -- on every page.
    RETURN QUERY
    SELECT w.id,
           CASE WHEN pg_catalog.starts_with(w.key, b.key_prefix)
                THEN pg_catalog.substr(w.key, pg_catalog.length(b.key_prefix) + 1) ELSE w.key END,
           l.result
      FROM chrono_forge.workflows w
      LEFT JOIN chrono_forge.execution_logs l
        ON l.workflow_id = w.id AND l.step_name = '$workflow_completion$'
     WHERE w.parent_execution_log_id = b.log_id AND w.state_code = 3
       AND w.id > coalesce(child_results.after_id, 0)
     ORDER BY w.id
     LIMIT lim;
END
$$;

-- (end of section: results)

-- =====================================================================
-- Versioning (issue 19): a changed procedure keeps old runs on the old path
-- =====================================================================

-- patched(name): true for a run that reaches this point for the first
-- time at the end of its history, false for a run whose earlier passes
-- went past it (before the patch existed); recorded as the step
-- patched$<name> at the first call, so that the run's replays agree.
-- From the body only (CF013 in a step or an EXCEPTION block).
CREATE FUNCTION chrono_forge.patched(name text) RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_patched';

-- A workflow procedure's definition hash now (a hash of its source); NULL
-- if there is no such procedure.
CREATE FUNCTION chrono_forge.definition_hash(procedure text) RETURNS bigint
    LANGUAGE c STABLE
    AS 'MODULE_PATHNAME', 'cf_definition_hash_sql';

-- Runs not ended (idle, running, stalled, or failed: retry() replays them)
-- whose procedure's source changed since they started, oldest first: the
-- runs a change can affect, and where patched() matters.
CREATE FUNCTION chrono_forge.changed_definitions(max_rows integer DEFAULT 500)
    RETURNS TABLE (id bigint, workflow text, key text, state chrono_forge.workflow_state,
                   owner regrole, created_at timestamptz, started_hash bigint, current_hash bigint)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    SELECT w.id, w.workflow, w.key, w.state, w.owner, w.created_at, w.definition_hash, h.current
      FROM chrono_forge.workflows w
     CROSS JOIN LATERAL (SELECT chrono_forge.definition_hash(w.procedure) AS current) h
     WHERE w.state_code IN (1, 2, 4, 5) AND w.definition_hash IS NOT NULL
       AND w.definition_hash IS DISTINCT FROM h.current
     ORDER BY w.id
     LIMIT max_rows
$$;
CREATE VIEW chrono_forge.changed_definition_runs WITH (security_invoker = true) AS
    SELECT * FROM chrono_forge.changed_definitions(500);
GRANT SELECT ON chrono_forge.changed_definition_runs TO PUBLIC;

-- (end of section: versioning)

-- =====================================================================
-- Tell the launcher (and the DBA) about this database.
-- =====================================================================

CREATE FUNCTION chrono_forge.notify_launcher() RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_notify_launcher';
REVOKE ALL ON FUNCTION chrono_forge.notify_launcher() FROM PUBLIC;

SELECT chrono_forge.notify_launcher();

-- =====================================================================
-- Compensation (0.12.0)
-- =====================================================================

-- compensate(reason): inside a workflow, undo what the run did: the undo
-- steps its completed steps registered (durably_execute(...,
-- compensate => f)) run newest first, each a durable step of its own, and
-- the run ends compensated.  A run with undo steps registered also
-- compensates when it fails or is cancelled.
CREATE PROCEDURE chrono_forge.compensate(reason text DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_compensate';

-- run_compensation(args): the body of a compensating run's passes, which
-- the engine calls in place of the workflow procedure (as the run's
-- owner, like the body).  Refused anywhere else.
CREATE PROCEDURE chrono_forge.run_compensation(args jsonb)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_run_compensation';

-- =====================================================================
-- Scale-out on Citus (0.14.0).  Each node of a Citus cluster runs its own
-- chrono_forge (tables, launcher, workers); distribute(), on the
-- coordinator, makes the per-run calls Citus distributed functions keyed
-- by the run's key, so that each call runs on the node owning the key
-- (citus.c refuses it on any other node: CF030).  Nothing here needs
-- Citus until it is called.
-- =====================================================================

-- What needs Citus calls this first: CF030 where Citus is not installed
-- in this database (or, with distributed, distribute() has not run),
-- instead of Citus's functions missing.
CREATE FUNCTION chrono_forge.require_citus(caller text, distributed boolean) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION '% needs Citus in this database', caller
            USING ERRCODE = 'CF030', HINT = 'CREATE EXTENSION citus on every node, then add the nodes.';
    END IF;
    IF distributed AND pg_catalog.to_regclass('chrono_forge_routing.keys') IS NULL THEN
        RAISE EXCEPTION '% needs chrono_forge.distribute() first', caller
            USING ERRCODE = 'CF030', HINT = 'A superuser runs it once, on the coordinator.';
    END IF;
END
$$;

-- Task calls for any node (0.14.0): the task worker's protocol through
-- one connection to any node of a Citus cluster.  cluster_claim_tasks()
-- claims on every node (each node's claim_tasks(), as the caller, up to
-- max_tasks from each; a node that cannot answer is passed over: its
-- tasks wait); the *_routed_task() calls take the task's run key
-- (claim_tasks() returns it) as their second argument, so that
-- distribute() routes each to the task's node, where it is the plain call.
CREATE FUNCTION chrono_forge.cluster_claim_tasks(queues text[], max_tasks integer DEFAULT 1,
    worker text DEFAULT NULL)
    RETURNS TABLE (node_group integer, task_id bigint, claim_token uuid, queue text, step text,
                   workflow text, key text, args jsonb, attempt integer, lease_until timestamptz,
                   timeout_at timestamptz, idempotency_key text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM chrono_forge.require_citus('chrono_forge.cluster_claim_tasks()', true);
    RETURN QUERY
    SELECT n.groupid, t.task_id, t.claim_token, t.queue, t.step, t.workflow, t.key, t.args,
           t.attempt, t.lease_until, t.timeout_at, t.idempotency_key
      FROM pg_catalog.run_command_on_all_nodes(pg_catalog.format(
               'SELECT COALESCE(pg_catalog.json_agg(t), ''[]'') FROM chrono_forge.claim_tasks(%L::text[], %s, %L) t',
               cluster_claim_tasks.queues, cluster_claim_tasks.max_tasks, cluster_claim_tasks.worker)) r
      JOIN pg_catalog.pg_dist_node n ON n.nodeid OPERATOR(pg_catalog.=) r.nodeid
     CROSS JOIN LATERAL pg_catalog.json_to_recordset(CASE WHEN r.success THEN r.result::json ELSE '[]' END)
           AS t(task_id bigint, claim_token uuid, queue text, step text, workflow text, key text,
                args jsonb, attempt integer, lease_until timestamptz, timeout_at timestamptz,
                idempotency_key text)
     ORDER BY n.groupid, t.task_id;
END
$$;
GRANT EXECUTE ON FUNCTION chrono_forge.cluster_claim_tasks(text[], integer, text) TO PUBLIC;

CREATE FUNCTION chrono_forge.heartbeat_routed_task(task_id bigint, key text, claim_token uuid,
    extend interval DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN chrono_forge.heartbeat_task(task_id, claim_token, extend);
END
$$;

CREATE FUNCTION chrono_forge.complete_routed_task(task_id bigint, key text, claim_token uuid,
    result jsonb DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN chrono_forge.complete_task(task_id, claim_token, result);
END
$$;

CREATE FUNCTION chrono_forge.fail_routed_task(task_id bigint, key text, claim_token uuid,
    error_class text, message text, retryable boolean DEFAULT true) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN chrono_forge.fail_task(task_id, claim_token, error_class, message, retryable);
END
$$;

-- The per-run calls distribute() delegates: each takes the run's key as
-- its second argument.
CREATE FUNCTION chrono_forge.routed_functions() RETURNS regprocedure[]
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
SELECT ARRAY['chrono_forge.start(text,text,jsonb,jsonb)',
             'chrono_forge.wake(text,text)',
             'chrono_forge.retry(text,text)',
             'chrono_forge.send_event(text,text,text,jsonb)',
             'chrono_forge.cancel(text,text,text,boolean)',
             'chrono_forge.set_deadline(text,text,timestamptz)',
             'chrono_forge.reap(text,text)',
             'chrono_forge.force_unlock(text,text)',
             'chrono_forge.retry_blocked_children(text,text,text)',
             'chrono_forge.wait_for_run(text,text,interval)',
             'chrono_forge.heartbeat_routed_task(bigint,text,uuid,interval)',
             'chrono_forge.complete_routed_task(bigint,text,uuid,jsonb)',
             'chrono_forge.fail_routed_task(bigint,text,uuid,text,text,boolean)']::regprocedure[]
$$;

-- This node's run and task ids from its own range (Citus group g: from
-- g * 2^48), so that ids are unique across the cluster and name their
-- node.  Never moves a sequence back.  Returns the range's base.
CREATE FUNCTION chrono_forge.claim_node_id_range() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    base bigint;
    seq regclass;
BEGIN
    PERFORM chrono_forge.require_citus('chrono_forge.claim_node_id_range()', false);
    SELECT l.groupid::bigint OPERATOR(pg_catalog.<<) 48 INTO base FROM pg_catalog.pg_dist_local_group l;
    FOREACH seq IN ARRAY ARRAY[pg_catalog.pg_get_serial_sequence('chrono_forge.workflows', 'id'),
                               pg_catalog.pg_get_serial_sequence('chrono_forge.tasks', 'id')]::regclass[] LOOP
        IF COALESCE(pg_catalog.pg_sequence_last_value(seq), 0) OPERATOR(pg_catalog.<) base THEN
            PERFORM pg_catalog.setval(seq, base OPERATOR(pg_catalog.+) 1, false);
        END IF;
    END LOOP;
    RETURN base;
END
$$;
REVOKE ALL ON FUNCTION chrono_forge.claim_node_id_range() FROM PUBLIC;

-- distribute(): run once on the coordinator, by a superuser, and again
-- after adding nodes.  Creates the routing anchor (chrono_forge_routing.keys,
-- an empty table distributed by a text key: its shards' placements say
-- which node owns a key), registers routed_functions() as distributed
-- functions colocated with it, and gives every node its id range.
-- Returns the number of nodes that own keys.
CREATE FUNCTION chrono_forge.distribute() RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    f regprocedure;
    failed text;
    owners integer;
BEGIN
    PERFORM chrono_forge.require_citus('chrono_forge.distribute()', false);
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'chrono_forge.distribute() runs on the coordinator'
            USING ERRCODE = 'CF030';
    END IF;
    IF pg_catalog.to_regclass('chrono_forge_routing.keys') IS NULL THEN
        CREATE SCHEMA IF NOT EXISTS chrono_forge_routing;
        GRANT USAGE ON SCHEMA chrono_forge_routing TO PUBLIC;
        CREATE TABLE chrono_forge_routing.keys (key text NOT NULL);
        COMMENT ON TABLE chrono_forge_routing.keys IS
            'chrono_forge routing anchor: always empty; its shards say which node owns a run key';
    ELSIF NOT (SELECT r.rolsuper FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) c.relowner
                WHERE c.oid OPERATOR(pg_catalog.=) 'chrono_forge_routing.keys'::regclass) THEN
        RAISE EXCEPTION 'chrono_forge_routing.keys is not owned by a superuser'
            USING ERRCODE = 'CF030', HINT = 'Drop it: distribute() creates the routing anchor itself.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p
                    WHERE p.logicalrelid OPERATOR(pg_catalog.=) 'chrono_forge_routing.keys'::regclass) THEN
        PERFORM pg_catalog.create_distributed_table('chrono_forge_routing.keys', 'key');
    END IF;
    FOREACH f IN ARRAY chrono_forge.routed_functions() LOOP
        PERFORM pg_catalog.create_distributed_function(f, '$2',
            colocate_with := 'chrono_forge_routing.keys', force_delegation := true);
    END LOOP;
    SELECT pg_catalog.string_agg(r.nodeid::text OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) r.result, '; ')
      INTO failed
      FROM pg_catalog.run_command_on_all_nodes('SELECT chrono_forge.claim_node_id_range()') r
     WHERE NOT r.success;
    IF failed IS NOT NULL THEN
        RAISE EXCEPTION 'chrono_forge.distribute(): could not give every node its id range'
            USING DETAIL = failed;
    END IF;
    SELECT pg_catalog.count(DISTINCT p.groupid) INTO owners
      FROM pg_catalog.pg_dist_shard s JOIN pg_catalog.pg_dist_placement p USING (shardid)
     WHERE s.logicalrelid OPERATOR(pg_catalog.=) 'chrono_forge_routing.keys'::regclass;
    RETURN owners;
END
$$;
REVOKE ALL ON FUNCTION chrono_forge.distribute() FROM PUBLIC;

-- Cluster-wide forms of the operations views: each node's rows as the
-- caller sees them there (Citus connects to every node as the caller, so
-- each node's row-level security decides), with the node's Citus group
-- and address.  A node that cannot answer is one row with its error.
CREATE FUNCTION chrono_forge.cluster_overview(cap integer DEFAULT 1000)
    RETURNS TABLE (node_group integer, node text, workflow text,
                   state chrono_forge.workflow_state, runs text, capped boolean, error text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM chrono_forge.require_citus('chrono_forge.cluster_overview()', true);
    RETURN QUERY
    SELECT n.groupid, n.nodename OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) n.nodeport::text,
           o.workflow, o.state, o.runs, o.capped, CASE WHEN r.success THEN NULL ELSE r.result END
      FROM pg_catalog.run_command_on_all_nodes(pg_catalog.format(
               'SELECT COALESCE(pg_catalog.json_agg(o), ''[]'') FROM chrono_forge.overview(%s) o', cap)) r
      JOIN pg_catalog.pg_dist_node n ON n.nodeid OPERATOR(pg_catalog.=) r.nodeid
      LEFT JOIN LATERAL pg_catalog.json_to_recordset(CASE WHEN r.success THEN r.result::json END)
           AS o(workflow text, state chrono_forge.workflow_state, runs text, capped boolean) ON true
     ORDER BY n.groupid, o.workflow, o.state;
END
$$;
GRANT EXECUTE ON FUNCTION chrono_forge.cluster_overview(integer) TO PUBLIC;

-- The newest runs of every node (runs()' filters), newest first.
CREATE FUNCTION chrono_forge.cluster_runs(state text DEFAULT NULL, workflow text DEFAULT NULL,
    key_prefix text DEFAULT NULL, page_size integer DEFAULT 50)
    RETURNS TABLE (node_group integer, node text, run chrono_forge.run_row)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    lim integer := chrono_forge.page_limit(cluster_runs.page_size);
BEGIN
    PERFORM chrono_forge.require_citus('chrono_forge.cluster_runs()', true);
    PERFORM chrono_forge.state_codes(cluster_runs.state);     -- CF012 here, not on every node
    RETURN QUERY
    SELECT n.groupid, n.nodename OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) n.nodeport::text, x
      FROM pg_catalog.run_command_on_all_nodes(pg_catalog.format(
               'SELECT COALESCE(pg_catalog.json_agg(r), ''[]'') FROM chrono_forge.runs(state => %L,'
               ' workflow => %L, key_prefix => %L, page_size => %s) r',
               cluster_runs.state, cluster_runs.workflow, cluster_runs.key_prefix, lim)) r
      JOIN pg_catalog.pg_dist_node n ON n.nodeid OPERATOR(pg_catalog.=) r.nodeid
     CROSS JOIN LATERAL pg_catalog.json_populate_recordset(NULL::chrono_forge.run_row,
           CASE WHEN r.success THEN r.result::json ELSE '[]' END) x
     ORDER BY x.created_at DESC, n.groupid
     LIMIT lim;
END
$$;
GRANT EXECUTE ON FUNCTION chrono_forge.cluster_runs(text, text, text, integer) TO PUBLIC;
