/*-------------------------------------------------------------------------
 *
 * cron.h
 *	  What cron.c exports.
 *
 * Cron expressions: parsing, and the ticks they denote.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_CRON_H
#define CF_CRON_H

#include "chrono_forge.h"

typedef struct CfCron
{
	uint64		minutes;		/* bit n: minute n */
	uint32		hours;
	uint32		days;			/* bits 1-31 */
	uint32		months;			/* bits 1-12 */
	uint8		weekdays;		/* bit 0: Sunday */
	bool		days_star;		/* day-of-month field began with '*' */
	bool		weekdays_star;
} CfCron;

extern void cf_cron_parse(const char *expr, CfCron *cron);
extern void cf_cron_parse_firing(const char *expr, CfCron *cron);
extern bool cf_cron_prev(const CfCron *cron, TimestampTz t, TimestampTz *tick);
extern bool cf_cron_next(const CfCron *cron, TimestampTz t, TimestampTz *tick);

#endif							/* CF_CRON_H */
