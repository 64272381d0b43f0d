/*-------------------------------------------------------------------------
 *
 * step.c
 *	  durably_execute: a step whose database effects happen exactly once.
 *
 * Owns the step protocol: replay from the pass's cache, else run the step
 * function in a subtransaction and commit its writes, its context changes,
 * its result and its completion row together.  A failed attempt rolls all
 * of that back and commits only its attempt count and error.  This file
 * must never commit a step for a pass that no longer holds the run's lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/regproc.h"
#include "utils/timestamp.h"

#include "chrono_forge.h"

PG_FUNCTION_INFO_V1(cf_durably_execute);

/*
 * Plans that call step functions, by function OID.  Bounded: each costs
 * about 9 KB, and a backend may see many distinct steps.
 */
#define STEP_PLAN_CACHE_MAX 256

typedef struct StepPlan
{
	Oid			fn;				/* hash key */
	SPIPlanPtr	plan;
	bool		takes_args;
} StepPlan;

static HTAB *step_plans = NULL;

static void
step_plans_reset(void)
{
	HASH_SEQ_STATUS status;
	StepPlan   *e;

	hash_seq_init(&status, step_plans);
	while ((e = hash_seq_search(&status)) != NULL)
		SPI_freeplan(e->plan);
	hash_destroy(step_plans);
	step_plans = NULL;
}

/*
 * Find the step function: one jsonb argument, or none.  A missing one is
 * bad input; it is reported before anything is written.
 */
static StepPlan *
step_plan_for(const char *step)
{
	List	   *names = stringToQualifiedNameList(step);
	Oid			jsonb_arg[1] = {JSONBOID};
	Oid			fn;
	bool		takes_args = true;
	bool		found;
	StepPlan   *e;
	HeapTuple	tup;
	Form_pg_proc proc;
	char	   *sql;
	char	   *call;
	Oid			rettype;

	fn = LookupFuncName(names, 1, jsonb_arg, true);
	if (!OidIsValid(fn))
	{
		takes_args = false;
		fn = LookupFuncName(names, 0, NULL, true);
	}
	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("step function %s does not exist", step),
				 errhint("A step function takes no argument or one jsonb argument.")));

	if (step_plans == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(StepPlan);
		ctl.hcxt = TopMemoryContext;
		step_plans = hash_create("chrono_forge step plans", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	e = hash_search(step_plans, &fn, HASH_FIND, NULL);
	if (e != NULL)
		return e;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prokind != PROKIND_FUNCTION || proc->proretset)
	{
		ReleaseSysCache(tup);
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("step %s must be a function returning a single value", step)));
	}
	rettype = proc->prorettype;
	ReleaseSysCache(tup);

	call = psprintf("%s.%s(%s)",
					quote_identifier(get_namespace_name(get_func_namespace(fn))),
					quote_identifier(get_func_name(fn)),
					takes_args ? "$1" : "");
	if (rettype == VOIDOID)
		sql = psprintf("SELECT NULL::pg_catalog.jsonb FROM %s", call);
	else if (rettype == JSONBOID)
		sql = psprintf("SELECT %s", call);
	else
		sql = psprintf("SELECT pg_catalog.to_jsonb(%s)", call);

	if (hash_get_num_entries(step_plans) >= STEP_PLAN_CACHE_MAX)
		step_plans_reset();
	if (step_plans == NULL)
		return step_plan_for(step);

	{
		SPIPlanPtr	plan = SPI_prepare(sql, takes_args ? 1 : 0, jsonb_arg);

		if (plan == NULL)
			elog(ERROR, "could not prepare step %s: %s", step,
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		e = hash_search(step_plans, &fn, HASH_ENTER, &found);
		e->plan = plan;
		e->takes_args = takes_args;
	}
	return e;
}

typedef struct StepLog
{
	int			attempts;
	Jsonb	   *retry_counts;
} StepLog;

static StepLog
read_step_log(const char *step_name)
{
	static SPIPlanPtr plan = NULL;
	StepLog		log = {0, NULL};
	CfInternal	st;
	bool		isnull;

	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT attempts, metadata -> 'retry_counts' FROM chrono_forge.execution_logs"
			" WHERE workflow_id = $1 AND step_name = $2",
			2, (Oid[]) {INT8OID, TEXTOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(step_name)},
			NULL, true, 1);
	if (SPI_processed == 1)
	{
		Datum		d;

		log.attempts = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		if (!isnull)
			log.retry_counts = DatumGetJsonbPCopy(d);
	}
	cf_internal_end(&st);
	return log;
}

/* The step ran: its completion row, in the step's own transaction. */
static void
record_step_success(const char *step_name, int attempt, Jsonb *result)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	char		nulls[4] = "    ";

	if (result == NULL)
		nulls[3] = 'n';
	cf_internal_begin(&st);
	cf_exec(&plan,
			"INSERT INTO chrono_forge.execution_logs AS l"
			" (workflow_id, step_name, state, attempts, started_at, last_executed_at, completed_at, result)"
			" VALUES ($1, $2, 'completed', $3, chrono_forge.now(), chrono_forge.now(), chrono_forge.now(), $4)"
			" ON CONFLICT (workflow_id, step_name) DO UPDATE SET state = 'completed',"
			"  attempts = EXCLUDED.attempts, last_executed_at = EXCLUDED.last_executed_at,"
			"  completed_at = EXCLUDED.completed_at, result = EXCLUDED.result,"
			"  error_class = NULL, error_message = NULL, updated_at = EXCLUDED.completed_at",
			4, (Oid[]) {INT8OID, TEXTOID, INT4OID, JSONBOID},
			(Datum[]) {Int64GetDatum(cf_pass.workflow_id), CStringGetTextDatum(step_name),
			Int32GetDatum(attempt), result ? JsonbPGetDatum(result) : (Datum) 0},
			nulls, false, 0);
	cf_internal_end(&st);
}

/* The step failed: its attempt, its error, and its budgets. */
static void
record_step_failure(const char *step_name, int attempt, bool exhausted,
					ErrorData *edata, CfRetryDecision *d)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	char		nulls[7] = "       ";
	Datum		values[7];

	values[0] = Int64GetDatum(cf_pass.workflow_id);
	values[1] = CStringGetTextDatum(step_name);
	values[2] = Int32GetDatum(attempt);
	values[3] = CStringGetTextDatum(exhausted ? "failed" : "pending");
	values[4] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
	values[5] = CStringGetTextDatum(edata->message ? edata->message : "");
	if (d->budget_key)
		values[6] = CStringGetTextDatum(d->budget_key);
	else
		nulls[6] = 'n';

	cf_internal_begin(&st);
	cf_log_error(cf_pass.workflow_id, step_name, attempt, edata, cf_pass.context);
	cf_exec(&plan,
			"INSERT INTO chrono_forge.execution_logs AS l"
			" (workflow_id, step_name, state, attempts, started_at, last_executed_at,"
			"  error_class, error_message, metadata)"
			" VALUES ($1, $2, $4::chrono_forge.step_state, $3, chrono_forge.now(), chrono_forge.now(), $5, $6,"
			"  CASE WHEN $7::text IS NULL THEN NULL"
			"   ELSE jsonb_build_object('retry_counts', jsonb_build_object($7::text, 1)) END)"
			" ON CONFLICT (workflow_id, step_name) DO UPDATE SET state = EXCLUDED.state,"
			"  attempts = EXCLUDED.attempts, last_executed_at = EXCLUDED.last_executed_at,"
			"  error_class = EXCLUDED.error_class, error_message = EXCLUDED.error_message,"
			"  metadata = CASE WHEN $7::text IS NULL THEN l.metadata"
			"   ELSE coalesce(l.metadata, '{}') || jsonb_build_object('retry_counts',"
			"    coalesce(l.metadata -> 'retry_counts', '{}') || jsonb_build_object($7::text,"
			"     coalesce((l.metadata -> 'retry_counts' ->> $7::text)::int, 0) + 1)) END,"
			"  updated_at = EXCLUDED.last_executed_at",
			7, (Oid[]) {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID},
			values, nulls, false, 0);
	cf_internal_end(&st);
}

static Datum
return_result(FunctionCallInfo fcinfo, bool has_result, Jsonb *result)
{
	TupleDesc	desc;
	Datum		values[1];
	bool		nulls[1];

	if (!has_result)
		PG_RETURN_VOID();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "durably_execute: INOUT result expected");
	desc = BlessTupleDesc(desc);
	nulls[0] = (result == NULL);
	values[0] = result ? JsonbPGetDatum(result) : (Datum) 0;
	return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}

/*
 * durably_execute(step, name, args, retry_policy) and
 * durably_execute(step, INOUT result, name, args, retry_policy).
 */
Datum
cf_durably_execute(PG_FUNCTION_ARGS)
{
	bool		has_result = (PG_NARGS() == 5);
	int			a = has_result ? 1 : 0;
	MemoryContext caller_cxt = CurrentMemoryContext;
	ResourceOwner caller_owner = CurrentResourceOwner;
	char	   *step;
	char	   *name;
	char	   *step_name;
	Jsonb	   *volatile call_args = NULL;
	Jsonb	   *volatile policy = NULL;
	Jsonb	   *result = NULL;
	Jsonb	   *context_before;
	bool		dirty_before;
	StepPlan   *sp;
	StepLog		log;
	int			attempt;
	ErrorData  *volatile edata = NULL;
	Jsonb	   *volatile step_result = NULL;

	cf_require_pass(fcinfo, "durably_execute");

	/* Programming errors: the run fails at once, visibly. */
	cf_fail_now();
	step = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	cf_validate_name_segment("step", step);
	name = PG_ARGISNULL(1 + a) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1 + a));
	if (name != NULL)
		cf_validate_name_segment("step name", name);
	if (!PG_ARGISNULL(3 + a))
		policy = cf_policy_validate(PG_GETARG_JSONB_P(3 + a));
	cf_pass.outcome = CF_OUTCOME_NONE;

	step_name = psprintf("durably_execute$%s", name ? name : step);
	if (cf_step_completed(step_name, &result))
		return return_result(fcinfo, has_result, result);

	if (!PG_ARGISNULL(2 + a))
		call_args = PG_GETARG_JSONB_P(2 + a);

	/* Every SPI call below is on our own connection. */
	if (SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (policy == NULL)
		policy = cf_policy_for_workflow(cf_pass.workflow);
	if (policy == NULL)
		policy = cf_policy_builtin("step");
	sp = step_plan_for(step);
	log = read_step_log(step_name);
	attempt = log.attempts + 1;

	context_before = cf_pass.context;
	dirty_before = cf_pass.context_dirty;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller_cxt);
	PG_TRY();
	{
		Datum		arg = JsonbPGetDatum(call_args ? call_args : cf_pass.args);
		bool		isnull;
		int			rc;

		rc = SPI_execute_plan(sp->plan, &arg, NULL, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "step %s returned no row", step);
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
			{
				MemoryContext old = MemoryContextSwitchTo(cf_pass.cxt);

				step_result = DatumGetJsonbPCopy(d);
				MemoryContextSwitchTo(old);
			}
		}
		record_step_success(step_name, attempt, step_result);
		cf_save_context_and_check_lock();

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_cxt);
		CurrentResourceOwner = caller_owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cf_pass.cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_cxt);
		CurrentResourceOwner = caller_owner;
	}
	PG_END_TRY();

	if (edata == NULL)
	{
		cf_commit();
		SPI_finish();
		cf_step_remember(step_name, step_result);
		return return_result(fcinfo, has_result, step_result);
	}

	/* The attempt failed: its writes and context changes are gone. */
	cf_pass.context = context_before;
	cf_pass.context_dirty = dirty_before;
	if (edata->sqlerrcode == ERRCODE_CF_LOCK_LOST ||
		edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
		ReThrowError(edata);

	{
		CfRetryDecision d = cf_policy_decide(policy, edata->sqlerrcode, attempt,
											 log.retry_counts);

		record_step_failure(step_name, attempt, !d.retry, edata, &d);
		cf_save_context_and_check_lock();
		cf_commit();
		SPI_finish();

		if (d.retry)
		{
			cf_set_continuation(TimestampTzPlusMilliseconds(cf_clock_now(),
															(int64) (d.delay_s * 1000)),
								"retry");
			cf_halt(step_name);
		}
		cf_pass.outcome = CF_OUTCOME_STALL;
		ereport(ERROR,
				(errcode(ERRCODE_CF_STEP_FAILED),
				 errmsg("step \"%s\" failed after %d attempt%s: %s", step_name, attempt,
						attempt == 1 ? "" : "s", edata->message),
				 errdetail("The step's last error was SQLSTATE %s; the run is now stalled.",
						   unpack_sql_state(edata->sqlerrcode)),
				 errhint("Fix the cause, then call chrono_forge.retry().")));
	}
	PG_RETURN_VOID();			/* not reached */
}
