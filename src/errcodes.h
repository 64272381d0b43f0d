/*-------------------------------------------------------------------------
 *
 * errcodes.h
 *	  Every SQLSTATE of class CF, whether the C code or the SQL scripts
 *	  raise (or record) it.
 *
 * Class CF is ours alone.  README.md's error table documents each code;
 * test/check-errcodes fails when the two differ, or when a code is
 * declared here that nothing raises (mark it "reserved" in README then).
 * Codes raised only by the SQL scripts are declared too, so that this is
 * the one list.  Never reuse a number.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_ERRCODES_H
#define CF_ERRCODES_H

/* CF000: a primitive deferred the pass (internal; never reaches a client) */
#define ERRCODE_CF_HALT					MAKE_SQLSTATE('C','F','0','0','0')
/* CF001: acquire_lock() on a run locked by a fresh lock (SQL) */
#define ERRCODE_CF_CONCURRENT_EXECUTION	MAKE_SQLSTATE('C','F','0','0','1')
/* CF002: a pass lost its lock (stolen, reaped, cancelled) */
#define ERRCODE_CF_LOCK_LOST			MAKE_SQLSTATE('C','F','0','0','2')
/* CF003: acquire_lock() on a run that is not idle or running (SQL) */
#define ERRCODE_CF_NOT_EXECUTABLE		MAKE_SQLSTATE('C','F','0','0','3')
/* CF004: retry() on a run that is not stalled, failed or a cancelled child */
#define ERRCODE_CF_NOT_RETRYABLE		MAKE_SQLSTATE('C','F','0','0','4')
/* CF005: NULL, empty or '$'-containing step name */
#define ERRCODE_CF_INVALID_STEP_NAME	MAKE_SQLSTATE('C','F','0','0','5')
/* CF006: spawn, spawn_each or seal_branch outside a branch */
#define ERRCODE_CF_NOT_IN_BRANCH		MAKE_SQLSTATE('C','F','0','0','6')
/* CF007: a run ended with a branch it never merged */
#define ERRCODE_CF_UNMERGED_BRANCH		MAKE_SQLSTATE('C','F','0','0','7')
/* CF008: a branch the run has not opened, or not the caller's */
#define ERRCODE_CF_UNKNOWN_BRANCH		MAKE_SQLSTATE('C','F','0','0','8')
/* CF009: a step exhausted its retry policy (the run stalls) */
#define ERRCODE_CF_STEP_FAILED			MAKE_SQLSTATE('C','F','0','0','9')
/* CF010: wait_until or await_event reached its timeout */
#define ERRCODE_CF_WAIT_CONDITION_NOT_MET MAKE_SQLSTATE('C','F','0','1','0')
/* CF011: a context value too big, or a merge that is not an object */
#define ERRCODE_CF_CONTEXT_INVALID		MAKE_SQLSTATE('C','F','0','1','1')
/* CF012: bad input of any kind (README lists them) */
#define ERRCODE_CF_INVALID_ARGUMENT		MAKE_SQLSTATE('C','F','0','1','2')
/* CF013: a primitive outside a pass; run_pending() where it cannot commit */
#define ERRCODE_CF_NOT_IN_PASS			MAKE_SQLSTATE('C','F','0','1','3')
/* CF014: a run that does not exist, or that the caller may not act on */
#define ERRCODE_CF_UNKNOWN_RUN			MAKE_SQLSTATE('C','F','0','1','4')
/* CF015: recorded on a run whose passes ended their worker too often */
#define ERRCODE_CF_WORKER_CRASHED		MAKE_SQLSTATE('C','F','0','1','5')
/* CF016: recorded (never raised) on a durably_repeat tick that expired */
#define ERRCODE_CF_TICK_EXPIRED			MAKE_SQLSTATE('C','F','0','1','6')
/* CF017: schedule() where pg_cron is not installed */
#define ERRCODE_CF_PG_CRON_MISSING		MAKE_SQLSTATE('C','F','0','1','7')
/* CF020: (un)schedule_maintenance() without pg_cron (SQL) */
#define ERRCODE_CF_MAINTENANCE_PG_CRON_MISSING MAKE_SQLSTATE('C','F','0','2','0')
/* CF021: recorded on a run whose pass outlived max_duration */
#define ERRCODE_CF_PASS_TIMEOUT			MAKE_SQLSTATE('C','F','0','2','1')
/* CF022: a pass stopped by the per-owner share (only a body that catches it sees it) */
#define ERRCODE_CF_PASS_PREEMPTED		MAKE_SQLSTATE('C','F','0','2','2')
/* CF025: a merge with on_child_failure => 'fail' found a child failed */
#define ERRCODE_CF_CHILD_FAILED			MAKE_SQLSTATE('C','F','0','2','5')
/* CF026: recorded (never raised) on a run_task attempt whose lease expired */
#define ERRCODE_CF_TASK_LEASE_EXPIRED	MAKE_SQLSTATE('C','F','0','2','6')
/* CF027: recorded (never raised) on a run_task attempt its worker failed with a class that is not a SQLSTATE */
#define ERRCODE_CF_TASK_FAILED			MAKE_SQLSTATE('C','F','0','2','7')
/* CF028: a run's result over its maximum, or a merge's results over theirs */
#define ERRCODE_CF_RESULT_TOO_LARGE		MAKE_SQLSTATE('C','F','0','2','8')
/* CF029: recorded on a run that passed its deadline; retry() of a run past it */
#define ERRCODE_CF_DEADLINE_EXCEEDED	MAKE_SQLSTATE('C','F','0','2','9')
/* CF030: a per-run call on a Citus node that does not own the run's key; distribute() without Citus or off the coordinator */
#define ERRCODE_CF_NOT_KEY_OWNER		MAKE_SQLSTATE('C','F','0','3','0')

#endif							/* CF_ERRCODES_H */
