/*-------------------------------------------------------------------------
 *
 * definitions.c
 *	  A workflow procedure's definition hash: which version of its code a
 *	  run started with (workflows.definition_hash, 0.10.0).
 *
 * The hash is a 64-bit hash of the procedure's source (pg_proc.prosrc).
 * The runs' trigger stamps it on every run written without one, and
 * definition_hash() gives the current one, so that an operator sees the
 * runs whose procedure changed since they started.  A few procedures are
 * cached per backend, each checked against its pg_proc row's version
 * (xmin) on every use: a changed or dropped procedure is read again.
 * This file must never write anything.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include "definitions.h"
#include "util.h"

PG_FUNCTION_INFO_V1(cf_definition_hash_sql);

#define CACHED_DEFINITIONS 16

typedef struct CachedDefinition
{
	char		procedure[NAMEDATALEN * 2 + 8];
	Oid			oid;
	TransactionId xmin;
	int64		hash;
} CachedDefinition;

static CachedDefinition cache[CACHED_DEFINITIONS];
static int	next_slot = 0;

/*
 * The procedure's pg_proc row, if there is one: its version (xmin) and,
 * unless hash is NULL, its source's hash.
 */
static bool
read_procedure(Oid oid, TransactionId *xmin, int64 *hash)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(oid));
	Datum		src;
	bool		isnull;
	text	   *t;

	if (!HeapTupleIsValid(tup))
		return false;
	*xmin = HeapTupleHeaderGetXmin(tup->t_data);
	if (hash != NULL)
	{
		src = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_prosrc, &isnull);
		t = isnull ? NULL : DatumGetTextPP(src);
		*hash = t ? (int64) hash_bytes_extended((const unsigned char *) VARDATA_ANY(t),
												VARSIZE_ANY_EXHDR(t), 0) : 0;
	}
	ReleaseSysCache(tup);
	return true;
}

/*
 * The procedure `procedure` names ("schema.name", as workflows.procedure
 * keeps it, taking one jsonb), looked up in the catalog directly: no
 * search path, and no privilege check that could fail the trigger of a
 * run's insert.  InvalidOid if there is none.
 */
static Oid
procedure_oid(const char *procedure)
{
	char	   *schema;
	char	   *name;
	Oid			nsp;
	Oid			jsonb_arg = JSONBOID;
	HeapTuple	tup;
	Oid			oid;

	DeconstructQualifiedName(stringToQualifiedNameList(procedure), &schema, &name);
	nsp = schema ? get_namespace_oid(schema, true) : InvalidOid;
	if (!OidIsValid(nsp))
		return InvalidOid;
	tup = SearchSysCache3(PROCNAMEARGSNSP, CStringGetDatum(name),
						  PointerGetDatum(buildoidvector(&jsonb_arg, 1)), ObjectIdGetDatum(nsp));
	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	oid = ((Form_pg_proc) GETSTRUCT(tup))->oid;
	ReleaseSysCache(tup);
	return oid;
}

/*
 * The definition hash of the workflow procedure named `procedure` (as
 * workflows.procedure stores it, taking one jsonb); false if there is no
 * such procedure now.
 */
bool
cf_definition_hash(const char *procedure, int64 *hash)
{
	Oid			oid;
	TransactionId xmin;
	CachedDefinition *c;

	if (strlen(procedure) >= sizeof(cache[0].procedure))
		return false;
	for (int i = 0; i < CACHED_DEFINITIONS; i++)
	{
		c = &cache[i];
		if (OidIsValid(c->oid) && strcmp(c->procedure, procedure) == 0 &&
			read_procedure(c->oid, &xmin, NULL) && xmin == c->xmin)
		{
			*hash = c->hash;
			return true;
		}
	}
	oid = procedure_oid(procedure);
	if (!OidIsValid(oid) || !read_procedure(oid, &xmin, hash))
		return false;
	c = &cache[next_slot];
	next_slot = (next_slot + 1) % CACHED_DEFINITIONS;
	strlcpy(c->procedure, procedure, sizeof(c->procedure));
	c->oid = oid;
	c->xmin = xmin;
	c->hash = *hash;
	return true;
}

/*
 * definition_hash(procedure text) RETURNS bigint: NULL if there is no
 * such procedure (named schema.name, as workflows.procedure keeps it); a
 * malformed name is CF012.
 */
Datum
cf_definition_hash_sql(PG_FUNCTION_ARGS)
{
	char	   *procedure;
	int64		hash;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	procedure = text_to_cstring(PG_GETARG_TEXT_PP(0));
	cf_validate_routine_name(procedure, "procedure");
	if (!cf_definition_hash(procedure, &hash))
		PG_RETURN_NULL();
	PG_RETURN_INT64(hash);
}
