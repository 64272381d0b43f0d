/*-------------------------------------------------------------------------
 *
 * results.h
 *	  What results.c exports.
 *
 * A run's result (set_result()) and its children's results.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_RESULTS_H
#define CF_RESULTS_H

#include "chrono_forge.h"

extern Jsonb *cf_merge_results(int64 *log_ids, char **names, int n);

#endif							/* CF_RESULTS_H */
