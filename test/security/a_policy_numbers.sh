# Item 10: retry-policy numbers.  A base/cap of 1e20 seconds (or a NaN
# jitter fraction) was accepted and overflowed to a negative backoff:
# every attempt ran at once, an endless hot loop with unlimited attempts,
# holding a worker.  Numbers must be finite and within the documented
# maxima (CF012); a run with the largest valid numbers, or with a default
# stored before the maxima existed, waits its backoff.
. "$CF_SECURITY_DIR/lib.sh"
as tenant_a -f - >/dev/null <<'SQL'
CREATE FUNCTION tenant_a.state(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE;
END $$;
CREATE FUNCTION tenant_a.boom() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
CREATE PROCEDURE tenant_a.flow(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_a.boom'); END $$;
CREATE PROCEDURE tenant_a.legacy(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_a.boom'); END $$;
CREATE PROCEDURE tenant_a.percall(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('tenant_a.boom',
        retry_policy => '{"max_attempts": null, "base": 1e20, "cap": 1e20}');
END $$;
SQL

state() { as tenant_a -c "SELECT tenant_a.state(\$q\$$1\$q\$)"; }
expect_eq "$(state "SELECT chrono_forge.configure('tenant_a.flow', '{\"max_attempts\": null, \"base\": 1e20, \"cap\": 1e20}')")" CF012 \
    "configure() with base and cap of 1e20 seconds"
expect_eq "$(state "SELECT chrono_forge.configure('tenant_a.flow', '{\"cap\": 1e400}')")" CF012 "a cap beyond a double"
expect_eq "$(state "SELECT chrono_forge.retry_policy(NULL, '100000 years', '100000 years')")" CF012 \
    "retry_policy() over the maximum"
expect_eq "$(state "SELECT chrono_forge.retry_backoff('{\"base\": 1, \"cap\": 30}', 3, 'NaN')")" CF012 \
    "a NaN jitter fraction"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflow_defaults")" 0 "defaults written by refused calls"

# The largest valid numbers: the backoff is about a year, never negative.
expect_eq "$(state "SELECT chrono_forge.configure('tenant_a.flow', '{\"max_attempts\": null, \"base\": 31536000, \"cap\": 31536000}')")" ok \
    "configure() at the maximum"
as tenant_a -c "SELECT chrono_forge.start('tenant_a.flow', 'big')" >/dev/null
# A default stored before 0.5.0 (as 0.4.0 accepted it) decides as if
# clamped to the maximum.
as tenant_a -c "SELECT chrono_forge.configure('tenant_a.legacy', chrono_forge.retry_policy(NULL))" >/dev/null
q -c "UPDATE chrono_forge.workflow_defaults SET retry_policy = '{\"max_attempts\": null, \"base\": 1e20, \"cap\": 1e20}'
       WHERE retry_policy->>'cap' = '30.000000'" >/dev/null
as tenant_a -c "SELECT chrono_forge.start('tenant_a.legacy', 'old')" >/dev/null
# A per-call policy over the maximum fails its run at once (CF012).
as tenant_a -c "SELECT chrono_forge.start('tenant_a.percall', 'p')" >/dev/null

wait_for 30 "SELECT count(*) >= 3 FROM chrono_forge.error_logs" || true
sleep 3
for k in big old; do
    errors=$(q -c "SELECT count(*) FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key = '$k'")
    [ "$errors" -le 1 ] || fail "run '$k' failed $errors times in 3 seconds (hot loop)"
    expect_eq "$errors" 1 "failures of run '$k'"
    expect_eq "$(q -c "SELECT bool_and(k.due_at > now() + interval '150 days' AND k.due_at <= now() + interval '366 days')
                         FROM chrono_forge.wakeups k JOIN chrono_forge.workflows w ON w.id = k.workflow_id WHERE w.key = '$k'")" t \
        "run '$k' next attempt within (150 days, a year]"
done
wait_for 30 "SELECT state = 'failed' FROM chrono_forge.workflows WHERE key = 'p'" \
    || fail "per-call policy over the maximum: $(q -c "SELECT state, attempt FROM chrono_forge.workflows WHERE key = 'p'")"
expect_eq "$(q -c "SELECT string_agg(e.error_class, ',') FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key = 'p'")" CF012 \
    "errors of the run with a per-call policy over the maximum"
