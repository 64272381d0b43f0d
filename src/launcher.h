/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  What launcher.c exports.
 *
 * The launcher background worker: keeps the executor workers running, re-
 * drives the runs of a worker that died, recovers runs interrupted by a
 * server crash, and sleeps until the next due wake-up.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_LAUNCHER_H
#define CF_LAUNCHER_H

#include "chrono_forge.h"

extern void cf_register_launcher(void);
PGDLLEXPORT void cf_launcher_main(Datum arg);

#endif							/* CF_LAUNCHER_H */
