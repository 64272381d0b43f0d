/*-------------------------------------------------------------------------
 *
 * clock.h
 *	  What clock.c exports.
 *
 * The engine clock: chrono_forge.now().
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_CLOCK_H
#define CF_CLOCK_H

#include "chrono_forge.h"

extern TimestampTz cf_clock_now(void);

#endif							/* CF_CLOCK_H */
