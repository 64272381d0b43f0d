/*-------------------------------------------------------------------------
 *
 * definitions.h
 *	  What definitions.c exports.
 *
 * A workflow procedure's definition hash.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_DEFINITIONS_H
#define CF_DEFINITIONS_H

#include "chrono_forge.h"

extern bool cf_definition_hash(const char *procedure, int64 *hash);

#endif							/* CF_DEFINITIONS_H */
