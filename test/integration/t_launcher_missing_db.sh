# The launcher cannot connect.  A start that fails exits FATAL, and the
# postmaster starts the launcher again a second later; 0.9.0 logged that
# FATAL every second, forever.  Now the start after a failed one waits,
# connected to no database:
#  - chrono_forge.database names no database (yet): it looks for it once
#    a second, silently, and the database is served about two seconds
#    after it is created (a common order: start the server, then create
#    the database);
#  - the database exists but refuses the connection: it waits twice as
#    long as the last time (2 s, 4 s, ... up to a minute), saying so.
# A launcher stopped while it waits is started again; one that has
# connected starts over at no wait.
# Own cluster (own_cluster.sh): its settings name the missing database.
set -uo pipefail
. "$CF_INTEGRATION_DIR/lib.sh"
. "$CF_INTEGRATION_DIR/own_cluster.sh"
P=57413
DB=cf_not_yet
LOG=$OC_DIR/m.log

# expect_tries PATTERN MIN MAX WHAT: the log's lines matching PATTERN (the
# launcher's failed connections) number MIN to MAX; prints and returns it.
expect_tries() {
    local n
    n=$(grep -c "$1" "$LOG")
    echo "$4: $n" >&2
    [ "$n" -ge "$2" ] || fail "$4: $n, fewer than $2: the launcher did not try (again)"
    [ "$n" -le "$3" ] || fail "$4: $n, more than $3: the launcher does not wait between tries"
    echo "$n"
}

oc_init m $P "shared_preload_libraries = 'chrono_forge'" "chrono_forge.workers = 1" \
    "chrono_forge.database = $DB" || fail "initdb"
oc_start m || fail "the server did not start"

# 8 s without the database: one FATAL (0.9.0: eight), then a wait.
sleep 8
fatals=$(expect_tries "FATAL:  database \"$DB\" does not exist" 1 2 "FATALs in 8 s") || exit 1
grep -q "chrono_forge launcher: database \"$DB\" does not exist; waiting for it" "$LOG" \
    || fail "no LOG line saying the launcher waits for the database"

# A launcher stopped while it waits (SIGTERM, as pg_terminate_backend
# sends) exits to be started again, not for good.
pm=$(head -1 "$OC_DIR/m/postmaster.pid")
lpid=$(pgrep -P "$pm" -f "chrono_forge launcher")
[ -n "$lpid" ] || fail "no launcher process under postmaster $pm"
kill -TERM "$lpid"
sleep 3
[ "$(grep -c "FATAL:  database \"$DB\" does not exist" "$LOG")" = "$fatals" ] \
    || fail "the launcher started after SIGTERM tried to connect instead of waiting"

# The database appears and is served within a few seconds.
oc_q $P -c "CREATE DATABASE $DB" || fail "create database"
oc_q $P -d $DB <<'SQL' || fail "setup"
CREATE EXTENSION chrono_forge;
CREATE FUNCTION md_step(args jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE PROCEDURE md_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('md_step');
END $$;
SELECT chrono_forge.start('md_wf', 'one');
SQL
oc_wait_for $P 20 "SELECT state = 'completed' FROM chrono_forge.workflows WHERE key = 'one'" $DB \
    || fail "the launcher did not serve the database within 20 s of its creation"

# Connected once, the count starts over: a launcher that stops is back
# after the postmaster's one second, with no wait.
waits=$(grep -c "waiting for it\|trying again in" "$LOG")
old_pid=$(oc_q $P -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge launcher'")
[ -n "$old_pid" ] || fail "no launcher in pg_stat_activity"
oc_q $P -c "SELECT pg_terminate_backend($old_pid)" >/dev/null || fail "terminate"
oc_wait_for $P 10 "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'chrono_forge launcher' AND pid <> $old_pid" \
    || fail "the launcher was not back within 10 s"
[ "$(grep -c "waiting for it\|trying again in" "$LOG")" = "$waits" ] \
    || fail "a launcher that had connected waited before connecting again"

# The database exists but refuses connections: growing waits, said in
# the log, and served again once it accepts them.
oc_q $P -c "ALTER DATABASE $DB ALLOW_CONNECTIONS false" || fail "disallow"
lpid=$(oc_q $P -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge launcher'")
oc_q $P -c "SELECT pg_terminate_backend($lpid)" >/dev/null || fail "terminate"
sleep 10
expect_tries "FATAL:  database \"$DB\" is not currently accepting connections" 2 4 \
    "refused connections in 10 s" >/dev/null || exit 1
grep -q "chrono_forge launcher: 1 start in a row could not connect to database \"$DB\"; trying again in 2 s" "$LOG" \
    || fail "no LOG line saying how long the launcher waits"
oc_q $P -c "ALTER DATABASE $DB ALLOW_CONNECTIONS true" || fail "allow"
oc_q $P -d $DB -c "SELECT chrono_forge.start('md_wf', 'two')" >/dev/null || fail "start two"
oc_wait_for $P 40 "SELECT state = 'completed' FROM chrono_forge.workflows WHERE key = 'two'" $DB \
    || fail "the launcher did not serve the database once it accepted connections"
