/*-------------------------------------------------------------------------
 *
 * wakeups.h
 *	  What wakeups.c exports.
 *
 * The one writer of wake-ups: the rows that make runs due.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_WAKEUPS_H
#define CF_WAKEUPS_H

#include "chrono_forge.h"

typedef enum CfWakeupRule
{
	CF_WAKEUP_ALWAYS,			/* write it */
	CF_WAKEUP_UNLESS_SAME,		/* not if the run has one at exactly that time */
	CF_WAKEUP_UNLESS_DUE		/* not if the run has one due by then */
} CfWakeupRule;

/*
 * A run's priority (0.13.0; NULL: none), for a wake-up written for run
 * expression `run`.
 */
#define CF_PRIORITY_OF(run) \
	"(SELECT w.priority FROM chrono_forge.workflows w WHERE w.id OPERATOR(pg_catalog.=) " run ")"

extern void cf_note_wakeup_priorities(int col);
extern bool cf_wakeup_add(int64 run, TimestampTz due, const char *reason, CfWakeupRule rule);
extern void cf_wakeup_move(int64 run, const char *from, TimestampTz due, const char *reason);
extern uint64 cf_wakeups_add(Datum runs, TimestampTz due, const char *reason, CfWakeupRule rule);
extern uint64 cf_wakeups_add_at(Datum runs, Datum dues, const char *reason);
extern Datum cf_spi_column_array(int col, Oid type);
extern Datum cf_spi_ids(int col);

#endif							/* CF_WAKEUPS_H */
