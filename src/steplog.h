/*-------------------------------------------------------------------------
 *
 * steplog.h
 *	  What steplog.c exports.
 *
 * The pass's view of its run's step log and error log.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_STEPLOG_H
#define CF_STEPLOG_H

#include "chrono_forge.h"
#include "journal.h"

extern int64 cf_log_error(int64 workflow_id, const char *step_name,
						  int attempt, ErrorData *edata, Jsonb *context);

extern CfStepLog cf_step_log_read(const char *step_name);

extern int64 cf_step_log_write_owned(const char *step_name, const char *state, int attempts,
									 Jsonb *metadata_patch, Jsonb *result,
									 ErrorData *edata);

extern int64 cf_step_log_write(const char *step_name, const char *state, int attempts,
							  Jsonb *metadata_patch, Jsonb *result,
							  ErrorData *edata);

#endif							/* CF_STEPLOG_H */
