/* chrono_forge 0.2.0 -> 0.3.0: a cheaper hot path for the core (fewer
 * indexes to maintain on every state change of a run) and faster
 * operations views.
 * A fresh CREATE EXTENSION runs the 0.1.0 script and then each upgrade
 * script in turn. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.3.0'" to load this file. \quit

-- =====================================================================
-- Core
-- =====================================================================

-- (end of core)

-- =====================================================================
-- Operations
-- =====================================================================

-- (end of operations)
