/* chrono_forge 0.9.0 -> 0.10.0: a run's result (set_result()), its
 * children's results for its parent (merge_branches with results,
 * child_results()), and wait_for_run() hands back the result.  See
 * CHANGELOG.md.
 * A fresh CREATE EXTENSION runs chrono_forge--0.10.0.sql, built from
 * chrono_forge.sql, which holds everything this script makes; the catalog
 * test (test/integration/t_catalog_match.sh) checks that both agree. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.10.0'" to load this file. \quit

-- merge_branches gains quorum, timeout and on_timeout: the procedure is
-- replaced (its calls by position or by name go on working).
DROP PROCEDURE chrono_forge.merge_branches(text[], interval, interval, text);
-- merge_branches(..., on_child_failure, quorum, timeout, on_timeout):
-- what a failed, stalled or cancelled child means to the merge: 'wait'
-- (the default: until it is retried; a cancelled child can be retried),
-- 'fail' (the parent fails at once, CF025) or 'ignore' (it counts as
-- ended); quorum (0.10.0): that many completed children are enough (the
-- others go on); timeout (0.10.0): past it, from when the merge first
-- waited, the run stalls (on_timeout 'stall', CF010; retry() waits a
-- whole timeout again) or fails ('fail').  One procedure with every
-- argument defaulted, so that earlier calls, by position or by name, keep
-- working (an overload beside the old one would make them ambiguous).
-- The rules are kept on the merge step's log.
CREATE PROCEDURE chrono_forge.merge_branches(names text[],
    min_interval interval DEFAULT '5 seconds', max_interval interval DEFAULT '5 minutes',
    on_child_failure text DEFAULT 'wait', quorum integer DEFAULT NULL,
    timeout interval DEFAULT NULL, on_timeout text DEFAULT 'stall')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_merge_branches';

-- wait_for_run() gains a result column: a function's result type cannot
-- change in place.  Nothing of the extension depends on it.
DROP FUNCTION chrono_forge.wait_for_run(text, text, interval);
-- wait_for_run(): returns when the caller's run (found as the other run
-- functions find it) is completed, failed, cancelled or stalled, or when
-- timeout passes (then as it is; NULL: no timeout).  Blocks on its latch,
-- set by the commit that ends the run; the last error only for a failed
-- or stalled run; the result (set_result(), 0.10.0) only for a completed
-- one.
CREATE FUNCTION chrono_forge.wait_for_run(workflow text, key text, timeout interval DEFAULT NULL)
    RETURNS TABLE (state text, context jsonb, error_class text, error_message text, result jsonb)
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_wait_for_run';

-- =====================================================================
-- Results (issue 19): a run's result, its children's results
-- =====================================================================

-- set_result(): the run's result, kept with its completion (the result of
-- its $workflow_completion$ log; NULL: none).  Called from the body, as
-- every primitive: the pass that completes the run replays the body, so
-- it calls set_result() again on its way.  At most 16 KB as JSON (CF028).
CREATE PROCEDURE chrono_forge.set_result(result jsonb)
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_set_result';

-- merge_branches with results: as merge_branches, and hands back the
-- results of the branches' completed children, {branch: {child: result}},
-- a child named by its key after "$<run id>$<run key>$<branch>$".  At
-- most 1,000 children (CF028; child_results() pages through more).  The
-- results come first: an INOUT parameter second would make every call of
-- the other merge_branches that gives its intervals by position ambiguous.
-- The results are kept on the merge step's log, so a replay hands back
-- the same ones.
CREATE PROCEDURE chrono_forge.merge_branches(INOUT results jsonb, names text[],
    min_interval interval DEFAULT '5 seconds', max_interval interval DEFAULT '5 minutes',
    on_child_failure text DEFAULT 'wait', quorum integer DEFAULT NULL,
    timeout interval DEFAULT NULL, on_timeout text DEFAULT 'stall')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_merge_branches';

-- await_child(): the parent waits for one child of a branch (named as
-- merge_branches names it) and receives its result; a child that failed,
-- stalled or was cancelled fails the parent (CF025).  Polls the child
-- every check_interval; past the timeout the run stalls (CF010).
CREATE PROCEDURE chrono_forge.await_child(branch text, child text, INOUT result jsonb,
    timeout interval DEFAULT NULL, check_interval interval DEFAULT '1 second')
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'cf_await_child';

-- The current pass's branch of that name: its log and its children's key
-- prefix (child_results()).  CF013 outside a pass, CF008 for a branch the
-- run has not opened.
CREATE FUNCTION chrono_forge.pass_branch(branch text, OUT log_id bigint, OUT key_prefix text)
    LANGUAGE c STABLE
    AS 'MODULE_PATHNAME', 'cf_pass_branch';

-- child_results(): a page of the current run's completed children of a
-- branch, by run id (pass the last id seen as after_id), with each
-- child's name (as merge_branches names it) and result.  From the body or
-- a step of the parent.  Index ranges on workflows_children_idx (3:
-- completed) and the completion logs' key.
CREATE FUNCTION chrono_forge.child_results(branch text, after_id bigint DEFAULT 0,
    page_size integer DEFAULT 1000)
    RETURNS TABLE (id bigint, child text, result jsonb)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
#variable_conflict use_column
DECLARE
    b record := chrono_forge.pass_branch(child_results.branch);
    lim integer := chrono_forge.page_limit(child_results.page_size);
BEGIN
    -- PL/pgSQL, for its cached plan: a SQL function's query was planned
    -- on every page.
    RETURN QUERY
    SELECT w.id,
           CASE WHEN pg_catalog.starts_with(w.key, b.key_prefix)
                THEN pg_catalog.substr(w.key, pg_catalog.length(b.key_prefix) + 1) ELSE w.key END,
           l.result
      FROM chrono_forge.workflows w
      LEFT JOIN chrono_forge.execution_logs l
        ON l.workflow_id = w.id AND l.step_name = '$workflow_completion$'
     WHERE w.parent_execution_log_id = b.log_id AND w.state_code = 3
       AND w.id > coalesce(child_results.after_id, 0)
     ORDER BY w.id
     LIMIT lim;
END
$$;

-- (end of section: results)

-- =====================================================================
-- Versioning (issue 19): a changed procedure keeps old runs on the old path
-- =====================================================================

-- patched(name): true for a run that reaches this point for the first
-- time at the end of its history, false for a run whose earlier passes
-- went past it (before the patch existed); recorded as the step
-- patched$<name> at the first call, so that the run's replays agree.
-- From the body only (CF013 in a step or an EXCEPTION block).
CREATE FUNCTION chrono_forge.patched(name text) RETURNS boolean
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'cf_patched';

-- The definition hash each run started with (the runs' trigger stamps
-- it from 0.10.0 on; earlier runs have none).
ALTER TABLE chrono_forge.workflows ADD COLUMN definition_hash bigint;

-- A workflow procedure's definition hash now (a hash of its source); NULL
-- if there is no such procedure.
CREATE FUNCTION chrono_forge.definition_hash(procedure text) RETURNS bigint
    LANGUAGE c STABLE
    AS 'MODULE_PATHNAME', 'cf_definition_hash_sql';

-- Runs not ended (idle, running, stalled, or failed: retry() replays them)
-- whose procedure's source changed since they started, oldest first: the
-- runs a change can affect, and where patched() matters.
CREATE FUNCTION chrono_forge.changed_definitions(max_rows integer DEFAULT 500)
    RETURNS TABLE (id bigint, workflow text, key text, state chrono_forge.workflow_state,
                   owner regrole, created_at timestamptz, started_hash bigint, current_hash bigint)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    SELECT w.id, w.workflow, w.key, w.state, w.owner, w.created_at, w.definition_hash, h.current
      FROM chrono_forge.workflows w
     CROSS JOIN LATERAL (SELECT chrono_forge.definition_hash(w.procedure) AS current) h
     WHERE w.state_code IN (1, 2, 4, 5) AND w.definition_hash IS NOT NULL
       AND w.definition_hash IS DISTINCT FROM h.current
     ORDER BY w.id
     LIMIT max_rows
$$;
CREATE VIEW chrono_forge.changed_definition_runs WITH (security_invoker = true) AS
    SELECT * FROM chrono_forge.changed_definitions(500);
GRANT SELECT ON chrono_forge.changed_definition_runs TO PUBLIC;

-- (end of section: versioning)
