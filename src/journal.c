/*-------------------------------------------------------------------------
 *
 * journal.c
 *	  The engine's own SQL: run as the extension owner on a pinned path.
 *
 * Owns how internal statements run (cached plans, identity, search path),
 * name validation and the error log.  Internal statements must never run
 * user code: the identity switch here is only for the engine's tables, and
 * the search path is pinned so that no user object can stand in for a
 * catalog one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/table.h"
#include "access/genam.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "chrono_forge.h"

/*
 * The run's context as kept with an error: whole up to
 * CF_ERROR_CONTEXT_MAX bytes of JSON, else its keys in order while they
 * fit, and "$truncated": {bytes, keys, kept} (the whole snapshot's size
 * and key count, the keys kept).  A run may hold far more context than
 * one error row should copy, once per failed attempt.
 */
static Jsonb *
capped_context(Jsonb *context)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	bool		isnull;
	Datum		d;
	size_t		bytes;

	if (context == NULL)
		return NULL;
	bytes = strlen(JsonbToCString(NULL, &context->root, VARSIZE(context)));
	if (bytes <= CF_ERROR_CONTEXT_MAX)
		return context;
	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT coalesce(pg_catalog.jsonb_object_agg(k, v) FILTER (WHERE used <= $2), '{}')"
			" || pg_catalog.jsonb_build_object('$truncated', pg_catalog.jsonb_build_object("
			"  'bytes', $3, 'keys', pg_catalog.count(k), 'kept', pg_catalog.count(k) FILTER (WHERE used <= $2)))"
			" FROM (SELECT e.k, e.v, pg_catalog.sum(pg_catalog.octet_length(e.k)"
			"   + pg_catalog.octet_length(e.v::text) + 6) OVER (ORDER BY e.k) AS used"
			"  FROM pg_catalog.jsonb_each(CASE WHEN pg_catalog.jsonb_typeof($1) = 'object'"
			"   THEN $1 ELSE '{}' END) AS e(k, v)) s",
			3, (Oid[]) {JSONBOID, INT8OID, INT8OID},
			(Datum[]) {JsonbPGetDatum(context), Int64GetDatum(CF_ERROR_CONTEXT_MAX - 256),
				Int64GetDatum((int64) bytes)},
			NULL, true, 1);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	cf_internal_end(&st);
	return DatumGetJsonbPCopy(d);
}

/* At most CF_ERROR_WHERE_MAX bytes of s (its start: the innermost frames). */
static Datum
clipped_text(const char *s)
{
	int			len = strlen(s);

	if (len > CF_ERROR_WHERE_MAX)
		return PointerGetDatum(cstring_to_text(psprintf("%.*s...",
														pg_mbcliplen(s, len, CF_ERROR_WHERE_MAX), s)));
	return CStringGetTextDatum(s);
}
