/*-------------------------------------------------------------------------
 *
 * claim.h
 *	  What claim.c exports.
 *
 * Claiming a pass: a due wake-up and the run's lock, or a spawned child
 * taken from spawn_batches, under the per-owner share.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_CLAIM_H
#define CF_CLAIM_H

#include "chrono_forge.h"

extern bool cf_claim_and_lock(Oid only_owner, bool *share_waived);
extern bool cf_claim_retake_spawned_child(void);
extern void cf_claim_register(void);

#endif							/* CF_CLAIM_H */
