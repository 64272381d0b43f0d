# chrono_forge.database names a database that does not exist: the launcher
# cannot connect and exits FATAL, and the postmaster starts it again a
# second later.  Each start after one that could not connect waits longer
# first (2 s, 4 s, 8 s, ... up to a minute), so the log does not get a
# FATAL every second; once the database exists, a launcher connects and
# serves it.  (0.9.0 logged one FATAL per second, forever.)
# Own cluster (own_cluster.sh): its settings name the missing database.
set -uo pipefail
. "$CF_INTEGRATION_DIR/lib.sh"
. "$CF_INTEGRATION_DIR/own_cluster.sh"
P=57413
DB=cf_not_yet
LOG=$OC_DIR/m.log

oc_init m $P "shared_preload_libraries = 'chrono_forge'" "chrono_forge.workers = 1" \
    "chrono_forge.database = $DB" || fail "initdb"
oc_start m || fail "the server did not start"

# 14 s without the database.  0.9.0: about 14 FATALs; now starts at about
# 0, 3 and 8 s (the next one waits 8 s more).
sleep 14
fatals=$(grep -c "FATAL:  database \"$DB\" does not exist" "$LOG")
echo "FATALs in 14 s: $fatals"
[ "$fatals" -ge 2 ] || fail "the launcher did not try again after it could not connect ($fatals FATALs)"
[ "$fatals" -le 5 ] || fail "the launcher tried $fatals times in 14 s: no growing wait between starts"
grep -q "chrono_forge launcher: 2 starts in a row could not connect to database \"$DB\"; trying again in 4 s" "$LOG" \
    || fail "no LOG line saying how long the launcher waits"

# A launcher stopped while it waits (here SIGTERM, as pg_terminate_backend
# sends) exits to be started again, not for good: the database that
# appears below must still be served.
pm=$(head -1 "$OC_DIR/m/postmaster.pid")
lpid=$(pgrep -P "$pm" -f "chrono_forge launcher")
[ -n "$lpid" ] || fail "no launcher process under postmaster $pm"
kill -TERM "$lpid"

# The database appears: a launcher connects within its current wait
# (at most 16 s from here) and serves it.
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
oc_wait_for $P 60 "SELECT state = 'completed' FROM chrono_forge.workflows WHERE key = 'one'" $DB \
    || fail "the launcher never served the database once it existed"
grep -q "chrono_forge launcher started for database \"$DB\"" "$LOG" || fail "no launcher start logged"

# Connected once, the count starts over: a launcher that stops (here
# terminated) is back after the postmaster's one second, with no wait.
waits=$(grep -c "trying again in" "$LOG")
old_pid=$(oc_q $P -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge launcher'")
[ -n "$old_pid" ] || fail "no launcher in pg_stat_activity"
oc_q $P -c "SELECT pg_terminate_backend($old_pid)" >/dev/null || fail "terminate"
oc_wait_for $P 10 "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'chrono_forge launcher' AND pid <> $old_pid" \
    || fail "the launcher was not back within 10 s"
[ "$(grep -c "trying again in" "$LOG")" = "$waits" ] || fail "a launcher that had connected waited before connecting again"
