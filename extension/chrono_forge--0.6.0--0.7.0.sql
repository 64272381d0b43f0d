/* chrono_forge 0.6.0 -> 0.7.0: steps outside the database (tasks worked by
 * any process that speaks SQL), waiting for a run from a client, and the
 * house.  See CHANGELOG.md.
 * A fresh CREATE EXTENSION runs chrono_forge--0.7.0.sql, built from
 * chrono_forge.sql, which holds everything this script makes; the catalog
 * test (test/integration/t_catalog_match.sh) checks that both agree. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.7.0'" to load this file. \quit

-- =====================================================================
-- External tasks (issue 17)
-- =====================================================================

-- (end of section: tasks)

-- =====================================================================
-- Waiting for a run from a client (issue 17)
-- =====================================================================

-- wait_for_run(): returns when the caller's run (found as the other run
-- functions find it) is completed, failed, cancelled or stalled, or when
-- timeout passes (then as it is; NULL: no timeout).  Blocks on its latch,
-- set by the commit that ends the run; the last error only for a failed
-- or stalled run.
CREATE FUNCTION chrono_forge.wait_for_run(workflow text, key text, timeout interval DEFAULT NULL)
    RETURNS TABLE (state text, context jsonb, error_class text, error_message text)
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
-- The house (issue 16)
-- =====================================================================

-- (end of section: house)
