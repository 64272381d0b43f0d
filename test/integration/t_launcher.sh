# The launcher: visible, restarted after termination, reloads on SIGHUP,
# idle when disabled; workers follow chrono_forge.workers.
. "$CF_INTEGRATION_DIR/lib.sh"

count_type() { q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$1'"; }

wait_for 30 "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'chrono_forge launcher'" \
    || fail "launcher not visible in pg_stat_activity"
wait_for 30 "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "expected 2 workers"

old=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge launcher'")
q -c "SELECT pg_terminate_backend($old)" >/dev/null
wait_for 30 "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'chrono_forge launcher' AND pid <> $old" \
    || fail "launcher not restarted after pg_terminate_backend"
wait_for 30 "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "workers not back to 2 after the launcher restarted"

# SIGHUP: fewer workers, then none when disabled, then back.
q -c "ALTER SYSTEM SET chrono_forge.workers = 1" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "workers did not follow chrono_forge.workers = 1"
q -c "ALTER SYSTEM SET chrono_forge.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "workers still running with chrono_forge.enabled = off"
expect_eq "$(count_type 'chrono_forge launcher')" 1 "launcher stays (idle) when disabled"
q -c "ALTER SYSTEM RESET chrono_forge.workers" -c "ALTER SYSTEM RESET chrono_forge.enabled" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 30 "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
    || fail "workers not restored"

# Another database: CREATE EXTENSION works and says no worker serves it.
q -c "DROP DATABASE IF EXISTS cf_other" -c "CREATE DATABASE cf_other" >/dev/null
notice=$(psql -XAtq -d cf_other -c "CREATE EXTENSION chrono_forge" 2>&1)
echo "$notice" | grep -q 'no chrono_forge workers serve database "cf_other"' \
    || fail "expected a NOTICE in another database, got: $notice"
q -c "DROP DATABASE cf_other" >/dev/null
