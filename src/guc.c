/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  Every chrono_forge configuration parameter, defined in one place.
 *
 * Owns the GUC variables and their hooks.  It must never read the
 * database or touch shared memory: hooks run in any process at any time.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "shmem.h"

char	   *cf_database = NULL;
int			cf_workers = 2;
int			cf_max_duration_s = 600;
int			cf_max_workers_per_owner = -1;
int			cf_reap_stale_after_s = -1;
bool		cf_enabled = true;
int			cf_max_recoveries = 3;
int			cf_max_catch_up_runs = 100;
int			cf_worker_batch = 100;
int			cf_commit_batch = 16;
int			cf_commit_batch_window_ms = 6;

static char *cf_fake_now_text = NULL;
bool		cf_fake_now_set = false;
TimestampTz cf_fake_now_value = 0;

/* fake_now: '' means the real clock; anything else must parse. */
static bool
check_fake_now(char **newval, void **extra, GucSource source)
{
	TimestampTz *parsed;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;

	parsed = (TimestampTz *) malloc(sizeof(TimestampTz));
	if (parsed == NULL)
		return false;

	/* timestamptz_in reports bad input with ERROR; turn it into a check. */
	PG_TRY();
	{
		*parsed = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
														  CStringGetDatum(*newval),
														  ObjectIdGetDatum(InvalidOid),
														  Int32GetDatum(-1)));
	}
	PG_CATCH();
	{
		FlushErrorState();
		free(parsed);
		GUC_check_errdetail("\"%s\" is not a valid timestamp with time zone.", *newval);
		return false;
	}
	PG_END_TRY();

	*extra = parsed;
	return true;
}

static void
assign_fake_now(const char *newval, void *extra)
{
	if (extra == NULL)
	{
		cf_fake_now_set = false;
		return;
	}
	cf_fake_now_set = true;
	cf_fake_now_value = *(TimestampTz *) extra;
}

/*
 * chrono_forge.max_duration as an interval, as the engine's statements
 * compare lock ages with it (a pass's lock older than this is stolen).
 */
Interval *
cf_max_duration_interval(void)
{
	Interval   *i = palloc0(sizeof(Interval));

	i->time = (int64) cf_max_duration_s * USECS_PER_SEC;
	return i;
}

int
cf_reap_stale_after_effective(void)
{
	if (cf_reap_stale_after_s >= 0)
		return cf_reap_stale_after_s;
	return 3 * cf_max_duration_s;
}

/*
 * How many workers one owner's passes may occupy at once.  Automatic (-1):
 * all workers but one, so that another owner always finds one; with a
 * single worker there is nothing to share.  0: no limit.
 */
int
cf_worker_share_effective(void)
{
	if (cf_max_workers_per_owner == 0)
		return CF_MAX_WORKERS;
	if (cf_max_workers_per_owner > 0)
		return cf_max_workers_per_owner;
	return Max(cf_workers - 1, 1);
}

void
cf_define_gucs(void)
{
	DefineCustomStringVariable("chrono_forge.database",
							   "Database whose runs the chrono_forge workers execute.",
							   NULL,
							   &cf_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("chrono_forge.workers",
							"Number of executor workers the launcher keeps running.",
							NULL,
							&cf_workers,
							2, 0, CF_MAX_WORKERS,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("chrono_forge.max_duration",
							"How long a pass may run: its worker stops it then, and another pass may steal its lock.",
							NULL,
							&cf_max_duration_s,
							600, 1, INT_MAX / 4,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("chrono_forge.max_workers_per_owner",
							"Most workers the passes of one owner may occupy at once (-1: all workers but one; 0: no limit).",
							NULL,
							&cf_max_workers_per_owner,
							-1, -1, CF_MAX_WORKERS,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("chrono_forge.reap_stale_after",
							"Lock age after which reap_stalled() re-drives a running run (-1: 3 x max_duration).",
							NULL,
							&cf_reap_stale_after_s,
							-1, -1, INT_MAX / 4,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("chrono_forge.enabled",
							 "Whether the launcher runs executor workers at all.",
							 NULL,
							 &cf_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("chrono_forge.max_recoveries",
							"Passes lost with their worker before the run is marked stalled.",
							NULL,
							&cf_max_recoveries,
							3, 0, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("chrono_forge.worker_batch",
							"Passes a worker runs before it checks for configuration changes.",
							NULL,
							&cf_worker_batch,
							100, 1, 100000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("chrono_forge.commit_batch",
							"Most consecutive one-transaction passes of one owner a worker commits together (1: each alone).",
							NULL,
							&cf_commit_batch,
							16, 1, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("chrono_forge.commit_batch_window",
							"How long the first pass of a shared commit may wait for it.",
							NULL,
							&cf_commit_batch_window_ms,
							6, 0, 10000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("chrono_forge.max_catch_up_runs",
							"Most missed ticks of one schedule that catch_up => 'all' starts at once.",
							NULL,
							&cf_max_catch_up_runs,
							100, 1, 100000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("chrono_forge.fake_now",
							   "Pins chrono_forge.now() to this timestamp (tests); empty for the real clock.",
							   NULL,
							   &cf_fake_now_text,
							   "",
							   PGC_SUSET,
							   0,
							   check_fake_now, assign_fake_now, NULL);

	MarkGUCPrefixReserved("chrono_forge");
}
