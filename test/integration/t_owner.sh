# Workers run each pass as the run's owner, never as the superuser they
# connect as; a SET made by one owner's code does not leak into the next.
. "$CF_INTEGRATION_DIR/lib.sh"
q <<'SQL' >/dev/null
CREATE ROLE ow_alice;
GRANT USAGE, CREATE ON SCHEMA public TO ow_alice;
CREATE TABLE ow_seen (who text, is_super boolean, path text);
GRANT INSERT ON ow_seen TO ow_alice;
CREATE FUNCTION ow_record() RETURNS void LANGUAGE sql AS $$
    INSERT INTO ow_seen SELECT current_user, rolsuper, current_setting('search_path')
      FROM pg_roles WHERE rolname = current_user $$;
CREATE PROCEDURE ow_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('public.ow_record');
    PERFORM set_config('search_path', 'evil, public', false);
    PERFORM set_config('role', 'postgres', false);
END $$;
GRANT EXECUTE ON FUNCTION ow_record() TO ow_alice;
SET ROLE ow_alice;
SELECT chrono_forge.start('ow_wf', 'alice');
RESET ROLE;
SQL
wait_for 20 "SELECT state IN ('completed', 'failed', 'idle') AND EXISTS (SELECT 1 FROM ow_seen) FROM chrono_forge.workflows WHERE key = 'alice'" \
    || fail "alice's run did not run"
expect_eq "$(q -c "SELECT who || ':' || is_super FROM ow_seen")" "ow_alice:false" "ran as alice"
# Her attempt to become postgres failed and is recorded on her run.
wait_for 20 "SELECT EXISTS (SELECT 1 FROM chrono_forge.error_logs e JOIN chrono_forge.workflows w ON w.id = e.workflow_id WHERE w.key = 'alice' AND e.error_message LIKE '%role%')" \
    || fail "SET ROLE by the owner's code was not refused"
# The next run (the superuser's) does not see alice's search_path.
q -c "SELECT chrono_forge.start('ow_wf', 'postgres')" >/dev/null
wait_for 20 "SELECT count(*) = 1 FROM ow_seen WHERE who = 'postgres'" || fail "second run did not run"
expect_eq "$(q -c "SELECT path FROM ow_seen WHERE who = 'postgres'")" '"$user", public' "search_path reset between passes"
q -c "DELETE FROM chrono_forge.workflows WHERE workflow = 'public.ow_wf'" >/dev/null
