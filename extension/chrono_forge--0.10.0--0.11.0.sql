/* chrono_forge 0.10.0 -> 0.11.0: deadlines.  A run may have a deadline
 * (start() options "deadline" or "timeout"; set_deadline()): past it the
 * run fails with CF029 whatever it was doing, its wake-ups and open tasks
 * go, and its children are cancelled (unless "deadline_children" is
 * "keep").  See CHANGELOG.md.
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
