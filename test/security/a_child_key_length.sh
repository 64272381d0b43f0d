# A child's key is <parent key>$<branch>$<spawn>_<item_key>: a spawn_each
# source returning a 3 KB item_key made a key no index entry can hold
# (54000).  0.4.0 queued it in spawn_batches, and the workers then failed
# to take it again and again, without end, for every owner's runs.  The
# parent now fails at dispatch (CF012) and nothing is queued; the other
# owner's runs go on.
. "$CF_SECURITY_DIR/lib.sh"
as tenant_b -f - >/dev/null <<'SQL'
CREATE FUNCTION tenant_b.step() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE PROCEDURE tenant_b.child(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_b.step'); END $$;
-- Random text: nothing for the index to compress.
CREATE FUNCTION tenant_b.long_key() RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(md5(i::text), '') FROM generate_series(1, 100) i $$;
CREATE PROCEDURE tenant_b.parent(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('items');
    CALL chrono_forge.spawn_each('item', 'tenant_b.child', 'SELECT tenant_b.long_key() AS item_key');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['items']);
END $$;
SELECT chrono_forge.start('tenant_b.parent', 'p');
SQL
wait_for 30 "SELECT state = 'failed' FROM chrono_forge.workflows WHERE key = 'p'" \
    || fail "parent with an over-long child key: $(q -c "SELECT state, attempt FROM chrono_forge.workflows WHERE key = 'p'")"
expect_eq "$(q -c "SELECT string_agg(error_class, ',') FROM chrono_forge.error_logs")" CF012 "errors recorded"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.spawn_batches")" 0 "children queued"
# The workers are free for tenant_a.
as tenant_a -f - >/dev/null <<'SQL'
CREATE FUNCTION tenant_a.step() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_a.step'); END $$;
SELECT chrono_forge.start('tenant_a.wf', 'k' || g) FROM generate_series(1, 20) g;
SQL
wait_for 30 "SELECT count(*) = 20 FROM chrono_forge.workflows WHERE owner = 'tenant_a'::regrole AND state = 'completed'" \
    || fail "tenant_a's runs did not complete"
