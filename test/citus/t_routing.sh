#!/usr/bin/env bash
# Routing: runs started through the coordinator (or from a worker) run on
# the node owning their key; ids name their node; a call Citus does not
# delegate (set-based, a DO block, a function) on a node that does not own
# the key is refused (CF030) with nothing written; the other per-run calls
# route too; roles stay apart; the cluster-wide views see every node.
set -euo pipefail
. ./lib.sh

q 0 <<'SQL' >/dev/null
CREATE TABLE public.rt_effects (key text NOT NULL, node integer NOT NULL);
SELECT create_distributed_table('public.rt_effects', 'key');
CREATE FUNCTION public.rt_step() RETURNS void LANGUAGE sql AS $$
  INSERT INTO public.rt_effects SELECT chrono_forge.key(), groupid FROM pg_catalog.pg_dist_local_group $$;
CREATE PROCEDURE public.rt_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
  CALL chrono_forge.durably_execute('public.rt_step', 'effect');
END $$;
CREATE PROCEDURE public.rt_ev_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
  CALL chrono_forge.await_event('go');
  CALL chrono_forge.durably_execute('public.rt_step', 'effect');
END $$;
CREATE FUNCTION public.rt_start_in_function(k text) RETURNS bigint LANGUAGE plpgsql AS
  $$ BEGIN RETURN chrono_forge.start('public.rt_wf', k); END $$;
CREATE PROCEDURE public.rt_start_in_procedure(k text) LANGUAGE plpgsql AS
  $$ BEGIN PERFORM chrono_forge.start('public.rt_wf', k); END $$;
GRANT EXECUTE ON PROCEDURE public.rt_wf(jsonb) TO PUBLIC;
GRANT EXECUTE ON FUNCTION public.rt_step() TO PUBLIC;
GRANT INSERT ON public.rt_effects TO PUBLIC;
SQL

# The owner group of each key, as the coordinator's metadata says.

# 1. 200 starts through the coordinator, one statement each.
seq 1 200 | sed "s/.*/SELECT chrono_forge.start('public.rt_wf', 'r&');/" | q 0 >/dev/null
done_sql="SELECT (SELECT count(*) FROM public.rt_effects WHERE key LIKE 'r%') = 200"
wait_for 0 120 "$done_sql"
expect_eq "$(q 0 -c "WITH e AS MATERIALIZED (SELECT key, node FROM public.rt_effects)
                     SELECT count(*) FROM e WHERE e.node <> $(owner_of e.key)")" 0 \
    "effects written on a node not owning their key"
expect_eq "$(q 0 -c "SELECT count(*) FROM chrono_forge.workflows")" 0 "runs on the coordinator"
total=0
for n in 1 2; do
    c=$(q "$n" -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.rt_wf' AND state = 'completed'")
    [ "$c" -gt 20 ] || fail "node $n ran only $c of 200 runs"
    total=$((total + c))
    expect_eq "$(q "$n" -c "SELECT count(*) FROM chrono_forge.workflows w WHERE w.workflow = 'public.rt_wf'
                            AND $(owner_of w.key) <> (SELECT groupid FROM pg_catalog.pg_dist_local_group)")" 0 \
        "runs on node $n whose key it does not own"
    # Ids come from the node's range (group << 48).
    expect_eq "$(q "$n" -c "SELECT count(*) FROM chrono_forge.workflows WHERE id >> 48 <> $n")" 0 \
        "run ids outside node $n's range"
done
expect_eq "$total" 200 "completed runs across the nodes"

# 2. A repeated start returns the existing run, through the coordinator
#    or a worker (Citus delegates from any node).
for k in r1 r2 r3 r4; do
    id=$(q 0 -c "SELECT chrono_forge.start('public.rt_wf', '$k')")
    expect_eq "$(q 1 -c "SELECT chrono_forge.start('public.rt_wf', '$k')")" "$id" "repeated start of $k from node 1"
    expect_eq "$(q 2 -c "SELECT chrono_forge.start('public.rt_wf', '$k')")" "$id" "repeated start of $k from node 2"
done

# ... and under another spelling of the workflow's name (resolved on the
#     key's node, to the same canonical name).
id=$(q 0 -c "SELECT chrono_forge.start('public.rt_wf', 'r5')")
expect_eq "$(q 0 -c "SELECT chrono_forge.start('rt_wf', 'r5')")" "$id" "start of r5 as rt_wf"
expect_eq "$(q 0 -c "SELECT chrono_forge.start('\"public\".\"rt_wf\"', 'r5')")" "$id" "start of r5 as \"public\".\"rt_wf\""

# 3. Calls Citus does not delegate are refused on a node not owning the key.
k1=$(key_on own1- 1)
k2=$(key_on own2- 2)
fails_with CF030 0 "SELECT chrono_forge.start('public.rt_wf', 'set' || g) FROM generate_series(1, 20) g"
fails_with CF030 0 "DO \$\$ BEGIN PERFORM chrono_forge.start('public.rt_wf', '$k1'); END \$\$"
fails_with CF030 2 "DO \$\$ BEGIN PERFORM chrono_forge.start('public.rt_wf', '$k1'); END \$\$"
fails_with CF030 1 "SELECT public.rt_start_in_function('$k2')"
fails_with CF030 1 "DO \$\$ BEGIN PERFORM chrono_forge.wake('public.rt_wf', '$k2'); END \$\$"
fails_with CF030 1 "DO \$\$ BEGIN PERFORM chrono_forge.send_event('public.rt_wf', '$k2', 'go'); END \$\$"
fails_with CF030 1 "DO \$\$ BEGIN PERFORM chrono_forge.cancel('public.rt_wf', '$k2'); END \$\$"
fails_with CF030 1 "DO \$\$ BEGIN PERFORM chrono_forge.retry('public.rt_wf', '$k2'); END \$\$"
fails_with CF030 1 "DO \$\$ BEGIN PERFORM chrono_forge.set_deadline('public.rt_wf', '$k2', now()); END \$\$"
# ... in an EXCEPTION block the refusal is caught like any error.
expect_eq "$(q 1 -c "DO \$\$ BEGIN PERFORM chrono_forge.start('public.rt_wf', '$k2');
                      EXCEPTION WHEN SQLSTATE 'CF030' THEN RAISE NOTICE 'caught'; END \$\$" 2>&1)" \
    "NOTICE:  caught" "CF030 in an EXCEPTION block"
for n in 0 1 2; do
    expect_eq "$(q "$n" -c "SELECT count(*) FROM chrono_forge.workflows WHERE key LIKE 'set%' OR key = '$k1' AND $n <> 1
                            OR key = '$k2' AND $n <> 2")" 0 "runs written by refused calls on node $n"
done
# The same calls where the key is owned succeed (the guard is per key).
q 1 -c "DO \$\$ BEGIN PERFORM chrono_forge.start('public.rt_wf', '$k1'); END \$\$" >/dev/null
q 2 -c "SELECT public.rt_start_in_function('$k2')" >/dev/null
q 1 -c "CALL public.rt_start_in_procedure('$k1')" >/dev/null
# A procedure CALLed at top level: Citus delegates the start inside it to
# the key's node (no run of the key where the CALL ran).
q 1 -c "CALL public.rt_start_in_procedure('$k2')" >/dev/null
expect_eq "$(q 1 -c "SELECT count(*) FROM chrono_forge.workflows WHERE key = '$k2'")" 0 "runs of $k2 on node 1 after a CALL there"
expect_eq "$(q 2 -c "SELECT count(*) FROM chrono_forge.workflows WHERE key = '$k2'")" 1 "runs of $k2 on node 2"
wait_for 0 60 "SELECT count(*) = 2 FROM public.rt_effects WHERE key IN ('$k1', '$k2')"

# 4. The other per-run calls route from the coordinator.
for g in 1 2; do
    k=$(key_on "ev$g-" "$g")
    q 0 -c "SELECT chrono_forge.start('public.rt_ev_wf', '$k')" >/dev/null
    wait_for "$g" 60 "SELECT EXISTS (SELECT FROM chrono_forge.workflows WHERE key = '$k' AND state = 'idle'
                       AND started_at IS NOT NULL)"
    expect_eq "$(q 0 -c "SELECT chrono_forge.wake('public.rt_ev_wf', '$k')")" t "wake() of $k"
    expect_eq "$(q 0 -c "SELECT chrono_forge.send_event('public.rt_ev_wf', '$k', 'go')")" t "send_event() to $k"
    expect_eq "$(q 0 -c "SELECT * FROM chrono_forge.wait_for_run('public.rt_ev_wf', '$k', '60 s')" | cut -d'|' -f1)" completed \
        "wait_for_run() of $k through the coordinator"
    expect_eq "$(q 0 -c "SELECT count(*) FROM public.rt_effects WHERE key = '$k' AND node = $g")" 1 "effect of $k"
    kc="${k}-c"
    q 0 -c "SELECT chrono_forge.start('public.rt_ev_wf', '$kc')" >/dev/null
    expect_eq "$(q 0 -c "SELECT chrono_forge.cancel('public.rt_ev_wf', '$kc', 'test')")" 1 "cancel() of $kc"
    wait_for "$(q 0 -c "SELECT $(owner_of "'$kc'")")" 60 \
        "SELECT state = 'cancelled' FROM chrono_forge.workflows WHERE key = '$kc'"
done

# 5. Roles stay apart across the cluster (Citus propagates roles).
q 0 -c "CREATE ROLE rt_alice LOGIN; CREATE ROLE rt_bob LOGIN" >/dev/null
alice=$(as_role rt_alice 0 "SELECT chrono_forge.start('public.rt_wf', 'shared-key')")
mine=$(q 0 -c "SELECT chrono_forge.start('public.rt_wf', 'shared-key')")
[ "$alice" != "$mine" ] || fail "two roles' runs of one key are one run"
out=$(as_role rt_bob 0 "SELECT chrono_forge.cancel('public.rt_wf', 'shared-key')" 2>&1) && fail "bob cancelled alice's run"
grep -q "does not exist\|no run" <<<"$out" || fail "bob's cancel: $out"
expect_eq "$(as_role rt_bob 0 "SELECT count(*) FROM chrono_forge.cluster_runs(workflow => 'public.rt_wf')")" 0 \
    "runs bob sees across the cluster"
expect_eq "$(as_role rt_alice 0 "SELECT count(*) FROM chrono_forge.cluster_runs(workflow => 'public.rt_wf')")" 1 \
    "runs alice sees across the cluster"
as_role rt_bob 0 "SELECT chrono_forge.distribute()" >/dev/null 2>&1 && fail "bob ran distribute()"

# 6. Cluster-wide views: each node's runs, with its group.
expect_eq "$(q 0 -c "SELECT count(DISTINCT node_group) FROM chrono_forge.cluster_runs(workflow => 'public.rt_wf', page_size => 500)")" \
    2 "nodes in cluster_runs()"
expect_eq "$(q 0 -c "SELECT count(*) FROM chrono_forge.cluster_runs(workflow => 'public.rt_wf', page_size => 500)
                     WHERE (run).id >> 48 <> node_group")" 0 "cluster_runs() rows with another node's ids"
expect_eq "$(q 0 -c "SELECT sum(runs::int) FROM chrono_forge.cluster_overview()
                     WHERE workflow = 'public.rt_wf' AND state = 'completed'")" \
    "$(( $(q 1 -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.rt_wf' AND state = 'completed'")
       + $(q 2 -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.rt_wf' AND state = 'completed'") ))" \
    "completed runs in cluster_overview()"
echo ok
