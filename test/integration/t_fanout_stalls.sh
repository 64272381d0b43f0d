# Fan-out beside failing runs: 1,000 children (every 10th stalls in its
# first pass) and 500 runs that fail at once, due together, so that a
# worker's shared transaction (consecutive passes committed together)
# takes a batch's last children, deletes the batch, finds no batch left,
# then rolls back when a later pass fails.  Every child is started all the
# same and no spawn batch is left behind: the rollback must not leave the
# worker believing there are no batches (0.7.0 left children waiting in
# their batch, the workers idle, until the next fan-out).
. "$CF_INTEGRATION_DIR/lib.sh"
q <<'SQL' >/dev/null
CREATE FUNCTION fs_noop() RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION fs_boom() RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'fs boom'; END $$;
CREATE PROCEDURE fs_item(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF (args->>'n')::int % 10 = 0 THEN
        CALL chrono_forge.durably_execute('fs_boom', retry_policy => chrono_forge.retry_policy(max_attempts => 1));
    END IF;
    CALL chrono_forge.durably_execute('fs_noop');
END $$;
CREATE PROCEDURE fs_fail(args jsonb) LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'fs fail'; END $$;
SELECT chrono_forge.configure('fs_fail', chrono_forge.retry_policy(max_attempts => 1));
CREATE PROCEDURE fs_parent(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('items');
    CALL chrono_forge.spawn_each('item', 'fs_item',
        'SELECT g AS item_key, jsonb_build_object(''n'', g) AS args FROM generate_series(1, 1000) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['items']);
END $$;
SQL
for round in 1 2 3; do
    q -c "SELECT chrono_forge.start('fs_parent', 'p$round'), count(chrono_forge.start('fs_fail', 'f$round-' || g)) FROM generate_series(1, 500) g" >/dev/null
    children="SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.fs_item' AND key LIKE '%p$round%'"
    wait_for 120 "SELECT ($children) = 1000 AND NOT EXISTS (SELECT 1 FROM chrono_forge.spawn_batches)" \
        || fail "round $round: $(q -c "$children") children started, batches left: $(q -c "SELECT string_agg(n || '/' || taken, ' ') FROM chrono_forge.spawn_batches")"
    wait_for 120 "SELECT count(*) = 1000 FROM chrono_forge.workflows WHERE workflow = 'public.fs_item' AND key LIKE '%p$round%' AND state IN ('completed', 'stalled')" \
        || fail "round $round: children did not settle"
    expect_eq "$(q -c "SELECT count(*) FILTER (WHERE state = 'stalled') FROM chrono_forge.workflows WHERE workflow = 'public.fs_item' AND key LIKE '%p$round%'")" 100 "round $round: stalled children"
done

# Children in a batch the workers were not told of (written here by hand,
# as a batch restored by a rollback is: no dispatch commits) are started
# all the same, within seconds: the workers' "no batch" is believed for a
# second at most, and the launcher tells them again while batches wait.
wait_for 30 "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' AND state = 'active'" || true
sleep 2
q -c "INSERT INTO chrono_forge.spawn_batches (branch_log_id, owner, due_at, n, workflows, keys, procedures, args)
      SELECT l.id, w.owner, now(), 1, ARRAY['public.fs_item'], ARRAY['\$' || w.id || '\$p1\$items\$item_extra'],
             ARRAY['public.fs_item'], ARRAY['{\"n\": 1}'::jsonb]
        FROM chrono_forge.workflows w JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id AND l.step_name = 'branch\$items'
       WHERE w.key = 'p1'" >/dev/null
wait_for 30 "SELECT EXISTS (SELECT 1 FROM chrono_forge.workflows WHERE key LIKE '%item_extra' AND state = 'completed')
             AND NOT EXISTS (SELECT 1 FROM chrono_forge.spawn_batches)" \
    || fail "a batch the workers were not told of was not taken: batches $(q -c "SELECT string_agg(n || '/' || taken, ' ') FROM chrono_forge.spawn_batches")"
