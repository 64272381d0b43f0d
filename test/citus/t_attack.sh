#!/usr/bin/env bash
# An ordinary role against the Citus parts: distribute() and
# claim_node_id_range() are not its to call; the routing anchor is not
# its to write; the cluster views quote what it passes (no injection) and
# show only its own runs; another role's run is unreachable through the
# routed calls, and its tasks through the task calls.
set -euo pipefail
. ./lib.sh
q 0 <<'SQL' >/dev/null
CREATE ROLE at_victim LOGIN;
CREATE ROLE at_intruder LOGIN;
CREATE TABLE public.at_canary (x int);
GRANT SELECT ON public.at_canary TO PUBLIC;
CREATE PROCEDURE public.at_wf(args jsonb) LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
  CALL chrono_forge.run_task('work', 'at_q', result => r);
END $$;
SQL
as_role() { psql -XAtq -v ON_ERROR_STOP=1 -h "$CFC_ROOT" -p "$(cfc_port "$2")" -U "$1" -d postgres -v VERBOSITY=verbose -c "$3"; }
denied() {   # denied ROLE NODE SQL STATE
    local out
    out=$(as_role "$1" "$2" "$3" 2>&1) && fail "$1 was allowed: $3"
    grep -q "$4" <<<"$out" || fail "$1: $3: expected $4: $out"
}
denied at_intruder 0 "SELECT chrono_forge.distribute()" 42501
denied at_intruder 1 "SELECT chrono_forge.claim_node_id_range()" 42501
denied at_intruder 0 "INSERT INTO chrono_forge_routing.keys VALUES ('x')" 42501
denied at_intruder 1 "DROP TABLE chrono_forge_routing.keys" 42501
for evil in "x'); DROP TABLE public.at_canary; --" "x%L%s" "\$\$; DROP TABLE public.at_canary; \$\$"; do
    lit=$(printf '%s' "$evil" | sed "s/'/''/g")
    expect_eq "$(as_role at_intruder 0 "SELECT count(*) FROM chrono_forge.cluster_runs(workflow => '$lit', key_prefix => '$lit')")" \
        0 "cluster_runs() with '$evil'"
done
expect_eq "$(q 0 -c "SELECT count(*) FROM public.at_canary")" 0 "the canary table (still there)"

# The victim's run and task; the intruder reaches neither.
as_role at_victim 0 "SELECT chrono_forge.start('public.at_wf', 'secret')" >/dev/null
g=$(q 0 -c "SELECT $(owner_of "'secret'")")
wait_for "$g" 60 "SELECT count(*) = 1 FROM chrono_forge.tasks t JOIN chrono_forge.workflows w ON w.id = t.workflow_id
                  WHERE w.key = 'secret'"
denied at_intruder 0 "SELECT chrono_forge.send_event('public.at_wf', 'secret', 'x')" CF014
denied at_intruder 0 "SELECT chrono_forge.cancel('public.at_wf', 'secret')" CF014
denied at_intruder 0 "SELECT * FROM chrono_forge.wait_for_run('public.at_wf', 'secret', '1 s')" CF014
expect_eq "$(as_role at_intruder "$g" "SELECT count(*) FROM chrono_forge.claim_tasks(ARRAY['at_q'], 10)")" 0 \
    "the victim's tasks claimed by the intruder"
task=$(q "$g" -c "SELECT t.id FROM chrono_forge.tasks t JOIN chrono_forge.workflows w ON w.id = t.workflow_id WHERE w.key = 'secret'")
expect_eq "$(as_role at_intruder "$g" "SELECT chrono_forge.complete_task($task, gen_random_uuid(), '{}')")" f \
    "the victim's task completed by the intruder"
expect_eq "$(as_role at_intruder 0 "SELECT count(*) FROM chrono_forge.cluster_claim_tasks(ARRAY['at_q'], 10)")" 0 \
    "the victim's tasks claimed by the intruder through the coordinator"
expect_eq "$(as_role at_intruder 0 "SELECT count(*) FROM chrono_forge.cluster_claim_tasks(ARRAY['at_q'', ''x''); DROP TABLE public.at_canary; --'], 10)")" \
    0 "cluster_claim_tasks() with an injection as a queue"
expect_eq "$(as_role at_intruder 0 "SELECT chrono_forge.complete_routed_task($task, 'secret', '00000000-0000-0000-0000-000000000000', '{}')")" f \
    "the victim's task completed by the intruder through the coordinator"
expect_eq "$(q 0 -c "SELECT count(*) FROM public.at_canary")" 0 "the canary table (still there)"
expect_eq "$(as_role at_intruder 0 "SELECT count(*) FROM chrono_forge.cluster_runs()")" 0 "runs the intruder sees"
expect_eq "$(as_role at_intruder 0 "SELECT count(*) FROM chrono_forge.cluster_overview() WHERE error IS NULL AND workflow IS NOT NULL")" \
    0 "overview rows the intruder sees"
expect_eq "$(as_role at_victim 0 "SELECT (run).key FROM chrono_forge.cluster_runs()")" secret "the victim's own run"
expect_eq "$(q "$g" -c "SELECT state FROM chrono_forge.workflows WHERE key = 'secret'")" idle "the victim's run, untouched"
echo ok
