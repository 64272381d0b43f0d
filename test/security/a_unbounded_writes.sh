# Item 7: no call writes in proportion to a range the caller made up.
# daily_outcomes('300 years') wrote one summary row per day asked for
# (109,572), and outcome_days_refresh() (SECURITY DEFINER) is callable by
# everyone: both are clamped to the days that have ended runs, and one
# call summarises at most 366 days.  Every SECURITY DEFINER function
# PUBLIC may call is audited here.
. "$CF_SECURITY_DIR/lib.sh"
summarised() { q -c "SELECT count(*) FROM chrono_forge.outcome_days_summarised"; }

# Nobody has a run yet: nothing to summarise, whatever the window.
as intruder -c "SELECT count(*) FROM chrono_forge.daily_outcomes('300 years')" >/dev/null \
    || fail "daily_outcomes('300 years') failed"
expect_eq "$(summarised)" 0 "days summarised by daily_outcomes('300 years') with no ended run"
as intruder -c "SELECT count(*) FROM chrono_forge.daily_outcomes('100000000 years')" >/dev/null \
    || fail "daily_outcomes over more years than timestamps hold failed"
as intruder -c "SELECT chrono_forge.outcome_days_refresh('-infinity', 'infinity')" >/dev/null \
    || fail "outcome_days_refresh(-infinity, infinity) failed"
as intruder -c "SELECT chrono_forge.outcome_days_refresh('0001-01-01', '9999-12-31')" >/dev/null
expect_eq "$(summarised)" 0 "days summarised with no ended run"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.outcome_days")" 0 "summary rows with no ended run"

# tenant_a has one run, which ended three years ago: a call summarises at
# most 366 days, none before that run's day and none after yesterday.
as tenant_a -f - >/dev/null <<'SQL'
CREATE FUNCTION tenant_a.step() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE PROCEDURE tenant_a.wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN CALL chrono_forge.durably_execute('tenant_a.step'); END $$;
SELECT chrono_forge.start('tenant_a.wf', 'old');
SQL
wait_for 30 "SELECT count(*) = 1 FROM chrono_forge.workflows WHERE state = 'completed'" || fail "run did not complete"
q -c "UPDATE chrono_forge.workflows SET ended_at = now() - interval '3 years'" >/dev/null
oldest=$(q -c "SELECT (timezone('UTC', ended_at))::date FROM chrono_forge.workflows")
for i in 1 2 3 4; do
    before=$(summarised)
    as tenant_a -c "SELECT count(*) FROM chrono_forge.daily_outcomes('300 years')" >/dev/null
    after=$(summarised)
    [ $((after - before)) -le 366 ] || fail "one daily_outcomes('300 years') summarised $((after - before)) days"
    [ "$i" -gt 1 ] || [ "$after" -gt 0 ] || fail "daily_outcomes() summarised nothing"
done
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.outcome_days_summarised WHERE day < '$oldest' OR day >= timezone('UTC', now())::date")" 0 \
    "days summarised outside [oldest run's day, yesterday]"
[ "$(summarised)" -le 1100 ] || fail "$(summarised) days summarised for three years of data"
before=$(summarised)
as intruder -c "SELECT chrono_forge.outcome_days_refresh('0001-01-01', '9999-12-31')" >/dev/null
[ $(($(summarised) - before)) -le 366 ] || fail "one outcome_days_refresh() summarised $(($(summarised) - before)) days"
# The intruder sees none of tenant_a's counts; tenant_a sees its run.
expect_eq "$(as intruder -c "SELECT count(*) FROM chrono_forge.daily_outcomes('300 years')")" 0 "intruder's outcome days"
expect_eq "$(as tenant_a -c "SELECT sum(completed) FROM chrono_forge.daily_outcomes('300 years')")" 1 "tenant_a's completed runs"

# Audit: the SECURITY DEFINER functions any role may call are exactly the
# two summary refreshes, which take no range (workflow_owners_refresh) or
# a clamped one (outcome_days_refresh), newest_run_id(), which writes
# nothing and tells the newest id issued (as the id of a run one starts),
# and first_run_bucket() (0.14.0), which writes nothing and tells the
# oldest run's id bucket (id >> 14), where the run list's walk ends.
expect_eq "$(q -c "SELECT string_agg(p.oid::regprocedure::text, ' ' ORDER BY p.oid::regprocedure::text) FROM pg_proc p
                     WHERE p.pronamespace = 'chrono_forge'::regnamespace AND p.prosecdef
                       AND has_function_privilege('intruder', p.oid, 'EXECUTE')")" \
    "chrono_forge.first_run_bucket() chrono_forge.newest_run_id() chrono_forge.outcome_days_refresh(date,date) chrono_forge.workflow_owners_refresh()" \
    "SECURITY DEFINER functions an ordinary role may call"
