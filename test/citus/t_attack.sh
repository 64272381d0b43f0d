#!/usr/bin/env bash
# An ordinary role (with its own schema and CREATE on public, at the end)
# against the Citus parts: distribute() and
# claim_node_id_range() are not its to call; the routing anchor is not
# its to write; the cluster views quote what it passes (no injection) and
# show only its own runs; another role's run is unreachable through the
# routed calls, and its tasks through the task calls.
set -euo pipefail
. ./lib.sh
q 0 <<'SQL' >/dev/null
CREATE ROLE at_victim LOGIN;
CREATE ROLE at_intruder LOGIN;
CREATE TABLE public.at_canary (x int);
GRANT SELECT ON public.at_canary TO PUBLIC;
CREATE PROCEDURE public.at_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
  CALL chrono_forge.run_task('work', 'at_q', result => r);
END $$;
SQL
fails_with 42501 0 "SELECT chrono_forge.distribute()" at_intruder
fails_with 42501 1 "SELECT chrono_forge.claim_node_id_range()" at_intruder
fails_with 42501 0 "INSERT INTO chrono_forge_routing.keys VALUES ('x')" at_intruder
fails_with 42501 1 "DROP TABLE chrono_forge_routing.keys" at_intruder
for evil in "x'); DROP TABLE public.at_canary; --" "x%L%s" "\$\$; DROP TABLE public.at_canary; \$\$"; do
    lit=$(printf '%s' "$evil" | sed "s/'/''/g")
    expect_eq "$(as_role at_intruder 0 "SELECT count(*) FROM chrono_forge.cluster_runs(workflow => '$lit', key_prefix => '$lit')")" \
        0 "cluster_runs() with '$evil'"
done
expect_eq "$(q 0 -c "SELECT count(*) FROM public.at_canary")" 0 "the canary table (still there)"

# The victim's run and task; the intruder reaches neither.
as_role at_victim 0 "SELECT chrono_forge.start('public.at_wf', 'secret')" >/dev/null
g=$(q 0 -c "SELECT $(owner_of "'secret'")")
wait_for "$g" 60 "SELECT count(*) = 1 FROM chrono_forge.tasks t JOIN chrono_forge.workflows w ON w.id = t.workflow_id
                  WHERE w.key = 'secret'"
fails_with CF014 0 "SELECT chrono_forge.send_event('public.at_wf', 'secret', 'x')" at_intruder
fails_with CF014 0 "SELECT chrono_forge.cancel('public.at_wf', 'secret')" at_intruder
fails_with CF014 0 "SELECT * FROM chrono_forge.wait_for_run('public.at_wf', 'secret', '1 s')" at_intruder
expect_eq "$(as_role at_intruder "$g" "SELECT count(*) FROM chrono_forge.claim_tasks(ARRAY['at_q'], 10)")" 0 \
    "the victim's tasks claimed by the intruder"
task=$(q "$g" -c "SELECT t.id FROM chrono_forge.tasks t JOIN chrono_forge.workflows w ON w.id = t.workflow_id WHERE w.key = 'secret'")
expect_eq "$(as_role at_intruder "$g" "SELECT chrono_forge.complete_task($task, gen_random_uuid(), '{}')")" f \
    "the victim's task completed by the intruder"
expect_eq "$(as_role at_intruder 0 "SELECT count(*) FROM chrono_forge.cluster_claim_tasks(ARRAY['at_q'], 10)")" 0 \
    "the victim's tasks claimed by the intruder through the coordinator"
expect_eq "$(as_role at_intruder 0 "SELECT count(*) FROM chrono_forge.cluster_claim_tasks(ARRAY['at_q'', ''x''); DROP TABLE public.at_canary; --'], 10)")" \
    0 "cluster_claim_tasks() with an injection as a queue"
expect_eq "$(as_role at_intruder 0 "SELECT chrono_forge.complete_routed_task($task, 'secret', '00000000-0000-0000-0000-000000000000', '{}')")" f \
    "the victim's task completed by the intruder through the coordinator"
expect_eq "$(q 0 -c "SELECT count(*) FROM public.at_canary")" 0 "the canary table (still there)"
expect_eq "$(as_role at_intruder 0 "SELECT count(*) FROM chrono_forge.cluster_runs()")" 0 "runs the intruder sees"
expect_eq "$(as_role at_intruder 0 "SELECT count(*) FROM chrono_forge.cluster_overview() WHERE error IS NULL AND workflow IS NOT NULL")" \
    0 "overview rows the intruder sees"
expect_eq "$(as_role at_victim 0 "SELECT (run).key FROM chrono_forge.cluster_runs()")" secret "the victim's own run"
expect_eq "$(q "$g" -c "SELECT state FROM chrono_forge.workflows WHERE key = 'secret'")" idle "the victim's run, untouched"

# The intruder with a schema of its own and CREATE on public, shadowing
# what the guard and the cluster views use: it changes nothing.
q 0 -c "GRANT CREATE ON SCHEMA public TO at_intruder; CREATE SCHEMA at_intruder AUTHORIZATION at_intruder" >/dev/null
for n in 0 1; do
    as_role at_intruder "$n" "SET citus.enable_ddl_propagation = off;
        CREATE TABLE IF NOT EXISTS at_intruder.pg_dist_local_group (groupid integer);
        INSERT INTO at_intruder.pg_dist_local_group VALUES (2);
        CREATE OR REPLACE FUNCTION public.get_shard_id_for_distribution_column(regclass, text) RETURNS bigint
            LANGUAGE sql AS 'SELECT 0::bigint';
        CREATE OR REPLACE FUNCTION at_intruder.run_command_on_all_nodes(text,
            OUT nodeid integer, OUT success boolean, OUT result text) RETURNS SETOF record
            LANGUAGE sql AS \$\$ SELECT 1, true, '[{\"id\": 1, \"key\": \"forged\"}]' \$\$;
        CREATE OR REPLACE FUNCTION at_intruder.textne(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT false';
        CREATE OPERATOR at_intruder.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = at_intruder.textne)" >/dev/null
done
shadowed="SET search_path = at_intruder, public, pg_catalog;"
k2=$(key_on shadow 2)
k1=$(key_on shadow 1)
fails_with CF030 1 "$shadowed DO \$\$ BEGIN PERFORM chrono_forge.start('public.at_wf', '$k2'); END \$\$" at_intruder
expect_eq "$(as_role at_intruder 1 "$shadowed DO \$\$ BEGIN PERFORM chrono_forge.start('public.at_wf', '$k1'); END \$\$; SELECT 1")" \
    1 "the intruder's start of a key node 1 owns, shadowed"
expect_eq "$(as_role at_intruder 0 "$shadowed SELECT count(*) FROM chrono_forge.cluster_runs() WHERE (run).key = 'forged'")" 0 \
    "forged rows in cluster_runs()"
expect_eq "$(as_role at_intruder 0 "$shadowed SELECT node_group FROM chrono_forge.cluster_runs() WHERE (run).key = '$k1'")" 1 \
    "the intruder's run, on node 1"
expect_eq "$(q 2 -c "SELECT count(*) FROM chrono_forge.workflows WHERE key LIKE 'shadow%'")" 0 "runs the shadowed calls put on node 2"
echo ok
