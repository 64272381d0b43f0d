/*-------------------------------------------------------------------------
 *
 * step.h
 *	  What step.c exports.
 *
 * durably_execute: a step whose database effects happen exactly once.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_STEP_H
#define CF_STEP_H

#include "chrono_forge.h"
#include "call.h"
#include "journal.h"
#include "retry.h"

extern TimestampTz cf_timestamp_plus(TimestampTz t, Interval *i);
extern TimestampTz cf_pending_deadline(const CfStepLog *log, Interval *timeout);
extern void cf_primitive_invalid_argument(const char *msg) pg_attribute_noreturn();
extern CfFunction *cf_condition_lookup(const char *condition, const char *what);

extern void cf_timeout_step(const char *step_name, int attempts, Jsonb *metadata_patch,
							const char *message) pg_attribute_noreturn();

extern Jsonb *cf_run_step(const char *step_name, CfFunction *function, Jsonb *args,
						  Jsonb *policy, Jsonb *metadata);

extern char *cf_undo_arguments(FunctionCallInfo fcinfo, int n, Jsonb **undo_policy);
extern Jsonb *cf_undo_registration(const char *undo, Jsonb *undo_policy, Jsonb *args);

extern Datum cf_return_result(FunctionCallInfo fcinfo, bool has_result, Jsonb *result);

extern CfRetryDecision cf_step_failure_record(const char *step_name, int attempts,
											  Jsonb *log_metadata, Jsonb *metadata_patch,
											  Jsonb *policy, ErrorData *edata);

extern void cf_commit_and_retry_after(const char *step_name, double delay_s) pg_attribute_noreturn();

extern void cf_step_failed(const char *step_name, int attempts, Jsonb *log_metadata,
						   Jsonb *metadata_patch, Jsonb *policy, ErrorData *edata) pg_attribute_noreturn();

#endif							/* CF_STEP_H */
