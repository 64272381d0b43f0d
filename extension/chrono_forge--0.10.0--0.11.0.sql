/* chrono_forge 0.10.0 -> 0.11.0: deadlines and concurrency limits.  A
 * run may have a deadline (start() options "deadline" or "timeout";
 * set_deadline()): past it the run fails with CF029 whatever it was
 * doing, its wake-ups and open tasks go, and its children are cancelled
 * (unless "deadline_children" is "keep").  At most N of a role's runs of
 * a concurrency key (start() option "concurrency_key") or of a workflow
 * are in flight at once (set_concurrency_limit()); the others wait in
 * order, without a worker.  See CHANGELOG.md.
 * A fresh CREATE EXTENSION runs chrono_forge--0.11.0.sql, built from
 * chrono_forge.sql, which holds everything this script makes; the catalog
 * test (test/integration/t_catalog_match.sh) checks that both agree. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.11.0'" to load this file. \quit

-- The run's deadline (NULL: none).  The launcher (and run_pending() for
-- its caller) ends the runs past it (deadlines.c).  Runs without one are
-- not in the index: the hot path of a run never touches it.
ALTER TABLE chrono_forge.workflows ADD COLUMN deadline timestamptz;
CREATE INDEX workflows_deadline_idx ON chrono_forge.workflows (deadline)
    WHERE deadline IS NOT NULL AND ended_at IS NULL;

-- A run past its deadline whose row a pass holds gets a request of kind
-- 'deadline': the pass that holds it (or the launcher) ends it failed.
-- (Added, filled, then given its default: ADD COLUMN ... DEFAULT would
-- keep a "missing value" in the catalog that a fresh install has not.)
ALTER TABLE chrono_forge.cancel_requests ADD COLUMN kind text;
UPDATE chrono_forge.cancel_requests SET kind = 'cancel';
ALTER TABLE chrono_forge.cancel_requests
    ALTER COLUMN kind SET DEFAULT 'cancel',
    ALTER COLUMN kind SET NOT NULL,
    ADD CONSTRAINT cancel_requests_kind_check CHECK (kind IN ('cancel', 'deadline'));

-- set_deadline(workflow, key, deadline): move (NULL: remove) the
-- deadline of the caller's run not yet completed or cancelled.  True if
-- it was set; false for a completed or cancelled run.  A deadline already
-- past ends the run at the launcher's next look.
CREATE FUNCTION chrono_forge.set_deadline(workflow text, key text, deadline timestamptz)
    RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_set_deadline';

-- Concurrency limits.
ALTER TABLE chrono_forge.workflows ADD COLUMN concurrency_key text;
ALTER TABLE chrono_forge.workflows ADD COLUMN gate_id bigint;

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

SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_gates', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_gates_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_waiting', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_waiting_seq_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_releases', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_releases_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('chrono_forge.concurrency_admissions', '');

-- set_concurrency_limit(max_running, concurrency_key | workflow,
-- max_starts, per): at most max_running of the caller's runs of that
-- concurrency key, or of that workflow, in flight at once, and at most
-- max_starts of them admitted in any window of length per (NULL: no such
-- limit); runs over them wait, in the order they were started, without a
-- worker.  Returns how many waiting runs it admitted (a raised or removed
-- limit).
CREATE FUNCTION chrono_forge.set_concurrency_limit(max_running integer,
    concurrency_key text DEFAULT NULL, workflow text DEFAULT NULL,
    max_starts integer DEFAULT NULL, per interval DEFAULT NULL) RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_set_concurrency_limit';
