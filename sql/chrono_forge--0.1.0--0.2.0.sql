/* chrono_forge 0.1.0 -> 0.2.0: periodic work (durably_repeat, pg_cron
 * schedules) and operations (retention, views, actions, the admin role).
 * A fresh CREATE EXTENSION runs the 0.1.0 script and then this one. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.2.0'" to load this file. \quit

-- =====================================================================
-- Periodic work
-- =====================================================================

-- (end of periodic work)

-- =====================================================================
-- Operations
-- =====================================================================

-- (end of operations)
