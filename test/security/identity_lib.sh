# Helpers for the identity, oracle and schedule attacks (sourced by them).
. "$CF_SECURITY_DIR/lib.sh"

# sql_as ROLE [psql args] <<SQL: a script from stdin as ROLE (lib.sh's as).
sql_as() {
    local role=$1
    shift
    as "$role" -f - "$@"
}

# answer_as ROLE SQL: what SQL answers as ROLE: "NOTICE:  ok" or
# "NOTICE:  SQLSTATE message | detail | hint", so that every word of the
# answer is compared.
answer_as() {
    psql -XAtq -v ON_ERROR_STOP=1 -c "SET ROLE $1" -f - 2>&1 <<SQL | sed 's/^psql:<stdin>:[0-9]*: //'
DO \$\$
BEGIN
    EXECUTE \$q\$$2\$q\$;
    RAISE NOTICE 'ok';
EXCEPTION WHEN OTHERS THEN
    DECLARE st text; msg text; det text; hin text;
    BEGIN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hin = PG_EXCEPTION_HINT;
        RAISE NOTICE '% % | % | %', st, msg, det, hin;
    END;
END \$\$;
SQL
}
