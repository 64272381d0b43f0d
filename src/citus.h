/*-------------------------------------------------------------------------
 *
 * citus.h
 *	  What citus.c exports.
 *
 * Scale-out on Citus: the key-owner guard, two-phase commits of passes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_CITUS_H
#define CF_CITUS_H

extern void cf_citus_check_key(const char *key);
extern void cf_citus_check_task(int64 task_id);
extern void cf_citus_draining(bool on);
extern void cf_citus_register(void);

#endif							/* CF_CITUS_H */
