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

