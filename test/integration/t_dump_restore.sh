# A logical backup keeps every run, and a restore resumes them.  Own
# cluster (own_cluster.sh) serving database "app", with pg_cron there too.
# A tenant's workload: a run locked by a worker in the middle of its pass,
# parked timers, an event wait and an event kept for later, a merge
# waiting for its children, a schedule, a finished run with an error, a
# configure() default.  Then pg_dumpall -g and pg_dump, and the restore of
# README's "Backup, restore and standbys": the workers off
# (chrono_forge.enabled), pg_restore, the workers on.  1. Over the served
# database itself (pg_restore --clean: the launcher lives on, and the
# dump's locks are this server's own); 2. into a new cluster whose roles
# have other oids.  Every row comes back; the locked run is re-driven at
# once, with no committed step repeated; timers fire; the events, the
# merge and the schedule (through pg_cron) go on; ids go on from the dump's.
set -uo pipefail
. "$CF_INTEGRATION_DIR/lib.sh"
. "$CF_INTEGRATION_DIR/own_cluster.sh"
A=57421
B=57422
CONF=("shared_preload_libraries = 'chrono_forge,pg_cron'" "chrono_forge.database = app"
      "chrono_forge.workers = 2" "cron.database_name = app" "cron.use_background_workers = on")

qa() { oc_q $A -d app "$@"; }
qb() { oc_q $B -d app "$@"; }
workers_set() {     # PORT on|off: what the README's restore steps do
    oc_q "$1" -c "ALTER SYSTEM SET chrono_forge.enabled = $2" -c "SELECT pg_reload_conf()" >/dev/null
    local want=2
    [ "$2" = off ] && want=0
    oc_wait_for "$1" 30 "SELECT count(*) = $want FROM pg_stat_activity WHERE backend_type = 'chrono_forge worker'" \
        || fail "workers did not follow chrono_forge.enabled = $2"
}
# What must come back: every table's rows (scheduled runs left out: pg_cron
# may start one while we look), owners by name, states and locks.
SNAPSHOT="WITH w AS (SELECT * FROM chrono_forge.workflows WHERE workflow <> 'public.dr_sched_wf')
SELECT concat_ws(' | ', (SELECT count(*) FROM w),
  (SELECT count(*) FROM chrono_forge.execution_logs WHERE workflow_id IN (SELECT id FROM w)),
  (SELECT count(*) FROM chrono_forge.error_logs WHERE workflow_id IN (SELECT id FROM w)),
  (SELECT count(*) FROM chrono_forge.wakeups WHERE workflow_id IN (SELECT id FROM w)),
  (SELECT count(*) FROM chrono_forge.events), (SELECT count(*) FROM chrono_forge.merge_polls),
  (SELECT count(*) FROM chrono_forge.workflow_defaults), (SELECT count(*) FROM chrono_forge.schedules),
  (SELECT string_agg(concat_ws(':', id, key, state, owner, locked_by), ',' ORDER BY id) FROM w),
  (SELECT string_agg(concat_ws(':', name, owner, jobid, reboot_jobid), ',') FROM chrono_forge.schedules),
  (SELECT count(*) FROM fx WHERE step <> 'tick'))"

oc_init a $A "${CONF[@]}" || fail "initdb"
oc_start a || fail "cluster did not start"
oc_q $A -c "CREATE DATABASE app" >/dev/null
qa <<'SQL' >/dev/null || fail "setup"
CREATE EXTENSION pg_cron;
CREATE EXTENSION chrono_forge;
CREATE ROLE dr_tenant LOGIN;
GRANT USAGE ON SCHEMA cron TO dr_tenant;
CREATE TABLE fx (run text, step text);
CREATE TABLE gate (hold boolean, open boolean);
INSERT INTO gate VALUES (true, false);
GRANT SELECT, INSERT ON fx TO dr_tenant;
GRANT SELECT ON gate TO dr_tenant;
CREATE SEQUENCE flaky;
GRANT USAGE ON SEQUENCE flaky TO dr_tenant;
CREATE FUNCTION fx_step(args jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO fx VALUES (chrono_forge.key(), args->>'s') $$;
CREATE FUNCTION hold_step() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WHILE (SELECT hold FROM gate) LOOP PERFORM pg_sleep(0.1); END LOOP;
END $$;
CREATE FUNCTION flaky_step() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('flaky') = 1 THEN RAISE EXCEPTION 'first attempt fails'; END IF;
END $$;
CREATE FUNCTION gate_open() RETURNS boolean LANGUAGE sql AS $$ SELECT open FROM gate $$;
CREATE PROCEDURE dr_locked(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('fx_step', name => 'one', args => '{"s": "one"}');
    CALL chrono_forge.durably_execute('hold_step');
    CALL chrono_forge.durably_execute('fx_step', name => 'two', args => '{"s": "two"}');
END $$;
CREATE PROCEDURE dr_timer(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.wait('6 seconds', 'nap');
    CALL chrono_forge.durably_execute('fx_step', name => 'after', args => '{"s": "after"}');
END $$;
CREATE PROCEDURE dr_event(args jsonb) LANGUAGE plpgsql AS $$
DECLARE p jsonb; q jsonb;
BEGIN
    CALL chrono_forge.await_event('go', p);
    CALL chrono_forge.await_event('then', q);
    CALL chrono_forge.durably_execute('fx_step', name => 'got',
        args => jsonb_build_object('s', concat_ws(',', p->>'s', q->>'s')));
END $$;
CREATE PROCEDURE dr_kid(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.continue_if('gate_open');
    CALL chrono_forge.durably_execute('fx_step', name => 'kid', args => '{"s": "kid"}');
END $$;
CREATE PROCEDURE dr_parent(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.branch('kids');
    CALL chrono_forge.spawn('k1', 'dr_kid');
    CALL chrono_forge.spawn('k2', 'dr_kid');
    CALL chrono_forge.seal_branch();
    CALL chrono_forge.merge_branches(ARRAY['kids'], '1 second', '2 seconds');
    CALL chrono_forge.durably_execute('fx_step', name => 'merged', args => '{"s": "merged"}');
END $$;
CREATE PROCEDURE dr_flaky(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('flaky_step',
        retry_policy => chrono_forge.retry_policy(3, '0 seconds', '0 seconds', false));
END $$;
CREATE PROCEDURE dr_sched_wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('fx_step', name => 'tick', args => '{"s": "tick"}');
END $$;
ALTER PROCEDURE dr_flaky(jsonb) OWNER TO dr_tenant;
SET ROLE dr_tenant;
SELECT chrono_forge.configure('dr_flaky', chrono_forge.retry_policy(7));
SELECT chrono_forge.start('dr_locked', 'locked');
SELECT chrono_forge.start('dr_event', 'event');
SELECT chrono_forge.send_event('dr_event', 'event', 'then', '{"s": "kept"}');
SELECT chrono_forge.start('dr_parent', 'merge');
SELECT chrono_forge.start('dr_flaky', 'flaky');
SELECT chrono_forge.schedule('dr_every_minute', '* * * * *', 'dr_sched_wf');
SQL
oc_wait_for $A 30 "SELECT count(*) = 1 FROM chrono_forge.workflows WHERE key = 'locked' AND state = 'running'
                   AND locked_by IS NOT NULL" app || fail "the locked run never held its lock"
oc_wait_for $A 30 "SELECT count(*) = 2 FROM chrono_forge.workflows WHERE workflow = 'public.dr_kid' AND state = 'idle'
                   AND EXISTS (SELECT 1 FROM chrono_forge.merge_polls)
                   AND EXISTS (SELECT 1 FROM chrono_forge.workflows WHERE key = 'flaky' AND state = 'completed')
                   AND EXISTS (SELECT 1 FROM chrono_forge.execution_logs WHERE step_name = 'await_event\$go')" app \
    || fail "the workload did not park"
qa -c "SET ROLE dr_tenant" -c "SELECT count(chrono_forge.start('dr_timer', 'timer' || i)) FROM generate_series(1, 3) i" \
    >/dev/null
max_id=$(qa -c "SELECT max(id) FROM chrono_forge.workflows")

# The backup, of the live system.
before=$(qa -c "$SNAPSHOT")
oc_as "$OC_BIN/pg_dumpall" -h "$OC_DIR" -p $A -U postgres -g > "$OC_DIR/roles.sql" || fail "pg_dumpall -g"
oc_as "$OC_BIN/pg_dump" -h "$OC_DIR" -p $A -U postgres -Fc -f "$OC_DIR/app.dump" app || fail "pg_dump"
expect_eq "$(qa -c "$SNAPSHOT")" "$before" "nothing moved while dumping (the comparison below is fair)"
echo "dumped: $before" | cut -c1-200
echo "$before" | grep -q 'locked:running:dr_tenant:[0-9]*:w' || fail "the dump's locked run is not locked"

# 1. Restore over the served database; the launcher stays connected.
launcher=$(oc_q $A -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge launcher'")
workers_set $A off
oc_as "$OC_BIN/pg_restore" -h "$OC_DIR" -p $A -U postgres --clean --if-exists --exit-on-error -d app \
    "$OC_DIR/app.dump" || fail "pg_restore --clean"
expect_eq "$(qa -c "$SNAPSHOT")" "$before" "restored: every row"
restored_at=$(qa -c "SELECT now()")
workers_set $A on
expect_eq "$(oc_q $A -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge launcher'")" \
    "$launcher" "the same launcher serves the restored database"
qa -c "UPDATE gate SET hold = false" >/dev/null
oc_wait_for $A 30 "SELECT count(*) = 4 FROM chrono_forge.workflows WHERE (key = 'locked' OR key LIKE 'timer%')
                   AND state = 'completed'" app \
    || { qa -c "SELECT key, state, locked_by FROM chrono_forge.workflows ORDER BY id"; fail "locked run or timers did not finish"; }
expect_eq "$(qa -c "SELECT string_agg(step, ',' ORDER BY step) FROM fx WHERE run = 'locked'")" "one,two" \
    "the locked run's committed step did not run again"
qa -c "UPDATE gate SET open = true" >/dev/null
qa -c "SET ROLE dr_tenant" -c "SELECT chrono_forge.send_event('dr_event', 'event', 'go', '{\"s\": \"restored\"}')" \
    -c "SELECT count(chrono_forge.wake(workflow, key)) FROM chrono_forge.workflows WHERE workflow = 'public.dr_kid'" \
    >/dev/null || fail "send_event, wake"
oc_wait_for $A 30 "SELECT count(*) = 4 FROM chrono_forge.workflows WHERE (key IN ('event', 'merge') OR workflow = 'public.dr_kid')
                   AND state = 'completed'" app || fail "event or merge did not go on"
oc_wait_for $A 30 "SELECT bool_and(state = 'completed') FROM chrono_forge.workflows WHERE workflow <> 'public.dr_sched_wf'" app \
    || { qa -c "SELECT key, state FROM chrono_forge.workflows ORDER BY id"; fail "runs left unfinished"; }
expect_eq "$(qa -c "SELECT step FROM fx WHERE run = 'event'")" "restored,kept" "an event sent after the restore, one kept in the dump"
expect_eq "$(qa -c "SELECT count(*) FROM fx WHERE step = 'merged'")" 1 "the merge"
expect_eq "$(qa -c "SET ROLE dr_tenant" -c "SELECT chrono_forge.start('dr_timer', 'new') > $max_id")" t "ids go on"
expect_eq "$(qa -c "SET ROLE dr_tenant" -c "SELECT count(*) > 0 FROM chrono_forge.overview")" t "overview as the tenant"
expect_eq "$(qa -c "SELECT count(*) FROM chrono_forge.error_logs")" 1 "only the flaky step's error"

# 2. A new cluster: roles from pg_dumpall -g (other oids), then the same.
oc_init b $B "${CONF[@]}" || fail "initdb b"
oc_start b || fail "cluster b did not start"
oc_q $B -c "CREATE ROLE filler1" -c "CREATE ROLE filler2" -c "CREATE DATABASE app" >/dev/null
psql -Xq -h "$OC_DIR" -p $B -U postgres -f "$OC_DIR/roles.sql" >/dev/null 2>&1
workers_set $B off
oc_as "$OC_BIN/pg_restore" -h "$OC_DIR" -p $B -U postgres --exit-on-error -d app "$OC_DIR/app.dump" \
    || fail "pg_restore into a new cluster"
[ "$(oc_q $A -c "SELECT oid FROM pg_roles WHERE rolname = 'dr_tenant'")" != \
  "$(oc_q $B -c "SELECT oid FROM pg_roles WHERE rolname = 'dr_tenant'")" ] || fail "same oids: the test proves nothing"
expect_eq "$(qb -c "$SNAPSHOT")" "$before" "restored into a new cluster: every row, owners by name"
expect_eq "$(qb -c "SELECT count(*) FROM chrono_forge.schedules s JOIN cron.job j ON j.jobid IN (s.jobid, s.reboot_jobid)
                    WHERE j.username = 'dr_tenant' AND j.database = 'app'")" 2 "the schedule's pg_cron jobs"
workers_set $B on
qb -c "UPDATE gate SET hold = false" >/dev/null
oc_wait_for $B 30 "SELECT count(*) = 4 FROM chrono_forge.workflows WHERE (key = 'locked' OR key LIKE 'timer%')
                   AND state = 'completed'" app || fail "new cluster: locked run or timers did not finish"
expect_eq "$(qb -c "SELECT string_agg(step, ',' ORDER BY step) FROM fx WHERE run = 'locked'")" "one,two" \
    "new cluster: no committed step again"
oc_stop b

# The schedule fires through pg_cron in the restored database (next minute).
oc_wait_for $A 75 "SELECT EXISTS (SELECT 1 FROM chrono_forge.workflows WHERE workflow = 'public.dr_sched_wf'
                   AND state = 'completed' AND (options->>'scheduled_for')::timestamptz >= '$restored_at')" app \
    || fail "the schedule did not fire after the restore"
grep -E 'ERROR|FATAL' "$OC_DIR/a.log" | grep -iE 'chrono_forge' | grep -vE 'first attempt fails|terminating background worker' \
    && fail "chrono_forge errors in the log"
exit 0
