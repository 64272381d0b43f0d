/* chrono_forge 0.4.0 -> 0.5.0: safe to install in a database that several
 * roles share.  Run identity becomes (owner, procedure, key); another
 * role's runs, branches, schedules and defaults answer as missing ones;
 * every input is bounded.  See README.md, "Security model".
 * A fresh CREATE EXTENSION runs the 0.1.0 script and then each upgrade
 * script in turn. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.5.0'" to load this file. \quit

-- =====================================================================
-- Run identity: (owner, canonical procedure, key)
-- =====================================================================


-- =====================================================================
-- Existence: another role's objects answer as missing ones
-- =====================================================================


-- =====================================================================
-- Bounded inputs and work
-- =====================================================================


-- =====================================================================
-- Engine identity and search path
-- =====================================================================


-- =====================================================================
-- Bounded passes and fair workers
-- =====================================================================

-- cancel() of a run whose row a pass holds does not wait for the pass: it
-- records the cancel here (durably, with the caller's transaction) and the
-- worker running that pass is told to stop it.  The pass, or the launcher
-- once no pass holds the run, makes the run cancelled and deletes the row.
-- Internal: written and read by the engine only.
CREATE TABLE chrono_forge.cancel_requests (
    workflow_id   bigint PRIMARY KEY
                  REFERENCES chrono_forge.workflows (id) ON DELETE CASCADE,
    reason        text,
    requested_by  oid NOT NULL,
    cancelled_run bigint NOT NULL,
    requested_at  timestamptz NOT NULL
);
ALTER TABLE chrono_forge.cancel_requests ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON chrono_forge.cancel_requests FROM PUBLIC;
