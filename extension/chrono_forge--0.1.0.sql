/* chrono_forge 0.1.0 — install script.  Released scripts are never edited:
 * changes ship as chrono_forge--A--B.sql upgrade scripts. */

\echo Use "CREATE EXTENSION chrono_forge" to load this file. \quit

-- ---------------------------------------------------------------------
-- Types
-- ---------------------------------------------------------------------

CREATE TYPE chrono_forge.workflow_state AS ENUM
    ('idle', 'running', 'completed', 'failed', 'stalled', 'cancelled');

CREATE TYPE chrono_forge.step_state AS ENUM ('pending', 'completed', 'failed');

-- ---------------------------------------------------------------------
-- Tables (the gem's names)
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.workflows (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow                text NOT NULL,      -- the procedure as given to start()
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
    CONSTRAINT workflows_workflow_key_key UNIQUE (workflow, key),
    -- (args, options and context are JSON objects: start() and
    -- context_replace() check it; a CHECK here would be re-planned on every
    -- update of a run, several per pass.)
    CONSTRAINT workflows_key_check CHECK (key <> ''),
    CONSTRAINT workflows_lock_check CHECK ((locked_by IS NULL) = (locked_at IS NULL))
);
CREATE INDEX workflows_parent_state_idx
    ON chrono_forge.workflows (parent_execution_log_id, state);
CREATE INDEX workflows_state_completed_at_idx
    ON chrono_forge.workflows (state, completed_at);
CREATE INDEX workflows_running_locked_at_idx
    ON chrono_forge.workflows (locked_at) WHERE state = 'running';

CREATE TABLE chrono_forge.execution_logs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id      bigint NOT NULL REFERENCES chrono_forge.workflows ON DELETE CASCADE,
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

CREATE TABLE chrono_forge.error_logs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id   bigint NOT NULL REFERENCES chrono_forge.workflows ON DELETE CASCADE,
    step_name     text,                 -- NULL for workflow-level errors
    attempt       integer,
    error_class   text NOT NULL,        -- SQLSTATE
    error_message text,
    error_detail  text,
    context       jsonb,                -- snapshot of the run's context
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX error_logs_workflow_id_idx ON chrono_forge.error_logs (workflow_id);

-- Wake-ups: a pending pass for a run, due at due_at.  Several rows for one
-- run coalesce into one pass (a claim deletes every due row of the run).
CREATE TABLE chrono_forge.wakeups (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id bigint NOT NULL REFERENCES chrono_forge.workflows ON DELETE CASCADE,
    due_at      timestamptz NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX wakeups_due_at_idx ON chrono_forge.wakeups (due_at);
-- (workflow_id, due_at): a claim deletes the run's due rows by one range scan.
CREATE INDEX wakeups_workflow_id_due_at_idx ON chrono_forge.wakeups (workflow_id, due_at);

-- Durable events: kept until an await_event step consumes them.
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

-- Per-workflow defaults (the gem's class-level retry_policy DSL).
CREATE TABLE chrono_forge.workflow_defaults (
    workflow     text PRIMARY KEY,
    retry_policy jsonb NOT NULL,
    owner        regrole NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- ---------------------------------------------------------------------
-- Who may read what: each role sees its own runs (superusers see all).
-- Nobody but the extension owner writes; the API does it on their behalf.
-- ---------------------------------------------------------------------

ALTER TABLE chrono_forge.workflows ENABLE ROW LEVEL SECURITY;
ALTER TABLE chrono_forge.execution_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE chrono_forge.error_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE chrono_forge.wakeups ENABLE ROW LEVEL SECURITY;
ALTER TABLE chrono_forge.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE chrono_forge.workflow_defaults ENABLE ROW LEVEL SECURITY;

CREATE POLICY workflows_owner ON chrono_forge.workflows FOR SELECT
    USING (pg_catalog.pg_has_role(current_user, owner, 'MEMBER'));
CREATE POLICY execution_logs_owner ON chrono_forge.execution_logs FOR SELECT
    USING (workflow_id IN (SELECT id FROM chrono_forge.workflows));
CREATE POLICY error_logs_owner ON chrono_forge.error_logs FOR SELECT
    USING (workflow_id IN (SELECT id FROM chrono_forge.workflows));
CREATE POLICY wakeups_owner ON chrono_forge.wakeups FOR SELECT
    USING (workflow_id IN (SELECT id FROM chrono_forge.workflows));
CREATE POLICY events_owner ON chrono_forge.events FOR SELECT
    USING (workflow_id IN (SELECT id FROM chrono_forge.workflows));
CREATE POLICY workflow_defaults_owner ON chrono_forge.workflow_defaults FOR SELECT
    USING (pg_catalog.pg_has_role(current_user, owner, 'MEMBER'));

GRANT USAGE ON SCHEMA chrono_forge TO PUBLIC;
GRANT SELECT ON chrono_forge.workflows, chrono_forge.execution_logs,
    chrono_forge.error_logs, chrono_forge.wakeups, chrono_forge.events,
    chrono_forge.workflow_defaults TO PUBLIC;

-- ---------------------------------------------------------------------
-- Clock
-- ---------------------------------------------------------------------

CREATE FUNCTION chrono_forge.now() RETURNS timestamptz
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'cf_now';

-- ---------------------------------------------------------------------
-- Retry policies
-- ---------------------------------------------------------------------

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

-- ---------------------------------------------------------------------
-- Control API
-- ---------------------------------------------------------------------

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

-- ---------------------------------------------------------------------
-- Lock (SQL-callable; the executor uses the same functions)
-- ---------------------------------------------------------------------

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
REVOKE ALL ON PROCEDURE chrono_forge.worker_drain(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION chrono_forge.reap_stalled(interval) FROM PUBLIC;

-- ---------------------------------------------------------------------
-- Workflow API (called from workflow procedures).  These C procedures
-- commit, so they carry no SET clause (it would force an atomic context);
-- they pin their own search path internally.
-- ---------------------------------------------------------------------

CREATE PROCEDURE chrono_forge.durably_execute(step text, name text DEFAULT NULL,
    args jsonb DEFAULT NULL, retry_policy jsonb DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_durably_execute';

CREATE PROCEDURE chrono_forge.durably_execute(step text, INOUT result jsonb,
    name text DEFAULT NULL, args jsonb DEFAULT NULL, retry_policy jsonb DEFAULT NULL)
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

-- ---------------------------------------------------------------------
-- Args and context (from the body and from steps)
-- ---------------------------------------------------------------------

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

CREATE FUNCTION chrono_forge.context_set(key text, value jsonb) RETURNS void
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT chrono_forge.context_replace(
              chrono_forge.context() || jsonb_build_object(key, value)) $$;

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

-- ---------------------------------------------------------------------
-- Tell the launcher (and the DBA) about this database.
-- ---------------------------------------------------------------------

CREATE FUNCTION chrono_forge.notify_launcher() RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_notify_launcher';
REVOKE ALL ON FUNCTION chrono_forge.notify_launcher() FROM PUBLIC;

SELECT chrono_forge.notify_launcher();
