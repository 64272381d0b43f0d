# Item 2: engine SQL never resolves a name through a path another role can
# write.  intruder plants, in public and in a schema named like the
# bootstrap superuser ("$user" of the workers and the launcher), operators
# that shadow the built-in ones for every engine type (enums, arrays of the
# types the engine passes) and functions named like the polymorphic
# built-ins the engine's SQL calls; each records its caller.  A workload
# of every feature then runs with the workers on, from the workers, a
# top-level run_pending(), a DO block and a procedure, and as the
# superuser; nothing planted may ever be called.  (This script's own
# queries compare states as text, so that they call nothing planted.)
. "$CF_SECURITY_DIR/lib.sh"
super=$(q -c "SELECT rolname FROM pg_roles WHERE oid = 10")
q >/dev/null <<SQL
CREATE SCHEMA "$super" AUTHORIZATION intruder;
CREATE TABLE intruder.calls (what text, who name, at timestamptz DEFAULT now());
ALTER TABLE intruder.calls OWNER TO intruder;
GRANT INSERT ON intruder.calls TO PUBLIC;
GRANT USAGE ON SCHEMA intruder TO PUBLIC;
SQL
# Plant the same set in each schema.
for s in public "\"$super\""; do
as intruder >/dev/null <<SQL
DO \$plant\$
DECLARE
    t text;
    op text;
    fn text;
    n int := 0;
BEGIN
    FOREACH t IN ARRAY ARRAY['chrono_forge.workflow_state', 'chrono_forge.step_state',
                             'bigint[]', 'text[]', 'integer[]', 'timestamptz[]', 'jsonb[]'] LOOP
        FOREACH op IN ARRAY ARRAY['=', '<>', '<', '>', '<=', '>='] LOOP
            n := n + 1;
            fn := format('%s.op_%s', '$s', n);
            EXECUTE format(\$f\$CREATE FUNCTION %s(a %s, b %s) RETURNS boolean LANGUAGE sql VOLATILE AS
                \$b\$ INSERT INTO intruder.calls (what, who) VALUES (%L, current_user);
                     SELECT a OPERATOR(pg_catalog.%s) b \$b\$\$f\$, fn, t, t, op || ' ' || t, op);
            EXECUTE format('CREATE OPERATOR %s.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = %s)',
                           '$s', op, t, t, fn);
        END LOOP;
    END LOOP;
    -- Functions named like polymorphic built-ins, for the engine's types.
    FOREACH t IN ARRAY ARRAY['bigint', 'text', 'integer', 'timestamptz', 'jsonb',
                             'chrono_forge.workflow_state', 'chrono_forge.step_state'] LOOP
        EXECUTE format(\$f\$CREATE FUNCTION %s.to_jsonb(a %s) RETURNS jsonb LANGUAGE sql VOLATILE AS
            \$b\$ INSERT INTO intruder.calls (what, who) VALUES ('to_jsonb %s', current_user);
                 SELECT pg_catalog.to_jsonb(a) \$b\$\$f\$, '$s', t, t);
        EXECUTE format(\$f\$CREATE FUNCTION %s.array_length(a %s[], d integer) RETURNS integer LANGUAGE sql VOLATILE AS
            \$b\$ INSERT INTO intruder.calls (what, who) VALUES ('array_length %s', current_user);
                 SELECT pg_catalog.array_length(a, d) \$b\$\$f\$, '$s', t, t);
        EXECUTE format(\$f\$CREATE FUNCTION %s.cardinality(a %s[]) RETURNS integer LANGUAGE sql VOLATILE AS
            \$b\$ INSERT INTO intruder.calls (what, who) VALUES ('cardinality %s', current_user);
                 SELECT pg_catalog.cardinality(a) \$b\$\$f\$, '$s', t, t);
        EXECUTE format(\$f\$CREATE FUNCTION %s.unnest(a %s[]) RETURNS SETOF %s LANGUAGE sql VOLATILE AS
            \$b\$ INSERT INTO intruder.calls (what, who) VALUES ('unnest %s', current_user);
                 SELECT pg_catalog.unnest(a) \$b\$\$f\$, '$s', t, t, t);
        EXECUTE format(\$f\$CREATE FUNCTION %s.array_position(a %s[], e %s) RETURNS integer LANGUAGE sql VOLATILE AS
            \$b\$ INSERT INTO intruder.calls (what, who) VALUES ('array_position %s', current_user);
                 SELECT pg_catalog.array_position(a, e) \$b\$\$f\$, '$s', t, t, t);
        EXECUTE format(\$f\$CREATE FUNCTION %s.count_sfunc(s bigint, a %s) RETURNS bigint LANGUAGE sql VOLATILE AS
            \$b\$ INSERT INTO intruder.calls (what, who) VALUES ('count %s', current_user);
                 SELECT s + 1 \$b\$\$f\$, '$s', t, t);
        EXECUTE format('CREATE AGGREGATE %s.count(%s) (SFUNC = %s.count_sfunc, STYPE = bigint, INITCOND = 0)', '$s', t, '$s');
        EXECUTE format(\$f\$CREATE FUNCTION %s.agg_sfunc(s %s[], a %s) RETURNS %s[] LANGUAGE sql VOLATILE AS
            \$b\$ INSERT INTO intruder.calls (what, who) VALUES ('array_agg %s', current_user);
                 SELECT s || a \$b\$\$f\$, '$s', t, t, t, t);
        EXECUTE format('CREATE AGGREGATE %s.array_agg(%s) (SFUNC = %s.agg_sfunc, STYPE = %s[], INITCOND = ''{}'')', '$s', t, '$s', t);
        EXECUTE format('CREATE AGGREGATE %s.jsonb_agg(%s) (SFUNC = %s.agg_sfunc, STYPE = %s[], INITCOND = ''{}'')', '$s', t, '$s', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['chrono_forge.workflow_state', 'chrono_forge.step_state'] LOOP
        EXECUTE format('CREATE AGGREGATE %s.max(%s) (SFUNC = %s.agg_sfunc, STYPE = %s[], INITCOND = ''{}'')', '$s', t, '$s', t);
        EXECUTE format('CREATE AGGREGATE %s.min(%s) (SFUNC = %s.agg_sfunc, STYPE = %s[], INITCOND = ''{}'')', '$s', t, '$s', t);
        EXECUTE format(\$f\$CREATE FUNCTION %s.text(a %s) RETURNS text LANGUAGE sql VOLATILE AS
            \$b\$ INSERT INTO intruder.calls (what, who) VALUES ('text %s', current_user);
                 SELECT a::pg_catalog.text \$b\$\$f\$, '$s', t, t);
    END LOOP;
END
\$plant\$;
SQL
done
[ "$(q -c "SELECT count(*) FROM pg_operator WHERE oprnamespace = 'public'::regnamespace")" -ge 42 ] \
    || fail "operators were not planted"

# Every SQL or PL/pgSQL function of the extension pins its search path.
unpinned=$(q -c "SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_proc p
    JOIN pg_language l ON l.oid = p.prolang
   WHERE p.pronamespace = 'chrono_forge'::regnamespace AND l.lanname IN ('sql', 'plpgsql')
     AND NOT coalesce(p.proconfig::text LIKE '%search_path=pg_catalog, pg_temp%', false)")
[ -z "$unpinned" ] || fail "functions without a pinned search path: $unpinned"

# The workload, as tenant_a: steps, waits, events, conditions, repeats,
# fan-out with merge, retries, cancel, retry, schedules' API, results,
# merge rules, await_child, patched(), a deadline, a concurrency gate and
# compensation (a saga that compensates, one cancelled into it).
as tenant_a >/dev/null <<'SQL'
CREATE FUNCTION tenant_a.ok() RETURNS jsonb LANGUAGE sql AS $$ SELECT '{"ok": true}'::jsonb $$;
CREATE FUNCTION tenant_a.yes() RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE FUNCTION tenant_a.boom() RETURNS jsonb LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
CREATE FUNCTION tenant_a.tick(t timestamptz) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;
CREATE FUNCTION tenant_a.done() RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE PROCEDURE tenant_a.child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_a.ok'); CALL chrono_forge.set_result(args); END $$;
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb; one jsonb;
BEGIN
    CALL chrono_forge.durably_execute('tenant_a.ok');
    CALL chrono_forge.wait('1 second', 'w');
    CALL chrono_forge.wait_until('tenant_a.yes', check_interval => '1 second');
    CALL chrono_forge.continue_if('tenant_a.yes');
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn_each('i', 'tenant_a.child', 'SELECT g AS item_key FROM generate_series(1, 40) g');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['kids']);
    -- Composition (0.10.0): results, a merge's rules, one child, a patch.
    CALL chrono_forge.await_child('kids', 'i_1', one);
    CALL chrono_forge.merge_branches(r, ARRAY['kids'], quorum => 1, timeout => '1 hour');
    one := (SELECT c.result FROM chrono_forge.child_results('kids', page_size => 2) c LIMIT 1);
    IF chrono_forge.patched('results') THEN
        CALL chrono_forge.set_result(r);
    END IF;
    CALL chrono_forge.await_event('go', timeout => '1 minute');
END $$;
CREATE PROCEDURE tenant_a.failing(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_a.boom', retry_policy => '{"max_attempts": 2, "base": 0.1}'); END $$;
CREATE PROCEDURE tenant_a.slow(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.wait('1 hour', 'long'); END $$;
SELECT chrono_forge.start('tenant_a.wf', 'w' || g) FROM generate_series(1, 4) g;
SELECT chrono_forge.start('tenant_a.failing', 'f1');
SELECT chrono_forge.start('tenant_a.slow', 's1');
-- Deadlines (0.11.0): one set at start, then moved; the run fails past it.
SELECT chrono_forge.start('tenant_a.slow', 'd1', '{}', '{"timeout": "1 hour", "deadline_children": "keep"}');
SELECT chrono_forge.set_deadline('tenant_a.slow', 'd1', chrono_forge.now() + interval '1 second');
-- Concurrency limits (0.11.0): three runs through a gate of one place.
SELECT chrono_forge.set_concurrency_limit(1, concurrency_key => 'hk');
SELECT chrono_forge.start('tenant_a.child', 'gated' || g, '{}', '{"concurrency_key": "hk"}')
  FROM generate_series(1, 3) g;
-- Compensation (0.12.0): undo steps run when the run asks, and on cancel().
CREATE FUNCTION tenant_a.undo(a jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT a $$;
CREATE PROCEDURE tenant_a.saga(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('tenant_a.ok', name => 'a', compensate => 'tenant_a.undo');
    CALL chrono_forge.durably_execute('tenant_a.ok', name => 'b', compensate => 'tenant_a.undo');
    IF args->>'how' = 'now' THEN
        CALL chrono_forge.compensate('hostile path');
    END IF;
    CALL chrono_forge.wait('1 hour', 'long');
END $$;
SELECT chrono_forge.start('tenant_a.saga', 'sg1', '{"how": "now"}');
SELECT chrono_forge.start('tenant_a.saga', 'sg2', '{"how": "later"}');
SQL
wait_for 60 "SELECT count(*) = 4 FROM chrono_forge.execution_logs WHERE step_name = 'await_event\$go' AND state::text = 'pending'" \
    || fail "workflows did not reach their event: $(q -c "SELECT state, count(*) FROM chrono_forge.workflows GROUP BY 1") $(q -c "SELECT error_message FROM chrono_forge.error_logs LIMIT 3")"
as tenant_a >/dev/null <<'SQL'
SELECT chrono_forge.send_event('tenant_a.wf', 'w' || g, 'go') FROM generate_series(1, 4) g;
SELECT chrono_forge.cancel('tenant_a.slow', 's1');
SELECT chrono_forge.cancel('tenant_a.saga', 'sg2');
SQL
wait_for 60 "SELECT count(*) = 4 FROM chrono_forge.workflows WHERE workflow LIKE '%wf' AND state::text = 'completed'" \
    || fail "workflows did not complete"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.execution_logs
                    WHERE step_name = '\$workflow_completion\$' AND jsonb_typeof(result->'kids') = 'object'")" 4 \
    "runs completed with their children's results"
wait_for 60 "SELECT state::text IN ('stalled', 'failed') FROM chrono_forge.workflows WHERE key = 'f1'" || fail "failing run did not stall"
wait_for 60 "SELECT state::text = 'failed' FROM chrono_forge.workflows WHERE key = 'd1'" || fail "the run past its deadline did not fail"
wait_for 60 "SELECT count(*) = 3 FROM chrono_forge.workflows WHERE key LIKE 'gated%' AND state::text = 'completed'" \
    || fail "the gated runs did not complete"
wait_for 60 "SELECT count(*) = 2 FROM chrono_forge.workflows WHERE key LIKE 'sg_' AND state::text = 'compensated'" \
    || fail "the sagas did not compensate: $(q -c "SELECT key, state FROM chrono_forge.workflows WHERE key LIKE 'sg_'")"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.execution_logs WHERE step_name LIKE 'compensate\$%' AND state::text = 'completed'")" 4 \
    "undo steps of the sagas"
as tenant_a >/dev/null <<'SQL'
SELECT chrono_forge.retry('tenant_a.failing', 'f1');
SELECT count(*) FROM chrono_forge.overview;
SELECT count(*) FROM chrono_forge.runs();
SELECT count(*) FROM chrono_forge.branches('tenant_a.wf', 'w1');
SQL
# A repeat and run_pending() from a DO block, a procedure and top level,
# as tenant_a and as the superuser.
as tenant_a >/dev/null <<'SQL'
CREATE PROCEDURE tenant_a.rep(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_repeat('tenant_a.tick', '1 second', 'tenant_a.done'); END $$;
SELECT chrono_forge.start('tenant_a.rep', 'r1');
SELECT chrono_forge.start('tenant_a.child', 'rp' || g) FROM generate_series(1, 3) g;
SQL
as_login_free() { printf 'SET ROLE tenant_a;\n%s\n' "$1" | psql -XAtq; }
as_login_free "CALL chrono_forge.run_pending(max_passes => 1);" >/dev/null 2>&1
as_login_free "DO \$\$ BEGIN CALL chrono_forge.run_pending(max_passes => 1); END \$\$;" >/dev/null 2>&1
q -c "CREATE PROCEDURE public.sp_drive() LANGUAGE plpgsql AS \$\$ BEGIN CALL chrono_forge.run_pending(max_passes => 1); END \$\$" >/dev/null
q -c "CALL public.sp_drive()" >/dev/null 2>&1
q -c "CALL chrono_forge.run_pending()" >/dev/null 2>&1
wait_for 60 "SELECT NOT EXISTS (SELECT FROM chrono_forge.workflows WHERE state::text IN ('idle', 'running') AND key <> 's1')" \
    || fail "workload did not finish: $(q -c "SELECT key, state FROM chrono_forge.workflows WHERE state::text IN ('idle', 'running')")"
q -c "SELECT chrono_forge.cleanup(older_than => '0')" >/dev/null
calls=$(q -c "SELECT string_agg(DISTINCT what || ' by ' || who, '; ') FROM intruder.calls")
[ -z "$calls" ] || fail "planted objects were called: $calls"
