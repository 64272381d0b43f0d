# Helpers for the attack suite (sourced; brings ../integration/lib.sh).
#
# Every attack starts from sec_reset: the extension dropped and created
# again in "postgres" (the workers' database), and three ordinary roles, each owning a schema of its name:
# tenant_a, tenant_b and intruder (intruder also has CREATE on public, as a
# database owner's role would).  Nobody is superuser but the bootstrap role.
. "${CF_SECURITY_DIR:-$(dirname "${BASH_SOURCE[0]}")}/../integration/lib.sh"
export PGDATABASE=postgres

# as ROLE [SQL | psql options...]: run SQL, psql's -c/-f, or stdin, as
# ROLE: role set at connection (the session user stays the superuser, so
# that no password setup is needed).  current_user is ROLE; checks read
# rolsuper of the role itself, never of the session.
as() {
    local role=$1
    shift
    if [ $# -eq 1 ] && [[ $1 != -* ]]; then
        set -- -c "$1"
    fi
    PGOPTIONS="-c role=$role" psql -XAtq -v ON_ERROR_STOP=1 "$@"
}

# as_login ROLE [SQL]: the same in a session of ROLE's own (its session
# user is ROLE).
as_login() {
    local role=$1
    shift
    if [ $# -gt 0 ]; then
        printf '%s\n' "$*" | psql -XAtq -v ON_ERROR_STOP=1 -U "$role"
    else
        psql -XAtq -v ON_ERROR_STOP=1 -U "$role"
    fi
}

sec_reset() {
    PGOPTIONS='-c client_min_messages=warning' psql -XAtq -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DROP EXTENSION IF EXISTS chrono_forge CASCADE;
DO $$ DECLARE r text; BEGIN
  FOREACH r IN ARRAY ARRAY['tenant_a', 'tenant_b', 'intruder'] LOOP
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('DROP OWNED BY %I CASCADE', r);
      EXECUTE format('DROP ROLE %I', r);
    END IF;
    EXECUTE format('CREATE ROLE %I LOGIN', r);
  END LOOP;
END $$;
CREATE EXTENSION chrono_forge;
CREATE SCHEMA tenant_a AUTHORIZATION tenant_a;
CREATE SCHEMA tenant_b AUTHORIZATION tenant_b;
CREATE SCHEMA intruder AUTHORIZATION intruder;
GRANT CREATE ON SCHEMA public TO intruder;
SQL
}

# Wait until the workers have nothing due and nothing running.
wait_idle() {
    wait_for "${1:-60}" "SELECT NOT EXISTS (SELECT FROM chrono_forge.workflows WHERE state IN ('idle', 'running') AND EXISTS (SELECT FROM chrono_forge.wakeups w WHERE w.workflow_id = workflows.id AND w.due_at <= now())) AND NOT EXISTS (SELECT FROM chrono_forge.workflows WHERE state = 'running')"
}

is_super() { [ "$(q -c "SELECT rolsuper FROM pg_roles WHERE rolname = '$1'")" = t ]; }
