# A fresh CREATE EXTENSION (the current version's script, built from
# extension/chrono_forge.sql) and an install updated from 0.1.0 through
# every upgrade script leave the same catalog: the schema-only dump
# (binary-upgrade mode, which lists the extension's members, their
# initial privileges and ALTER EXTENSION ... ADD for each), the members,
# every member's ACL and the tables pg_dump keeps.  A difference fails
# with a diff: the schema file and the upgrade chain have drifted apart
# (a change made to the current upgrade script and not to the schema
# file, or the other way round; function bodies must match to the
# character).  Runs in its own two databases, dropped at the end.
. "$CF_INTEGRATION_DIR/lib.sh"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fresh=cf_catalog_fresh
updated=cf_catalog_updated

for db in $fresh $updated; do
    q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null 2>&1 || fail "create $db"
done
trap 'rm -rf "$out"; q -d postgres -c "DROP DATABASE IF EXISTS $fresh WITH (FORCE)" -c "DROP DATABASE IF EXISTS $updated WITH (FORCE)" >/dev/null 2>&1' EXIT

q -d $fresh -c "CREATE EXTENSION chrono_forge" >/dev/null 2>"$out/fresh.log" ||
    fail "fresh CREATE EXTENSION: $(cat "$out/fresh.log")"
q -d $updated -c "CREATE EXTENSION chrono_forge VERSION '0.1.0'" \
    -c "ALTER EXTENSION chrono_forge UPDATE" >/dev/null 2>"$out/updated.log" ||
    fail "0.1.0 then UPDATE: $(cat "$out/updated.log")"
default=$(q -d $fresh -c "SELECT default_version FROM pg_available_extensions WHERE name = 'chrono_forge'")
expect_eq "$(q -d $fresh -c "SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge'")" "$default" "fresh version"
expect_eq "$(q -d $updated -c "SELECT extversion FROM pg_extension WHERE extname = 'chrono_forge'")" "$default" "updated version"

# pg_dump's text, one block per object (a "-- Name: ...; Type: ..."
# header and what follows), blocks sorted: objects that differ only in
# OID order (overloads, same-named policies) compare equal.  OIDs the
# binary-upgrade mode preserves are dropped.
dump() {
    pg_dump --schema-only --binary-upgrade --no-comments -d "$1" |
        grep -v -e '^SELECT pg_catalog.binary_upgrade_set_next_' -e '^-- For binary upgrade, ' \
                -e '^\\restrict ' -e '^\\unrestrict ' |
        sed -E -e "s/binary_upgrade_create_empty_extension\(.*/binary_upgrade_create_empty_extension(...)/" \
               -e "s/(relfrozenxid|relminmxid) = '[0-9]+'/\1 = 'N'/" -e "s/^WHERE oid = '[0-9]+';/WHERE oid = 'N';/" |
        awk 'BEGIN { RS = "\n--\n-- Name: "; ORS = "\0" } { gsub(/\n+$/, ""); print }' |
        sort -z | tr '\0' '\n'
}

# The members (pg_depend deptype 'e'), the ACL and initial privileges of
# each, and the configuration tables with their conditions.
facts() {
    q -d "$1" <<'SQL'
SELECT 'member ' || pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM pg_catalog.pg_depend d
 WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'chrono_forge')
 ORDER BY 1;
SELECT 'acl ' || pg_catalog.pg_describe_object(d.classid, d.objid, 0) || ' ' || coalesce(
           (SELECT c.relacl::text FROM pg_catalog.pg_class c WHERE d.classid = 'pg_catalog.pg_class'::regclass AND c.oid = d.objid),
           (SELECT p.proacl::text FROM pg_catalog.pg_proc p WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = d.objid),
           (SELECT t.typacl::text FROM pg_catalog.pg_type t WHERE d.classid = 'pg_catalog.pg_type'::regclass AND t.oid = d.objid),
           (SELECT n.nspacl::text FROM pg_catalog.pg_namespace n WHERE d.classid = 'pg_catalog.pg_namespace'::regclass AND n.oid = d.objid),
           '-')
  FROM pg_catalog.pg_depend d
 WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'chrono_forge')
 ORDER BY 1;
SELECT 'init_privs ' || pg_catalog.pg_describe_object(i.classoid, i.objoid, i.objsubid) || ' '
       || i.privtype::text || ' ' || i.initprivs::text
  FROM pg_catalog.pg_init_privs i
 WHERE pg_catalog.pg_describe_object(i.classoid, i.objoid, i.objsubid) LIKE '%chrono_forge%'
 ORDER BY 1;
SELECT 'config ' || c.n || ' ' || c.rel::regclass::text || ' ' || pg_catalog.quote_literal(c.cond)
  FROM pg_catalog.pg_extension e,
       LATERAL unnest(e.extconfig, e.extcondition) WITH ORDINALITY AS c(rel, cond, n)
 WHERE e.extname = 'chrono_forge'
 ORDER BY c.n;
SQL
}

for db in $fresh $updated; do
    dump $db > "$out/$db.dump" || fail "pg_dump $db"
    facts $db > "$out/$db.facts" || fail "catalog facts of $db"
done
[ "$(grep -c 'Type: FUNCTION' "$out/$fresh.dump")" -gt 50 ] || fail "the dump lists no functions: $(head -c 2000 "$out/$fresh.dump")"
[ "$(grep -c '^config ' "$out/$fresh.facts")" -gt 10 ] || fail "no configuration tables"

ok=true
if ! diff -u --label "fresh CREATE EXTENSION" --label "0.1.0 + ALTER EXTENSION UPDATE" \
        "$out/$fresh.dump" "$out/$updated.dump" > "$out/dump.diff"; then
    echo "the schema-only dumps differ (- fresh, + updated from 0.1.0):"
    cat "$out/dump.diff"
    ok=false
fi
if ! diff -u --label "fresh CREATE EXTENSION" --label "0.1.0 + ALTER EXTENSION UPDATE" \
        "$out/$fresh.facts" "$out/$updated.facts" > "$out/facts.diff"; then
    echo "extension members, ACLs or configuration tables differ (- fresh, + updated from 0.1.0):"
    cat "$out/facts.diff"
    ok=false
fi
$ok || fail "extension/chrono_forge.sql and the upgrade chain leave different catalogs"
