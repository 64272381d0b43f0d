/* chrono_forge 0.1.0 -> 0.2.0: periodic work (durably_repeat, pg_cron
 * schedules) and operations (retention, views, actions, the admin role).
 * A fresh CREATE EXTENSION runs the 0.1.0 script and then this one. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.2.0'" to load this file. \quit

-- =====================================================================
-- Periodic work
-- =====================================================================

-- durably_repeat: a step run once per tick.  A C procedure that commits,
-- so no SET clause (see the 0.1.0 script); it pins its own search path.
CREATE PROCEDURE chrono_forge.durably_repeat(step text, every interval, till text,
    start_at timestamptz DEFAULT NULL, retry_policy jsonb DEFAULT NULL,
    timeout interval DEFAULT '1 hour', on_error text DEFAULT 'continue',
    name text DEFAULT NULL)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_durably_repeat';

-- (end of periodic work)

-- =====================================================================
-- Operations
-- =====================================================================

-- (end of operations)
