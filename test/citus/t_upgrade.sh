#!/usr/bin/env bash
# ALTER EXTENSION chrono_forge UPDATE on a Citus cluster: a cluster of its
# own created at 0.13.0, with a run waiting on the coordinator; the update
# on the coordinator reaches every node; distribute() then routes new
# runs; the run from before stays on its node, where a call still reaches
# it; the run list by key prefix stays bounded on nodes whose ids start
# at their range.
set -euo pipefail
. ./lib.sh
CFC_CF_VERSION=0.13.0
trap cfc_down EXIT
cfc_up
for n in 0 1 2; do
    expect_eq "$(q "$n" -c "SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge'")" 0.13.0 "version on node $n"
done
q 0 <<'SQL' >/dev/null
CREATE PROCEDURE public.up_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
  CALL chrono_forge.await_event('go');
END $$;
SELECT chrono_forge.start('public.up_wf', 'before-update');
SQL
wait_for 0 60 "SELECT started_at IS NOT NULL FROM chrono_forge.workflows WHERE key = 'before-update'"

q 0 -c "ALTER EXTENSION chrono_forge UPDATE" >/dev/null
for n in 0 1 2; do
    expect_eq "$(q "$n" -c "SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge'")" 0.14.0 \
        "version on node $n after the update"
done
expect_eq "$(q 0 -c "SELECT chrono_forge.distribute()")" 2 "nodes owning keys"
# A second distribute() (as after adding a node) changes nothing that works.
expect_eq "$(q 0 -c "SELECT chrono_forge.distribute()")" 2 "nodes owning keys, again"

# New runs route to the workers.
seq 1 40 | sed "s/.*/SELECT chrono_forge.start('public.up_wf', 'after-&');/" | q 0 >/dev/null
for g in 1 2; do
    c=$(q "$g" -c "SELECT count(*) FROM chrono_forge.workflows WHERE key LIKE 'after-%' AND id >> 48 = $g")
    [ "$c" -gt 0 ] || fail "no new run on node $g"
done
expect_eq "$(q 0 -c "SELECT count(*) FROM chrono_forge.workflows WHERE key LIKE 'after-%'")" 0 "new runs on the coordinator"

# The run from before the update stays on the coordinator: a call made
# there reaches it (Citus would send a top-level call to the key's owner).
q 0 -c "DO \$\$ BEGIN PERFORM chrono_forge.send_event('public.up_wf', 'before-update', 'go'); END \$\$" >/dev/null
wait_for 0 60 "SELECT state = 'completed' FROM chrono_forge.workflows WHERE key = 'before-update'"

# The run list by key prefix on a worker (ids from 2^48 up): bounded walk.
for g in 1 2; do
    out=$(q "$g" -c "SET statement_timeout = '20s'; SELECT count(*) FROM chrono_forge.runs(key_prefix => 'after-', page_size => 100)")
    [ "$out" -gt 0 ] || fail "runs(key_prefix) on node $g: $out"
    out=$(q "$g" -c "SET statement_timeout = '20s'; SELECT runs FROM chrono_forge.run_counts(key_prefix => 'after-') WHERE state = 'idle'")
    [ "$out" -gt 0 ] || fail "run_counts(key_prefix) on node $g: $out"
done
expect_eq "$(q 0 -c "SELECT chrono_forge.send_event('public.up_wf', 'after-1', 'go')")" t "event to a routed run"
echo ok
