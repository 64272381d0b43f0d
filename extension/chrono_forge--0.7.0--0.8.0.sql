/* chrono_forge 0.7.0 -> 0.8.0: the dashboard's reads and the engine's
 * tasks path.  See CHANGELOG.md.
 * A fresh CREATE EXTENSION runs chrono_forge--0.8.0.sql, built from
 * chrono_forge.sql, which holds everything this script makes; the catalog
 * test (test/integration/t_catalog_match.sh) checks that both agree. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.8.0'" to load this file. \quit

-- =====================================================================
-- The dashboard's reads (issue 18)
-- =====================================================================

-- (end of section: dashboard)

-- =====================================================================
-- Engine (issue 17's throughput)
-- =====================================================================

-- A child that completed in its first pass was written completed without
-- ended_at (the state trigger set it on updates only, from 0.5.0): give
-- those runs the end they had, and have daily_outcomes() count the days
-- already summarised again.  The trigger now sets it on inserts too.
WITH ended AS (
    UPDATE chrono_forge.workflows SET ended_at = coalesce(completed_at, updated_at)
     WHERE ended_at IS NULL AND state IN ('completed', 'failed', 'cancelled')
    RETURNING ended_at, owner)
INSERT INTO chrono_forge.outcome_days_changed (day, owner)
SELECT DISTINCT pg_catalog.timezone('UTC', ended_at)::date, owner FROM ended
 WHERE ended_at < pg_catalog.now() - interval '1 hour';

-- (end of section: engine)

