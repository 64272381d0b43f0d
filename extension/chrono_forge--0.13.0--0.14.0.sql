/* chrono_forge 0.13.0 -> 0.14.0: scale-out on Citus.  distribute() makes
 * the per-run calls Citus distributed functions keyed by the run's key;
 * the key-owner guard (CF030) and two-phase commits of passes are in the
 * library (citus.c).  See CHANGELOG.md and doc/citus.md.
 * A fresh CREATE EXTENSION runs chrono_forge--0.14.0.sql, built from
 * chrono_forge.sql, which holds everything this script makes; the catalog
 * test (test/integration/t_catalog_match.sh) checks that both agree. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.14.0'" to load this file. \quit

-- =====================================================================
-- Scale-out on Citus (0.14.0).  Each node of a Citus cluster runs its own
-- chrono_forge (tables, launcher, workers); distribute(), on the
-- coordinator, makes the per-run calls Citus distributed functions keyed
-- by the run's key, so that each call runs on the node owning the key
-- (citus.c refuses it on any other node: CF030).  Nothing here needs
-- Citus until it is called.
-- =====================================================================

-- What needs Citus calls this first: CF030 where Citus is not installed
-- in this database (or, with distributed, distribute() has not run),
-- instead of Citus's functions missing.
CREATE FUNCTION chrono_forge.require_citus(caller text, distributed boolean) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION '% needs Citus in this database', caller
            USING ERRCODE = 'CF030', HINT = 'CREATE EXTENSION citus on every node, then add the nodes.';
    END IF;
    IF distributed AND pg_catalog.to_regclass('chrono_forge_routing.keys') IS NULL THEN
        RAISE EXCEPTION '% needs chrono_forge.distribute() first', caller
            USING ERRCODE = 'CF030', HINT = 'A superuser runs it once, on the coordinator.';
    END IF;
END
$$;

-- Task calls for any node (0.14.0): the task worker's protocol through
-- one connection to any node of a Citus cluster.  cluster_claim_tasks()
-- claims on every node (each node's claim_tasks(), as the caller, up to
-- max_tasks from each; a node that cannot answer is passed over: its
-- tasks wait); the *_routed_task() calls take the task's run key
-- (claim_tasks() returns it) as their second argument, so that
-- distribute() routes each to the task's node, where it is the plain call.
CREATE FUNCTION chrono_forge.cluster_claim_tasks(queues text[], max_tasks integer DEFAULT 1,
    worker text DEFAULT NULL)
    RETURNS TABLE (node_group integer, task_id bigint, claim_token uuid, queue text, step text,
                   workflow text, key text, args jsonb, attempt integer, lease_until timestamptz,
                   timeout_at timestamptz, idempotency_key text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM chrono_forge.require_citus('chrono_forge.cluster_claim_tasks()', true);
    RETURN QUERY
    SELECT n.groupid, t.task_id, t.claim_token, t.queue, t.step, t.workflow, t.key, t.args,
           t.attempt, t.lease_until, t.timeout_at, t.idempotency_key
      FROM pg_catalog.run_command_on_all_nodes(pg_catalog.format(
               'SELECT COALESCE(pg_catalog.json_agg(t), ''[]'') FROM chrono_forge.claim_tasks(%L::text[], %s, %L) t',
               cluster_claim_tasks.queues, cluster_claim_tasks.max_tasks, cluster_claim_tasks.worker)) r
      JOIN pg_catalog.pg_dist_node n ON n.nodeid OPERATOR(pg_catalog.=) r.nodeid
     CROSS JOIN LATERAL pg_catalog.json_to_recordset(CASE WHEN r.success THEN r.result::json ELSE '[]' END)
           AS t(task_id bigint, claim_token uuid, queue text, step text, workflow text, key text,
                args jsonb, attempt integer, lease_until timestamptz, timeout_at timestamptz,
                idempotency_key text)
     ORDER BY n.groupid, t.task_id;
END
$$;
GRANT EXECUTE ON FUNCTION chrono_forge.cluster_claim_tasks(text[], integer, text) TO PUBLIC;

CREATE FUNCTION chrono_forge.heartbeat_routed_task(task_id bigint, key text, claim_token uuid,
    extend interval DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN chrono_forge.heartbeat_task(task_id, claim_token, extend);
END
$$;

CREATE FUNCTION chrono_forge.complete_routed_task(task_id bigint, key text, claim_token uuid,
    result jsonb DEFAULT NULL) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN chrono_forge.complete_task(task_id, claim_token, result);
END
$$;

CREATE FUNCTION chrono_forge.fail_routed_task(task_id bigint, key text, claim_token uuid,
    error_class text, message text, retryable boolean DEFAULT true) RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RETURN chrono_forge.fail_task(task_id, claim_token, error_class, message, retryable);
END
$$;

-- The per-run calls distribute() delegates: each takes the run's key as
-- its second argument.
CREATE FUNCTION chrono_forge.routed_functions() RETURNS regprocedure[]
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
SELECT ARRAY['chrono_forge.start(text,text,jsonb,jsonb)',
             'chrono_forge.wake(text,text)',
             'chrono_forge.retry(text,text)',
             'chrono_forge.send_event(text,text,text,jsonb)',
             'chrono_forge.cancel(text,text,text,boolean)',
             'chrono_forge.set_deadline(text,text,timestamptz)',
             'chrono_forge.reap(text,text)',
             'chrono_forge.force_unlock(text,text)',
             'chrono_forge.retry_blocked_children(text,text,text)',
             'chrono_forge.wait_for_run(text,text,interval)',
             'chrono_forge.heartbeat_routed_task(bigint,text,uuid,interval)',
             'chrono_forge.complete_routed_task(bigint,text,uuid,jsonb)',
             'chrono_forge.fail_routed_task(bigint,text,uuid,text,text,boolean)']::regprocedure[]
$$;

-- This node's run and task ids from its own range (Citus group g: from
-- g * 2^48), so that ids are unique across the cluster and name their
-- node.  Never moves a sequence back.  Returns the range's base.
CREATE FUNCTION chrono_forge.claim_node_id_range() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    base bigint;
    seq regclass;
BEGIN
    PERFORM chrono_forge.require_citus('chrono_forge.claim_node_id_range()', false);
    SELECT l.groupid::bigint OPERATOR(pg_catalog.<<) 48 INTO base FROM pg_catalog.pg_dist_local_group l;
    FOREACH seq IN ARRAY ARRAY[pg_catalog.pg_get_serial_sequence('chrono_forge.workflows', 'id'),
                               pg_catalog.pg_get_serial_sequence('chrono_forge.tasks', 'id')]::regclass[] LOOP
        IF COALESCE(pg_catalog.pg_sequence_last_value(seq), 0) OPERATOR(pg_catalog.<) base THEN
            PERFORM pg_catalog.setval(seq, base OPERATOR(pg_catalog.+) 1, false);
        END IF;
    END LOOP;
    RETURN base;
END
$$;
REVOKE ALL ON FUNCTION chrono_forge.claim_node_id_range() FROM PUBLIC;

-- distribute(): run once on the coordinator, by a superuser, and again
-- after adding nodes.  Creates the routing anchor (chrono_forge_routing.keys,
-- an empty table distributed by a text key: its shards' placements say
-- which node owns a key), registers routed_functions() as distributed
-- functions colocated with it, and gives every node its id range.
-- Returns the number of nodes that own keys.
CREATE FUNCTION chrono_forge.distribute() RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    f regprocedure;
    failed text;
    owners integer;
BEGIN
    PERFORM chrono_forge.require_citus('chrono_forge.distribute()', false);
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'chrono_forge.distribute() runs on the coordinator'
            USING ERRCODE = 'CF030';
    END IF;
    IF pg_catalog.to_regclass('chrono_forge_routing.keys') IS NULL THEN
        CREATE SCHEMA IF NOT EXISTS chrono_forge_routing;
        GRANT USAGE ON SCHEMA chrono_forge_routing TO PUBLIC;
        CREATE TABLE chrono_forge_routing.keys (key text NOT NULL);
        COMMENT ON TABLE chrono_forge_routing.keys IS
            'chrono_forge routing anchor: always empty; its shards say which node owns a run key';
    ELSIF NOT (SELECT r.rolsuper FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) c.relowner
                WHERE c.oid OPERATOR(pg_catalog.=) 'chrono_forge_routing.keys'::regclass) THEN
        RAISE EXCEPTION 'chrono_forge_routing.keys is not owned by a superuser'
            USING ERRCODE = 'CF030', HINT = 'Drop it: distribute() creates the routing anchor itself.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p
                    WHERE p.logicalrelid OPERATOR(pg_catalog.=) 'chrono_forge_routing.keys'::regclass) THEN
        PERFORM pg_catalog.create_distributed_table('chrono_forge_routing.keys', 'key');
    END IF;
    FOREACH f IN ARRAY chrono_forge.routed_functions() LOOP
        PERFORM pg_catalog.create_distributed_function(f, '$2',
            colocate_with := 'chrono_forge_routing.keys', force_delegation := true);
    END LOOP;
    SELECT pg_catalog.string_agg(r.nodeid::text OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) r.result, '; ')
      INTO failed
      FROM pg_catalog.run_command_on_all_nodes('SELECT chrono_forge.claim_node_id_range()') r
     WHERE NOT r.success;
    IF failed IS NOT NULL THEN
        RAISE EXCEPTION 'chrono_forge.distribute(): could not give every node its id range'
            USING DETAIL = failed;
    END IF;
    SELECT pg_catalog.count(DISTINCT p.groupid) INTO owners
      FROM pg_catalog.pg_dist_shard s JOIN pg_catalog.pg_dist_placement p USING (shardid)
     WHERE s.logicalrelid OPERATOR(pg_catalog.=) 'chrono_forge_routing.keys'::regclass;
    RETURN owners;
END
$$;
REVOKE ALL ON FUNCTION chrono_forge.distribute() FROM PUBLIC;

-- Cluster-wide forms of the operations views: each node's rows as the
-- caller sees them there (Citus connects to every node as the caller, so
-- each node's row-level security decides), with the node's Citus group
-- and address.  A node that cannot answer is one row with its error.
CREATE FUNCTION chrono_forge.cluster_overview(cap integer DEFAULT 1000)
    RETURNS TABLE (node_group integer, node text, workflow text,
                   state chrono_forge.workflow_state, runs text, capped boolean, error text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM chrono_forge.require_citus('chrono_forge.cluster_overview()', true);
    RETURN QUERY
    SELECT n.groupid, n.nodename OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) n.nodeport::text,
           o.workflow, o.state, o.runs, o.capped, CASE WHEN r.success THEN NULL ELSE r.result END
      FROM pg_catalog.run_command_on_all_nodes(pg_catalog.format(
               'SELECT COALESCE(pg_catalog.json_agg(o), ''[]'') FROM chrono_forge.overview(%s) o', cap)) r
      JOIN pg_catalog.pg_dist_node n ON n.nodeid OPERATOR(pg_catalog.=) r.nodeid
      LEFT JOIN LATERAL pg_catalog.json_to_recordset(CASE WHEN r.success THEN r.result::json END)
           AS o(workflow text, state chrono_forge.workflow_state, runs text, capped boolean) ON true
     ORDER BY n.groupid, o.workflow, o.state;
END
$$;
GRANT EXECUTE ON FUNCTION chrono_forge.cluster_overview(integer) TO PUBLIC;

-- The newest runs of every node (runs()' filters), newest first.
CREATE FUNCTION chrono_forge.cluster_runs(state text DEFAULT NULL, workflow text DEFAULT NULL,
    key_prefix text DEFAULT NULL, page_size integer DEFAULT 50)
    RETURNS TABLE (node_group integer, node text, run chrono_forge.run_row)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    lim integer := chrono_forge.page_limit(cluster_runs.page_size);
BEGIN
    PERFORM chrono_forge.require_citus('chrono_forge.cluster_runs()', true);
    PERFORM chrono_forge.state_codes(cluster_runs.state);     -- CF012 here, not on every node
    RETURN QUERY
    SELECT n.groupid, n.nodename OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) n.nodeport::text, x
      FROM pg_catalog.run_command_on_all_nodes(pg_catalog.format(
               'SELECT COALESCE(pg_catalog.json_agg(r), ''[]'') FROM chrono_forge.runs(state => %L,'
               ' workflow => %L, key_prefix => %L, page_size => %s) r',
               cluster_runs.state, cluster_runs.workflow, cluster_runs.key_prefix, lim)) r
      JOIN pg_catalog.pg_dist_node n ON n.nodeid OPERATOR(pg_catalog.=) r.nodeid
     CROSS JOIN LATERAL pg_catalog.json_populate_recordset(NULL::chrono_forge.run_row,
           CASE WHEN r.success THEN r.result::json ELSE '[]' END) x
     ORDER BY x.created_at DESC, n.groupid
     LIMIT lim;
END
$$;
GRANT EXECUTE ON FUNCTION chrono_forge.cluster_runs(text, text, text, integer) TO PUBLIC;

-- The run list and its counts by key prefix walk the run-id buckets from
-- the newest down to the oldest run's, no longer down to 0: a node's ids
-- may start at its range (distribute()).
-- The bucket of the oldest run (0 without runs): where that walk ends.
-- Run ids need not start near 0: on a Citus cluster each node's come
-- from its own range (claim_node_id_range(), 0.14.0).
CREATE FUNCTION chrono_forge.first_run_bucket() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT COALESCE(chrono_forge.run_bucket(pg_catalog.min(w.id)), 0) FROM chrono_forge.workflows w
$$;

CREATE OR REPLACE FUNCTION chrono_forge.run_counts(
    workflow text DEFAULT NULL, key_prefix text DEFAULT NULL,
    created_from timestamptz DEFAULT NULL, created_to timestamptz DEFAULT NULL,
    include_children boolean DEFAULT false, cap integer DEFAULT 5000)
    RETURNS TABLE (state chrono_forge.workflow_state, runs text, capped boolean)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    states chrono_forge.workflow_state[] := pg_catalog.enum_range(NULL::chrono_forge.workflow_state);
    newest_bucket bigint := chrono_forge.run_bucket(chrono_forge.newest_run_id());
    first_bucket bigint := chrono_forge.first_run_bucket();
    n bigint;
BEGIN
    run_counts.workflow := chrono_forge.canonical_workflow(run_counts.workflow);
    FOR code IN 1..6 LOOP
        IF run_counts.key_prefix IS NOT NULL THEN
            SELECT pg_catalog.count(*) INTO n FROM
                (SELECT 1 FROM pg_catalog.generate_series(newest_bucket, first_bucket, -1) AS b(bucket)
                  CROSS JOIN LATERAL (
                     SELECT 1 FROM chrono_forge.workflows w
                      WHERE chrono_forge.run_bucket(w.id) = b.bucket
                        AND pg_catalog.starts_with(w.key, run_counts.key_prefix)
                        AND w.state_code = code::smallint
                        AND (run_counts.workflow IS NULL OR w.workflow = run_counts.workflow)
                        AND (run_counts.created_from IS NULL OR w.created_at >= run_counts.created_from)
                        AND (run_counts.created_to IS NULL OR w.created_at < run_counts.created_to)
                        AND (run_counts.include_children OR w.parent_execution_log_id IS NULL)) m
                  LIMIT cap + 1) x;
        ELSE
            SELECT pg_catalog.count(*) INTO n FROM
                (SELECT 1 FROM chrono_forge.workflows w
                  WHERE w.state_code = code::smallint
                    AND (run_counts.workflow IS NULL OR w.workflow = run_counts.workflow)
                    AND (run_counts.created_from IS NULL OR w.created_at >= run_counts.created_from)
                    AND (run_counts.created_to IS NULL OR w.created_at < run_counts.created_to)
                    AND (run_counts.include_children OR w.parent_execution_log_id IS NULL)
                  LIMIT cap + 1) x;
        END IF;
        state := states[code];
        runs := CASE WHEN n > cap THEN cap::text || '+' ELSE n::text END;
        capped := n > cap;
        RETURN NEXT;
    END LOOP;
END
$$;


CREATE OR REPLACE FUNCTION chrono_forge.runs(
    state text DEFAULT NULL, workflow text DEFAULT NULL, key_prefix text DEFAULT NULL,
    created_from timestamptz DEFAULT NULL, created_to timestamptz DEFAULT NULL,
    include_children boolean DEFAULT false,
    before_id bigint DEFAULT NULL, page_size integer DEFAULT 50)
    RETURNS SETOF chrono_forge.run_row
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    SET jit = off
    SET plan_cache_mode = force_custom_plan
    AS $$
DECLARE
    codes smallint[] := chrono_forge.state_codes(runs.state);
    lim integer := chrono_forge.page_limit(runs.page_size);
    ts timestamptz := chrono_forge.now();
    stale interval := chrono_forge.reap_stale_after();
    top bigint := 9223372036854775807;
BEGIN
    runs.workflow := chrono_forge.canonical_workflow(runs.workflow);
    IF runs.created_from IS NOT NULL OR runs.created_to IS NOT NULL THEN
        -- A created range: read the range (BRIN) once, for every state,
        -- and keep the newest rows; walking each state's runs from the
        -- newest would skip everything created after a range in the past.
        -- (state_code + 0 and id + 0 keep the planner on the BRIN range.)
        RETURN QUERY
        SELECT t.id, t.workflow, t.key, t.state, t.owner, t.created_at, t.started_at, t.ended_at,
               CASE WHEN t.state = 'running' THEN ts - t.started_at
                    WHEN t.state_code IN (3, 4, 5, 6, 7) THEN
                         coalesce(t.ended_at, t.updated_at) - t.started_at END,
               t.locked_by,
               t.state = 'running' AND t.locked_at < ts - stale,
               t.parent_execution_log_id
          FROM chrono_forge.workflows t
         WHERE t.state_code + 0 = ANY (codes)
           AND (runs.before_id IS NULL OR t.id + 0 < runs.before_id)
           AND (runs.workflow IS NULL OR t.workflow = runs.workflow)
           AND (runs.key_prefix IS NULL OR pg_catalog.starts_with(t.key, runs.key_prefix))
           AND (runs.created_from IS NULL OR t.created_at >= runs.created_from)
           AND (runs.created_to IS NULL OR t.created_at < runs.created_to)
           AND (runs.include_children OR t.parent_execution_log_id IS NULL)
         ORDER BY t.id + 0 DESC
         LIMIT lim;
    ELSIF runs.key_prefix IS NOT NULL THEN
        -- A key prefix: the key-prefix index's blocks from the newest
        -- (the block of before_id, or of the newest id issued), in each
        -- only the keys with the prefix (starts_with is leakproof: an
        -- index condition under row-level security), the page's ids; then
        -- those runs.  (id + 0 keeps the planner off the primary key's
        -- order.)
        RETURN QUERY
        SELECT t.id, t.workflow, t.key, t.state, t.owner, t.created_at, t.started_at, t.ended_at,
               CASE WHEN t.state = 'running' THEN ts - t.started_at
                    WHEN t.state_code IN (3, 4, 5, 6, 7) THEN
                         coalesce(t.ended_at, t.updated_at) - t.started_at END,
               t.locked_by,
               t.state = 'running' AND t.locked_at < ts - stale,
               t.parent_execution_log_id
          FROM (SELECT p.id
                  FROM pg_catalog.generate_series(
                           chrono_forge.run_bucket(coalesce(runs.before_id - 1, chrono_forge.newest_run_id())),
                           chrono_forge.first_run_bucket(), -1) AS b(bucket)
                 CROSS JOIN LATERAL (
                    SELECT k.id FROM chrono_forge.workflows k
                     WHERE chrono_forge.run_bucket(k.id) = b.bucket
                       AND pg_catalog.starts_with(k.key, runs.key_prefix)
                       AND k.state_code = ANY (codes)
                       AND (runs.before_id IS NULL OR k.id + 0 < runs.before_id)
                       AND (runs.workflow IS NULL OR k.workflow = runs.workflow)
                       AND (runs.include_children OR k.parent_execution_log_id IS NULL)
                     ORDER BY k.id + 0 DESC LIMIT lim) p
                 LIMIT lim) page
          JOIN chrono_forge.workflows t ON t.id = page.id
         ORDER BY t.id DESC;
    ELSE
        -- One ordered index range per state, merged: never more than
        -- page_size rows read per state (plus what the filters skip).
        RETURN QUERY
        SELECT w.id, w.workflow, w.key, w.state, w.owner, w.created_at, w.started_at, w.ended_at,
               CASE WHEN w.state = 'running' THEN ts - w.started_at
                    WHEN w.state_code IN (3, 4, 5, 6, 7) THEN
                         coalesce(w.ended_at, w.updated_at) - w.started_at END,
               w.locked_by,
               w.state = 'running' AND w.locked_at < ts - stale,
               w.parent_execution_log_id
          FROM pg_catalog.unnest(codes) AS s(code)
         CROSS JOIN LATERAL (
            SELECT * FROM chrono_forge.workflows t
             WHERE t.state_code >= s.code
               AND (t.state_code, t.id) < (s.code, coalesce(runs.before_id, top))
               AND (runs.workflow IS NULL OR t.workflow = runs.workflow)
               AND (runs.include_children OR t.parent_execution_log_id IS NULL)
             ORDER BY t.state_code DESC, t.id DESC LIMIT lim) w
         ORDER BY w.id DESC
         LIMIT lim;
    END IF;
END
$$;

