# The launcher keeps the readers' summaries current (0.9.0): runs that
# ended while nobody called overview() or daily_outcomes() are folded into
# workflow_owners and outcome_days by the launcher (at its start, then
# once a minute), so the first reader after a backlog does not pay for it.
# Before 0.9.0 only a reader's call folded them in.
. "$CF_INTEGRATION_DIR/lib.sh"

q <<'SQL' >/dev/null || fail "setup"
DO $$ BEGIN CREATE ROLE sum_owner; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
-- 1,200 runs that ended three days ago, written as the engine leaves them
-- (the trigger sets ended_at from updated_at).
INSERT INTO chrono_forge.workflows (workflow, key, procedure, state, owner, created_at, updated_at)
SELECT 'public.sum_wf', 'k' || g, 'public.sum_wf', 'completed', 'sum_owner',
       now() - interval '3 days', now() - interval '3 days'
  FROM generate_series(1, 1200) g;
SQL
newest=$(q -c "SELECT max(id) FROM chrono_forge.workflows")
day=$(q -c "SELECT (timezone('UTC', now()) - interval '3 days')::date")
# (The launcher's once-a-minute refresh may fold them in before the
# restart below; that is the launcher too, and no reader has called.)

# The launcher refreshes at its start: restart it, and read nothing.
launcher=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'chrono_forge launcher'")
[ -n "$launcher" ] || fail "no launcher"
q -c "SELECT pg_terminate_backend($launcher)" >/dev/null
wait_for 60 "SELECT last_id >= $newest FROM chrono_forge.workflow_owners_horizon" \
    || fail "the launcher did not fold the new runs into workflow_owners"
expect_eq "$(q -c "SELECT count(*) FROM chrono_forge.workflow_owners
                    WHERE owner = 'sum_owner'::regrole AND workflow = 'public.sum_wf'")" 1 \
    "sum_owner's workflow in workflow_owners"
wait_for 60 "SELECT EXISTS (SELECT 1 FROM chrono_forge.outcome_days_summarised WHERE day = '$day')" \
    || fail "the launcher did not summarise $day"
expect_eq "$(q -c "SELECT completed FROM chrono_forge.outcome_days
                    WHERE day = '$day' AND owner = 'sum_owner'::regrole AND workflow = 'public.sum_wf'")" 1200 \
    "the summary of $day"
# Readers see the same counts from the summaries.
expect_eq "$(q -c "SET ROLE sum_owner; SELECT sum(completed) FROM chrono_forge.daily_outcomes('7 days')" | tail -1)" 1200 \
    "daily_outcomes() for sum_owner"
expect_eq "$(q -c "SET ROLE sum_owner; SELECT runs FROM chrono_forge.overview() WHERE state = 'completed'" | tail -1)" "1000+" \
    "overview() for sum_owner"

q -c "DELETE FROM chrono_forge.workflows WHERE owner = 'sum_owner'::regrole" >/dev/null
