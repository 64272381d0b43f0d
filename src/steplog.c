/*-------------------------------------------------------------------------
 *
 * steplog.c
 *	  The pass's view of its run's step log and error log.
 *
 * Owns what a primitive reads and writes about its steps during a pass:
 * answers from the replay cache when it can tell, else from the journal;
 * every write forgets the cached entry, and a write that must prove the
 * run's lock does it in the same statement when it can.  Must never write
 * for another run than the pass's, nor skip the lock proof.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/prepare.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "tcop/pquery.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "journal.h"
#include "pass.h"
#include "replay.h"
#include "steplog.h"

/*
 * The pass's run's log row for step_name, if any: from the replay cache
 * when it can tell.  Caller is connected to SPI.
 */
CfStepLog
cf_step_log_read(const char *step_name)
{
	CfStepLog	log;

	if (cf_step_log_cached(step_name, &log))
		return log;
	return cf_journal_read_step(cf_pass.workflow_id, step_name);
}

/*
 * Write the pass's run's log row for step_name (see
 * cf_journal_write_step()); with prove_lock, only while this pass holds
 * the run.  Returns the row's id, or 0 if the lock was not ours.
 */
static int64
step_log_upsert(const char *step_name, const char *state, int attempts,
				Jsonb *metadata_patch, Jsonb *result, ErrorData *edata, bool prove_lock)
{
	CfStepLog	known;
	bool		cached = cf_step_log_cached(step_name, &known);

	cf_step_log_forget(step_name);
	return cf_journal_write_step(cf_pass.workflow_id, step_name, state, attempts,
								 metadata_patch, result, edata,
								 prove_lock ? (cf_pass.lock_token ? cf_pass.lock_token : "") : NULL,
								 cached && !known.exists, cached && known.exists ? known.id : 0);
}

int64
cf_step_log_write(const char *step_name, const char *state, int attempts,
				  Jsonb *metadata_patch, Jsonb *result, ErrorData *edata)
{
	return step_log_upsert(step_name, state, attempts, metadata_patch, result, edata, false);
}

/*
 * cf_step_log_write(), then cf_save_context_and_check_lock(): in one
 * statement when the context has not changed (the common case: a step's
 * commit costs one statement less), in none when the pass still holds the
 * claim's row lock (see cf_stamp_claim()).
 */
int64
cf_step_log_write_owned(const char *step_name, const char *state, int attempts,
						Jsonb *metadata_patch, Jsonb *result, ErrorData *edata)
{
	int64		id;

	if (cf_pass.context_dirty || !cf_pass.stamped)
	{
		id = cf_step_log_write(step_name, state, attempts, metadata_patch, result, edata);
		cf_save_context_and_check_lock();
		return id;
	}
	id = step_log_upsert(step_name, state, attempts, metadata_patch, result, edata, true);
	if (id == 0)
		cf_lock_lost();
	return id;
}

/*
 * Insert an error_logs row (cf_journal_log_error()); returns its id.  A
 * child of the pass not written yet is written first: error_logs'
 * foreign key is checked at once.  Caller is connected to SPI.
 */
int64
cf_log_error(int64 workflow_id, const char *step_name, int attempt,
			 ErrorData *edata, Jsonb *context)
{
	if (workflow_id == cf_pass.workflow_id)
		cf_write_taken_run();
	return cf_journal_log_error(workflow_id, step_name, attempt, edata, context);
}
