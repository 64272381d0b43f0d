/*-------------------------------------------------------------------------
 *
 * chrono_forge.h
 *	  What every part of chrono_forge shares: its SQLSTATEs (errcodes.h)
 *	  and the documented maxima of its inputs.
 *
 * Each module's interface is its own header (src/<module>.h, naming what
 * <module>.c exports); every one of them includes this one.  Nothing here
 * allocates or runs anything.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CHRONO_FORGE_H
#define CHRONO_FORGE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "utils/jsonb.h"

/* SQLSTATEs of class CF: errcodes.h, the one list. */
#include "errcodes.h"

#define CF_STEP_DELIMITER '$'
/* The marker of a run that compensates (0.12.0): compensation.c writes it. */
#define CF_COMPENSATING_MARKER "$workflow_compensating$"
#define CF_CONTEXT_VALUE_MAX 16384
/* An error log's copy of the run's context, as JSON; where it was raised. */
#define CF_ERROR_CONTEXT_MAX 65536
#define CF_ERROR_WHERE_MAX 16384

/*
 * Documented maxima of inputs (doc/reference.md, "Maxima"), refused with CF012
 * before anything is written.  Names and keys end up in btree indexes
 * whose entries may not exceed a third of a page (~2.7 KB): a run's key
 * with its workflow, a step name built from a primitive's prefix and up
 * to two names.  Policy numbers bound every backoff to a year, so that
 * no delay overflows a timestamp.
 */
#define CF_NAME_MAX_BYTES 512
#define CF_KEY_MAX_BYTES 1024
#define CF_CHILD_KEY_MAX_BYTES 2048
#define CF_STEP_NAME_MAX_BYTES 2000
#define CF_JSON_MAX_BYTES (1024 * 1024)	/* start args and options, event payloads */
#define CF_POLICY_MAX_SECONDS 31536000	/* 365 days */
#define CF_POLICY_MAX_ENTRIES 100	/* retry_on entries; policies of a composite */
#define CF_SPAWN_BATCH_MAX 100000
#define CF_TASK_CLAIM_MAX 1000		/* claim_tasks' max_tasks */
/*
 * A run's result (set_result()), as JSON; the children whose results one
 * merge hands back at once (child_results() pages through more).
 */
#define CF_RESULT_MAX_BYTES 16384
#define CF_MERGE_RESULTS_MAX 1000

/* The channel run_task's queues are notified on (payload: the queue). */
#define CF_TASKS_CHANNEL "chrono_forge_tasks"

/*
 * The reason of the wake-up a claim gives a task's run at its lease's end;
 * the task's outcome moves it to now.
 */
#define CF_TASK_LEASE_WAKEUP "task lease"

#endif							/* CHRONO_FORGE_H */
