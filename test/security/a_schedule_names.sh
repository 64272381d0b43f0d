# Items 8 and 9: schedules are per owner, and any accepted name fires.
# pg_cron truncates job names to 63 bytes; chrono_forge names its jobs by
# the schedule's id, so long names (the tick and reboot jobs of one, two
# sharing a 63-byte prefix) keep distinct jobs, each calling its own
# schedule.  Two roles may use one name; neither sees, blocks, fires or
# removes the other's: its schedule answers as a missing one (42704).
. "$CF_SECURITY_DIR/identity_lib.sh"
q >/dev/null <<'SQL'
CREATE EXTENSION IF NOT EXISTS pg_cron;
GRANT USAGE ON SCHEMA cron TO tenant_a, tenant_b, intruder;
SQL
trap 'q -c "DELETE FROM cron.job WHERE jobname LIKE '"'"'chrono_forge:%'"'"'" >/dev/null 2>&1' EXIT
for r in tenant_a tenant_b; do
    sql_as $r >/dev/null <<SQL
CREATE PROCEDURE $r.nightly(args jsonb) LANGUAGE plpgsql AS \$\$ BEGIN NULL; END \$\$;
SQL
done
long1=$(printf 'a%.0s' $(seq 1 70))_one
long2=$(printf 'a%.0s' $(seq 1 70))_two
sql_as tenant_a >/dev/null <<SQL
SELECT chrono_forge.schedule('$long1', '0 3 * * *', 'tenant_a.nightly');
SELECT chrono_forge.schedule('$long2', '0 4 * * *', 'tenant_a.nightly');
SELECT chrono_forge.schedule('shared', '0 5 * * *', 'tenant_a.nightly');
SQL
# tenant_b: the same name is its own schedule, not a duplicate.
sql_as tenant_b >/dev/null <<'SQL'
SELECT chrono_forge.schedule('shared', '0 6 * * *', 'tenant_b.nightly');
SQL
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.schedules")" 4 "schedules"
expect_eq "$(q -c "SELECT count(DISTINCT j.jobid) FROM chrono_forge.schedules s JOIN cron.job j ON j.jobid IN (s.jobid, s.reboot_jobid)")" 8 \
    "distinct pg_cron jobs (tick and reboot of four schedules)"
expect_eq "$(q -c "SELECT bool_and(j.command LIKE '%' || s.name || '%' AND j.username = s.owner::text
                                   AND j.jobname LIKE 'chrono_forge:' || s.id || '%')
                     FROM chrono_forge.schedules s JOIN cron.job j ON j.jobid IN (s.jobid, s.reboot_jobid)")" t \
    "each job calls its own schedule, as its owner, named by id"
expect_eq "$(q -c "SELECT count(*) FROM cron.job j JOIN chrono_forge.schedules s ON j.jobid = s.jobid WHERE j.schedule = s.cron")" 4 \
    "tick jobs keep their cron expression (no reboot job replaced them)"
# Every accepted name fires: as pg_cron would call it, a tick later.
for name in "$long1" "$long2" shared; do
    n=$(psql -XAtq -v ON_ERROR_STOP=1 -c "SET chrono_forge.fake_now = '2099-01-01 12:00+00'" -c "SET ROLE tenant_a" \
        -c "SELECT chrono_forge.schedule_fire('$name')")
    expect_eq "$n" 1 "runs started by firing $name"
done
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE owner = 'tenant_a'::regrole AND workflow = 'tenant_a.nightly'")" 3 \
    "tenant_a's scheduled runs"
# tenant_b's view of tenant_a's schedules: the same answers as missing ones.
for fn in unschedule schedule_fire; do
    theirs=$(answer_as tenant_b "SELECT chrono_forge.$fn('$long1')" 2>&1 | sed "s/$long1/NAME/g")
    missing=$(answer_as tenant_b "SELECT chrono_forge.$fn('nosuch')" 2>&1 | sed "s/nosuch/NAME/g")
    expect_eq "$theirs" "$missing" "$fn of another role's schedule vs a missing one"
    case "$theirs" in *42704*) ;; *) fail "$fn: expected 42704, got $theirs" ;; esac
done
expect_eq "$(sql_as tenant_b <<<"SELECT string_agg(name, ',') FROM chrono_forge.schedule_status")" shared "tenant_b sees only its own"
# Removing its own 'shared' leaves tenant_a's.
sql_as tenant_b >/dev/null <<<"SELECT chrono_forge.unschedule('shared')"
expect_eq "$(q -c "SELECT string_agg(owner::text, ',') FROM chrono_forge.schedules WHERE name = 'shared'")" tenant_a "tenant_a's 'shared' stays"
expect_eq "$(q -c "SELECT count(*) FROM cron.job WHERE jobname LIKE 'chrono_forge:%'")" 6 "jobs left"
exit 0
