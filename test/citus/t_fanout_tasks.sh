#!/usr/bin/env bash
# Fan-out and external tasks across the cluster: a parent's children run
# on its node (their keys name it: a call for a child elsewhere is CF030);
# tasks are claimed and completed on their run's node, with their result
# (a completion sent to another node is CF030; the coordinator has none);
# or through the coordinator alone: cluster_claim_tasks() and the
# *_routed_task() calls, which Citus sends to the task's node.
set -euo pipefail
. ./lib.sh


q 0 <<'SQL' >/dev/null
CREATE TABLE public.ft_effects (key text NOT NULL, node integer NOT NULL);
SELECT create_distributed_table('public.ft_effects', 'key');
CREATE FUNCTION public.ft_effect() RETURNS void LANGUAGE sql AS $$
  INSERT INTO public.ft_effects SELECT chrono_forge.key(), groupid FROM pg_catalog.pg_dist_local_group $$;
CREATE PROCEDURE public.ft_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('public.ft_effect', 'effect');
    CALL chrono_forge.set_result(jsonb_build_object('i', (args->>'i')::int));
END $$;
CREATE FUNCTION public.ft_sum() RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('sum', sum((result->>'i')::int), 'n', count(*))
    FROM chrono_forge.child_results('items', 0, 1000) $$;
CREATE PROCEDURE public.ft_parent(args jsonb) LANGUAGE plpgsql AS $$
DECLARE s jsonb;
BEGIN
    CALL chrono_forge.branch('items');
    CALL chrono_forge.spawn_each('i', 'public.ft_child',
        'SELECT g AS item_key, jsonb_build_object(''i'', g) AS args FROM generate_series(1, 300) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['items'], '1 second', '5 minutes');
    CALL chrono_forge.durably_execute('public.ft_sum', s);
    CALL chrono_forge.set_result(s);
END $$;
CREATE PROCEDURE public.ft_task_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.run_task('charge', 'ft_q', result => r, args => args);
    CALL chrono_forge.set_result(r);
END $$;
SQL

# 1. Fan-out: a parent on each worker node.
for g in 1 2; do
    k=$(key_on "fan$g-" "$g")
    q 0 -c "SELECT chrono_forge.start('public.ft_parent', '$k')" >/dev/null
    eval "parent$g=$k"
done
for g in 1 2; do
    eval "k=\$parent$g"
    expect_eq "$(q 0 -c "SELECT * FROM chrono_forge.wait_for_run('public.ft_parent', '$k', '300 s')" | cut -d'|' -f1,5)" \
        'completed|{"n": 300, "sum": 45150}' "parent $k's merged sum"
    expect_eq "$(q "$g" -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.ft_child' AND state = 'completed'")" \
        300 "children on node $g"
    expect_eq "$(q "$g" -c "SELECT count(*) FROM chrono_forge.workflows WHERE id >> 48 <> $g")" 0 \
        "ids outside node $g's range"
done
# Every child's effect, once, written from its parent's node.
expect_eq "$(q 0 -c "SELECT count(*), count(DISTINCT key) FROM public.ft_effects")" "600|600" "children's effects"
for g in 1 2; do
    eval "k=\$parent$g"
    child=$(q "$g" -c "SELECT key FROM chrono_forge.workflows WHERE workflow = 'public.ft_child' LIMIT 1")
    expect_eq "$(q 0 -c "SELECT count(*) FROM public.ft_effects WHERE key = '$child' AND node = $g")" 1 \
        "child $child's effect on its parent's node"
    # A call for a child on another node is refused by the parent's id; on its node it runs.
    other=$((3 - g))
    fails_with CF030 "$other" "DO \$\$ BEGIN PERFORM chrono_forge.wake('public.ft_child', '$child'); END \$\$"
    expect_eq "$(q "$g" -c "DO \$\$ BEGIN PERFORM chrono_forge.wake('public.ft_child', '$child'); END \$\$; SELECT 1")" 1 \
        "wake() of child $child on its node"
done

# 2. Tasks: 20 runs across the nodes, their tasks worked node by node.
seq 1 20 | sed "s/.*/SELECT chrono_forge.start('public.ft_task_wf', 'task&', '{\"n\": &}');/" | q 0 >/dev/null
wait_for 1 60 "SELECT (SELECT count(*) FROM chrono_forge.tasks) > 0"
wait_for 2 60 "SELECT (SELECT count(*) FROM chrono_forge.tasks) > 0"
expect_eq "$(q 0 -c "SELECT count(*) FROM chrono_forge.claim_tasks(ARRAY['ft_q'], 50)")" 0 "tasks claimed on the coordinator"
sleep 1
claimed=0
for g in 1 2; do
    q "$g" -c "SELECT task_id, claim_token, key, args->>'n' FROM chrono_forge.claim_tasks(ARRAY['ft_q'], 50)" > "$CFC_ROOT/claimed$g"
    other=$((3 - g))
    first=$(head -1 "$CFC_ROOT/claimed$g")
    fails_with CF030 "$other" "SELECT chrono_forge.complete_task(${first%%|*}, '$(cut -d'|' -f2 <<<"$first")')"
    while IFS='|' read -r id token key n; do
        [ "$(q 0 -c "SELECT $(owner_of "'$key'")")" = "$g" ] || fail "task of $key claimed on node $g"
        expect_eq "$(q "$g" -c "SELECT chrono_forge.complete_task($id, '$token', '{\"paid\": $n}')")" t "completion of task $id"
        claimed=$((claimed + 1))
    done < "$CFC_ROOT/claimed$g"
done
expect_eq "$claimed" 20 "tasks claimed on their nodes"
for i in 1 7 20; do
    expect_eq "$(q 0 -c "SELECT * FROM chrono_forge.wait_for_run('public.ft_task_wf', 'task$i', '60 s')" | cut -d'|' -f1,5)" \
        "completed|{\"paid\": $i}" "task run task$i"
done

# 3. The same through the coordinator only.
seq 21 40 | sed "s/.*/SELECT chrono_forge.start('public.ft_task_wf', 'task&', '{\"n\": &}');/" | q 0 >/dev/null
for g in 1 2; do
    wait_for "$g" 60 "SELECT count(*) > 0 FROM chrono_forge.tasks t JOIN chrono_forge.workflows w ON w.id = t.workflow_id
                      WHERE w.key IN (SELECT 'task' || g FROM generate_series(21, 40) g) AND t.state = 'pending'"
done
sleep 1
q 0 -c "SELECT node_group, task_id, claim_token, key, args->>'n' FROM chrono_forge.cluster_claim_tasks(ARRAY['ft_q'], 50)" \
    > "$CFC_ROOT/claimed0"
expect_eq "$(cut -d'|' -f1 "$CFC_ROOT/claimed0" | sort -u | tr '\n' ' ')" "1 2 " "nodes of the tasks cluster_claim_tasks() claimed"
expect_eq "$(wc -l < "$CFC_ROOT/claimed0")" 20 "tasks claimed through the coordinator"
IFS='|' read -r g id token key n < "$CFC_ROOT/claimed0"
wrong=$(key_on wrongkey $((3 - g)))
fails_with CF030 0 "SELECT chrono_forge.complete_routed_task($id, '$wrong', '$token')"
expect_eq "$(q 0 -c "SELECT chrono_forge.heartbeat_routed_task($id, '$key', '$token')")" ok "heartbeat through the coordinator"
while IFS='|' read -r g id token key n; do
    [ "$(q 0 -c "SELECT $(owner_of "'$key'")")" = "$g" ] || fail "task of $key reported on node $g"
    # A failure with a stale token reaches the node and changes nothing.
    expect_eq "$(q 0 -c "SELECT chrono_forge.fail_routed_task($id, '$key', '00000000-0000-0000-0000-000000000000', 'P0001', 'no')")" f \
        "failure of task $id with a stale token, through the coordinator"
    expect_eq "$(q 0 -c "SELECT chrono_forge.complete_routed_task($id, '$key', '$token', '{\"paid\": $n}')")" t \
        "completion of task $id through the coordinator"
done < "$CFC_ROOT/claimed0"
for i in 21 30 40; do
    expect_eq "$(q 0 -c "SELECT * FROM chrono_forge.wait_for_run('public.ft_task_wf', 'task$i', '60 s')" | cut -d'|' -f1,5)" \
        "completed|{\"paid\": $i}" "task run task$i"
done
echo ok
