# Compensation with the workers on, under kills: 200 orders through a
# saga (reserve stock -> charge the card, an external task worked by a
# client process -> ship).  Every fifth order cannot ship: its run calls
# compensate(), and the card is refunded, then the stock released, each
# by an undo step that takes a while.  Workers are SIGKILLed again and
# again while compensations are in flight, and once the server is
# stopped immediately.  At the end every order is completed or
# compensated; each compensated order was refunded exactly once and
# released exactly once, refund before release; no completed order was
# refunded or released; and the undo steps' ledger rows match the logs.
. "$CF_INTEGRATION_DIR/lib.sh"
q <<'SQL' >/dev/null
CREATE TABLE sg_ledger (id bigserial, order_key text, what text, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION sg_reserve(args jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO sg_ledger (order_key, what) VALUES (args->>'order', 'reserve')
    RETURNING jsonb_build_object('reservation', id) $$;
CREATE FUNCTION sg_ship(args jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('shipped', (args->>'n')::int % 5 <> 0) $$;
-- Undo steps, slow enough to be killed in the middle.
CREATE FUNCTION sg_refund(a jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO sg_ledger (order_key, what) VALUES (a->'args'->>'order', 'refund');
    SELECT pg_sleep(0.02) $$;
CREATE FUNCTION sg_release(a jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO sg_ledger (order_key, what) VALUES (a->'args'->>'order', 'release');
    SELECT pg_sleep(0.02) $$;
CREATE PROCEDURE sg_order(args jsonb) LANGUAGE plpgsql AS $$
DECLARE shipped jsonb;
BEGIN
    CALL chrono_forge.durably_execute('sg_reserve', compensate => 'sg_release');
    CALL chrono_forge.run_task('charge_card', 'sg_cards', args => args, compensate => 'sg_refund');
    CALL chrono_forge.durably_execute('sg_ship', shipped);
    IF NOT (shipped->>'shipped')::boolean THEN
        CALL chrono_forge.compensate('cannot ship');
    END IF;
END $$;
SQL

# The card processor: claims and completes charges until told to stop
# (it rides out the restarts).
flag=$(mktemp)
(
    while [ -f "$flag" ]; do
        q -c "SELECT count(chrono_forge.complete_task(c.task_id, c.claim_token,
                     jsonb_build_object('charge', 'ch_' || (c.args->>'order'))))
                FROM chrono_forge.claim_tasks(ARRAY['sg_cards'], 20, 'sg-cards') c" >/dev/null 2>&1 \
            || sleep 0.2
        sleep 0.01
    done
) &
card_worker=$!
trap 'rm -f "$flag"; kill $card_worker 2>/dev/null' EXIT

q -c "SELECT count(chrono_forge.start('sg_order', 'order-' || i, jsonb_build_object('order', 'order-' || i, 'n', i)))
        FROM generate_series(1, 200) i" >/dev/null

# Kill workers while compensations are in flight, five times.
for round in 1 2 3 4 5; do
    wait_for 120 "SELECT count(*) >= $((round * 6)) FROM sg_ledger WHERE what = 'refund'" \
        || fail "compensations did not progress (round $round): $(q -c "SELECT state, count(*) FROM chrono_forge.workflows GROUP BY 1")"
    pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker' LIMIT 1")
    [ -n "$pid" ] && kill -9 "$pid"
    sleep 0.5
    cf_wait_ready 60 || fail "server did not come back (round $round)"
done
# And the server stopped immediately in the middle of the rest.
wait_for 120 "SELECT count(*) >= 34 FROM sg_ledger WHERE what = 'refund'" || fail "compensations stopped"
cf_stop_immediate
cf_start || fail "server did not start again"

wait_for 300 "SELECT count(*) = 200 FROM chrono_forge.workflows
               WHERE workflow = 'public.sg_order' AND state IN ('completed', 'compensated')" \
    || fail "not every order ended: $(q -c "SELECT state, count(*) FROM chrono_forge.workflows GROUP BY 1")"
rm -f "$flag"

# (Other tests' runs share the database: only sg_order's are counted.)
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.sg_order' AND state = 'compensated'")" 40 "compensated orders"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.sg_order' AND state = 'completed'")" 160 "completed orders"
# Exactly once, in reverse order, only for compensated orders.
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows w
                    WHERE w.workflow = 'public.sg_order' AND w.state = 'compensated'
                      AND (SELECT count(*) FROM sg_ledger l WHERE l.order_key = w.key AND l.what = 'refund') = 1
                      AND (SELECT count(*) FROM sg_ledger l WHERE l.order_key = w.key AND l.what = 'release') = 1
                      AND (SELECT max(id) FROM sg_ledger l WHERE l.order_key = w.key AND l.what = 'refund')
                        < (SELECT max(id) FROM sg_ledger l WHERE l.order_key = w.key AND l.what = 'release')")" \
    40 "compensated orders refunded once, then released once"
expect_eq "$(q -c "SELECT count(*) FROM sg_ledger l JOIN chrono_forge.workflows w ON w.key = l.order_key
                    WHERE w.workflow = 'public.sg_order' AND w.state = 'completed'
                      AND l.what IN ('refund', 'release')")" 0 "undo rows of completed orders"
expect_eq "$(q -c "SELECT count(*) FROM sg_ledger WHERE what = 'reserve'")" 200 "reservations (exactly once each)"
# The undo steps' logs agree with the ledger.
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
                    WHERE w.workflow = 'public.sg_order' AND l.step_name LIKE 'compensate\$%' AND l.state = 'completed'")" 80 "completed undo steps"
recovered=$(q -c "SELECT coalesce(sum(recoveries), 0) FROM chrono_forge.workflows WHERE workflow = 'public.sg_order' AND state = 'compensated'")
echo "compensated orders: 40; passes lost with their worker and recovered: $recovered"
echo ok
