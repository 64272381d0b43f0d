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

-- The canonical spelling of a workflow name (the procedure it resolves to,
-- schema-qualified, quoted only where it must be), with the client's
-- search_path: what runs are stored under since 0.5.0.
CREATE FUNCTION chrono_forge.canonical_workflow(workflow text) RETURNS text
    LANGUAGE c STABLE STRICT
    AS 'MODULE_PATHNAME', 'cf_canonical_workflow_sql';

-- Children are keyed "$<parent run id>$<old key>": unique to their parent,
-- and start() refuses keys beginning with '$'.  Existing children take the
-- new form (those the new library spawned before this update have it), so that a parent replaying a spawn after the update finds its
-- children where the new code looks.  Children not started yet too.
UPDATE chrono_forge.workflows c
   SET key = '$' || l.workflow_id::text || '$' || c.key
  FROM chrono_forge.execution_logs l
 WHERE l.id = c.parent_execution_log_id
   AND c.key NOT LIKE '$' || l.workflow_id::text || '$%';
UPDATE chrono_forge.spawn_batches b
   SET keys = ARRAY(SELECT CASE WHEN u.k LIKE '$' || l.workflow_id::text || '$%' THEN u.k
                                ELSE '$' || l.workflow_id::text || '$' || u.k END
                      FROM pg_catalog.unnest(b.keys) WITH ORDINALITY AS u(k, i) ORDER BY u.i)
  FROM chrono_forge.execution_logs l
 WHERE l.id = b.branch_log_id;
UPDATE chrono_forge.spawn_batches SET workflows = procedures
 WHERE workflows IS DISTINCT FROM procedures;

-- Every run's workflow becomes its procedure's canonical name (the stored
-- procedure column, resolved and qualified at start()).  Runs that were
-- one run under several spellings (same owner, procedure and key): the
-- oldest takes the canonical name, the others keep theirs (still listed,
-- and reachable by their old, qualified spelling).
ALTER TABLE chrono_forge.workflows DROP CONSTRAINT workflows_workflow_key_key;
UPDATE chrono_forge.workflows w SET workflow = w.procedure
 WHERE w.workflow <> w.procedure
   AND NOT EXISTS (SELECT FROM chrono_forge.workflows o
                    WHERE o.owner = w.owner AND o.key = w.key AND o.procedure = w.procedure
                      AND o.id <> w.id AND (o.workflow = o.procedure OR o.id < w.id));
-- (workflow, key, owner): lookups by (workflow, key) use its prefix.
ALTER TABLE chrono_forge.workflows
    ADD CONSTRAINT workflows_workflow_key_owner_key UNIQUE (workflow, key, owner);

-- The overview's (owner, workflow) pairs, by the new names.
DELETE FROM chrono_forge.workflow_owners o
 WHERE NOT EXISTS (SELECT FROM chrono_forge.workflows w
                    WHERE w.workflow = o.workflow AND w.owner = o.owner);
INSERT INTO chrono_forge.workflow_owners (owner, workflow)
SELECT DISTINCT w.owner, w.workflow FROM chrono_forge.workflows w, chrono_forge.workflow_owners_horizon h
 WHERE w.id <= h.last_id
ON CONFLICT DO NOTHING;

-- Defaults belong to the procedure: stored under its canonical name.  A
-- row's procedure is the one its owner owns by that name (configure() was
-- reserved to the procedure's owner); one that matches none, or whose
-- procedure is configured under its canonical name already, stays as it
-- is and applies to nothing.
DO $$
DECLARE
    d record;
    parts text[];
    found text[];
BEGIN
    FOR d IN SELECT * FROM chrono_forge.workflow_defaults LOOP
        BEGIN
            parts := pg_catalog.parse_ident(d.workflow);
        EXCEPTION WHEN OTHERS THEN
            CONTINUE;
        END;
        found := ARRAY(
            SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
              FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             WHERE p.proname = parts[pg_catalog.array_length(parts, 1)]
               AND (pg_catalog.array_length(parts, 1) = 1 OR n.nspname = parts[1])
               AND p.prokind = 'p' AND p.pronargs = 1
               AND p.proargtypes[0] = 'pg_catalog.jsonb'::pg_catalog.regtype
               AND p.proowner = d.owner::pg_catalog.oid);
        IF pg_catalog.array_length(found, 1) = 1 AND found[1] <> d.workflow
           AND NOT EXISTS (SELECT FROM chrono_forge.workflow_defaults x WHERE x.workflow = found[1]) THEN
            UPDATE chrono_forge.workflow_defaults SET workflow = found[1] WHERE workflow = d.workflow;
        END IF;
    END LOOP;
END
$$;

-- Schedules are per owner: a name is unique per owner, and the pg_cron jobs
-- are named by the schedule's id (pg_cron truncates job names to 63 bytes:
-- long names collided).
ALTER TABLE chrono_forge.schedules ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE chrono_forge.schedules DROP CONSTRAINT schedules_pkey;
ALTER TABLE chrono_forge.schedules ADD CONSTRAINT schedules_pkey PRIMARY KEY (id);
ALTER TABLE chrono_forge.schedules
    ADD CONSTRAINT schedules_owner_name_key UNIQUE (owner, name);

-- Existing jobs take the new names.  A job two schedules shared (names that
-- collided once truncated), or a schedule whose reboot job replaced its
-- tick job, cannot be told apart: those schedules get new jobs, created as
-- their owner (pg_cron runs a job as the role that created it).
DO $$
DECLARE
    s record;
    j bigint;
    r bigint;
    replaced bigint[] := '{}';
BEGIN
    IF pg_catalog.to_regclass('cron.job') IS NULL THEN
        RETURN;
    END IF;
    FOR s IN SELECT * FROM chrono_forge.schedules ORDER BY id LOOP
        IF s.jobid IS NOT NULL AND s.jobid IS DISTINCT FROM s.reboot_jobid
           AND NOT EXISTS (SELECT FROM chrono_forge.schedules o WHERE o.id <> s.id
                            AND (o.jobid IN (s.jobid, s.reboot_jobid)
                                 OR o.reboot_jobid IN (s.jobid, s.reboot_jobid))) THEN
            EXECUTE 'UPDATE cron.job SET jobname = $1 WHERE jobid = $2'
                USING 'chrono_forge:' || s.id::text, s.jobid;
            EXECUTE 'UPDATE cron.job SET jobname = $1 WHERE jobid = $2'
                USING 'chrono_forge:' || s.id::text || ':reboot', s.reboot_jobid;
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE pg_catalog.format('SET LOCAL ROLE %I', s.owner::text);
            EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO j
                USING 'chrono_forge:' || s.id::text, s.cron,
                      pg_catalog.format('SELECT chrono_forge.schedule_fire(%L)', s.name);
            EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO r
                USING 'chrono_forge:' || s.id::text || ':reboot', '@reboot',
                      pg_catalog.format('SELECT chrono_forge.schedule_fire(%L, reboot => true)', s.name);
            RESET ROLE;
            UPDATE chrono_forge.schedules SET jobid = j, reboot_jobid = r WHERE id = s.id;
            replaced := replaced || s.jobid || s.reboot_jobid;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'chrono_forge: could not recreate the pg_cron jobs of schedule "%" of role %: %',
                s.name, s.owner, SQLERRM
                USING HINT = 'Call chrono_forge.unschedule() and chrono_forge.schedule() again as its owner.';
        END;
    END LOOP;
    -- The shared jobs the new ones replaced, once no schedule uses them.
    EXECUTE 'DELETE FROM cron.job WHERE jobid = ANY ($1)
               AND jobid NOT IN (SELECT jobid FROM chrono_forge.schedules WHERE jobid IS NOT NULL
                                 UNION ALL
                                 SELECT reboot_jobid FROM chrono_forge.schedules WHERE reboot_jobid IS NOT NULL)'
        USING replaced;
END
$$;

-- =====================================================================
-- Existence: another role's objects answer as missing ones
-- =====================================================================

-- A run the caller may see (row-level security decides), by (workflow,
-- key): the name canonicalized as start() stores it; the caller's own run
-- first; several others' (an admin's view) and none the caller's own is
-- ambiguous (CF012).  Another role's run answers as a missing one (CF014).
CREATE OR REPLACE FUNCTION chrono_forge.visible_run(workflow text, key text) RETURNS chrono_forge.workflows
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    w chrono_forge.workflows;
    wf text := chrono_forge.canonical_workflow(visible_run.workflow);
    n integer;
BEGIN
    SELECT * INTO w FROM chrono_forge.workflows t
     WHERE t.workflow = wf AND t.key = visible_run.key AND t.owner = current_user::regrole;
    IF FOUND THEN
        RETURN w;
    END IF;
    SELECT pg_catalog.count(*)::integer INTO n FROM chrono_forge.workflows t
     WHERE t.workflow = wf AND t.key = visible_run.key;
    IF n > 1 THEN
        RAISE EXCEPTION 'workflow run (%, %) is ambiguous', workflow, key
            USING ERRCODE = 'CF012',
                  DETAIL = 'Several roles own a run of this workflow with this key, none of them you.',
                  HINT = 'SET ROLE to the run''s owner to act on its run.';
    END IF;
    SELECT * INTO w FROM chrono_forge.workflows t
     WHERE t.workflow = wf AND t.key = visible_run.key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'workflow run (%, %) does not exist', workflow, key
            USING ERRCODE = 'CF014';
    END IF;
    RETURN w;
END
$$;

-- A schedule's last run is its owner's (names and keys are per owner).
CREATE OR REPLACE VIEW chrono_forge.schedule_status WITH (security_invoker = true) AS
SELECT s.name, s.cron, s.workflow, s.args, s.catch_up, s.owner, s.last_tick,
       chrono_forge.cron_next(s.cron, GREATEST(s.last_tick, chrono_forge.now())) AS next_tick,
       s.last_fired_at, s.runs_started, r.id AS last_run_id, r.state AS last_run_state,
       s.jobid, s.reboot_jobid, s.id
  FROM chrono_forge.schedules s
  LEFT JOIN chrono_forge.workflows r
    ON r.workflow = s.workflow
   AND r.key = s.name || '@' || pg_catalog.to_char(s.last_tick AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"')
   AND r.owner = s.owner;

-- =====================================================================
-- Bounded inputs and work
-- =====================================================================

-- daily_outcomes() and outcome_days_refresh() wrote one summary row per
-- day asked for: daily_outcomes('300 years') wrote 109,572 rows, and the
-- refresh is callable by everyone (daily_outcomes() runs as its caller
-- and needs it).  Both are now clamped to the days that have ended runs,
-- and one refresh summarises at most 366 days; the days it leaves are
-- counted, exactly, until a later call summarises them.
CREATE OR REPLACE FUNCTION chrono_forge.outcome_days_refresh(first_day date, last_day date)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
DECLARE
    horizon timestamptz;
    oldest timestamptz;
    days date[];
BEGIN
    -- (Each statement below must see what committed before it: only in
    -- READ COMMITTED.)
    IF pg_catalog.current_setting('transaction_read_only')::boolean
       OR pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN 0;
    END IF;
    -- No day before the oldest end of any run has anything to summarise:
    -- the range is clamped to the data, whatever the caller asked for
    -- (one index probe per ended state).
    SELECT LEAST((SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 3 AND w.ended_at IS NOT NULL
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 4 AND w.ended_at IS NOT NULL
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 6 AND w.ended_at IS NOT NULL
                   ORDER BY w.ended_at LIMIT 1))
      INTO oldest;
    -- A day before it that was noted has lost its runs (cleanup): its
    -- summary goes (the day is then counted, and has nothing to count)
    -- rather than being summarised anew, since the clamp never reaches it.
    -- (Under the summarising lock, as any change to the summaries.)
    IF EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c
                WHERE oldest IS NULL OR c.day < pg_catalog.timezone('UTC', oldest)::date)
       AND pg_catalog.pg_try_advisory_xact_lock(
               'chrono_forge.outcome_days_summarised'::regclass::oid::integer, 0) THEN
        DELETE FROM chrono_forge.outcome_days_summarised s
         WHERE oldest IS NULL OR s.day < pg_catalog.timezone('UTC', oldest)::date;
        DELETE FROM chrono_forge.outcome_days o
         WHERE oldest IS NULL OR o.day < pg_catalog.timezone('UTC', oldest)::date;
        DELETE FROM chrono_forge.outcome_days_changed c
         WHERE oldest IS NULL OR c.day < pg_catalog.timezone('UTC', oldest)::date;
    END IF;
    IF oldest IS NULL OR first_day IS NULL OR last_day IS NULL THEN
        RETURN 0;
    END IF;
    -- Days that may be closed; the cheap test first: nothing to do in
    -- the usual call.
    first_day := GREATEST(first_day, pg_catalog.timezone('UTC', oldest)::date);
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
    -- At most 366 days a call, the newest first: what one call writes is
    -- bounded, and the days left are counted by daily_outcomes() until a
    -- later call summarises them.
    SELECT pg_catalog.array_agg(d.day ORDER BY d.day) INTO days
      FROM (SELECT first_day + i AS day
              FROM pg_catalog.generate_series(0, LEAST(last_day, pg_catalog.timezone('UTC', horizon)::date - 1)
                                                 - first_day) i
             WHERE NOT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised s WHERE s.day = first_day + i)
                OR EXISTS (SELECT 1 FROM chrono_forge.outcome_days_changed c WHERE c.day = first_day + i)
             ORDER BY i DESC
             LIMIT 366) d;
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
    since timestamptz;
    oldest timestamptz;
    first_whole date;
    last_whole date;
BEGIN
    IF window_ IS NULL OR window_ OPERATOR(pg_catalog.<=) interval '0' THEN
        RAISE EXCEPTION 'window_ must be a positive interval' USING ERRCODE = 'CF012';
    END IF;
    -- A window reaching (within a year) past the first representable
    -- timestamp is all time ('300000 years' is not an error).
    IF window_ OPERATOR(pg_catalog.>=)
       ((until_ OPERATOR(pg_catalog.-) '4713-01-01 00:00:00+00 BC'::timestamptz)
        OPERATOR(pg_catalog.-) interval '1 year') THEN
        since := '-infinity';
    ELSE
        since := until_ OPERATOR(pg_catalog.-) window_;
    END IF;
    -- The window then starts no earlier than the oldest end of a run the
    -- caller sees in it: no day before has anything to count, so a window
    -- far wider than the data costs what the data costs.  (One index
    -- probe per ended state, from the window's start: the first visible
    -- entry ends it.)
    SELECT LEAST((SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 3 AND w.ended_at OPERATOR(pg_catalog.>) since
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 4 AND w.ended_at OPERATOR(pg_catalog.>) since
                   ORDER BY w.ended_at LIMIT 1),
                 (SELECT w.ended_at FROM chrono_forge.workflows w
                   WHERE w.state_code OPERATOR(pg_catalog.=) 6 AND w.ended_at OPERATOR(pg_catalog.>) since
                   ORDER BY w.ended_at LIMIT 1))
      INTO oldest;
    IF oldest IS NULL OR oldest OPERATOR(pg_catalog.>) until_ THEN
        -- (Nothing to count; the refresh still drops the summaries of
        -- days whose runs are gone.)
        PERFORM chrono_forge.outcome_days_refresh(NULL, NULL);
        RETURN;
    END IF;
    -- (From the start of the oldest end's day, so that the day is whole
    -- and can be read from its summary.)
    since := GREATEST(since, pg_catalog.timezone('UTC', pg_catalog.timezone('UTC', oldest)::date::timestamp)
                             OPERATOR(pg_catalog.-) interval '1 microsecond');
    -- The window's whole days: (since, until_] holds all of them.
    first_whole := pg_catalog.timezone('UTC', since)::date + 1;
    last_whole := pg_catalog.timezone('UTC', until_)::date - 1;
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

-- stranded() and top_errors() subtracted their interval from now():
-- top_errors('100000000 years') failed with 22008.  An interval reaching
-- (within a year) past the first representable timestamp now means "all
-- time", which is what it asked for; one of -1000 years or less, "after
-- the end of time".
CREATE OR REPLACE FUNCTION chrono_forge.stranded(stale_after interval DEFAULT NULL, max_rows integer DEFAULT 500)
    RETURNS TABLE (id bigint, workflow text, key text, owner regrole, locked_by text,
                   locked_at timestamptz, lock_age interval)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    SELECT w.id, w.workflow, w.key, w.owner, w.locked_by, w.locked_at,
           chrono_forge.now() OPERATOR(pg_catalog.-) w.locked_at
      FROM chrono_forge.workflows w
     WHERE w.state = 'running'
       AND w.locked_at OPERATOR(pg_catalog.<) (
           SELECT CASE WHEN s.i OPERATOR(pg_catalog.>=)
                            ((chrono_forge.now() OPERATOR(pg_catalog.-) '4713-01-01 00:00:00+00 BC'::timestamptz)
                             OPERATOR(pg_catalog.-) interval '1 year')
                       THEN '-infinity'::timestamptz
                       WHEN s.i OPERATOR(pg_catalog.<=) interval '-1000 years'
                       THEN 'infinity'::timestamptz
                       ELSE chrono_forge.now() OPERATOR(pg_catalog.-) s.i END
             FROM (SELECT coalesce(stale_after, chrono_forge.reap_stale_after()) AS i) s)
     ORDER BY w.locked_at
     LIMIT max_rows
$$;

CREATE OR REPLACE FUNCTION chrono_forge.top_errors(window_ interval DEFAULT '7 days',
    workflow text DEFAULT NULL, max_rows integer DEFAULT 8, sample integer DEFAULT 2000)
    RETURNS TABLE (error_class text, errors bigint, runs bigint, last_seen timestamptz,
                   example_message text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    AS $$
    SELECT e.error_class, pg_catalog.count(*), pg_catalog.count(DISTINCT e.workflow_id),
           pg_catalog.max(e.created_at),
           (pg_catalog.array_agg(e.error_message ORDER BY e.id DESC))[1]
      FROM (SELECT e.* FROM chrono_forge.error_logs e
             WHERE e.created_at OPERATOR(pg_catalog.>) (
                   SELECT CASE WHEN window_ OPERATOR(pg_catalog.>=)
                                    ((chrono_forge.now() OPERATOR(pg_catalog.-) '4713-01-01 00:00:00+00 BC'::timestamptz)
                                     OPERATOR(pg_catalog.-) interval '1 year')
                               THEN '-infinity'::timestamptz
                               WHEN window_ OPERATOR(pg_catalog.<=) interval '-1000 years'
                               THEN 'infinity'::timestamptz
                               ELSE chrono_forge.now() OPERATOR(pg_catalog.-) window_ END)
               AND (top_errors.workflow IS NULL OR EXISTS (
                    SELECT 1 FROM chrono_forge.workflows w
                     WHERE w.id = e.workflow_id AND w.workflow = top_errors.workflow))
             ORDER BY e.created_at DESC LIMIT sample) e
     GROUP BY e.error_class
     ORDER BY 2 DESC, 1
     LIMIT max_rows
$$;

-- context_set(NULL, v) failed inside jsonb_build_object() with 22023.
CREATE OR REPLACE FUNCTION chrono_forge.context_set(key text, value jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF key IS NULL THEN
        RAISE EXCEPTION 'context key must not be NULL' USING ERRCODE = 'CF012';
    END IF;
    PERFORM chrono_forge.context_replace(
        chrono_forge.context() OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(key, value));
END
$$;


-- =====================================================================
-- Engine identity and search path
-- =====================================================================


-- =====================================================================
-- Bounded passes and fair workers
-- =====================================================================

-- cancel() of a run whose row a pass holds does not wait for the pass: it
-- records the cancel here (durably, with the caller's transaction) and the
-- worker running that pass is told to stop it.  The pass, or the launcher
-- once no pass holds the run, makes the run cancelled and deletes the row.
-- Internal: written and read by the engine only.
CREATE TABLE chrono_forge.cancel_requests (
    workflow_id   bigint PRIMARY KEY
                  REFERENCES chrono_forge.workflows (id) ON DELETE CASCADE,
    reason        text,
    requested_by  oid NOT NULL,
    cancelled_run bigint NOT NULL,
    requested_at  timestamptz NOT NULL
);
ALTER TABLE chrono_forge.cancel_requests ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON chrono_forge.cancel_requests FROM PUBLIC;
