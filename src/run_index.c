/*-------------------------------------------------------------------------
 *
 * run_index.c
 *	  Index expressions over chrono_forge.workflows.
 *
 * Owns run_bucket(), the block of ids a run belongs to, which leads the
 * key-prefix index: the run list by key prefix, newest first, walks the
 * blocks from the newest and reads in each only the runs whose key has
 * the prefix (see runs() in the schema).  A function rather than
 * "id >> 14" because it is LEAKPROOF: under row-level security only a
 * leakproof condition can be an index condition ahead of the policy, and
 * no arithmetic operator is marked so.  It must stay immutable: every
 * index entry was computed with it.  It reads nothing and cannot fail.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

/*
 * 16,384 ids a block: a walk reads at most one block's matching entries
 * beyond a page, and an empty block costs one index descent (61 of them
 * per million runs).
 */
#define RUN_BUCKET_BITS 14

PG_FUNCTION_INFO_V1(cf_run_bucket);

Datum
cf_run_bucket(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(PG_GETARG_INT64(0) >> RUN_BUCKET_BITS);
}
