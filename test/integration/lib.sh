# Helpers for integration tests (sourced).  PG* comes from pg_virtualenv.
CLUSTER_VERSION=15
CLUSTER_NAME=regress

q() { psql -XAtq -v ON_ERROR_STOP=1 "$@"; }

cf_wait_ready() {
    local secs=$1
    for _ in $(seq 1 $((secs * 10))); do
        pg_isready -q && psql -XAtq -c 'SELECT 1' >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# wait_for SECONDS SQL: poll until SQL returns 't'.
wait_for() {
    local secs=$1 sql=$2
    for _ in $(seq 1 $((secs * 20))); do
        [ "$(q -c "$sql" 2>/dev/null)" = t ] && return 0
        sleep 0.05
    done
    echo "timed out after ${secs}s waiting for: $sql" >&2
    return 1
}

cf_stop_immediate() { pg_ctlcluster "$CLUSTER_VERSION" "$CLUSTER_NAME" stop -m immediate; }
cf_start() { pg_ctlcluster "$CLUSTER_VERSION" "$CLUSTER_NAME" start && cf_wait_ready 60; }
cf_restart() { pg_ctlcluster "$CLUSTER_VERSION" "$CLUSTER_NAME" restart && cf_wait_ready 60; }

fail() { echo "FAIL: $*" >&2; exit 1; }
expect_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; }
