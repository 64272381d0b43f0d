# Places handed on at a worker's commit (0.13.0): a worker notes the
# gates its passes' runs leave and hands the places on just before its
# transaction commits, for all the runs of a shared commit at once.
# 200 one-step runs over four keys limited to 2, in commits shared by
# many passes (a wide batch window); every tenth run fails in its body
# (its place handed on all the same), and one step breaks a deferred
# foreign key, so that a shared commit fails and its passes run again one
# by one (the places it had noted must not be handed on).  A session
# samples, snapshot after snapshot, how many runs of each key are
# admitted and not ended: never more than two.  All runs end; the gates
# count nothing in flight at the end and nobody waits.  Then 100 runs of
# two steps (each pass commits alone): no two-step spans of a key
# overlap more than twice.
. "$CF_INTEGRATION_DIR/lib.sh"
trap 'q -c "ALTER SYSTEM RESET chrono_forge.commit_batch_window" -c "SELECT pg_reload_conf()" >/dev/null' EXIT
q <<'SQL' >/dev/null
ALTER SYSTEM SET chrono_forge.commit_batch_window = '10s';
SELECT pg_reload_conf();
CREATE TABLE gp_spans (run text, gate text, what text, at timestamptz DEFAULT clock_timestamp());
CREATE TABLE gp_parent (id int PRIMARY KEY);
CREATE TABLE gp_child (pid int REFERENCES gp_parent DEFERRABLE INITIALLY DEFERRED);
CREATE FUNCTION gp_mark(args jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO gp_spans (run, gate, what) VALUES (args->>'run', args->>'gate', args->>'what');
    SELECT pg_sleep(0.002);
    INSERT INTO gp_child SELECT 999 WHERE args ? 'orphan';
$$;
CREATE PROCEDURE gp_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF args ? 'boom' THEN
        RAISE EXCEPTION 'boom';
    END IF;
    CALL chrono_forge.durably_execute('gp_mark', name => 'begin', args => args || '{"what": "begin"}');
    IF args ? 'two' THEN
        CALL chrono_forge.durably_execute('gp_mark', name => 'end', args => args || '{"what": "end"}');
    END IF;
END $$;
SELECT chrono_forge.configure('gp_wf', chrono_forge.retry_policy(1));
SELECT chrono_forge.set_concurrency_limit(2, concurrency_key => 'g' || g) FROM generate_series(1, 4) g;
-- Start n runs (keys p1..pn), two steps each if two.
CREATE FUNCTION gp_start(p text, n int, two boolean) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(chrono_forge.start('gp_wf', p || i,
            jsonb_build_object('run', p || i, 'gate', 'g' || (i % 4 + 1))
            || CASE WHEN two THEN '{"two": 1}' ELSE '{}' END::jsonb
            || CASE WHEN NOT two AND i % 10 = 0 THEN '{"boom": 1}' ELSE '{}' END::jsonb
            || CASE WHEN NOT two AND i = 77 THEN '{"orphan": 1}' ELSE '{}' END::jsonb,
            jsonb_build_object('concurrency_key', 'g' || (i % 4 + 1))))
      FROM generate_series(1, n) i
$$;
-- The most runs of one key admitted and not ended in any snapshot, until
-- the runs of prefix p have all ended.
CREATE FUNCTION gp_most_in_flight(p text, n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE most int := 0; c int;
BEGIN
    LOOP
        SELECT max(k) INTO c FROM (SELECT count(*) AS k FROM chrono_forge.workflows w
          WHERE w.workflow = 'public.gp_wf' AND w.key LIKE p || '%' AND w.state IN ('idle', 'running')
            AND NOT EXISTS (SELECT FROM chrono_forge.concurrency_waiting q WHERE q.workflow_id = w.id)
          GROUP BY w.concurrency_key) s;
        most := greatest(most, coalesce(c, 0));
        EXIT WHEN (SELECT count(*) FROM chrono_forge.workflows w
                    WHERE w.workflow = 'public.gp_wf' AND w.key LIKE p || '%'
                      AND w.state IN ('completed', 'failed')) = n;
        PERFORM pg_sleep(0.002);
    END LOOP;
    RETURN most;
END $$;
SQL
q -c "SELECT gp_start('r', 200, false)" >/dev/null
most=$(timeout 180 psql -XAtq -v ON_ERROR_STOP=1 -c "SELECT gp_most_in_flight('r', 200)") \
    || fail "runs did not end: $(q -c "SELECT state, count(*) FROM chrono_forge.workflows GROUP BY 1")"
echo "one step: most runs of one key admitted and not ended in any snapshot: $most"
[ "$most" -le 2 ] || fail "$most runs of a key limited to 2 were admitted and not ended at once"
[ "$most" -ge 2 ] || fail "never two runs of a key at once: the check proves nothing"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.gp_wf' AND key LIKE 'r%' AND state = 'failed'")" 21 \
    "failed runs (every tenth, and the one that broke the deferred key)"
expect_eq "$(q -c "SELECT max(n) > 1 FROM (SELECT l.xmin::text, count(*) AS n FROM chrono_forge.execution_logs l
                    JOIN chrono_forge.workflows w ON w.id = l.workflow_id
                    WHERE w.workflow = 'public.gp_wf' AND w.key LIKE 'r%' AND l.step_name = '\$workflow_completion\$' GROUP BY 1) s")" t \
    "run ends shared commits"

q -c "SELECT gp_start('t', 100, true)" >/dev/null
wait_for 180 "SELECT count(*) = 100 FROM chrono_forge.workflows WHERE workflow = 'public.gp_wf' AND key LIKE 't%' AND state = 'completed'" \
    || fail "two-step runs did not complete: $(q -c "SELECT state, count(*) FROM chrono_forge.workflows WHERE workflow = 'public.gp_wf' AND key LIKE 't%' GROUP BY 1")"
most=$(q -c "WITH s AS (SELECT gate, max(at) FILTER (WHERE what = 'begin') AS b, max(at) FILTER (WHERE what = 'end') AS e
                          FROM gp_spans WHERE run LIKE 't%' GROUP BY gate, run)
             SELECT max((SELECT count(*) FROM s o WHERE o.gate = x.gate AND o.b <= x.b AND o.e >= x.b)) FROM s x")
echo "two steps: most runs of one key between their first and last step at once: $most"
[ "$most" -le 2 ] || fail "$most runs of a key limited to 2 were in flight at once"
expect_eq "$(q -c "SELECT coalesce(sum(running), -1) FROM chrono_forge.concurrency_gates WHERE concurrency_key LIKE 'g_'")" 0 \
    "runs the gates count in flight at the end"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.concurrency_waiting q JOIN chrono_forge.workflows w ON w.id = q.workflow_id
                    WHERE w.workflow = 'public.gp_wf'")" 0 "runs still waiting"
echo ok
