/*-------------------------------------------------------------------------
 *
 * journal.h
 *	  What journal.c exports.
 *
 * The journal: step log and error log rows, of any run.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_JOURNAL_H
#define CF_JOURNAL_H

#include "chrono_forge.h"

typedef struct CfStepLog
{
	bool		exists;
	int64		id;
	char	   *state;
	int			attempts;
	Jsonb	   *metadata;		/* never NULL: '{}' if none */
} CfStepLog;

extern CfStepLog cf_journal_read_step(int64 workflow_id, const char *step_name);

extern int64 cf_journal_write_step(int64 workflow_id, const char *step_name, const char *state,
								   int attempts, Jsonb *metadata_patch, Jsonb *result,
								   ErrorData *edata, const char *lock_token, bool is_new,
								   int64 known_id);

extern int64 cf_journal_log_error(int64 workflow_id, const char *step_name, int attempt,
								  ErrorData *edata, Jsonb *context);

extern void cf_journal_cancel_tasks(Datum run_ids);

#endif							/* CF_JOURNAL_H */
