/*-------------------------------------------------------------------------
 *
 * citus.c
 *	  Scale-out on Citus: the key-owner guard and two-phase commits of
 *	  passes.
 *
 * On a Citus cluster each node runs its own chrono_forge; distribute()
 * (SQL) makes the per-run calls Citus distributed functions keyed by the
 * run's key, colocated with the routing anchor chrono_forge_routing.keys,
 * so that Citus sends each call to the node owning the key's shard.
 * This file owns two things:
 *	- the guard: a per-run call reaching a node that does not own its key
 *	  (a call Citus did not delegate: inside another function, set-based,
 *	  on a worker directly) is refused with CF030 instead of creating or
 *	  touching a run there;
 *	- two-phase commits: every transaction of a pass (a worker's, or
 *	  run_pending()'s) asks Citus to commit its remote writes with 2PC,
 *	  so that a step's writes on other nodes commit together with its log.
 * Both do nothing unless Citus is loaded and (for the guard) distribute()
 * has run.  Citus is never linked: its one function is looked up by name.
 * Nothing here runs user code.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "citus.h"
#include "errcodes.h"
#include "internal.h"
#include "pass.h"
#include "shmem.h"

/* Node-ranged ids (distribute()): a run or task id's node group. */
#define CF_NODE_ID_SHIFT 48

/* Citus's Use2PCForCoordinatedTransaction(), once looked up. */
typedef void (*UseTwoPhaseFn) (void);
static UseTwoPhaseFn use_two_phase = NULL;
static int	citus_loaded = -1;	/* unknown until first asked */
static bool draining = false;	/* run_pending() runs passes */

/* Citus is a preloaded library: loaded in this process or never. */
static bool
citus_is_loaded(void)
{
	if (citus_loaded < 0)
		citus_loaded = GetConfigOption("citus.version", true, false) != NULL;
	return citus_loaded == 1;
}

static Oid
relation_owner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		return InvalidOid;
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * The routing anchor's oid: InvalidOid unless Citus is loaded, installed
 * in this database and distribute() has made the anchor.
 */
static Oid
routing_anchor(void)
{
	Oid			nsp;
	Oid			anchor;

	if (!citus_is_loaded() || !OidIsValid(get_extension_oid("citus", true)))
		return InvalidOid;
	nsp = get_namespace_oid("chrono_forge_routing", true);
	anchor = OidIsValid(nsp) ? get_relname_relid("keys", nsp) : InvalidOid;
	/* distribute() makes it as a superuser: anyone else's is not it. */
	if (!OidIsValid(anchor) || !superuser_arg(relation_owner(anchor)))
		return InvalidOid;
	return anchor;
}

/* This node's group and the group owning the key's shard (-1: none). */
static void
key_groups(Oid anchor, const char *key, int *local, int *owner)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	bool		isnull;
	Datum		d;

	SPI_connect();
	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT l.groupid, (SELECT p.groupid FROM pg_catalog.pg_dist_placement p"
			"  WHERE p.shardid OPERATOR(pg_catalog.=)"
			"   pg_catalog.get_shard_id_for_distribution_column($1::pg_catalog.regclass, $2)"
			"  LIMIT 1)"
			" FROM pg_catalog.pg_dist_local_group l",
			2, (Oid[]) {OIDOID, TEXTOID},
			(Datum[]) {ObjectIdGetDatum(anchor), CStringGetTextDatum(key)},
			NULL, true, 1);
	if (SPI_processed != 1)
		elog(ERROR, "Citus has no local group");
	*local = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	*owner = isnull ? -1 : DatumGetInt32(d);
	cf_internal_end(&st);
	SPI_finish();
}

static void
refuse_misrouted(const char *what, int local, int owner)
{
	ereport(ERROR,
			(errcode(ERRCODE_CF_NOT_KEY_OWNER),
			 errmsg("%s belongs to another node of this Citus cluster", what),
			 errdetail("This node is group %d; the run's group is %d.", local, owner),
			 errhint("Call it in a statement of its own, \"SELECT chrono_forge.start(...)\" on any node:"
					 " Citus sends such a call to the node owning the key.")));
}

/* This node's Citus group. */
static int
local_group(void)
{
	static SPIPlanPtr plan = NULL;
	CfInternal	st;
	bool		isnull;
	int			group;

	SPI_connect();
	cf_internal_begin(&st);
	cf_exec(&plan, "SELECT groupid FROM pg_catalog.pg_dist_local_group",
			0, NULL, NULL, NULL, true, 1);
	if (SPI_processed != 1)
		elog(ERROR, "Citus has no local group");
	group = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	cf_internal_end(&st);
	SPI_finish();
	return group;
}

/*
 * Has the caller a run of `key` on this node all the same?  One started before
 * distribute(), or before its key's shard moved to another node: runs
 * stay where they were started, and calls made here still reach them.
 */
static bool
run_here(const char *key)
{
	static SPIPlanPtr plan = NULL;
	Oid			caller = GetUserId();	/* before the engine's identity */
	CfInternal	st;
	bool		found;

	SPI_connect();
	cf_internal_begin(&st);
	cf_exec(&plan,
			"SELECT FROM chrono_forge.workflows WHERE key OPERATOR(pg_catalog.=) $1"
			" AND owner OPERATOR(pg_catalog.=) $2::pg_catalog.regrole LIMIT 1",
			2, (Oid[]) {TEXTOID, OIDOID},
			(Datum[]) {CStringGetTextDatum(key), ObjectIdGetDatum(caller)}, NULL, true, 1);
	found = SPI_processed > 0;
	cf_internal_end(&st);
	SPI_finish();
	return found;
}

/*
 * Refuse a per-run call for `key` on a node that does not own it.  A
 * child's key ("$<parent run id>$...") belongs to its parent's node,
 * which the parent's node-ranged id names (a parent from before
 * distribute() names none: allowed).  A run of the key on this node all
 * the same is reached (run_here()).
 */
void
cf_citus_check_key(const char *key)
{
	Oid			anchor = routing_anchor();
	int			local;
	int			owner;

	if (!OidIsValid(anchor))
		return;
	if (key[0] == '$')
	{
		owner = (int) (strtoll(key + 1, NULL, 10) >> CF_NODE_ID_SHIFT);
		if (owner == 0)
			return;
		local = local_group();
	}
	else
		key_groups(anchor, key, &local, &owner);
	if (owner != local && !run_here(key))
		refuse_misrouted(psprintf("the key \"%s\"", key), local, owner);
}

/*
 * Refuse a call for a task whose node-ranged id names another node
 * (ids from before distribute(), group 0, are anyone's).
 */
void
cf_citus_check_task(int64 task_id)
{
	int			owner = (int) (task_id >> CF_NODE_ID_SHIFT);
	int			local;

	if (owner == 0 || !OidIsValid(routing_anchor()))
		return;
	local = local_group();
	if (owner != local)
		refuse_misrouted(psprintf("task %lld", (long long) task_id), local, owner);
}

/* run_pending() brackets its passes with this (true, then false). */
void
cf_citus_draining(bool on)
{
	draining = on;
}

/*
 * Just before a pass's transaction commits: ask Citus for 2PC.  Citus
 * registered its own callback first (it must be preloaded first), so this
 * one runs before it and Citus sees the request in its pre-commit.  It
 * matters only when the transaction wrote on another node.
 */
static void
two_phase_passes(XactEvent event, void *arg)
{
	if (event != XACT_EVENT_PRE_COMMIT || !(cf_worker_slot >= 0 || draining || cf_pass.active))
		return;
	if (!citus_is_loaded())
		return;
	if (use_two_phase == NULL)
		use_two_phase = (UseTwoPhaseFn)
			load_external_function("$libdir/citus", "Use2PCForCoordinatedTransaction", true, NULL);
	use_two_phase();
}

void
cf_citus_register(void)
{
	RegisterXactCallback(two_phase_passes, NULL);
}
