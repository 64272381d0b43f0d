# Fan-out across server crashes: a spawn_each is interrupted mid-dispatch
# (pg_ctl stop -m immediate), twice, and once more while the children run
# (taken from spawn_batches by the workers); after each restart the parent
# resumes from its durable cursor and the children not started yet wait in
# their batches.  Every item gets exactly one child and each child's step
# runs exactly once; the parent joins and finishes.
. "$CF_INTEGRATION_DIR/lib.sh"
N=${CF_FANOUT_N:-10000}
q <<SQL >/dev/null
CREATE TABLE fc_items (id int PRIMARY KEY);
INSERT INTO fc_items SELECT generate_series(1, $N);
CREATE TABLE fc_out (item int);     -- no key: a repeat would show
-- The source reads slowly (0.5 ms a row returned; STABLE, so that the
-- keyset query computes it only for the rows it returns), so that the
-- crashes land mid-dispatch.
CREATE FUNCTION fc_slow(i int) RETURNS jsonb LANGUAGE sql STABLE
    AS \$\$ SELECT jsonb_build_object('i', i) FROM pg_sleep(0.0005) \$\$;
CREATE FUNCTION fc_step(args jsonb) RETURNS void LANGUAGE sql
    AS \$\$ INSERT INTO fc_out VALUES ((args->>'i')::int) \$\$;
CREATE PROCEDURE fc_child(args jsonb) LANGUAGE plpgsql AS \$\$
BEGIN
    CALL chrono_forge.durably_execute('fc_step');
END \$\$;
CREATE FUNCTION fc_done() RETURNS void LANGUAGE sql AS \$\$ SELECT \$\$;
CREATE PROCEDURE fc_parent(args jsonb) LANGUAGE plpgsql AS \$\$
BEGIN
    CALL chrono_forge.branch('all');
    CALL chrono_forge.spawn_each('i', 'fc_child',
        'SELECT id AS item_key, fc_slow(id) AS args FROM fc_items', batch_size => 50);
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['all'], '1 second', '10 seconds');
    CALL chrono_forge.durably_execute('fc_done');
END \$\$;
SELECT chrono_forge.start('fc_parent', 'fc') > 0;
SQL
children="SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.fc_child'"
dispatched="SELECT ($children) + (SELECT coalesce(sum(n - taken), 0) FROM chrono_forge.spawn_batches)"
for crash in 1 2; do
    wait_for 120 "SELECT ($dispatched) > $((crash * N / 5))" || fail "dispatch did not progress"
    cf_stop_immediate
    cf_start || fail "server did not come back"
    at=$(q -c "$dispatched")
    echo "crash $crash: $at of $N children dispatched at restart ($(q -c "$children") of them runs)"
    [ "$at" -lt "$N" ] || echo "(dispatch had already finished: this crash was not mid-dispatch)"
done
wait_for 300 "SELECT ($children) > $((N / 2)) AND ($dispatched) = $N" || fail "the children did not progress"
cf_stop_immediate
cf_start || fail "server did not come back"
echo "crash 3: $(q -c "$children") child runs, $(q -c "SELECT coalesce(sum(n - taken), 0) FROM chrono_forge.spawn_batches") children not started at restart"

wait_for 600 "SELECT state = 'completed' FROM chrono_forge.workflows WHERE key = 'fc'" \
    || { q -c "SELECT state, count(*) FROM chrono_forge.workflows GROUP BY 1"; fail "the parent did not complete"; }
expect_eq "$(q -c "$children")" "$N" "one child per item"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.fc_child' AND state = 'completed'")" "$N" "every child completed"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows c JOIN chrono_forge.execution_logs l ON l.id = c.parent_execution_log_id JOIN chrono_forge.workflows p ON p.id = l.workflow_id WHERE p.key = 'fc' AND l.step_name = 'branch\$all'")" "$N" "every child linked to the branch"
expect_eq "$(q -c "SELECT count(*) FROM fc_out")" "$N" "one step row per child"
expect_eq "$(q -c "SELECT count(DISTINCT item) FROM fc_out")" "$N" "no item missing or repeated"
expect_eq "$(q -c "SELECT metadata->'cursors'->'i'->>'spawned' FROM chrono_forge.execution_logs WHERE step_name = 'branch\$all'")" "$N" "the cursor counted each child once"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.merge_polls")" 0 "no poll left behind"
