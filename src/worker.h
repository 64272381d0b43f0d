/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  What worker.c exports.
 *
 * An executor worker: drains due passes, then sleeps on its latch.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_WORKER_H
#define CF_WORKER_H

#include "chrono_forge.h"

PGDLLEXPORT void cf_worker_main(Datum arg);

#endif							/* CF_WORKER_H */
