# Compensation (0.12.0) as an attacker: intruder, an ordinary role with
# its own schema and CREATE on public, goes after tenant_a's saga and
# tries to make undo steps run with more rights than its own.
#  - cancel() of tenant_a's run (which would compensate it), by every
#    spelling, answers as for a missing run (CF014); the run goes on, no
#    undo step runs.
#  - The engine's tables cannot be written to forge a registration or a
#    $workflow_compensating$ marker.
#  - run_compensation() outside a pass is refused; from intruder's own
#    body it fails intruder's run (CF013).
#  - An undo step naming tenant_a's function (not granted) cannot run it:
#    tenant_a's function never runs; intruder's run stalls.
#  - intruder's undo steps run as intruder, not as the workers'
#    superuser: one that tries to make intruder superuser fails, and
#    intruder is not superuser.
. "$CF_SECURITY_DIR/identity_lib.sh"
sql_as tenant_a >/dev/null <<'SQL'
GRANT USAGE ON SCHEMA tenant_a TO PUBLIC;
CREATE TABLE tenant_a.ledger (what text);
CREATE FUNCTION tenant_a.charge() RETURNS void LANGUAGE sql
    AS $$ INSERT INTO tenant_a.ledger VALUES ('charge') $$;
CREATE FUNCTION tenant_a.refund(a jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO tenant_a.ledger VALUES ('refund') $$;
REVOKE EXECUTE ON FUNCTION tenant_a.refund(jsonb) FROM PUBLIC;
CREATE PROCEDURE tenant_a.saga(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('tenant_a.charge', compensate => 'tenant_a.refund');
    CALL chrono_forge.wait('1 hour', 'ship later');
END $$;
SELECT chrono_forge.start('tenant_a.saga', 'victim');
SQL
wait_for 60 "SELECT count(*) = 1 FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
              WHERE w.key = 'victim' AND l.step_name = 'wait\$ship later'" || fail "tenant_a's saga did not park"

# cancel() of tenant_a's run: as missing, by every spelling.
for name in tenant_a.saga '"tenant_a".saga' TENANT_A.SAGA saga; do
    ans=$(answer_as intruder "SELECT chrono_forge.cancel('$name', 'victim', 'mine now', true)")
    case "$ans" in
        *CF014*'does not exist'*) ;;
        *) fail "cancel('$name', victim) as intruder answered: $ans" ;;
    esac
done
expect_eq "$(q -c "SELECT state FROM chrono_forge.workflows WHERE key = 'victim'")" idle "tenant_a's run after the cancels"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.ledger WHERE what = 'refund'")" 0 "refunds of tenant_a's run"

# Forging a registration or a marker: the engine's tables are not writable.
victim=$(q -c "SELECT id FROM chrono_forge.workflows WHERE key = 'victim'")
for stmt in \
    "INSERT INTO chrono_forge.execution_logs (workflow_id, step_name, state, attempts) VALUES ($victim, '\$workflow_compensating\$', 'completed', 1)" \
    "UPDATE chrono_forge.execution_logs SET metadata = '{\"compensate\": \"public.evil\"}' WHERE workflow_id = $victim" \
    "INSERT INTO chrono_forge.wakeups (workflow_id, due_at, reason) VALUES ($victim, now(), 'compensate')"; do
    ans=$(answer_as intruder "$stmt")
    case "$ans" in
        *42501*) ;;
        *) fail "as intruder, $stmt answered: $ans" ;;
    esac
done

# run_compensation() outside a pass, and from a body.
ans=$(answer_as intruder "CALL chrono_forge.run_compensation('{}')")
case "$ans" in
    *CF0*'can only be called while chrono_forge runs a workflow'*) ;;
    *) fail "run_compensation() at top level as intruder answered: $ans" ;;
esac
sql_as intruder >/dev/null <<'SQL'
CREATE TABLE intruder.notes (what text, who text, super boolean);
CREATE FUNCTION intruder.noop() RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE PROCEDURE intruder.forcer(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('intruder.noop');
    CALL chrono_forge.run_compensation(args);
END $$;
-- An undo step naming tenant_a's refund (not granted to intruder).
CREATE PROCEDURE intruder.borrow(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('intruder.noop', compensate => 'tenant_a.refund',
        compensate_policy => chrono_forge.retry_policy(max_attempts => 1));
    CALL chrono_forge.compensate();
END $$;
-- An undo step that tries to become superuser.
CREATE FUNCTION intruder.escalate(a jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO intruder.notes SELECT 'undo', current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    ALTER ROLE intruder SUPERUSER;
END $$;
CREATE FUNCTION intruder.whoami(a jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO intruder.notes SELECT 'undo', current_user, rolsuper FROM pg_roles WHERE rolname = current_user $$;
CREATE PROCEDURE intruder.climb(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('intruder.noop', name => 'a', compensate => 'intruder.escalate',
        compensate_policy => chrono_forge.retry_policy(max_attempts => 1));
    CALL chrono_forge.durably_execute('intruder.noop', name => 'b', compensate => 'intruder.whoami');
    CALL chrono_forge.compensate();
END $$;
SELECT chrono_forge.configure('intruder.forcer', chrono_forge.retry_policy(max_attempts => 1));
SELECT chrono_forge.start('intruder.forcer', 'f');
SELECT chrono_forge.start('intruder.borrow', 'b');
SELECT chrono_forge.start('intruder.climb', 'c');
SQL
wait_for 60 "SELECT count(*) = 3 FROM chrono_forge.workflows WHERE owner = 'intruder'::regrole
              AND state::text IN ('failed', 'stalled', 'compensated')" \
    || fail "intruder's runs did not end: $(q -c "SELECT key, state FROM chrono_forge.workflows WHERE owner = 'intruder'::regrole")"
expect_eq "$(q -c "SELECT (SELECT error_class FROM chrono_forge.error_logs e WHERE e.workflow_id = w.id ORDER BY e.id LIMIT 1)
                   FROM chrono_forge.workflows w WHERE w.owner = 'intruder'::regrole AND w.key = 'f'")" CF013 "run_compensation() from a body"
expect_eq "$(q -c "SELECT state FROM chrono_forge.workflows WHERE owner = 'intruder'::regrole AND key = 'b'")" stalled \
    "intruder's run whose undo names tenant_a's function"
expect_eq "$(q -c "SELECT (SELECT error_class FROM chrono_forge.error_logs e WHERE e.workflow_id = w.id ORDER BY e.id DESC LIMIT 1)
                   FROM chrono_forge.workflows w WHERE w.owner = 'intruder'::regrole AND w.key = 'b'")" 42501 "its undo step's error"
expect_eq "$(q -c "SELECT count(*) FROM tenant_a.ledger WHERE what = 'refund'")" 0 "tenant_a's refund run by intruder"
expect_eq "$(q -c "SELECT state FROM chrono_forge.workflows WHERE owner = 'intruder'::regrole AND key = 'c'")" stalled \
    "intruder's run whose undo tried to escalate"
is_super intruder && fail "intruder became superuser through an undo step"
# The first undo step ran as intruder; the escalating one rolled back
# (its note too).
expect_eq "$(q -c "SELECT string_agg(who || ':' || super, ',') FROM intruder.notes")" "intruder:false" "who the undo steps ran as"
expect_eq "$(q -c "SELECT state FROM chrono_forge.workflows WHERE key = 'victim'")" idle "tenant_a's run at the end"
echo ok
