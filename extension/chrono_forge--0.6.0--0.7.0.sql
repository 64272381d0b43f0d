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

-- (end of section: wait for run)

-- =====================================================================
-- The house (issue 16)
-- =====================================================================

-- (end of section: house)
