/* chrono_forge 0.2.0 -> 0.3.0: a cheaper hot path for the core (fewer
 * indexes to maintain on every state change of a run) and faster
 * operations views.
 * A fresh CREATE EXTENSION runs the 0.1.0 script and then each upgrade
 * script in turn. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.3.0'" to load this file. \quit

-- =====================================================================
-- Core
-- =====================================================================

-- Every state change of a run is an update that PostgreSQL cannot make
-- HOT (the state is indexed), so it inserts into every index of the
-- table: each index here is paid twice per trivial run.  These two
-- duplicate later ones: workflows_children_idx (parent, state_code, id),
-- which leaves top-level runs out, serves the branch probes, and
-- workflows_state_ended_at_idx serves retention and analytics.
DROP INDEX chrono_forge.workflows_parent_state_idx;
DROP INDEX chrono_forge.workflows_state_completed_at_idx;

-- state_code and ended_at, kept by one C trigger with no WHEN clause: a
-- stored generated column's expression and a trigger's WHEN clause are
-- both rebuilt from their catalog text for every statement that writes a
-- run, several per pass.  state_code keeps its values and its meaning.
DROP TRIGGER workflows_ended_at ON chrono_forge.workflows;
DROP FUNCTION chrono_forge.workflows_ended_at();
ALTER TABLE chrono_forge.workflows ALTER COLUMN state_code DROP EXPRESSION;
ALTER TABLE chrono_forge.workflows ALTER COLUMN state_code SET NOT NULL;
CREATE FUNCTION chrono_forge.workflows_state_columns() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_workflows_state_columns';
REVOKE ALL ON FUNCTION chrono_forge.workflows_state_columns() FROM PUBLIC;
CREATE TRIGGER workflows_state_columns
    BEFORE INSERT OR UPDATE OF state, state_code ON chrono_forge.workflows
    FOR EACH ROW EXECUTE FUNCTION chrono_forge.workflows_state_columns();

-- (end of core)

-- =====================================================================
-- Operations
-- =====================================================================

-- (end of operations)
