/*-------------------------------------------------------------------------
 *
 * executor.h
 *	  What executor.c exports.
 *
 * Passes: claim a due wake-up and take the run's lock (or take a spawned
 * child, whose run is written at the pass's first commit or end), replay
 * the workflow procedure, then complete, release with one continuation,
 * stall or fail the run, all in the transaction that ends the pass.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_EXECUTOR_H
#define CF_EXECUTOR_H

#include "chrono_forge.h"

extern int	cf_last_drain_passes;

#endif							/* CF_EXECUTOR_H */
