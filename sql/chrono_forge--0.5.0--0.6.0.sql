/* chrono_forge 0.5.0 -> 0.6.0: reliability.  No calling context crashes
 * the server; every merge ends; backups keep every run; standbys wait
 * quietly and serve at promotion.  See README.md.
 * A fresh CREATE EXTENSION runs the 0.1.0 script and then each upgrade
 * script in turn. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.6.0'" to load this file. \quit

-- =====================================================================
-- Security, continued (issue 14)
-- =====================================================================

-- (end of section: security)



-- =====================================================================
-- Calling contexts (issue 15, items 1-2)
-- =====================================================================

-- Nothing in SQL: the pass driver (src/executor.c) aborts a failed pass
-- on its own SPI connection and fails a run whose body caught a refusal.

-- (end of section: calling contexts)



-- =====================================================================
-- Merges that end, repeats, error logs, spawn cursors (issue 15, items 3-4)
-- =====================================================================

-- (end of section: merges)



-- =====================================================================
-- Backups and standbys (issue 15, items 5-6)
-- =====================================================================

-- (end of section: backups)



-- =====================================================================
-- Fuzz findings (issue 15, item 8)
-- =====================================================================

-- (end of section: fuzz)
