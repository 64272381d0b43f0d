#!/usr/bin/env bash
# The dashboard's Cluster page on the coordinator: a role's runs on both
# workers listed with their nodes, each node's overview, the state
# filter (dashboard/tests/citus_cluster_page.py).
set -euo pipefail
. ./lib.sh
q 0 <<'SQL' >/dev/null
CREATE ROLE cd_viewer LOGIN;
CREATE FUNCTION public.cd_nothing() RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE PROCEDURE public.cd_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('public.cd_nothing', 'one'); END $$;
SQL
for i in $(seq 1 30); do
    psql -XAtq -v ON_ERROR_STOP=1 -h "$CFC_ROOT" -p "$(cfc_port 0)" -U cd_viewer -d postgres \
        -c "SELECT chrono_forge.start('public.cd_wf', 'cd-$i')" >/dev/null
done
for g in 1 2; do
    wait_for "$g" 60 "SELECT count(*) > 0 AND bool_and(state = 'completed') FROM chrono_forge.workflows WHERE workflow = 'public.cd_wf'"
done
/usr/bin/python3 ../../dashboard/tests/citus_cluster_page.py \
    "host=$CFC_ROOT port=$(cfc_port 0) dbname=postgres user=cd_viewer" 1,2 cd-7
