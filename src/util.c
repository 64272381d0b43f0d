/*-------------------------------------------------------------------------
 *
 * util.c
 *	  Small pure helpers: input validation, JSON, intervals, timestamps.
 *
 * Owns checks of user-supplied names and sizes (CF005, CF012, CF011 are
 * raised here), JSON building and reading, interval arithmetic.  Must
 * never run SQL, touch a pass or write anything.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "lib/stringinfo.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "access/xact.h"
#include "access/table.h"
#include "access/genam.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "util.h"

static void
invalid_argument(const char *msg, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_CF_INVALID_ARGUMENT),
			 errmsg("%s", msg),
			 hint ? errhint("%s", hint) : 0));
}


/*
 * A user-supplied name segment: no NULL, nothing empty, no '$' (it splits
 * step names).
 */
void
cf_validate_name_segment(const char *what, const char *segment)
{
	if (segment == NULL || segment[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_STEP_NAME),
				 errmsg("%s must not be NULL or empty", what)));
	if (strchr(segment, CF_STEP_DELIMITER) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_STEP_NAME),
				 errmsg("invalid step name: %s \"%s\" contains \"$\"", what, segment),
				 errhint("\"$\" separates the parts of step names; choose another name.")));
	cf_check_length(what, segment, CF_NAME_MAX_BYTES);
}

/*
 * Names and keys are index keys: past a third of a page PostgreSQL
 * refuses the entry (54000) when it is written, which inside a pass is
 * long after the call that supplied it.  Refuse them at the door.
 */
void
cf_check_length(const char *what, const char *s, int max_bytes)
{
	if (s != NULL && strlen(s) > (size_t) max_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("%s is too long", what),
				 errdetail("It has %zu bytes; at most %d are allowed.", strlen(s), max_bytes)));
}

/*
 * A workflow name as the caller typed it: one to three dot-separated
 * identifiers, the first of three being this database (as PostgreSQL
 * reads qualified names).  Checked here so that a malformed name is bad
 * input (CF012) like an unknown one, not a syntax error (42601, 42602) or
 * a cross-database reference (0A000) from the name parser.
 */
void
cf_validate_workflow_name(const char *workflow)
{
	cf_validate_routine_name(workflow, "workflow");
}

/*
 * The same check for any routine name the caller gives (what: "workflow",
 * "step", "condition"): a malformed name is CF012 like a missing routine.
 */
void
cf_validate_routine_name(const char *name, const char *what)
{
	char	   *copy;
	List	   *parts;
	bool		ok;

	cf_check_length(what, name, CF_NAME_MAX_BYTES);
	copy = pstrdup(name);
	ok = SplitIdentifierString(copy, '.', &parts);
	if (ok && list_length(parts) == 3)
		ok = strcmp((char *) linitial(parts), get_database_name(MyDatabaseId)) == 0;
	if (!ok || list_length(parts) < 1 || list_length(parts) > 3)
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("invalid %s name: %s", what, name),
				 errhint("A %s names a routine: name, schema.name or database.schema.name, "
						 "identifiers double-quoted as in SQL.", what)));
	list_free(parts);
	pfree(copy);
}

/*
 * A jsonb value (or NULL) made in an SPI connection's memory, copied to
 * the memory that was current when it connected, so that it outlives
 * SPI_finish().
 */
Jsonb *
cf_jsonb_transfer(Jsonb *value)
{
	if (value == NULL)
		return NULL;
	return DatumGetJsonbP(SPI_datumTransfer(JsonbPGetDatum(value), false, -1));
}

Jsonb *
cf_jsonb_parse(const char *text)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

/* object->key as a jsonb value of its own, or NULL. */
Jsonb *
cf_jsonb_get(Jsonb *object, const char *key)
{
	JsonbValue	v;

	if (object == NULL || !JB_ROOT_IS_OBJECT(object) ||
		!getKeyJsonValueFromContainer(&object->root, key, strlen(key), &v) ||
		v.type == jbvNull)
		return NULL;
	return JsonbValueToJsonb(&v);
}

/*
 * object->key as a string: true with *out (NULL if absent), false if it
 * is there but not a JSON string.
 */
bool
cf_jsonb_string_field(Jsonb *object, const char *key, char **out)
{
	JsonbValue	v;

	*out = NULL;
	if (object == NULL || !JB_ROOT_IS_OBJECT(object) ||
		!getKeyJsonValueFromContainer(&object->root, key, strlen(key), &v) ||
		v.type == jbvNull)
		return true;
	if (v.type != jbvString)
		return false;
	*out = pnstrdup(v.val.string.val, v.val.string.len);
	return true;
}

bool
cf_interval_is_negative(Interval *i)
{
	return i->month < 0 || i->day < 0 || i->time < 0;
}

/* A string as a JSON string literal. */
char *
cf_json_string(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	escape_json(&buf, s);
	return buf.data;
}

double
cf_interval_seconds(Interval *i)
{
	return (double) i->time / USECS_PER_SEC +
		((double) i->day + (double) i->month * DAYS_PER_MONTH) * SECS_PER_DAY;
}

/* A timestamp as a JSON string in UTC, ISO 8601: readable whatever the
 * session's DateStyle and TimeZone. */
char *
cf_json_timestamp(TimestampTz t)
{
	int			utc = 0;
	char		buf[MAXDATELEN + 1];

	return psprintf("\"%s\"", JsonEncodeDateTime(buf, TimestampTzGetDatum(t),
												 TIMESTAMPTZOID, &utc));
}

/*
 * A timestamp as the engine writes it into step metadata
 * ("YYYY-MM-DDTHH:MM:SS[.ffffff]" then "Z" or "+00:00"), without the
 * general parser, which took most of a repeat tick's time.  False for any
 * other text: the caller then uses timestamptz_in, as the SQL cast would.
 */
static bool
parse_utc_timestamp(const char *s, int len, TimestampTz *t)
{
	static const int digits[] = {0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18};
	struct pg_tm tm;
	fsec_t		fsec = 0;
	int			i = 19;

	if (len < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
		return false;
	for (int k = 0; k < (int) lengthof(digits); k++)
		if (s[digits[k]] < '0' || s[digits[k]] > '9')
			return false;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
	tm.tm_mon = (s[5] - '0') * 10 + (s[6] - '0');
	tm.tm_mday = (s[8] - '0') * 10 + (s[9] - '0');
	tm.tm_hour = (s[11] - '0') * 10 + (s[12] - '0');
	tm.tm_min = (s[14] - '0') * 10 + (s[15] - '0');
	tm.tm_sec = (s[17] - '0') * 10 + (s[18] - '0');
	if (s[i] == '.')
	{
		int			scale = 100000;

		for (i++; i < len && s[i] >= '0' && s[i] <= '9' && scale > 0; i++, scale /= 10)
			fsec += (s[i] - '0') * scale;
		if (s[i - 1] == '.' || (i < len && s[i] >= '0' && s[i] <= '9'))
			return false;
	}
	if (!((len - i == 1 && s[i] == 'Z') || (len - i == 6 && memcmp(s + i, "+00:00", 6) == 0)))
		return false;
	if (tm.tm_year < 1 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
		tm.tm_mday > day_tab[isleap(tm.tm_year)][tm.tm_mon - 1] ||
		tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 59)
		return false;
	return tm2timestamp(&tm, fsec, NULL, t) == 0;
}

/*
 * metadata->key as a timestamp; false if absent or not a string.  The one
 * reader of the timestamps the engine keeps in step metadata (timeouts,
 * wait targets, repeat anchors and ticks).
 */
bool
cf_metadata_timestamp(Jsonb *metadata, const char *key, TimestampTz *t)
{
	JsonbValue	v;

	if (metadata == NULL || !JB_ROOT_IS_OBJECT(metadata) ||
		!getKeyJsonValueFromContainer(&metadata->root, key, strlen(key), &v) ||
		v.type != jbvString)
		return false;
	if (parse_utc_timestamp(v.val.string.val, v.val.string.len, t))
		return true;
	*t = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
												 CStringGetDatum(pnstrdup(v.val.string.val,
																		  v.val.string.len)),
												 ObjectIdGetDatum(InvalidOid),
												 Int32GetDatum(-1)));
	return true;
}

bool
cf_jsonb_is_true(Jsonb *v)
{
	JsonbValue	scalar;

	return v != NULL && JsonbExtractScalar(&v->root, &scalar) &&
		scalar.type == jbvBool && scalar.val.boolean;
}

/* Argument n as a C string, NULL if SQL NULL. */
char *
cf_optional_text(FunctionCallInfo fcinfo, int n)
{
	return PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n));
}

char *
cf_required_text(FunctionCallInfo fcinfo, int n, const char *what)
{
	char	   *s;

	if (PG_ARGISNULL(n))
		invalid_argument(psprintf("%s must not be NULL", what), NULL);
	s = text_to_cstring(PG_GETARG_TEXT_PP(n));
	if (s[0] == '\0')
		invalid_argument(psprintf("%s must not be empty", what), NULL);
	cf_check_length(what, s, strcmp(what, "key") == 0 ? CF_KEY_MAX_BYTES : CF_NAME_MAX_BYTES);
	return s;
}
