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


-- =====================================================================
-- Engine identity and search path
-- =====================================================================

