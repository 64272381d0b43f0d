# External tasks belong to their run's owner: a role that is neither the
# owner nor a member of it cannot see, claim, heartbeat, complete or fail
# one, nor read its args or result through the tables and views (a stale
# token and another role's task answer alike); a worker role granted
# membership in the owner can.  Then the hostile search path: intruder
# plants operators for every type the task functions compare and
# functions named like the built-ins their SQL calls; a worker whose
# search_path puts intruder's schema first works a task through all four
# functions, and nothing planted is ever called.
. "$CF_SECURITY_DIR/identity_lib.sh"
sql_as tenant_a >/dev/null <<'SQL'
GRANT USAGE ON SCHEMA tenant_a TO PUBLIC;   -- others resolve the name as tenant_a does
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CALL chrono_forge.run_task('charge', 'secret_q', result => r, args => '{"card": "4242"}');
    PERFORM chrono_forge.context_set('r', r);
END $$;
SELECT chrono_forge.start('tenant_a.wf', 'k1');
SELECT chrono_forge.start('tenant_a.wf', 'k2');
SQL
wait_for 30 "SELECT count(*) = 2 FROM chrono_forge.tasks WHERE state = 'pending'" || fail "tasks not written"
id=$(q -c "SELECT t.id FROM chrono_forge.tasks t JOIN chrono_forge.workflows w ON w.id = t.workflow_id WHERE w.key = 'k1'")

# Not a member: sees nothing, claims nothing.
for r in tenant_b intruder; do
    expect_eq "$(as $r "SELECT count(*) FROM chrono_forge.tasks")" 0 "$r reads tasks"
    expect_eq "$(as $r "SELECT count(*) FROM chrono_forge.task_queues")" 0 "$r reads task_queues"
    expect_eq "$(as $r "SELECT count(*) FROM chrono_forge.claim_tasks('{secret_q}', 10)")" 0 "$r claims"
done
case "$(answer_as tenant_b "SELECT * FROM chrono_forge.timeline('tenant_a.wf', 'k1')")" in
    *CF014*) ;; *) fail "tenant_b reads tenant_a's timeline" ;; esac
# Claimed by the owner: another role holding the real token is refused
# exactly as a stale token is, and changes nothing.
token=$(as tenant_a "SELECT claim_token FROM chrono_forge.claim_tasks('{secret_q}', 1) WHERE task_id = $id")
[ -n "$token" ] || token=$(q -c "SELECT claim_token FROM chrono_forge.tasks WHERE id = $id")
before=$(q -c "SELECT state, lease_until, updated_at FROM chrono_forge.tasks WHERE id = $id")
for r in tenant_b intruder; do
    expect_eq "$(as $r "SELECT chrono_forge.heartbeat_task($id, '$token')")" lost "$r heartbeat"
    expect_eq "$(as $r "SELECT chrono_forge.heartbeat_task($id, gen_random_uuid())")" lost "$r heartbeat, stale"
    expect_eq "$(as $r "SELECT chrono_forge.complete_task($id, '$token', '\"forged\"')")" f "$r complete"
    expect_eq "$(as $r "SELECT chrono_forge.fail_task($id, '$token', 'X', 'forged', false)")" f "$r fail"
done
expect_eq "$(q -c "SELECT state, lease_until, updated_at FROM chrono_forge.tasks WHERE id = $id")" "$before" \
    "the task after the other roles' calls"
# The owner sees its task; the other roles still see neither args nor result.
expect_eq "$(as tenant_a "SELECT args->>'card' FROM chrono_forge.tasks WHERE id = $id")" 4242 "owner reads its args"

# A worker role that is a member of the owner works the other task.
q -c "DROP ROLE IF EXISTS worker_a; CREATE ROLE worker_a LOGIN; GRANT tenant_a TO worker_a" >/dev/null
expect_eq "$(as worker_a "SELECT count(*) FROM chrono_forge.tasks")" 2 "member reads the owner's tasks"
expect_eq "$(as worker_a "SELECT count(*) FROM chrono_forge.task_queues WHERE queue = 'secret_q'")" 1 "member reads task_queues"
expect_eq "$(as worker_a "SELECT chrono_forge.heartbeat_task($id, '$token')")" ok "member heartbeats the owner's claim"

# The hostile search path: plant, then a member works k2's task with
# intruder's schema first on its path.
as intruder >/dev/null <<'SQL'
CREATE TABLE intruder.calls (what text, who name);
GRANT INSERT, SELECT ON intruder.calls TO PUBLIC;
GRANT USAGE ON SCHEMA intruder TO PUBLIC;
DO $plant$
DECLARE t text; op text; n int := 0;
BEGIN
    FOREACH t IN ARRAY ARRAY['uuid', 'bigint', 'text', 'oid', 'regrole', 'timestamptz', 'integer',
                             'text[]', 'oid[]', 'bigint[]', 'jsonb', 'boolean'] LOOP
        FOREACH op IN ARRAY ARRAY['=', '<>', '<', '<='] LOOP
            n := n + 1;
            EXECUTE format($f$CREATE FUNCTION intruder.op_%s(a %s, b %s) RETURNS boolean LANGUAGE sql AS
                $b$ INSERT INTO intruder.calls VALUES (%L, current_user); SELECT a OPERATOR(pg_catalog.%s) b $b$$f$,
                n, t, t, op || ' ' || t, op);
            EXECUTE format('CREATE OPERATOR intruder.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = intruder.op_%s)',
                           op, t, t, n);
        END LOOP;
    END LOOP;
    CREATE FUNCTION intruder.gen_random_uuid() RETURNS uuid LANGUAGE sql AS
        $b$ INSERT INTO intruder.calls VALUES ('gen_random_uuid', current_user); SELECT pg_catalog.gen_random_uuid() $b$;
    CREATE FUNCTION intruder.pg_has_role(oid, oid, text) RETURNS boolean LANGUAGE sql AS
        $b$ INSERT INTO intruder.calls VALUES ('pg_has_role', current_user); SELECT true $b$;
    CREATE FUNCTION intruder.now() RETURNS timestamptz LANGUAGE sql AS
        $b$ INSERT INTO intruder.calls VALUES ('now', current_user); SELECT pg_catalog.now() $b$;
    CREATE FUNCTION intruder.unnest(text[]) RETURNS SETOF text LANGUAGE sql AS
        $b$ INSERT INTO intruder.calls VALUES ('unnest', current_user); SELECT pg_catalog.unnest($1) $b$;
    CREATE FUNCTION intruder.coalesce_(interval) RETURNS interval LANGUAGE sql AS $b$ SELECT $1 $b$;
END $plant$;
SQL
q -c "GRANT USAGE ON SCHEMA intruder TO worker_a" >/dev/null
claim=$(PGOPTIONS="-c role=worker_a -c search_path=intruder,public" psql -XAtq -v ON_ERROR_STOP=1 -F ' ' \
    -c "SELECT task_id, claim_token FROM chrono_forge.claim_tasks('{secret_q}', 1, 'w') WHERE key = 'k2'")
[ -n "$claim" ] || claim=$(PGOPTIONS="-c role=worker_a -c search_path=intruder,public" psql -XAtq -F ' ' \
    -c "SELECT task_id, claim_token FROM chrono_forge.claim_tasks('{secret_q}', 1, 'w')")
set -- $claim
[ -n "${2:-}" ] || fail "member could not claim k2's task"
for call in "SELECT chrono_forge.heartbeat_task($1, '$2', '1 minute')" \
            "SELECT chrono_forge.complete_task($1, '$2', '{\"charged\": true}')" \
            "SELECT chrono_forge.fail_task($1, '$2', '40001', 'late')"; do
    PGOPTIONS="-c role=worker_a -c search_path=intruder,public" psql -XAtq -v ON_ERROR_STOP=1 -c "$call" >/dev/null \
        || fail "$call failed"
done
wait_for 30 "SELECT state::text = 'completed' FROM chrono_forge.workflows WHERE key = 'k2'" || fail "k2 did not complete"
expect_eq "$(q -c "SELECT context->'r'->>'charged' FROM chrono_forge.workflows WHERE key = 'k2'")" true "k2's recorded result"
expect_eq "$(q -c "SELECT count(*) FROM intruder.calls")" 0 "calls of planted objects"
q -c "DROP OWNED BY worker_a; DROP ROLE worker_a" >/dev/null
exit 0
