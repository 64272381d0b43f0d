/*-------------------------------------------------------------------------
 *
 * pass.h
 *	  What pass.c exports.
 *
 * The current pass: its state, its stops, its commits.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_PASS_H
#define CF_PASS_H

#include "chrono_forge.h"

extern void cf_check_json_size(const char *what, Jsonb *value);

typedef enum CfOutcome
{
	CF_OUTCOME_NONE = 0,		/* error escaped the body: workflow-level retry */
	CF_OUTCOME_HALT,			/* a primitive deferred */
	CF_OUTCOME_STALL,			/* a step exhausted its policy */
	CF_OUTCOME_FAIL_NOW			/* programming error: fail without retries */
} CfOutcome;

typedef struct CfPass
{
	bool		active;
	MemoryContext cxt;			/* lives for the pass */
	int64		workflow_id;
	char	   *workflow;
	char	   *key;
	char	   *procedure;
	Jsonb	   *args;
	Jsonb	   *context;
	bool		context_dirty;
	Jsonb	   *result;			/* set_result()'s, written at completion */
	Oid			owner;
	int64		parent_log_id;	/* a child's branch log; 0 for other runs */
	int64		spawn_batch_id; /* a child taken from spawn_batches: where, */
	int32		spawn_position;
	TimestampTz spawn_due_at;	/* when dispatched, */
	bool		run_unwritten;	/* and its run's row not written yet */
	char	   *lock_token;
	TimestampTz claimed_at;
	struct HTAB *completed;		/* step name -> recorded result */
	bool		has_continuation;
	TimestampTz continuation_at;
	const char *continuation_reason;
	CfOutcome	outcome;
	bool		committed;		/* has the claim committed yet? */
	bool		stamped;		/* is the claim written on the run's row? */
	bool		commit_pending; /* a step completed; its commit is deferred */
	bool		eager;			/* commit each step at once (see step_lost) */
	bool		released;		/* parked: ended idle before its halt (cf_park()) */
	bool		compensating;	/* runs the undo steps, not the body (0.12.0) */
	Oid			outer_userid;	/* the identity that runs the pass */
	int			outer_sec_context;
	/* What the claim read, for the finish (claim.c, finish.c): */
	Datum		claimed_wakeups;	/* wake-up ids consumed, or 0 */
	int64		attempt;		/* workflow-level failures so far */
	Jsonb	   *retry_counts;	/* composite budgets, workflow level */
} CfPass;

extern CfPass cf_pass;
extern void cf_require_pass(FunctionCallInfo fcinfo, const char *primitive);
extern void cf_fail_now(void);
extern void cf_fail_run(int sqlerrcode, const char *msg, const char *hint) pg_attribute_noreturn();
extern void cf_commit_step(void);
extern void cf_commit_pending_step(void);
extern void cf_set_continuation(TimestampTz at, const char *reason);
extern void cf_halt(const char *step_name) pg_attribute_noreturn();
extern void cf_stall(const char *step_name, int attempts, ErrorData *edata) pg_attribute_noreturn();
extern void cf_save_context_and_check_lock(void);
extern void cf_lock_lost(void) pg_attribute_noreturn();
extern void cf_commit(void);
extern void cf_park(const char *step_name, bool unflushed) pg_attribute_noreturn();
extern bool (*cf_release_parked_pass) (void);
extern void cf_skip_flush_wait(void);
extern void cf_write_taken_run(void);
extern char *cf_child_key(const char *branch, const char *name);

typedef struct CfBatch
{
	int			passes;			/* passes in the open shared commit */
	Oid			owner;			/* whose they are */
	TimestampTz started;		/* when the first began */
	int			suspended;		/* passes to commit alone after a failed batch */
	int64		nudges[1000];	/* parents to nudge (commit_batch's maximum) */
	int			n_nudges;
	int			nudges_committed;	/* the first n have committed */
} CfBatch;

extern CfBatch cf_batch;
extern bool cf_pass_stop_cancel;
extern bool cf_pass_stop_preempt;
extern char *cf_pass_poison;
extern void cf_batch_committed(void);
extern void cf_check_pass_stop(void);
extern void cf_poison_pass(char *message);
extern ErrorData *cf_poison_error(void);
extern void cf_write_taken_run_as(bool completed);
extern void cf_stamp_claim(void);
extern void cf_enter_owner_identity(void);
extern void cf_fire_deferred_as_owner(void);

#endif							/* CF_PASS_H */
