/*-------------------------------------------------------------------------
 *
 * guc.h
 *	  What guc.c exports.
 *
 * Every chrono_forge configuration parameter, defined in one place.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_GUC_H
#define CF_GUC_H

#include "chrono_forge.h"

extern char *cf_database;
extern int	cf_workers;
extern int	cf_max_duration_s;
extern int	cf_max_workers_per_owner;
extern int	cf_reap_stale_after_s;
extern bool cf_enabled;
extern int	cf_max_recoveries;
extern int	cf_worker_batch;
extern int	cf_commit_batch;
extern int	cf_commit_batch_window_ms;
extern int	cf_max_catch_up_runs;
extern bool cf_fake_now_set;
extern TimestampTz cf_fake_now_value;
extern void cf_define_gucs(void);
extern Interval *cf_max_duration_interval(void);
extern int	cf_reap_stale_after_effective(void);
extern int	cf_worker_share_effective(void);

#endif							/* CF_GUC_H */
