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

-- periodic_health(): the tasks' runs are looked up one by one (a forced
-- nested loop: LATERAL ... LIMIT 1).  Under row-level security the planner
-- may not use the statistics of a non-leakproof operator (LIKE on
-- step_name), so for a chrono_forge_admin member or an owner it guessed
-- 400,000 coordination logs instead of 200, and joined them by hashing
-- every idle, running and stalled run (130,000 rows): 175 ms instead of
-- 18 ms as a superuser, whose plan used the statistics.  And the tasks'
-- latest ticks are summarised by repeat_ticks() (C), which checks in one
-- statement that the caller sees the tasks instead of paying the logs'
-- row-level security policy on every tick (4,000 probes of the runs for
-- 200 tasks).
CREATE FUNCTION chrono_forge.repeat_ticks(coordination_ids bigint[], window_ integer)
    RETURNS TABLE (coordination_id bigint, next_at timestamptz, missed bigint, failed bigint,
                   avg_late interval)
    LANGUAGE c STABLE STRICT
    AS 'MODULE_PATHNAME', 'cf_repeat_ticks';

CREATE OR REPLACE FUNCTION chrono_forge.periodic_health(workflow text DEFAULT NULL, key text DEFAULT NULL,
    max_rows integer DEFAULT 500, tick_window integer DEFAULT NULL)
    RETURNS SETOF chrono_forge.periodic_row
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    only_id bigint;
    ts timestamptz := chrono_forge.now();
    -- Ticks read per task: the latest 1,000 for one run, the latest 20
    -- for the list of every task.
    window_ integer;
BEGIN
    IF periodic_health.workflow IS NOT NULL OR periodic_health.key IS NOT NULL THEN
        only_id := (chrono_forge.visible_run(periodic_health.workflow, periodic_health.key)).id;
    END IF;
    window_ := coalesce(tick_window, CASE WHEN only_id IS NULL THEN 20 ELSE 1000 END);
    IF window_ < 1 THEN
        RAISE EXCEPTION 'tick_window must be at least 1' USING ERRCODE = 'CF012';
    END IF;
    -- A task's ticks are named <coordination>$<epoch seconds>: within the
    -- run they sort by time on the (workflow_id, step_name) index, so the
    -- latest ones are read backwards from it, never the whole history
    -- (repeat_ticks()).  The next tick is the pending one (the latest);
    -- missed ticks, failed ticks and lateness are counted over the window.
    -- The tasks first (coordination logs, from their partial index; in
    -- the list only those still repeating), then their runs, then the
    -- latest ticks of each: the planner is not left to guess how rare
    -- coordination logs are.
    RETURN QUERY
    WITH coord AS MATERIALIZED (
        SELECT c.id, c.workflow_id, c.step_name, c.state, c.metadata
          FROM chrono_forge.execution_logs c
         WHERE c.step_name LIKE 'durably\_repeat$%' AND c.step_name NOT LIKE 'durably\_repeat$%$%'
           AND (only_id IS NULL OR c.workflow_id = only_id)
           AND (only_id IS NOT NULL OR c.state = 'pending')),
    sel AS MATERIALIZED (
        SELECT c.*, w.workflow, w.key FROM coord c
         CROSS JOIN LATERAL (
              SELECT w.workflow, w.key FROM chrono_forge.workflows w
               WHERE w.id = c.workflow_id AND (only_id IS NOT NULL OR w.state_code IN (1, 2, 5))
               LIMIT 1) w
         ORDER BY c.workflow_id, c.id
         LIMIT periodic_health.max_rows)
    SELECT c.workflow_id, c.workflow, c.key, pg_catalog.substr(c.step_name, 16), c.state::text,
           c.metadata->>'every',
           (c.metadata->>'last_execution_at')::timestamptz,
           nx.next_at,
           CASE WHEN nx.next_at < ts THEN ts - nx.next_at ELSE interval '0' END,
           f.missed, f.failed, f.avg_late
      FROM sel c
      LEFT JOIN chrono_forge.repeat_ticks(ARRAY(SELECT s.id FROM sel s), window_) f
        ON f.coordination_id = c.id
      -- The next tick: a pending (retrying) tick's, else the one after the
      -- last tick handled, else the anchor (a tick's log is written only
      -- when it runs); none once the task is done.
     CROSS JOIN LATERAL (
          SELECT CASE WHEN c.state = 'completed' THEN NULL::timestamptz
                      ELSE coalesce(f.next_at,
                                    (c.metadata->>'last_execution_at')::timestamptz
                                        + (c.metadata->>'every')::interval,
                                    (c.metadata->>'anchor')::timestamptz) END AS next_at) nx
     ORDER BY c.workflow_id, c.id;
END
$$;

-- ---------------------------------------------------------------------
-- overview(): the workflows a role has runs of.  It found them by a skip
-- scan over (workflow, state_code, id): as an owner, under row-level
-- security, each step walks every run of the workflows the role cannot
-- see until it finds one it can (on the benchmark, the 100,000 runs of
-- the two workflows another role owns: 78 ms).  The (workflow, owner)
-- pairs that have runs are now kept in workflow_owners for every run up
-- to an id horizon; overview() reads the caller's pairs (an index range
-- per role) and the workflows of its runs past the horizon, then counts
-- the cells as before.  A pair stays when its runs are cleaned up (its
-- cells are then read for nothing, as before).  Nothing is added to a
-- pass: the pairs of new runs are added by the next call (see
-- workflow_owners_refresh()).
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.workflow_owners (
    owner    regrole NOT NULL,
    workflow text NOT NULL,
    CONSTRAINT workflow_owners_pkey PRIMARY KEY (owner, workflow)
);
-- last_id: every run with an id up to it has its pair above.  candidate
-- (an id handed out by candidate_at) becomes last_id once every
-- transaction older than candidate_at has ended.
CREATE TABLE chrono_forge.workflow_owners_horizon (
    last_id      bigint NOT NULL,
    candidate    bigint,
    candidate_at timestamptz
);
INSERT INTO chrono_forge.workflow_owners_horizon (last_id) VALUES (0);
ALTER TABLE chrono_forge.workflow_owners ENABLE ROW LEVEL SECURITY;
CREATE POLICY workflow_owners_owner ON chrono_forge.workflow_owners FOR SELECT
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));
CREATE POLICY workflow_owners_admin ON chrono_forge.workflow_owners FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.workflow_owners, chrono_forge.workflow_owners_horizon TO PUBLIC;

-- Adds the pairs of the runs past the horizon and moves it, once 1,000
-- runs have been started past it (overview() reads those runs themselves
-- meanwhile: a write per call would cost more).  Ids are handed out
-- before their run commits: an id the sequence has issued is safe (its
-- run committed or never will) once every transaction that was open when
-- it was issued has ended.  Nothing in a read-only transaction, above
-- READ COMMITTED, or while another transaction is at it.
CREATE FUNCTION chrono_forge.workflow_owners_refresh() RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
DECLARE
    h chrono_forge.workflow_owners_horizon;
    issued bigint;
    issued_at timestamptz;
    oldest timestamptz;
    safe bigint;
BEGIN
    -- (Each statement below must see what committed before it: only in
    -- READ COMMITTED.)
    IF pg_catalog.current_setting('transaction_read_only')::boolean
       OR pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN;
    END IF;
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END INTO issued
      FROM chrono_forge.workflows_id_seq s;
    issued_at := pg_catalog.clock_timestamp();
    SELECT * INTO h FROM chrono_forge.workflow_owners_horizon;
    IF issued - h.last_id < 1000
       OR NOT pg_catalog.pg_try_advisory_xact_lock(
                  'chrono_forge.workflow_owners_horizon'::regclass::oid::integer, 0) THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    -- (A transaction that wrote has an xid; without track_activities its
    -- start is not shown: take it as older than anything.)
    SELECT pg_catalog.min(coalesce(a.xact_start,
                                   CASE WHEN a.backend_xid IS NOT NULL THEN '-infinity'::timestamptz END))
      INTO oldest
      FROM pg_catalog.pg_stat_activity a
     WHERE a.pid <> pg_catalog.pg_backend_pid() AND a.datname = pg_catalog.current_database()
       AND a.backend_type <> 'autovacuum worker';
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts) THEN
        oldest := '-infinity';
    END IF;
    IF oldest IS NULL OR oldest > issued_at THEN
        safe := issued;
    ELSIF h.candidate_at < oldest THEN
        safe := h.candidate;
    END IF;
    IF safe > h.last_id THEN
        -- (A new snapshot: the runs up to safe have all committed or failed.)
        INSERT INTO chrono_forge.workflow_owners (owner, workflow)
        SELECT DISTINCT w.owner, w.workflow FROM chrono_forge.workflows w
         WHERE w.id > h.last_id AND w.id <= safe
        ON CONFLICT DO NOTHING;
    END IF;
    -- The next candidate: kept until it is safe (a newer one would wait
    -- for a quiet moment again), none once everything issued is safe.
    IF safe = issued THEN
        UPDATE chrono_forge.workflow_owners_horizon
           SET last_id = safe, candidate = NULL, candidate_at = NULL;
    ELSIF safe IS NOT NULL OR h.candidate IS NULL THEN
        UPDATE chrono_forge.workflow_owners_horizon
           SET last_id = GREATEST(last_id, coalesce(safe, 0)),
               candidate = issued, candidate_at = issued_at;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION chrono_forge.workflow_owners_refresh() TO PUBLIC;

CREATE OR REPLACE FUNCTION chrono_forge.overview(cap integer DEFAULT 1000)
    RETURNS TABLE (workflow text, state chrono_forge.workflow_state, runs text, capped boolean)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    states chrono_forge.workflow_state[] := pg_catalog.enum_range(NULL::chrono_forge.workflow_state);
    last_id bigint;
BEGIN
    PERFORM chrono_forge.workflow_owners_refresh();
    SELECT h.last_id INTO last_id FROM chrono_forge.workflow_owners_horizon h;
    RETURN QUERY
    WITH names(name) AS (
        SELECT o.workflow FROM chrono_forge.workflow_owners o
        UNION
        SELECT w.workflow FROM chrono_forge.workflows w WHERE w.id > last_id)
    SELECT n.name, states[s.code],
           CASE WHEN c.n > cap THEN cap::text || '+' ELSE c.n::text END, c.n > cap
      FROM names n
     CROSS JOIN pg_catalog.unnest('{1,2,3,4,5,6}'::smallint[]) AS s(code)
     CROSS JOIN LATERAL (SELECT pg_catalog.count(*) AS n FROM
                  (SELECT 1 FROM chrono_forge.workflows w
                    WHERE w.workflow = n.name AND w.state_code = s.code LIMIT cap + 1) x) c
     WHERE c.n > 0
     ORDER BY n.name, s.code;
END
$$;

-- ---------------------------------------------------------------------
-- daily_outcomes(): a summary of closed days.  Counting a 30-day window
-- exactly read ~217,000 index entries on the benchmark (65 ms as a
-- superuser, 144 ms as an owner, who also pays the row-level security
-- filter on each).  A day that has closed keeps its counts per workflow
-- and owner in outcome_days; daily_outcomes() adds those up and counts
-- only the window's partial days and the days not (or no longer)
-- summarised.  Nothing is added to a pass: runs end today; a run whose
-- end lies in a closed day changes only by a retry, a cancel after it
-- failed or cleanup, which note the day (and the run's owner) in
-- outcome_days_changed; a noted day is counted again until it is
-- summarised anew.
-- ---------------------------------------------------------------------

CREATE TABLE chrono_forge.outcome_days (
    day       date NOT NULL,          -- UTC
    workflow  text NOT NULL,
    owner     regrole NOT NULL,
    completed bigint NOT NULL,
    failed    bigint NOT NULL,
    cancelled bigint NOT NULL,
    CONSTRAINT outcome_days_pkey PRIMARY KEY (day, workflow, owner)
);
-- The days summarised (a day without ended runs has no outcome_days row).
CREATE TABLE chrono_forge.outcome_days_summarised (
    day date CONSTRAINT outcome_days_summarised_pkey PRIMARY KEY
);
-- Days whose ended runs of an owner changed after they closed.
CREATE TABLE chrono_forge.outcome_days_changed (
    day   date NOT NULL,
    owner regrole NOT NULL
);
CREATE INDEX outcome_days_changed_day_idx ON chrono_forge.outcome_days_changed (day);

-- Each role sees the counts and changes of the runs it sees, so a change
-- to another role's runs does not make it count a day again.
ALTER TABLE chrono_forge.outcome_days ENABLE ROW LEVEL SECURITY;
ALTER TABLE chrono_forge.outcome_days_changed ENABLE ROW LEVEL SECURITY;
CREATE POLICY outcome_days_owner ON chrono_forge.outcome_days FOR SELECT
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));
CREATE POLICY outcome_days_admin ON chrono_forge.outcome_days FOR SELECT
    TO chrono_forge_admin USING (true);
CREATE POLICY outcome_days_changed_owner ON chrono_forge.outcome_days_changed FOR SELECT
    USING (owner = ANY (ARRAY(SELECT r.oid::regrole FROM pg_catalog.pg_roles r
                               WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER'))));
CREATE POLICY outcome_days_changed_admin ON chrono_forge.outcome_days_changed FOR SELECT
    TO chrono_forge_admin USING (true);
GRANT SELECT ON chrono_forge.outcome_days, chrono_forge.outcome_days_summarised,
    chrono_forge.outcome_days_changed TO PUBLIC;

-- A closed day is summarised only once it ended more than an hour ago
-- and before every open transaction began (see outcome_days_refresh());
-- so a change needs a note only when the run ended more than an hour
-- before it.  The workflows_state_columns trigger (C) writes the note:
-- a run leaving an ended state an hour or more after it ended, or
-- entering one with an updated_at an hour or more in the past.  No update
-- a pass makes is either, and a second trigger's WHEN clause would be
-- re-read for every statement that changes a run's state.

-- Summarises the closed days in [first_day, last_day] not summarised yet
-- or noted as changed since; returns how many.  daily_outcomes() calls it
-- for the whole days of its window; it does nothing in a read-only
-- transaction (a standby), above READ COMMITTED, or while another
-- transaction is summarising.
-- A day is closed once it ended an hour ago (the trigger's margin) and
-- before the oldest open transaction began: a transaction that began
-- later ended its runs after that, so they were noted or are visible
-- here.  Prepared transactions have no start time: none may be pending.
CREATE FUNCTION chrono_forge.outcome_days_refresh(first_day date, last_day date)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
DECLARE
    horizon timestamptz;
    days date[];
BEGIN
    -- (Each statement below must see what committed before it: only in
    -- READ COMMITTED.)
    IF pg_catalog.current_setting('transaction_read_only')::boolean
       OR pg_catalog.current_setting('transaction_isolation') <> 'read committed'
       OR first_day IS NULL OR last_day IS NULL THEN
        RETURN 0;
    END IF;
    -- Days that may be closed; the cheap test first: nothing to do in
    -- the usual call.
    last_day := LEAST(last_day, pg_catalog.timezone('UTC', pg_catalog.clock_timestamp() - interval '1 hour')::date - 1);
    IF first_day > last_day THEN
        RETURN 0;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.generate_series(0, last_day - first_day) i
                    WHERE NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s
                                       WHERE s.day = first_day + i))
       AND NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c
                        WHERE c.day BETWEEN first_day AND last_day) THEN
        RETURN 0;
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock(
               'chrono_forge.outcome_days_summarised'::regclass::oid::integer, 0)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts) THEN
        RETURN 0;
    END IF;
    -- The activity snapshot is per transaction: take a fresh one.
    PERFORM pg_catalog.pg_stat_clear_snapshot();
    -- (A transaction that wrote has an xid; without track_activities its
    -- start is not shown: take it as older than anything.)
    SELECT LEAST(pg_catalog.clock_timestamp(),
                 pg_catalog.min(coalesce(a.xact_start,
                                         CASE WHEN a.backend_xid IS NOT NULL THEN '-infinity'::timestamptz END)))
           - interval '1 hour'
      INTO horizon
      FROM pg_catalog.pg_stat_activity a
     WHERE a.pid <> pg_catalog.pg_backend_pid() AND a.datname = pg_catalog.current_database()
       AND a.backend_type <> 'autovacuum worker';
    SELECT pg_catalog.array_agg(d.day) INTO days
      FROM (SELECT first_day + i AS day
              FROM pg_catalog.generate_series(0, LEAST(last_day, pg_catalog.timezone('UTC', horizon)::date - 1)
                                                 - first_day) i) d
     WHERE NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s WHERE s.day = d.day)
        OR EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c WHERE c.day = d.day);
    IF days IS NULL THEN
        RETURN 0;
    END IF;
    -- Notes of days not summarised say nothing: drop them.
    DELETE FROM chrono_forge.outcome_days_changed c
     WHERE NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s WHERE s.day = c.day);
    -- Notes first, then the counts, each statement with a newer snapshot:
    -- a change noted after the first is seen by the second, and its note
    -- stays (the day is counted once more, never wrongly).
    DELETE FROM chrono_forge.outcome_days_changed WHERE day = ANY (days);
    DELETE FROM chrono_forge.outcome_days WHERE day = ANY (days);
    INSERT INTO chrono_forge.outcome_days (day, workflow, owner, completed, failed, cancelled)
    SELECT pg_catalog.timezone('UTC', w.ended_at)::date, w.workflow, w.owner,
           pg_catalog.count(*) FILTER (WHERE w.state_code = 3),
           pg_catalog.count(*) FILTER (WHERE w.state_code = 4),
           pg_catalog.count(*) FILTER (WHERE w.state_code = 6)
      FROM chrono_forge.workflows w
     WHERE w.state_code IN (3, 4, 6)
       AND w.ended_at >= pg_catalog.timezone('UTC', days[1]::timestamp)
       AND w.ended_at < pg_catalog.timezone('UTC', (days[pg_catalog.array_upper(days, 1)] + 1)::timestamp)
       AND pg_catalog.timezone('UTC', w.ended_at)::date = ANY (days)
     GROUP BY 1, 2, 3;
    INSERT INTO chrono_forge.outcome_days_summarised (day)
    SELECT pg_catalog.unnest(days) ON CONFLICT DO NOTHING;
    RETURN pg_catalog.cardinality(days);
END
$$;
GRANT EXECUTE ON FUNCTION chrono_forge.outcome_days_refresh(date, date) TO PUBLIC;

-- Days are now UTC days [00:00, 24:00): a run that ended exactly at
-- midnight counted in the day before.  The window is still (now - window_,
-- now].
CREATE OR REPLACE FUNCTION chrono_forge.daily_outcomes(window_ interval DEFAULT '7 days',
    workflow text DEFAULT NULL, spike_rate double precision DEFAULT 0.10)
    RETURNS TABLE (day date, completed bigint, failed bigint, cancelled bigint,
                   completion_rate double precision, failure_rate double precision,
                   spike boolean)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    until_ timestamptz := chrono_forge.now();
    since timestamptz := until_ - window_;
    -- The window's whole days: (since, until_] holds all of them.
    first_whole date := pg_catalog.timezone('UTC', since)::date + 1;
    last_whole date := pg_catalog.timezone('UTC', until_)::date - 1;
BEGIN
    IF window_ IS NULL OR window_ <= interval '0' THEN
        RAISE EXCEPTION 'window_ must be a positive interval' USING ERRCODE = 'CF012';
    END IF;
    PERFORM chrono_forge.outcome_days_refresh(first_whole, last_whole);
    -- One statement (one snapshot): a whole day summarised and without a
    -- change the caller can see adds up its summary rows; any other day
    -- is one index-only range count of (state_code, ended_at).  (CASE
    -- runs only the subquery it picks; a lateral qual would be tested on
    -- every row of the other; OFFSET 0 keeps it from being copied into
    -- every reference to its result.  The days' bounds are computed
    -- apart (OFFSET 0 again) so that they reach the scans as values:
    -- under row-level security a condition computed with a function that
    -- is not leakproof, like timezone(), cannot be an index condition.)
    RETURN QUERY
    SELECT g.day, n.completed, n.failed, n.cancelled,
           n.completed::double precision / NULLIF(n.completed + n.failed, 0),
           n.failed::double precision / NULLIF(n.completed + n.failed, 0),
           coalesce(n.failed::double precision / NULLIF(n.completed + n.failed, 0) >= spike_rate, false)
      FROM (SELECT d.day, pg_catalog.timezone('UTC', d.day::timestamp) AS lo,
                   pg_catalog.timezone('UTC', (d.day + 1)::timestamp) AS hi,
                   d.day BETWEEN first_whole AND last_whole
                   AND EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s WHERE s.day = d.day)
                   AND NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c WHERE c.day = d.day)
                       AS summarised
              FROM (SELECT pg_catalog.timezone('UTC', since)::date + i AS day
                      FROM pg_catalog.generate_series(0, pg_catalog.timezone('UTC', until_)::date
                                                         - pg_catalog.timezone('UTC', since)::date) i) d
            OFFSET 0) g
     CROSS JOIN LATERAL (
          SELECT CASE WHEN g.summarised THEN
                     (SELECT ARRAY[coalesce(pg_catalog.sum(o.completed), 0), coalesce(pg_catalog.sum(o.failed), 0),
                                   coalesce(pg_catalog.sum(o.cancelled), 0)]::bigint[]
                        FROM chrono_forge.outcome_days o
                       WHERE o.day = g.day
                         AND (daily_outcomes.workflow IS NULL OR o.workflow = daily_outcomes.workflow))
                 ELSE
                     (SELECT ARRAY[pg_catalog.count(*) FILTER (WHERE w.state_code = 3),
                                   pg_catalog.count(*) FILTER (WHERE w.state_code = 4),
                                   pg_catalog.count(*) FILTER (WHERE w.state_code = 6)]
                        FROM chrono_forge.workflows w
                       WHERE w.state_code IN (3, 4, 6)
                         AND w.ended_at >= g.lo AND w.ended_at < g.hi
                         AND w.ended_at > since AND w.ended_at <= until_
                         AND (daily_outcomes.workflow IS NULL OR w.workflow = daily_outcomes.workflow))
                 END AS c
          OFFSET 0) x
     CROSS JOIN LATERAL (SELECT x.c[1] AS completed, x.c[2] AS failed, x.c[3] AS cancelled) n
     WHERE n.completed + n.failed + n.cancelled > 0
     ORDER BY g.day;
END
$$;

-- cleanup_batch(): notes the days of the runs it deletes.
CREATE OR REPLACE FUNCTION chrono_forge.cleanup_batch(
    completed_before timestamptz, failed_before timestamptz,
    repetitions_before timestamptz, batch_size integer)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    ids bigint[];
    n_workflows bigint := 0;
    n_logs bigint := 0;
    n_errors bigint := 0;
    n_wakeups bigint := 0;
    n_events bigint := 0;
    n_reps bigint := 0;
    n_orphaned bigint := 0;
BEGIN
    -- Completed runs first, then failed and cancelled ones, oldest first.
    -- SKIP LOCKED: a run a retry or a cancel is changing is left for the
    -- next batch.
    SELECT pg_catalog.array_agg(v.id) INTO ids FROM (
        SELECT w.id FROM chrono_forge.workflows w
         WHERE w.id IN (
            (SELECT c.id FROM chrono_forge.workflows c
              WHERE c.state_code = 3 AND c.ended_at <= completed_before
              ORDER BY c.ended_at LIMIT batch_size)
            UNION ALL
            (SELECT f.id FROM chrono_forge.workflows f
              WHERE f.state_code = 4 AND f.ended_at <= failed_before
              ORDER BY f.ended_at LIMIT batch_size)
            UNION ALL
            (SELECT x.id FROM chrono_forge.workflows x
              WHERE x.state_code = 6 AND x.ended_at <= failed_before
              ORDER BY x.ended_at LIMIT batch_size))
           AND w.state IN ('completed', 'failed', 'cancelled')
         ORDER BY w.state <> 'completed', w.ended_at
         LIMIT batch_size
         FOR UPDATE SKIP LOCKED) v;

    IF ids IS NOT NULL THEN
        -- Their days may be summarised (see daily_outcomes()).
        INSERT INTO chrono_forge.outcome_days_changed (day, owner)
        SELECT DISTINCT pg_catalog.timezone('UTC', w.ended_at)::date, w.owner
          FROM chrono_forge.workflows w WHERE w.id = ANY (ids);
        -- Children of a deleted run's branches lose their parent reference.
        UPDATE chrono_forge.workflows c SET parent_execution_log_id = NULL
          FROM chrono_forge.execution_logs l
         WHERE l.workflow_id = ANY (ids) AND l.step_name LIKE 'branch$%'
           AND c.parent_execution_log_id = l.id;
        GET DIAGNOSTICS n_orphaned = ROW_COUNT;
        DELETE FROM chrono_forge.error_logs WHERE workflow_id = ANY (ids);
        GET DIAGNOSTICS n_errors = ROW_COUNT;
        DELETE FROM chrono_forge.execution_logs WHERE workflow_id = ANY (ids);
        GET DIAGNOSTICS n_logs = ROW_COUNT;
        DELETE FROM chrono_forge.wakeups WHERE workflow_id = ANY (ids);
        GET DIAGNOSTICS n_wakeups = ROW_COUNT;
        DELETE FROM chrono_forge.events WHERE workflow_id = ANY (ids);
        GET DIAGNOSTICS n_events = ROW_COUNT;
        DELETE FROM chrono_forge.workflows WHERE id = ANY (ids)
           AND state IN ('completed', 'failed', 'cancelled');
        GET DIAGNOSTICS n_workflows = ROW_COUNT;
    END IF;

    -- Repetition logs strictly behind their coordination's frontier
    -- (last_execution_at) and before the cutoff, by scheduled time (the
    -- epoch in the tick's name).  Pending ticks and the coordination log
    -- stay; a coordination without a frontier prunes nothing.
    IF repetitions_before IS NOT NULL AND n_workflows < batch_size THEN
        WITH coord AS (
            SELECT l.workflow_id, l.step_name || '$' AS prefix,
                   LEAST(
                       pg_catalog.date_part('epoch', (l.metadata->>'last_execution_at')::timestamptz),
                       pg_catalog.date_part('epoch', repetitions_before)) AS before_epoch
              FROM chrono_forge.execution_logs l
             WHERE l.step_name LIKE 'durably\_repeat$%' AND l.step_name NOT LIKE 'durably\_repeat$%$%'
               AND l.metadata->>'last_execution_at' IS NOT NULL),
        victims AS (
            SELECT t.id FROM coord c
              JOIN chrono_forge.execution_logs t ON t.workflow_id = c.workflow_id
             WHERE pg_catalog.left(t.step_name, pg_catalog.length(c.prefix)) = c.prefix
               AND t.state IN ('completed', 'failed')
               AND pg_catalog.substr(t.step_name, pg_catalog.length(c.prefix) + 1) ~ '^[0-9]{1,12}$'
               AND pg_catalog.substr(t.step_name, pg_catalog.length(c.prefix) + 1)::numeric < c.before_epoch
             LIMIT batch_size - n_workflows)
        DELETE FROM chrono_forge.execution_logs t USING victims v WHERE t.id = v.id;
        GET DIAGNOSTICS n_reps = ROW_COUNT;
    END IF;

    RETURN pg_catalog.jsonb_build_object(
        'workflows', n_workflows, 'execution_logs', n_logs, 'error_logs', n_errors,
        'wakeups', n_wakeups, 'events', n_events, 'repetition_logs', n_reps,
        'orphaned_children', n_orphaned);
END
$$;

-- (end of operations)
