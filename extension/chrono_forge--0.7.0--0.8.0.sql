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

-- (end of section: engine)

