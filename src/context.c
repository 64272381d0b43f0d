/*-------------------------------------------------------------------------
 *
 * context.c
 *	  Args and context of the run in the current pass.
 *
 * Owns the SQL getters (args, key, workflow_id, context) and the one
 * setter every context_* function goes through, which validates values.
 * The context lives in the pass's memory; it is written with each step's
 * commit and when the pass ends.  This file must never write the table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "pass.h"
#include "util.h"

PG_FUNCTION_INFO_V1(cf_args);
PG_FUNCTION_INFO_V1(cf_key);
PG_FUNCTION_INFO_V1(cf_workflow_id);
PG_FUNCTION_INFO_V1(cf_context);
PG_FUNCTION_INFO_V1(cf_context_replace);

static void
require_active_pass(const char *what)
{
	if (!cf_pass.active)
		ereport(ERROR,
				(errcode(ERRCODE_CF_NOT_IN_PASS),
				 errmsg("chrono_forge.%s() can only be called while chrono_forge runs a workflow", what)));
}

Datum
cf_args(PG_FUNCTION_ARGS)
{
	require_active_pass("args");
	PG_RETURN_JSONB_P(cf_pass.args);
}

Datum
cf_key(PG_FUNCTION_ARGS)
{
	require_active_pass("key");
	PG_RETURN_TEXT_P(cstring_to_text(cf_pass.key));
}

Datum
cf_workflow_id(PG_FUNCTION_ARGS)
{
	require_active_pass("workflow_id");
	PG_RETURN_INT64(cf_pass.workflow_id);
}

Datum
cf_context(PG_FUNCTION_ARGS)
{
	require_active_pass("context");
	PG_RETURN_JSONB_P(cf_pass.context);
}

/* Size of a value as JSON text, in bytes. */
static Size
json_value_size(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return v->val.string.len + 2;
		case jbvBinary:
			return strlen(JsonbToCString(NULL, v->val.binary.data, v->val.binary.len));
		default:
			return 0;			/* scalars are small */
	}
}

Datum
cf_context_replace(PG_FUNCTION_ARGS)
{
	Jsonb	   *ctx;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;
	MemoryContext old;

	require_active_pass("context_replace");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_CF_CONTEXT_INVALID),
				 errmsg("context must not be NULL")));
	ctx = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_OBJECT(ctx))
		ereport(ERROR,
				(errcode(ERRCODE_CF_CONTEXT_INVALID),
				 errmsg("context values must be given as a JSON object")));

	it = JsonbIteratorInit(&ctx->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			cf_check_length("context key", key, CF_NAME_MAX_BYTES);
		}
		else if (tok == WJB_VALUE && json_value_size(&v) > CF_CONTEXT_VALUE_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_CF_CONTEXT_INVALID),
					 errmsg("context value for key \"%s\" is too large", key),
					 errdetail("A context value may be at most %d bytes as JSON.",
							   CF_CONTEXT_VALUE_MAX)));
	}

	old = MemoryContextSwitchTo(cf_pass.cxt);
	cf_pass.context = DatumGetJsonbPCopy(JsonbPGetDatum(ctx));
	MemoryContextSwitchTo(old);
	cf_pass.context_dirty = true;
	PG_RETURN_VOID();
}
