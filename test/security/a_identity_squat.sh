# Item 4 (run identity): tenant_b starts tenant_a's business keys first
# (its own procedure of the same name), its children's keys in the 0.4.0
# form and every form it could guess in the new one, and a run with the
# key of tenant_a's next schedule tick.  tenant_a's runs, children and
# tick all run as tenant_a, none skipped, and tenant_a's start() never
# returns tenant_b's run.  Two of tenant_a's workflows sharing a business
# key and spawning the same child in a branch of the same name both get
# their children.
. "$CF_SECURITY_DIR/identity_lib.sh"

sql_as tenant_b >/dev/null <<'SQL'
CREATE TABLE tenant_b.log (key text, who name);
CREATE PROCEDURE tenant_b.onboarding(args jsonb) LANGUAGE plpgsql AS $$
BEGIN INSERT INTO tenant_b.log VALUES (chrono_forge.key(), current_user); END $$;
CREATE PROCEDURE tenant_b.child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN INSERT INTO tenant_b.log VALUES (chrono_forge.key(), current_user); END $$;
SQL
# tenant_b goes first, with every key it can guess.
b_id=$(sql_as tenant_b <<'SQL'
SET search_path = tenant_b;
SELECT chrono_forge.start('onboarding', 'user-42');
SELECT chrono_forge.start('child', 'batch-7$items$i_' || g) FROM generate_series(1, 3) g;
SELECT chrono_forge.start('child', 'batch-7$items$single');
SELECT chrono_forge.start('onboarding', 'nightly@2030-01-01T00:00Z');
SQL
)
b_id=$(echo "$b_id" | head -1)
# New-form child keys (and anything beginning with '$') are refused.
refused=$(answer_as tenant_b "SELECT chrono_forge.start('tenant_b.child', '\$1\$batch-7\$items\$i_1')" 2>&1)
case "$refused" in *CF012*) ;; *) fail "a key beginning with \$ was accepted: $refused" ;; esac

sql_as tenant_a >/dev/null <<'SQL'
CREATE TABLE tenant_a.log (key text, who name);
GRANT USAGE ON SCHEMA tenant_a TO PUBLIC;   -- names resolve for tenant_b too
CREATE PROCEDURE tenant_a.onboarding(args jsonb) LANGUAGE plpgsql AS $$
BEGIN INSERT INTO tenant_a.log VALUES (chrono_forge.key(), current_user); END $$;
CREATE PROCEDURE tenant_a.child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN INSERT INTO tenant_a.log VALUES (regexp_replace(chrono_forge.key(), '^\$[0-9]+\$', ''), current_user); END $$;
CREATE PROCEDURE tenant_a.fan(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('items');
    CALL chrono_forge.spawn_each('i', 'tenant_a.child', 'SELECT g AS item_key FROM generate_series(1, 3) g');
    CALL chrono_forge.spawn('single', 'tenant_a.child');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['items'], min_interval => '50 milliseconds', max_interval => '200 milliseconds');
END $$;
-- A second workflow with the same branch and child, started with the same key.
CREATE PROCEDURE tenant_a.fan2(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('items');
    CALL chrono_forge.spawn('single', 'tenant_a.child');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['items'], min_interval => '50 milliseconds', max_interval => '200 milliseconds');
END $$;
SQL
a_id=$(sql_as tenant_a <<'SQL'
SET search_path = tenant_a;
SELECT chrono_forge.start('onboarding', 'user-42');
SELECT chrono_forge.start('fan', 'batch-7');
SELECT chrono_forge.start('fan2', 'batch-7');
SELECT chrono_forge.start('onboarding', 'nightly@2030-01-01T00:00Z');
SQL
)
first_a=$(echo "$a_id" | head -1)
[ "$first_a" != "$b_id" ] || fail "tenant_a's start() returned tenant_b's run $b_id"

wait_for 60 "SELECT count(*) = 0 FROM chrono_forge.workflows WHERE state NOT IN ('completed')" \
    || fail "runs did not all complete: $(q -c "SELECT owner, workflow, key, state FROM chrono_forge.workflows ORDER BY id")"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE owner = 'tenant_a'::regrole")" 9 \
    "tenant_a's runs (2 onboarding, 2 parents, 3 + 1 + 1 children)"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflows WHERE owner = 'tenant_a'::regrole AND parent_execution_log_id IS NOT NULL")" 5 \
    "tenant_a's children"
expect_eq "$(q -c "SELECT string_agg(key || ':' || who, ',' ORDER BY key) FROM tenant_a.log")" \
    'batch-7$items$i_1:tenant_a,batch-7$items$i_2:tenant_a,batch-7$items$i_3:tenant_a,batch-7$items$single:tenant_a,batch-7$items$single:tenant_a,nightly@2030-01-01T00:00Z:tenant_a,user-42:tenant_a' \
    "tenant_a's bodies ran, as tenant_a"
expect_eq "$(q -c "SELECT count(*) FROM tenant_b.log WHERE who <> 'tenant_b'")" 0 "tenant_b's runs as tenant_b"
expect_eq "$(q -c "SELECT count(*) FROM tenant_b.log")" 6 "tenant_b's runs each ran once"
# Each spelling's lookups find the caller's own run.
expect_eq "$(sql_as tenant_b <<<"SELECT (chrono_forge.visible_run('tenant_b.onboarding', 'user-42')).id")" "$b_id" "tenant_b's run"
expect_eq "$(sql_as tenant_a <<<"SELECT (chrono_forge.visible_run('tenant_a.onboarding', 'user-42')).id")" "$first_a" "tenant_a's run"
exit 0
