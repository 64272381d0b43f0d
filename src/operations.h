/*-------------------------------------------------------------------------
 *
 * operations.h
 *	  What operations.c exports.
 *
 * Ending runs as cancel() does, for the deadline sweep (deadlines.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_OPERATIONS_H
#define CF_OPERATIONS_H

#include "chrono_forge.h"

extern Datum cf_run_tree(int64 run, bool with_children, bool admin, Oid caller,
						Datum *children, bool *allowed);
extern int64 cf_drop_unstarted_children(Datum ids);
extern int	cf_cancel_runs(Datum ids, Datum reason, bool reason_null, Oid caller, int64 run_id);

#endif							/* CF_OPERATIONS_H */
