# Consecutive one-transaction passes share a commit (chrono_forge.commit_batch):
# never two owners' passes in one commit; a pass that fails rolls back the
# passes waiting with it, which run again with no step repeated; a shared
# commit that fails (a deferred constraint) is retried pass by pass, and the
# error lands on the run at fault only.
. "$CF_INTEGRATION_DIR/lib.sh"
N=200
q <<'SQL' >/dev/null
-- A wide window, so that batches form however loaded the machine is.
ALTER SYSTEM SET chrono_forge.commit_batch_window = '10s';
SELECT pg_reload_conf();
CREATE ROLE cb_x;
CREATE ROLE cb_y;
GRANT USAGE ON SCHEMA public TO cb_x, cb_y;
CREATE TABLE cb_out (k text PRIMARY KEY, who text NOT NULL);
CREATE SEQUENCE cb_calls;
CREATE TABLE cb_parent (id int PRIMARY KEY);
CREATE TABLE cb_child (pid int REFERENCES cb_parent DEFERRABLE INITIALLY DEFERRED);
GRANT INSERT ON cb_out, cb_child TO cb_x, cb_y;
GRANT USAGE ON SEQUENCE cb_calls TO cb_x, cb_y;
CREATE FUNCTION cb_step(args jsonb) RETURNS void LANGUAGE sql AS $$
    SELECT nextval('cb_calls');
    INSERT INTO cb_out VALUES (args->>'k', current_user);
    INSERT INTO cb_child SELECT 999 WHERE args ? 'orphan';
$$;
CREATE PROCEDURE cb_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    IF args ? 'boom' THEN
        RAISE EXCEPTION 'boom';
    END IF;
    CALL chrono_forge.durably_execute('cb_step');
END $$;
SELECT chrono_forge.configure('cb_wf', chrono_forge.retry_policy(1));
GRANT EXECUTE ON PROCEDURE cb_wf(jsonb) TO cb_x, cb_y;
SQL
# Both owners' runs, interleaved in due order, due at once; every tenth of
# cb_x's fails in its body, and one of cb_x's steps breaks a deferred
# foreign key.
q <<SQL >/dev/null
DO \$\$
BEGIN
    FOR i IN 1..$N LOOP
        SET LOCAL ROLE cb_x;
        PERFORM chrono_forge.start('cb_wf', 'x' || i,
            jsonb_build_object('k', 'x' || i)
            || CASE WHEN i % 10 = 0 THEN '{"boom": 1}' ELSE '{}' END::jsonb
            || CASE WHEN i = 77 THEN '{"orphan": 1}' ELSE '{}' END::jsonb);
        SET LOCAL ROLE cb_y;
        PERFORM chrono_forge.start('cb_wf', 'y' || i, jsonb_build_object('k', 'y' || i));
        RESET ROLE;
    END LOOP;
END \$\$;
SQL
wait_for 120 "SELECT count(*) = 2 * $N FROM chrono_forge.workflows WHERE workflow = 'public.cb_wf' AND state IN ('completed', 'failed')" \
    || { q -c "SELECT state, count(*) FROM chrono_forge.workflows GROUP BY 1"; fail "runs did not end"; }

expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.cb_wf' AND state = 'failed'")" \
    "$((N / 10 + 1))" "the failing runs failed, and only they"
expect_eq "$(q -c "SELECT string_agg(DISTINCT e.error_message, ' | ' ORDER BY e.error_message)
                     FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id
                    WHERE w.key = 'x77'")" \
    'insert or update on table "cb_child" violates foreign key constraint "cb_child_pid_fkey"' \
    "the deferred constraint failed the run whose step broke it"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id
                    WHERE w.workflow = 'public.cb_wf' AND w.state = 'completed'")" 0 "no error on a completed run"
# Each completed run's step wrote once (a second committed write would
# have broken the primary key and failed the run).
expect_eq "$(q -c "SELECT count(*) FROM cb_out")" "$((2 * N - N / 10 - 1))" "one step row per completed run"
expect_eq "$(q -c "SELECT count(*) FROM cb_out o JOIN chrono_forge.workflows w ON w.key = o.k
                    WHERE w.workflow = 'public.cb_wf' AND (w.state <> 'completed' OR o.who <> w.owner::text)")" 0 \
    "step rows only for completed runs, written as their owners"
# Commits were shared (several completions in one transaction), never
# across owners.
expect_eq "$(q -c "SELECT max(n) > 1 FROM (SELECT l.xmin::text, count(*) AS n FROM chrono_forge.execution_logs l
                    JOIN chrono_forge.workflows w ON w.id = l.workflow_id
                    WHERE w.workflow = 'public.cb_wf' AND l.step_name = '\$workflow_completion\$' GROUP BY 1) s")" t \
    "passes shared commits"
expect_eq "$(q -c "SELECT count(*) FROM (SELECT l.xmin::text FROM chrono_forge.execution_logs l
                    JOIN chrono_forge.workflows w ON w.id = l.workflow_id
                    WHERE w.workflow = 'public.cb_wf' GROUP BY 1 HAVING count(DISTINCT w.owner) > 1) s")" 0 \
    "no commit holds two owners' passes"
# Failing passes rolled back the passes batched with them, which ran again.
expect_eq "$(q -c "SELECT last_value > (SELECT count(*) FROM cb_out) FROM cb_calls")" t \
    "rolled-back passes ran their steps again"

q <<'SQL' >/dev/null
DELETE FROM chrono_forge.workflows WHERE workflow = 'public.cb_wf';
DELETE FROM chrono_forge.workflow_defaults WHERE workflow LIKE '%cb_wf%';
ALTER SYSTEM RESET chrono_forge.commit_batch_window;
SELECT pg_reload_conf();
SQL
