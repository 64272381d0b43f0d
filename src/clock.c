/*-------------------------------------------------------------------------
 *
 * clock.c
 *	  The engine clock: chrono_forge.now().
 *
 * Owns the notion of "now" for every due time the engine computes.  It
 * must never cache across calls: fake_now may change at any moment.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "guc.h"

PG_FUNCTION_INFO_V1(cf_now);

/*
 * The real clock is the statement clock of the current transaction, like
 * pg_catalog.now(), so that one transaction sees one time.
 */
TimestampTz
cf_clock_now(void)
{
	if (cf_fake_now_set)
		return cf_fake_now_value;
	return GetCurrentTransactionStartTimestamp();
}

Datum
cf_now(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(cf_clock_now());
}
