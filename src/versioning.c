/*-------------------------------------------------------------------------
 *
 * versioning.c
 *	  patched(): which side of a change to its procedure a run is on.
 *
 * A changed procedure keeps runs that passed a point before the change on
 * the old path: patched(name) is true for a run that reaches the call for
 * the first time at the end of its history (nothing it wrote before lies
 * beyond this point), false for a run whose earlier passes went past it
 * (replay.c's cf_replay_went_past()).  The answer is recorded as the step
 * patched$<name> on its first call, so that every later pass of the run
 * agrees with it; the record commits with the pass's next commit.  This
 * file must never decide twice for one run and name.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "chrono_forge.h"
#include "internal.h"
#include "pass.h"
#include "replay.h"
#include "steplog.h"
#include "util.h"

PG_FUNCTION_INFO_V1(cf_patched);

/*
 * patched(name text) RETURNS boolean: from the workflow's body (an IF),
 * never from a step or an EXCEPTION block, whose rollback would take the
 * record back while the pass went on with its answer (CF013: the run
 * fails).
 */
Datum
cf_patched(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *step_name;
	Jsonb	   *recorded;
	bool		patched;

	if (!cf_pass.active)
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_IN_PASS),
				 errmsg("chrono_forge.patched() can only be called while chrono_forge runs a workflow")));
	if (IsSubTransaction())
	{
		cf_poison_pass(pstrdup("chrono_forge.patched() cannot run in a step or an EXCEPTION block"));
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_IN_PASS),
				 errmsg("chrono_forge.patched() cannot run in a step or an EXCEPTION block"),
				 errdetail("Its answer is recorded; a rollback there would take the record back."),
				 errhint("Call it from the workflow procedure's body.")));
	}
	cf_fail_now();				/* a bad name fails the run at once */
	name = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	cf_validate_name_segment("patch name", name);
	cf_pass.outcome = CF_OUTCOME_NONE;
	step_name = psprintf("patched$%s", name);
	if (cf_step_completed(step_name, &recorded))
		PG_RETURN_BOOL(cf_jsonb_is_true(recorded));

	patched = !cf_replay_went_past();
	recorded = cf_jsonb_parse(patched ? "true" : "false");
	SPI_connect();
	cf_write_taken_run();		/* the log's foreign key */
	cf_step_log_write(step_name, "completed", 1, NULL, recorded, NULL);
	SPI_finish();
	cf_step_remember(step_name, recorded);
	PG_RETURN_BOOL(patched);
}
