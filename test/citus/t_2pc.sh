#!/usr/bin/env bash
# Exactly once across nodes: runs on node 1 whose steps write a
# distributed table's shard on node 2; node 1's server is killed
# (immediate stop) while steps commit, until a kill leaves prepared
# transactions on node 2 (the kill fell between PREPARE and COMMIT
# PREPARED: the steps used two-phase commit; with a one-phase commit there
# is never one).  After restarts and Citus's recovery: every run
# completed, every step's effect is there exactly once (a step re-run
# after its effect committed would write it twice), nothing left prepared.
set -euo pipefail
. ./lib.sh

remote=$(key_on remote- 2)

q 0 <<SQL >/dev/null
CREATE TABLE public.tp_effects (key text NOT NULL, run_key text NOT NULL, step text NOT NULL);
SELECT create_distributed_table('public.tp_effects', 'key');
CREATE FUNCTION public.tp_step(a jsonb) RETURNS void LANGUAGE sql AS \$\$
  INSERT INTO public.tp_effects VALUES ('$remote', chrono_forge.key(), a->>'step') \$\$;
CREATE PROCEDURE public.tp_wf(args jsonb) LANGUAGE plpgsql AS \$\$
BEGIN
  CALL chrono_forge.durably_execute('public.tp_step', name => 'one', args => '{"step": "one"}');
  CALL chrono_forge.durably_execute('public.tp_step', name => 'two', args => '{"step": "two"}');
  CALL chrono_forge.durably_execute('public.tp_step', name => 'three', args => '{"step": "three"}');
END \$\$;
SQL

# Keys owned by node 1: their runs and steps run there.
keys_sql() {
    echo "SELECT k FROM (SELECT 'tp$1-' || g AS k FROM generate_series(1, $2) g) s WHERE $(owner_of s.k) = 1"
}
hits=0
total=0
for round in $(seq 1 12); do
    q 0 -c "$(keys_sql "$round" 800)" | sed "s/.*/SELECT chrono_forge.start('public.tp_wf', '&');/" > "$CFC_ROOT/starts.sql"
    total=$((total + $(wc -l < "$CFC_ROOT/starts.sql")))
    q 0 -f "$CFC_ROOT/starts.sql" >/dev/null
    # Kill while steps commit: once node 1 has written some effects.
    wait_for 1 60 "SELECT count(*) > 20 FROM chrono_forge.workflows WHERE key LIKE 'tp$round-%' AND state = 'completed'" ||
        true
    sleep "0.$((RANDOM % 5))"
    cfc_stop 1 immediate
    prepared=$(q 2 -c "SELECT count(*) FROM pg_catalog.pg_prepared_xacts")
    cfc_start 1
    [ "$prepared" -gt 0 ] && hits=$((hits + 1))
    [ "$hits" -ge 2 ] && break
done
[ "$hits" -ge 1 ] || fail "no kill of node 1 left a prepared transaction on node 2 (no two-phase commits?)"

wait_for 1 300 "SELECT count(*) = $total FROM chrono_forge.workflows WHERE workflow = 'public.tp_wf' AND state = 'completed'"
# Citus's recovery resolves what the kills left prepared.
q 1 -c "SELECT recover_prepared_transactions()" >/dev/null
wait_for 2 120 "SELECT count(*) = 0 FROM pg_catalog.pg_prepared_xacts"
expect_eq "$(q 0 -c "SELECT count(*) FROM public.tp_effects")" "$((total * 3))" "effects (3 per run)"
expect_eq "$(q 0 -c "SELECT count(*) FROM (SELECT run_key, step FROM public.tp_effects GROUP BY 1, 2 HAVING count(*) > 1) d")" \
    0 "steps whose effect is there twice"
expect_eq "$(q 1 -c "SELECT count(*) FROM chrono_forge.execution_logs l JOIN chrono_forge.workflows w ON w.id = l.workflow_id
                     WHERE w.workflow = 'public.tp_wf' AND l.state = 'completed' AND l.attempts > 1")" 0 \
    "steps that ran more than once"
echo "ok: $total runs, $hits kill(s) between PREPARE and COMMIT PREPARED"
