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
             'chrono_forge.wait_for_run(text,text,interval)']::regprocedure[]
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
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION 'chrono_forge.distribute() needs Citus in this database'
            USING ERRCODE = 'CF030', HINT = 'CREATE EXTENSION citus on every node, then add the nodes.';
    END IF;
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
