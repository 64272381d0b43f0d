/*-------------------------------------------------------------------------
 *
 * chrono_forge.c
 *	  Module entry point: wires the subsystems together at load time.
 *
 * Owns _PG_init and nothing else.  It must never do work of its own: each
 * subsystem registers itself through the function named here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "citus.h"
#include "claim.h"
#include "concurrency.h"
#include "finish.h"
#include "guc.h"
#include "launcher.h"
#include "shmem.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	cf_define_gucs();
	cf_register_xact_callback();
	cf_claim_register();
	cf_citus_register();
	cf_concurrency_register();
	cf_finish_register();

	/* Shared memory and the launcher exist only when preloaded. */
	if (process_shared_preload_libraries_in_progress)
	{
		cf_shmem_register();
		cf_register_launcher();
	}
}
