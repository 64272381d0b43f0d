/* chrono_forge 0.12.0 -> 0.13.0: priorities.  start() option "priority"
 * (an integer, 0 the default and lowest): claims take due runs of a
 * higher priority first, due time next.  See CHANGELOG.md.
 * A fresh CREATE EXTENSION runs chrono_forge--0.13.0.sql, built from
 * chrono_forge.sql, which holds everything this script makes; the catalog
 * test (test/integration/t_catalog_match.sh) checks that both agree. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.13.0'" to load this file. \quit

-- The run's priority (NULL: none, the default, as 0).  Nullable, with no
-- default: adding it rewrites nothing, and existing runs have none.
ALTER TABLE chrono_forge.workflows ADD COLUMN priority integer;

-- A wake-up carries its run's priority (copied when it is written, so
-- that a claim reads one index).  Only prioritized wake-ups are in the
-- priority index: a workload without priorities writes nothing more.
-- The due time is indexed as UTC wall time, an expression no other index
-- has: the claim orders by it, so that no plan can walk the due index
-- instead (claim.c).
ALTER TABLE chrono_forge.wakeups ADD COLUMN priority integer;
CREATE INDEX wakeups_priority_idx
    ON chrono_forge.wakeups (priority DESC, pg_catalog.timezone('UTC', due_at))
    WHERE priority IS NOT NULL;
