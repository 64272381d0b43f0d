# Composition (0.10.0) as an attacker: intruder, an ordinary role with its
# own schema and CREATE on public, goes after tenant_a's results, branches
# and definition hashes.
#  - Its own workflow names tenant_a's branch in child_results(),
#    await_child() and merge_branches with results: its run has no such
#    branch (CF008, its own run fails); nothing of tenant_a's is read.
#  - Outside a pass pass_branch() and child_results() answer CF013.
#  - wait_for_run() of tenant_a's run answers exactly as a missing run;
#    the completion logs with their results, and changed_definition_runs,
#    show it nothing; it cannot write a result.
#  - A procedure planted in intruder's schema (and in public) under
#    tenant_a's procedure's name does not change the definition hash
#    stamped on tenant_a's runs, whatever the search path.
. "$CF_SECURITY_DIR/identity_lib.sh"
sql_as tenant_a >/dev/null <<'SQL'
GRANT USAGE ON SCHEMA tenant_a TO PUBLIC;
CREATE PROCEDURE tenant_a.kid(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.set_result('{"secret": "4242"}');
END $$;
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn('k1', 'tenant_a.kid');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(r, ARRAY['kids']);
    CALL chrono_forge.set_result(r);
    CALL chrono_forge.await_event('go');
END $$;
SELECT chrono_forge.start('tenant_a.wf', 'a1');
SQL
wait_for 60 "SELECT count(*) = 1 FROM chrono_forge.execution_logs WHERE step_name = 'await_event\$go' AND state::text = 'pending'" \
    || fail "tenant_a's run did not reach its event"

# Procedures named like tenant_a's, planted where a search path might look.
as intruder >/dev/null <<'SQL'
CREATE PROCEDURE intruder.wf(args jsonb) LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'planted'; END $$;
CREATE PROCEDURE public.wf(args jsonb) LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'planted'; END $$;
SQL
# tenant_a starts a second run with intruder's schema first on its path.
PGOPTIONS="-c role=tenant_a -c search_path=intruder,public,tenant_a" psql -XAtq -v ON_ERROR_STOP=1 \
    -c "SELECT chrono_forge.start('tenant_a.wf', 'a2')" >/dev/null
expect_eq "$(q -c "SELECT count(DISTINCT definition_hash) || ' ' || bool_and(definition_hash = chrono_forge.definition_hash('tenant_a.wf'))
                    FROM chrono_forge.workflows WHERE workflow = 'tenant_a.wf'")" "1 true" "tenant_a's definition hashes"
[ "$(q -c "SELECT chrono_forge.definition_hash('tenant_a.wf') <> chrono_forge.definition_hash('intruder.wf')")" = t ] ||
    fail "the planted procedure has tenant_a's hash"

# intruder's own workflow reaches for tenant_a's branch.
as intruder >/dev/null <<'SQL'
CREATE PROCEDURE intruder.snoop(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CASE args->>'how'
    WHEN 'child_results' THEN
        SELECT jsonb_agg(c.result) INTO r FROM chrono_forge.child_results('kids') c;
        CALL chrono_forge.set_result(r);
    WHEN 'await_child' THEN
        CALL chrono_forge.await_child('kids', 'k1', r);
        CALL chrono_forge.set_result(r);
    WHEN 'merge' THEN
        CALL chrono_forge.merge_branches(r, ARRAY['kids']);
        CALL chrono_forge.set_result(r);
    END CASE;
END $$;
SQL
for how in child_results await_child merge; do
    as intruder "SELECT chrono_forge.start('intruder.snoop', '$how', '{\"how\": \"$how\"}')" >/dev/null
done
# (child_results() is a function, not a primitive: its CF008 goes through
# the workflow's retries; the primitives fail the run at once.)
wait_for 60 "SELECT count(DISTINCT e.workflow_id) = 3 FROM chrono_forge.error_logs e
              JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.workflow = 'intruder.snoop'" \
    || fail "intruder's runs hit no error: $(q -c "SELECT key, state FROM chrono_forge.workflows WHERE workflow = 'intruder.snoop'")"
out=$(q -c "SELECT string_agg(w.key || ':' || coalesce(e.error_class, '-') || ':' || coalesce(l.result::text, '-'), ' ' ORDER BY w.key)
              FROM chrono_forge.workflows w
              LEFT JOIN LATERAL (SELECT x.error_class FROM chrono_forge.error_logs x WHERE x.workflow_id = w.id
                                  ORDER BY x.id DESC LIMIT 1) e ON true
              LEFT JOIN chrono_forge.execution_logs l ON l.workflow_id = w.id AND l.step_name = '\$workflow_completion\$'
             WHERE w.workflow = 'intruder.snoop'")
case "$out" in
    *4242*) fail "intruder read tenant_a's result: $out" ;;
esac
expect_eq "$out" "await_child:CF008:- child_results:CF008:- merge:CF008:-" "intruder's runs"
expect_eq "$(q -c "SELECT string_agg(key || ':' || state, ' ' ORDER BY key) FROM chrono_forge.workflows
                    WHERE workflow = 'intruder.snoop' AND key <> 'child_results'")" "await_child:failed merge:failed" "the primitives' runs"

# Outside a pass: no current run.
for f in "SELECT * FROM chrono_forge.pass_branch('kids')" "SELECT * FROM chrono_forge.child_results('kids')"; do
    case "$(answer_as intruder "$f")" in
        *CF013*) ;; *) fail "$f as intruder: $(answer_as intruder "$f")" ;; esac
done
# tenant_a's run answers as a missing one; its results are not visible.
expect_eq "$(answer_as intruder "SELECT * FROM chrono_forge.wait_for_run('tenant_a.wf', 'a1', '0')" | sed "s/a1/KEY/")" \
    "$(answer_as intruder "SELECT * FROM chrono_forge.wait_for_run('tenant_a.wf', 'nope', '0')" | sed "s/nope/KEY/")" \
    "wait_for_run of tenant_a's run against a missing one"
expect_eq "$(as intruder "SELECT count(*) FROM chrono_forge.execution_logs WHERE result::text LIKE '%4242%'")" 0 "intruder reads results"
expect_eq "$(as intruder "SELECT count(*) FROM chrono_forge.changed_definition_runs")" 0 "intruder reads changed_definition_runs"
case "$(answer_as intruder "UPDATE chrono_forge.execution_logs SET result = '\"forged\"' WHERE step_name = '\$workflow_completion\$'")" in
    *42501*) ;; *) fail "intruder wrote a completion log" ;; esac
# tenant_a still reads its own result through wait_for_run, untouched.
as tenant_a "SELECT chrono_forge.send_event('tenant_a.wf', 'a1', 'go')" >/dev/null
expect_eq "$(as tenant_a "SELECT state || ' ' || result::text FROM chrono_forge.wait_for_run('tenant_a.wf', 'a1', '60 s')")" \
    'completed {"kids": {"k1": {"secret": "4242"}}}' "tenant_a's result"
