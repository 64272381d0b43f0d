# Helpers for the Citus suite (sourced): a coordinator (node 0) and two
# workers (nodes 1, 2) of a local Citus cluster, each its own data
# directory under $CFC_ROOT, all with chrono_forge (workers on).
# Sourced by test/citus/runner, its tests and bench/citus.
PG_BIN=$(pg_config --bindir)
CFC_NODES=${CFC_NODES:-3}

# Runs a server program as postgres when root (initdb refuses root).
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# cfc_port N / cfc_dir N: node N's port and data directory.
cfc_port() { echo $((CFC_PORT + $1)); }
cfc_dir() { echo "$CFC_ROOT/node$1"; }

# q N ARGS: psql on node N's database.
q() {
    local n=$1
    shift
    psql -XAtq -v ON_ERROR_STOP=1 -h "$CFC_ROOT" -p "$(cfc_port "$n")" -U postgres -d postgres "$@"
}

fail() { echo "FAIL: $*" >&2; exit 1; }

# as_role ROLE NODE SQL: psql on node NODE as ROLE, verbose errors.
as_role() {
    psql -XAtq -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -h "$CFC_ROOT" -p "$(cfc_port "$2")" -U "$1" -d postgres -c "$3"
}

# fails_with STATE NODE SQL [ROLE]: SQL on node NODE (as ROLE, else
# postgres) must fail with SQLSTATE STATE.
fails_with() {
    local out
    out=$(as_role "${4:-postgres}" "$2" "$3" 2>&1) && fail "not refused on node $2 (${4:-postgres}): $3"
    grep -q "$1" <<<"$out" || fail "on node $2 (${4:-postgres}): $3: expected $1: $out"
}
expect_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; }

# The first of three consecutive ports from $1 up that nothing uses.
cfc_free_ports() {
    local p=$1 i busy
    while :; do
        busy=
        for i in 0 1 2; do
            if (exec 3<>"/dev/tcp/127.0.0.1/$((p + i))") 2>/dev/null ||
                [ -e "/var/run/postgresql/.s.PGSQL.$((p + i))" ]; then
                busy=1
            fi
        done
        [ -z "$busy" ] && break
        p=$((p + 3))
    done
    echo "$p"
}

cfc_wait_ready() {
    local n=$1 secs=${2:-60}
    for _ in $(seq 1 $((secs * 10))); do
        q "$n" -c 'SELECT 1' >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

cfc_start() {
    as_pg "$PG_BIN/pg_ctl" -D "$(cfc_dir "$1")" -l "$(cfc_dir "$1").log" -w -t 120 start >/dev/null &&
        cfc_wait_ready "$1"
}
cfc_stop() { as_pg "$PG_BIN/pg_ctl" -D "$(cfc_dir "$1")" -m "${2:-fast}" -w stop >/dev/null; }

# wait_for N SECONDS SQL: poll node N until SQL returns 't'.
wait_for() {
    local n=$1 secs=$2 sql=$3
    for _ in $(seq 1 $((secs * 10))); do
        [ "$(q "$n" -c "$sql" 2>/dev/null)" = t ] && return 0
        sleep 0.1
    done
    echo "timed out after ${secs}s on node $n waiting for: $sql" >&2
    return 1
}

# cfc_up [EXTRA_GUC=VALUE...]: initdb, start and join three nodes; Citus
# on each, chrono_forge created on the coordinator (Citus propagates it).
cfc_up() {
    local n dir
    CFC_ROOT=$(mktemp -d /tmp/cf-citus.XXXXXX)
    CFC_PORT=$(cfc_free_ports "${CF_CITUS_PORT:-55600}")
    export CFC_ROOT CFC_PORT
    [ "$(id -u)" = 0 ] && chown postgres "$CFC_ROOT"
    for n in $(seq 0 $((CFC_NODES - 1))); do
        dir=$(cfc_dir "$n")
        as_pg "$PG_BIN/initdb" -D "$dir" -A trust -U postgres >/dev/null || return 1
        {
            echo "port = $(cfc_port "$n")"
            echo "unix_socket_directories = '$CFC_ROOT'"
            echo "listen_addresses = 'localhost'"
            echo "shared_preload_libraries = 'citus,chrono_forge'"
            echo "chrono_forge.database = 'postgres'"
            echo "chrono_forge.workers = 2"
            echo "max_prepared_transactions = 100"
            echo "max_worker_processes = 24"
            echo "max_connections = 200"
            echo "fsync = on"
            echo "synchronous_commit = on"
            echo "citus.log_remote_commands = off"
            echo "external_pid_file = '$CFC_ROOT/node$n.pid'"
            for o in "$@"; do echo "${o%%=*} = '${o#*=}'"; done
        } >> "$dir/postgresql.conf"
        cfc_start "$n" || { cat "$dir.log" >&2; return 1; }
        q "$n" -c "CREATE EXTENSION citus" >/dev/null || return 1
    done
    q 0 -c "SELECT citus_set_coordinator_host('localhost', $(cfc_port 0))" >/dev/null || return 1
    for n in $(seq 1 $((CFC_NODES - 1))); do
        q 0 -c "SELECT citus_add_node('localhost', $(cfc_port "$n"))" >/dev/null || return 1
    done
    q 0 -c "CREATE EXTENSION chrono_forge${CFC_CF_VERSION:+ VERSION '$CFC_CF_VERSION'}" >/dev/null
}

cfc_down() {
    local n
    [ -n "${CFC_ROOT:-}" ] || return 0
    for n in $(seq 0 $((CFC_NODES - 1))); do
        as_pg "$PG_BIN/pg_ctl" -D "$(cfc_dir "$n")" -m immediate -w stop >/dev/null 2>&1
    done
    rm -rf "$CFC_ROOT"
}

# owner_of SQL: an SQL expression for the Citus group (the node number
# here) owning the run key SQL, from the routing anchor's placements.
owner_of() {
    echo "(SELECT p.groupid FROM pg_catalog.pg_dist_placement p WHERE p.shardid =
           pg_catalog.get_shard_id_for_distribution_column('chrono_forge_routing.keys', $1))"
}

# key_on PREFIX NODE: the first key PREFIX1, PREFIX2... that NODE owns.
key_on() {
    q 0 -c "SELECT k FROM (SELECT '$1' || g AS k, g FROM generate_series(1, 500) g) s
            WHERE $(owner_of s.k) = $2 ORDER BY g LIMIT 1"
}
