/*-------------------------------------------------------------------------
 *
 * call.c
 *	  Calling the user's functions: steps, conditions.
 *
 * Owns how a function named by the workflow is found (one jsonb argument,
 * or none), the bounded cache of plans that call it, and running code in
 * an internal subtransaction so that a failed attempt rolls back alone.
 * User functions run as the current user (the run's owner); this file
 * must never switch identity.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

#include "call.h"
#include "pass.h"
#include "util.h"

/* Each plan costs about 9 KB; a backend may meet many distinct steps. */
#define FUNCTION_PLAN_CACHE_MAX 256

static HTAB *function_plans = NULL;

static void
function_plans_reset(void)
{
	HASH_SEQ_STATUS status;
	CfFunction *e;

	hash_seq_init(&status, function_plans);
	while ((e = hash_seq_search(&status)) != NULL)
		SPI_freeplan(e->plan);
	hash_destroy(function_plans);
	function_plans = NULL;
}

/*
 * The function name: taking one jsonb argument, one timestamptz argument
 * (only if takes_time) or none, in that order of preference; *argtype
 * the one found (InvalidOid: none).  Missing is bad input.
 */
static Oid
resolve_function(const char *name, const char *what, bool takes_time, Oid *argtype)
{
	List	   *names;
	Oid			fn;

	cf_validate_routine_name(name, what);
	names = stringToQualifiedNameList(name);
	*argtype = JSONBOID;
	fn = LookupFuncName(names, 1, argtype, true);
	if (!OidIsValid(fn) && takes_time)
	{
		*argtype = TIMESTAMPTZOID;
		fn = LookupFuncName(names, 1, argtype, true);
	}
	if (!OidIsValid(fn))
	{
		*argtype = InvalidOid;
		fn = LookupFuncName(names, 0, NULL, true);
	}
	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("%s function %s does not exist", what, name),
				 errhint("A %s function takes no argument or one jsonb argument%s.", what,
						 takes_time ? " (or its scheduled time, a timestamptz)" : "")));
	return fn;
}

/* fn's return type; a procedure or a set-returning function is bad input. */
static Oid
single_value_rettype(Oid fn, const char *what, const char *name)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Form_pg_proc proc;
	Oid			rettype;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	rettype = proc->prorettype;
	if (proc->prokind != PROKIND_FUNCTION || proc->proretset)
	{
		ReleaseSysCache(tup);
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("%s %s must be a function returning a single value", what, name)));
	}
	ReleaseSysCache(tup);
	return rettype;
}

/* A kept plan that calls fn, schema-qualified, and returns its value as jsonb (void as NULL). */
static SPIPlanPtr
prepare_function_call(Oid fn, Oid argtype, Oid rettype, const char *what, const char *name)
{
	char	   *call;
	char	   *sql;
	SPIPlanPtr	plan;

	call = psprintf("%s.%s(%s)",
					quote_identifier(get_namespace_name(get_func_namespace(fn))),
					quote_identifier(get_func_name(fn)),
					OidIsValid(argtype) ? "$1" : "");
	if (rettype == VOIDOID)
		sql = psprintf("SELECT NULL::pg_catalog.jsonb FROM %s", call);
	else if (rettype == JSONBOID)
		sql = psprintf("SELECT %s", call);
	else
		sql = psprintf("SELECT pg_catalog.to_jsonb(%s)", call);

	plan = SPI_prepare(sql, OidIsValid(argtype) ? 1 : 0, &argtype);
	if (plan == NULL)
		elog(ERROR, "could not prepare %s %s: %s", what, name,
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/* Enter fn's plan in the cache (emptied first when full). */
static CfFunction *
cache_function(Oid fn, SPIPlanPtr plan, Oid argtype, Oid rettype)
{
	CfFunction *e;
	bool		found;

	if (function_plans != NULL &&
		hash_get_num_entries(function_plans) >= FUNCTION_PLAN_CACHE_MAX)
		function_plans_reset();
	if (function_plans == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(CfFunction);
		ctl.hcxt = TopMemoryContext;
		function_plans = hash_create("chrono_forge function plans", 64, &ctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	e = hash_search(function_plans, &fn, HASH_ENTER, &found);
	e->plan = plan;
	e->argtype = argtype;
	e->rettype = rettype;
	return e;
}

/*
 * Find the function `name` (what: "step", "condition"), taking one jsonb
 * argument, one timestamptz argument (only if takes_time: a repeated
 * step's scheduled time) or none, and a plan that calls it and returns
 * its value as jsonb (void as NULL).  A missing or unsuitable function is
 * bad input, reported before anything is written.  Caller is connected
 * to SPI.
 */
CfFunction *
cf_function_lookup(const char *name, const char *what, bool takes_time)
{
	Oid			argtype;
	Oid			fn = resolve_function(name, what, takes_time, &argtype);
	Oid			rettype;
	CfFunction *e;

	if (function_plans != NULL)
	{
		e = hash_search(function_plans, &fn, HASH_FIND, NULL);
		if (e != NULL)
			return e;
	}
	rettype = single_value_rettype(fn, what, name);
	return cache_function(fn, prepare_function_call(fn, argtype, rettype, what, name),
						  argtype, rettype);
}

/*
 * Call f with args (the workflow's args if NULL) or, if it takes its
 * scheduled time, with at; its value as jsonb, in the pass's memory, or
 * NULL.
 */
Jsonb *
cf_function_call(CfFunction *f, Jsonb *args, TimestampTz at)
{
	Datum		arg = (f->argtype == TIMESTAMPTZOID) ? TimestampTzGetDatum(at)
		: JsonbPGetDatum(args ? args : cf_pass.args);
	bool		isnull;
	Datum		d;
	Jsonb	   *result = NULL;
	int			rc;

	rc = SPI_execute_plan(f->plan, &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "function call returned no row");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
	{
		MemoryContext old = MemoryContextSwitchTo(cf_pass.cxt);

		result = DatumGetJsonbPCopy(d);
		MemoryContextSwitchTo(old);
	}
	return result;
}

/*
 * Run fn(arg) in an internal subtransaction.  Returns NULL if it
 * committed into the enclosing transaction, else the error (in the pass's
 * memory), with everything fn did rolled back.  Caller is connected to
 * SPI (outside the subtransaction, so its tuples survive a rollback).
 */
ErrorData *
cf_run_guarded(void (*fn) (void *), void *arg)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	ResourceOwner caller_owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller_cxt);
	PG_TRY();
	{
		fn(arg);
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
	return edata;
}

/* Errors that must stop the pass, never count as a failed attempt. */
bool
cf_error_is_fatal_to_pass(ErrorData *edata)
{
	return edata->sqlerrcode == ERRCODE_CF_LOCK_LOST ||
		edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN;
}
