# Throwaway clusters of a test's own (sourced after lib.sh), for tests that
# need more than the runner's one cluster: a streaming standby, a database
# dropped and restored.  Each lives under one temporary directory, listens
# only on a Unix socket there (so its port cannot collide with anyone's),
# runs as the postgres OS user with the binaries of the pg_config on PATH,
# and is stopped and removed when the test exits.
OC_BIN=$(pg_config --bindir)
OC_DIR=$(mktemp -d /tmp/cf-oc.XXXXXX)
chown postgres "$OC_DIR"
OC_CLUSTERS=()

oc_cleanup() {
    for d in "${OC_CLUSTERS[@]}"; do
        oc_as "$OC_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
    done
    rm -rf "$OC_DIR"
}
trap oc_cleanup EXIT

# oc_as CMD...: run as the postgres OS user (initdb refuses root).
oc_as() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# oc_init NAME PORT [SETTING...]: a new cluster $OC_DIR/NAME on PORT.
oc_init() {
    local name=$1 port=$2 d=$OC_DIR/$1
    shift 2
    oc_as "$OC_BIN/initdb" -D "$d" -A trust -U postgres >/dev/null || return 1
    {
        echo "port = $port"
        echo "unix_socket_directories = '$OC_DIR'"
        echo "listen_addresses = ''"
        echo "fsync = off"
        echo "max_worker_processes = 16"
        for s in "$@"; do echo "$s"; done
    } >> "$d/postgresql.conf"
    OC_CLUSTERS+=("$d")
}

oc_start() { oc_as "$OC_BIN/pg_ctl" -D "$OC_DIR/$1" -l "$OC_DIR/$1.log" -w start >/dev/null; }
oc_stop() { oc_as "$OC_BIN/pg_ctl" -D "$OC_DIR/$1" -m "${2:-fast}" -w stop >/dev/null; }

# oc_q PORT [psql args...]: psql as postgres on that cluster.
oc_q() {
    local port=$1
    shift
    psql -XAtq -v ON_ERROR_STOP=1 -h "$OC_DIR" -p "$port" -U postgres "$@"
}

# oc_wait_for PORT SECONDS SQL [DB]: poll until SQL returns 't'.
oc_wait_for() {
    local port=$1 secs=$2 sql=$3 db=${4:-postgres}
    for _ in $(seq 1 $((secs * 10))); do
        [ "$(oc_q "$port" -d "$db" -c "$sql" 2>/dev/null)" = t ] && return 0
        sleep 0.1
    done
    echo "timed out after ${secs}s waiting for: $sql" >&2
    return 1
}
