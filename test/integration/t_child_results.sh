# Children's results with the workers on.
#  1. A parent fans out into 10,000 children, each setting its result;
#     a worker is SIGKILLed while they run.  The parent merges, sums
#     their results page by page (child_results() in a step) and sets the
#     sum as its result: exactly the sum of 1..N, each child counted once.
#  2. Fail-fast: a parent whose merge says on_child_failure => 'fail'
#     fails with CF025 (child failed), naming the child, as soon as one
#     child stalls, while siblings are still held back by a gate.
. "$CF_INTEGRATION_DIR/lib.sh"
N=${CF_CHILD_RESULTS_N:-10000}
q <<'SQL' >/dev/null
CREATE PROCEDURE cr_child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.set_result(jsonb_build_object('amount', (args->>'i')::int));
END $$;
CREATE FUNCTION cr_sum() RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE last bigint := 0; total bigint := 0; counted int := 0; r record; n int;
BEGIN
    LOOP
        n := 0;
        FOR r IN SELECT * FROM chrono_forge.child_results('items', last) LOOP
            total := total + (r.result->>'amount')::bigint;
            last := r.id;
            n := n + 1;
        END LOOP;
        EXIT WHEN n = 0;
        counted := counted + n;
    END LOOP;
    RETURN jsonb_build_object('sum', total, 'children', counted);
END $$;
CREATE PROCEDURE cr_parent(args jsonb) LANGUAGE plpgsql AS $$
DECLARE s jsonb;
BEGIN
    CALL chrono_forge.branch('items');
    CALL chrono_forge.spawn_each('i', 'cr_child',
        format('SELECT g AS item_key, jsonb_build_object(''i'', g) AS args FROM generate_series(1, %s) g',
               args->>'n'));
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['items'], '1 second', '5 seconds');
    CALL chrono_forge.durably_execute('cr_sum', s);
    CALL chrono_forge.set_result(s);
END $$;

CREATE TABLE cr_gate (open boolean);
INSERT INTO cr_gate VALUES (false);
CREATE FUNCTION cr_gate_open() RETURNS boolean LANGUAGE sql AS $$ SELECT open FROM cr_gate $$;
CREATE FUNCTION cr_boom() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'card declined' USING ERRCODE = '22023';
END $$;
CREATE PROCEDURE cr_fragile(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF (args->>'fail')::boolean THEN
        CALL chrono_forge.durably_execute('cr_boom', retry_policy => chrono_forge.retry_policy(1));
    END IF;
    CALL chrono_forge.wait_until('cr_gate_open', check_interval => '1 second');
    CALL chrono_forge.set_result('1');
END $$;
CREATE PROCEDURE cr_fail_fast(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.branch('g');
    CALL chrono_forge.spawn_each('c', 'cr_fragile',
        'SELECT g AS item_key, jsonb_build_object(''fail'', g = 7) AS args FROM generate_series(1, 50) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(r, ARRAY['g'], '1 minute', '1 hour', on_child_failure => 'fail');
END $$;
SQL

q -c "SELECT chrono_forge.start('cr_parent', 'sum', '{\"n\": $N}')" >/dev/null
q -c "SELECT chrono_forge.start('cr_fail_fast', 'ff')" >/dev/null

# A worker dies (SIGKILL: the server restarts its sessions) while children run.
wait_for 120 "SELECT count(*) > $((N / 5)) FROM chrono_forge.workflows
               WHERE workflow = 'public.cr_child' AND state = 'completed'" || fail "children did not progress"
pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' LIMIT 1")
[ -n "$pid" ] || fail "no worker to kill"
kill -9 "$pid"
sleep 1
cf_wait_ready 60 || fail "server did not come back"

# The fan-out completes with the exact sum, each child once.
out=$(q -c "SELECT state || '|' || coalesce(result::text, '') FROM chrono_forge.wait_for_run('cr_parent', 'sum', '600 s')")
expect_eq "$out" "completed|{\"sum\": $((N * (N + 1) / 2)), \"children\": $N}" "the parent's result"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.cr_child' AND state = 'completed'")" \
    "$N" "completed children"

# Fail-fast: the stalled child fails the parent while its siblings wait at the gate.
out=$(q -c "SELECT state || '|' || error_class FROM chrono_forge.wait_for_run('cr_fail_fast', 'ff', '300 s')")
expect_eq "$out" "failed|CF025" "the fail-fast parent"
q -c "SELECT e.error_detail FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id
       WHERE w.key = 'ff' AND e.error_class = 'CF025'" | grep -q 'ff\$g\$c_7' ||
    fail "CF025 does not name the stalled child: $(q -c "SELECT error_message, error_detail FROM chrono_forge.error_logs WHERE error_class = 'CF025'")"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.cr_fragile' AND state = 'completed'")" \
    "0" "siblings completed before the parent failed (the gate is shut)"
