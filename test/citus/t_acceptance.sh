#!/usr/bin/env bash
# Acceptance: 100,000 runs (CF_CITUS_RUNS) started through the
# coordinator by four client sessions complete, each on the node owning
# its key, 0 lost, 0 duplicated; each run's step writes a distributed
# table (for about half the runs on the other node); worker node 2's
# server is stopped immediately and restarted in the middle.  Starts that
# failed while it was down are started again (start() is idempotent), as
# a client would.
set -euo pipefail
. ./lib.sh
N=${CF_CITUS_RUNS:-100000}

q 0 <<'SQL' >/dev/null
CREATE TABLE public.ac_effects (key text NOT NULL, run_key text NOT NULL, node integer NOT NULL);
SELECT create_distributed_table('public.ac_effects', 'key');
CREATE FUNCTION public.ac_step() RETURNS void LANGUAGE sql AS $$
  INSERT INTO public.ac_effects
  SELECT chrono_forge.key() || '/effect', chrono_forge.key(), groupid FROM pg_catalog.pg_dist_local_group $$;
CREATE PROCEDURE public.ac_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
  CALL chrono_forge.durably_execute('public.ac_step', 'effect',
       retry_policy => chrono_forge.retry_policy(30, '200 ms', '2 s'));
END $$;
SQL

completed() {
    echo $(( $(q 1 -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.ac_wf' AND state = 'completed'") +
             $(q 2 -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.ac_wf' AND state = 'completed'") ))
}
seq 1 "$N" | sed "s/.*/SELECT chrono_forge.start('public.ac_wf', 'ac-&');/" > "$CFC_ROOT/starts.sql"
split -n l/4 "$CFC_ROOT/starts.sql" "$CFC_ROOT/load."
pids=()
for f in "$CFC_ROOT"/load.*; do
    psql -XAtq -h "$CFC_ROOT" -p "$(cfc_port 0)" -U postgres -d postgres -f "$f" >/dev/null 2>"$f.err" &
    pids+=($!)
done
# Stop node 2 at once when a third of the runs are done, restart it.
for _ in $(seq 1 1200); do
    done_before=$(completed)
    [ "$done_before" -ge $((N / 3)) ] && break
    sleep 0.5
done
cfc_stop 2 immediate
echo "node 2 stopped at $done_before completed runs"
sleep 3
cfc_start 2
wait "${pids[@]}" || true
echo "failed starts (node 2 down): $(cat "$CFC_ROOT"/load.*.err | grep -c ERROR || true)"

# Start again what is missing anywhere.
{ q 1 -c "SELECT key FROM chrono_forge.workflows WHERE workflow = 'public.ac_wf'"
  q 2 -c "SELECT key FROM chrono_forge.workflows WHERE workflow = 'public.ac_wf'"; } | sort > "$CFC_ROOT/present"
seq 1 "$N" | sed 's/^/ac-/' | sort | comm -23 - "$CFC_ROOT/present" |
    sed "s/.*/SELECT chrono_forge.start('public.ac_wf', '&');/" > "$CFC_ROOT/again.sql"
echo "started again: $(wc -l < "$CFC_ROOT/again.sql")"
q 0 -f "$CFC_ROOT/again.sql" >/dev/null

for _ in $(seq 1 1800); do
    [ "$(completed)" -ge "$N" ] && break
    sleep 0.5
done
expect_eq "$(completed)" "$N" "completed runs"
total=0
for g in 1 2; do
    # Every run on the node owning its key; none in another state.
    expect_eq "$(q "$g" -c "SELECT count(*) FROM chrono_forge.workflows w WHERE w.workflow = 'public.ac_wf'
                AND $(owner_of w.key) <> (SELECT groupid FROM pg_catalog.pg_dist_local_group)")" 0 "runs on node $g it does not own"
    expect_eq "$(q "$g" -c "SELECT count(*) FROM chrono_forge.workflows WHERE workflow = 'public.ac_wf' AND state <> 'completed'")" \
        0 "runs not completed on node $g"
done
{ q 1 -c "SELECT key FROM chrono_forge.workflows WHERE workflow = 'public.ac_wf'"
  q 2 -c "SELECT key FROM chrono_forge.workflows WHERE workflow = 'public.ac_wf'"; } | sort > "$CFC_ROOT/present"
expect_eq "$(wc -l < "$CFC_ROOT/present")" "$N" "runs across the nodes"
expect_eq "$(uniq -d "$CFC_ROOT/present" | wc -l)" 0 "keys with a run on two nodes"
q 1 -c "SELECT recover_prepared_transactions()" >/dev/null
q 2 -c "SELECT recover_prepared_transactions()" >/dev/null
expect_eq "$(q 0 -c "SELECT count(*), count(DISTINCT run_key) FROM public.ac_effects")" "$N|$N" "effects: one per run"
remote=$(q 0 -c "WITH e AS MATERIALIZED (SELECT key, node FROM public.ac_effects)
                 SELECT count(*) FROM e WHERE node <> $(owner_of e.key)")
[ "$remote" -gt $((N / 4)) ] || fail "only $remote effects written on another node"
echo "ok: $N runs, $remote of their effects written on another node"
