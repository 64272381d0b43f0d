/*-------------------------------------------------------------------------
 *
 * internal.h
 *	  What internal.c exports.
 *
 * The engine's own SQL: run as the extension owner on a pinned path.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_INTERNAL_H
#define CF_INTERNAL_H

#include "chrono_forge.h"

typedef struct CfInternal
{
	Oid			save_userid;
	int			save_sec_context;
} CfInternal;

extern void cf_internal_begin(CfInternal *st);
extern void cf_internal_end(CfInternal *st);
extern void cf_push_catalog_path(void);
extern void cf_spi_connect(void);
extern void cf_replan_if_stale(void);
extern Oid	cf_relation_oid(const char *name);

/* A schema version as a number, for cf_schema_at_least(). */
#define CF_SCHEMA(major, minor, patch) ((major) * 10000 + (minor) * 100 + (patch))

extern bool cf_schema_at_least(int version);

extern int	cf_exec(SPIPlanPtr *slot, const char *sql, int nargs,
					Oid *argtypes, Datum *values, const char *nulls,
					bool read_only, long count);
extern int	cf_exec_generic(SPIPlanPtr *slot, const char *sql, int nargs,
							Oid *argtypes, Datum *values, const char *nulls,
							bool read_only, long count);

extern bool cf_extension_installed(void);

#endif							/* CF_INTERNAL_H */
