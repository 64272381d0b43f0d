/*-------------------------------------------------------------------------
 *
 * retry.c
 *	  Retry policies: validation, matching errors, budgets and backoff.
 *
 * A policy is jsonb: {"max_attempts", "base", "cap" (seconds), "jitter",
 * "retry_on"}, or an array of them (a composite: the first policy whose
 * retry_on matches applies, with its own budget).  This file owns the
 * arithmetic and the matching; it must never write anything: callers
 * persist attempts and budgets.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/json.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "internal.h"
#include "pass.h"
#include "retry.h"
#include "util.h"

PG_FUNCTION_INFO_V1(cf_retry_policy);
PG_FUNCTION_INFO_V1(cf_retry_backoff);

typedef struct ConditionName
{
	const char *name;
	const char *sqlstate;
} ConditionName;

/* Generated at build time from PostgreSQL's errcodes.txt. */
static const ConditionName condition_names[] = {
#include "errcode_names.h"
	{NULL, NULL}
};

typedef struct CfPolicy
{
	bool		unlimited;
	int			max_attempts;
	double		base;
	double		cap;
	bool		jitter;
	bool		any_error;		/* retry_on NULL */
	int			nconditions;
	char	  **conditions;
	char	   *budget_key;
} CfPolicy;

static void
policy_error(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_CF_INVALID_ARGUMENT),
			 errmsg("invalid retry policy"),
			 errdetail("%s", detail),
			 errhint("Build policies with chrono_forge.retry_policy().")));
}

static bool
is_sqlstate_text(const char *s, int len)
{
	if ((int) strlen(s) != len)
		return false;
	for (int i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
			return false;
	return true;
}

/* Does one retry_on entry name an error PL/pgSQL's EXCEPTION WHEN knows? */
static bool
condition_is_known(const char *c)
{
	if (is_sqlstate_text(c, 5) || is_sqlstate_text(c, 2))
		return true;
	if (pg_strcasecmp(c, "others") == 0)
		return true;
	for (const ConditionName *n = condition_names; n->name; n++)
		if (pg_strcasecmp(n->name, c) == 0)
			return true;
	return false;
}

/* Match as PL/pgSQL's exception_matches_conditions does. */
static bool
code_matches(int sqlerrcode, int code)
{
	if (sqlerrcode == code)
		return true;
	return ERRCODE_IS_CATEGORY(code) && ERRCODE_TO_CATEGORY(sqlerrcode) == code;
}

static bool
condition_matches(const char *c, int sqlerrcode)
{
	if (is_sqlstate_text(c, 5))
		return code_matches(sqlerrcode, MAKE_SQLSTATE(c[0], c[1], c[2], c[3], c[4]));
	if (is_sqlstate_text(c, 2))
		return ERRCODE_TO_CATEGORY(sqlerrcode) == MAKE_SQLSTATE(c[0], c[1], '0', '0', '0');
	if (pg_strcasecmp(c, "others") == 0)
		return sqlerrcode != ERRCODE_QUERY_CANCELED && sqlerrcode != ERRCODE_ASSERT_FAILURE;
	for (const ConditionName *n = condition_names; n->name; n++)
	{
		const char *s = n->sqlstate;

		if (pg_strcasecmp(n->name, c) == 0 &&
			code_matches(sqlerrcode, MAKE_SQLSTATE(s[0], s[1], s[2], s[3], s[4])))
			return true;
	}
	return false;
}

static int
cmp_cstring(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * A policy number, as a double.  JSON numbers have no NaN or infinity, but
 * a numeric can be far beyond a double (1e400) or make every backoff
 * overflow (1e20 seconds is no interval): anything beyond `max` is
 * refused here, before it is converted, as the documented maximum.
 */
static double
number_field(JsonbContainer *c, const char *key, double dflt, double max, bool strict,
			 bool *present)
{
	JsonbValue	v;
	Datum		bound;

	*present = false;
	if (!getKeyJsonValueFromContainer(c, key, strlen(key), &v) || v.type == jbvNull)
		return dflt;
	if (v.type != jbvNumeric || numeric_is_nan(v.val.numeric) || numeric_is_inf(v.val.numeric))
		policy_error(psprintf("\"%s\" must be a number.", key));
	bound = NumericGetDatum(int64_to_numeric((int64) max));
	if (DatumGetBool(DirectFunctionCall2(numeric_gt,
										 DirectFunctionCall1(numeric_abs, NumericGetDatum(v.val.numeric)),
										 bound)))
	{
		/*
		 * A policy stored before the maximum existed (a configure()
		 * default) still decides: as if it said the maximum.
		 */
		if (strict)
			policy_error(psprintf("\"%s\" must be at most %.0f.", key, max));
		*present = true;
		return DatumGetBool(DirectFunctionCall2(numeric_lt, NumericGetDatum(v.val.numeric),
												NumericGetDatum(int64_to_numeric(0)))) ? -max : max;
	}
	*present = true;
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v.val.numeric)));
}

/*
 * Parse and validate one policy object.  Not strict: numbers beyond the
 * maxima are clamped to them (a stored policy deciding after a failure).
 */
static CfPolicy *
policy_parse(JsonbContainer *c, bool strict)
{
	CfPolicy   *p = palloc0(sizeof(CfPolicy));
	JsonbValue	v;
	bool		present;
	double		n;
	StringInfoData key;

	if (!JsonContainerIsObject(c))
		policy_error("A policy must be a JSON object or an array of objects.");

	n = number_field(c, "max_attempts", 0, INT_MAX, strict, &present);
	p->unlimited = !present;
	if (present)
	{
		if (n < 1 || n != floor(n) || n > INT_MAX)
			policy_error("\"max_attempts\" must be a positive integer or null.");
		p->max_attempts = (int) n;
	}
	p->base = number_field(c, "base", 1, CF_POLICY_MAX_SECONDS, strict, &present);
	p->cap = number_field(c, "cap", 30, CF_POLICY_MAX_SECONDS, strict, &present);
	if (p->base < 0 || p->cap < 0)
		policy_error("\"base\" and \"cap\" must not be negative.");
	if (p->base > p->cap)
		policy_error("\"base\" must not exceed \"cap\".");

	p->jitter = true;
	if (getKeyJsonValueFromContainer(c, "jitter", 6, &v) && v.type != jbvNull)
	{
		if (v.type != jbvBool)
			policy_error("\"jitter\" must be a boolean.");
		p->jitter = v.val.boolean;
	}

	p->any_error = true;
	if (getKeyJsonValueFromContainer(c, "retry_on", 8, &v) && v.type != jbvNull)
	{
		JsonbContainer *arr;
		int			count;

		if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data))
			policy_error("\"retry_on\" must be an array of SQLSTATEs, classes or condition names.");
		arr = v.val.binary.data;
		count = JsonContainerSize(arr);
		/* Every failure matches its error against each entry. */
		if (strict && count > CF_POLICY_MAX_ENTRIES)
			policy_error(psprintf("\"retry_on\" may have at most %d entries.", CF_POLICY_MAX_ENTRIES));
		p->any_error = false;
		p->nconditions = count;
		p->conditions = palloc0(sizeof(char *) * (count + 1));
		for (int i = 0; i < count; i++)
		{
			JsonbValue *e = getIthJsonbValueFromContainer(arr, i);

			if (e == NULL || e->type != jbvString)
				policy_error("\"retry_on\" entries must be strings.");
			p->conditions[i] = pnstrdup(e->val.string.val, e->val.string.len);
			if (!condition_is_known(p->conditions[i]))
				policy_error(psprintf("\"%s\" is not a SQLSTATE, a SQLSTATE class or a condition name.",
									  p->conditions[i]));
		}
	}

	/* Budgets are keyed by the declared errors, so reordering keeps them. */
	if (p->any_error)
		p->budget_key = "*";
	else
	{
		char	  **sorted = palloc(sizeof(char *) * (p->nconditions + 1));

		memcpy(sorted, p->conditions, sizeof(char *) * p->nconditions);
		qsort(sorted, p->nconditions, sizeof(char *), cmp_cstring);
		initStringInfo(&key);
		for (int i = 0; i < p->nconditions; i++)
			appendStringInfo(&key, "%s%s", i ? "," : "", sorted[i]);
		p->budget_key = key.data;
	}
	return p;
}

static bool
policy_matches(CfPolicy *p, int sqlerrcode)
{
	if (p->any_error)
		return true;
	for (int i = 0; i < p->nconditions; i++)
		if (condition_matches(p->conditions[i], sqlerrcode))
			return true;
	return false;
}

static double
policy_delay(CfPolicy *p, int n, double jitter_fraction)
{
	double		d = p->base * pow(2.0, Max((double) n - 1, 0));

	/* pow() overflows to infinity after ~1024 failures: 0 * inf is NaN. */
	if (!(d <= p->cap))
		d = p->cap;
	if (p->jitter)
	{
		if (jitter_fraction < 0)
			jitter_fraction = pg_prng_double(&pg_global_prng_state);
		d = d / 2 + jitter_fraction * d / 2;
	}
	return d;
}

/* Validate a policy or composite; returns it unchanged. */
Jsonb *
cf_policy_validate(Jsonb *policy)
{
	if (JB_ROOT_IS_SCALAR(policy))
		policy_error("A policy must be a JSON object or an array of objects.");
	if (JB_ROOT_IS_ARRAY(policy))
	{
		int			n = JB_ROOT_COUNT(policy);

		if (n == 0)
			policy_error("A composite policy needs at least one policy.");
		if (n > CF_POLICY_MAX_ENTRIES)
			policy_error(psprintf("A composite policy may have at most %d policies.", CF_POLICY_MAX_ENTRIES));
		for (int i = 0; i < n; i++)
		{
			JsonbValue *e = getIthJsonbValueFromContainer(&policy->root, i);

			if (e->type != jbvBinary)
				policy_error("A composite policy is an array of policy objects.");
			(void) policy_parse(e->val.binary.data, true);
		}
	}
	else
		(void) policy_parse(&policy->root, true);
	return policy;
}

Jsonb *
cf_policy_builtin(const char *which)
{
	const char *text;

	if (strcmp(which, "workflow") == 0)
		text = "{\"max_attempts\": 10, \"base\": 1, \"cap\": 600, \"jitter\": true, \"retry_on\": null}";
	else if (strcmp(which, "wait") == 0)
		text = "{\"max_attempts\": null, \"base\": 1, \"cap\": 30, \"jitter\": true, \"retry_on\": []}";
	else
		text = "{\"max_attempts\": 3, \"base\": 1, \"cap\": 30, \"jitter\": true, \"retry_on\": null}";
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

static int
budget_count(Jsonb *retry_counts, const char *key)
{
	JsonbValue	v;

	if (retry_counts == NULL || !JB_ROOT_IS_OBJECT(retry_counts))
		return 0;
	if (!getKeyJsonValueFromContainer(&retry_counts->root, key, strlen(key), &v) ||
		v.type != jbvNumeric)
		return 0;
	return DatumGetInt32(DirectFunctionCall1(numeric_int4, NumericGetDatum(v.val.numeric)));
}

/*
 * Decide after a failure.  attempts counts this failure (1-based).  A
 * composite uses the matched policy's own budget from retry_counts; the
 * caller stores budget_count under budget_key.
 */
CfRetryDecision
cf_policy_decide(Jsonb *policy, int sqlerrcode, int attempts, Jsonb *retry_counts)
{
	CfRetryDecision d = {false, 0, NULL, 0};
	CfPolicy   *p = NULL;
	int			n = attempts;

	if (JB_ROOT_IS_ARRAY(policy))
	{
		int			count = JB_ROOT_COUNT(policy);

		for (int i = 0; i < count && p == NULL; i++)
		{
			CfPolicy   *candidate = policy_parse(getIthJsonbValueFromContainer(&policy->root, i)->val.binary.data, false);

			if (policy_matches(candidate, sqlerrcode))
				p = candidate;
		}
		if (p == NULL)
			return d;			/* nothing matches: fail fast */
		n = budget_count(retry_counts, p->budget_key) + 1;
		d.budget_key = p->budget_key;
		d.budget_count = n;
	}
	else
	{
		p = policy_parse(&policy->root, false);
		if (!policy_matches(p, sqlerrcode))
			return d;
	}

	if (sqlerrcode == ERRCODE_QUERY_CANCELED)
		return d;
	d.retry = p->unlimited || n < p->max_attempts;
	if (d.retry)
		d.delay_s = policy_delay(p, n, -1);
	return d;
}

/* The per-workflow default from configure(), else the built-in. */
Jsonb *
cf_policy_for_workflow(const char *workflow)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	CfInternal	st;
	Jsonb	   *result = NULL;
	bool		isnull;
	MemoryContext cxt = CurrentMemoryContext;

	values[0] = CStringGetTextDatum(workflow);
	cf_internal_begin(&st);
	cf_exec(&plan, "SELECT retry_policy FROM chrono_forge.workflow_defaults WHERE workflow = $1",
			1, types, values, NULL, true, 1);
	if (SPI_processed > 0)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			result = DatumGetJsonbPCopy(d);
			MemoryContextSwitchTo(old);
		}
	}
	cf_internal_end(&st);
	return result;
}

/*
 * The policy for a failed step: the call's own, else the workflow's
 * configure() default, else the built-in one.  Looked up only when a
 * step fails: a step that succeeds never needs it.
 */
Jsonb *
cf_step_policy(Jsonb *per_call)
{
	Jsonb	   *policy = per_call;

	if (policy == NULL)
		policy = cf_policy_for_workflow(cf_pass.procedure);
	if (policy == NULL)
		policy = cf_policy_builtin("step");
	return policy;
}

Datum
cf_retry_policy(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	double		base,
				cap;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"max_attempts\": ");
	if (PG_ARGISNULL(0))
		appendStringInfoString(&buf, "null");
	else
		appendStringInfo(&buf, "%d", PG_GETARG_INT32(0));

	if (PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		policy_error("\"base\", \"cap\" and \"jitter\" must not be NULL.");
	base = cf_interval_seconds(PG_GETARG_INTERVAL_P(1));
	cap = cf_interval_seconds(PG_GETARG_INTERVAL_P(2));
	appendStringInfo(&buf, ", \"base\": %.6f, \"cap\": %.6f, \"jitter\": %s, \"retry_on\": ",
					 base, cap, PG_GETARG_BOOL(3) ? "true" : "false");

	if (PG_ARGISNULL(4))
		appendStringInfoString(&buf, "null");
	else
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(4);
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		appendStringInfoChar(&buf, '[');
		for (int i = 0; i < n; i++)
		{
			if (nulls[i])
				policy_error("\"retry_on\" entries must not be NULL.");
			if (i)
				appendStringInfoString(&buf, ", ");
			escape_json(&buf, TextDatumGetCString(elems[i]));
		}
		appendStringInfoChar(&buf, ']');
	}
	appendStringInfoChar(&buf, '}');

	PG_RETURN_JSONB_P(cf_policy_validate(DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
																			 CStringGetDatum(buf.data)))));
}

/* Backoff of a single policy after `attempts` failures, for inspection. */
Datum
cf_retry_backoff(PG_FUNCTION_ARGS)
{
	Jsonb	   *policy;
	CfPolicy   *p;
	double		fraction = -1;
	double		d;
	Interval   *result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	policy = cf_policy_validate(PG_GETARG_JSONB_P(0));
	if (!JB_ROOT_IS_OBJECT(policy))
		policy_error("retry_backoff() takes a single policy, not a composite.");
	p = policy_parse(&policy->root, true);
	if (!PG_ARGISNULL(2))
	{
		fraction = PG_GETARG_FLOAT8(2);
		if (!(fraction >= 0 && fraction <= 1))	/* NaN too */
			policy_error("jitter_fraction must be between 0 and 1.");
	}
	d = policy_delay(p, PG_GETARG_INT32(1), fraction);
	result = palloc0(sizeof(Interval));
	result->time = (int64) rint(d * USECS_PER_SEC);
	PG_RETURN_INTERVAL_P(result);
}
