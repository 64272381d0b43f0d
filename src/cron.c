/*-------------------------------------------------------------------------
 *
 * cron.c
 *	  Cron expressions: parsing, and the ticks they denote.
 *
 * Owns the five-field cron syntax pg_cron accepts (minute hour day-of-month
 * month day-of-week; lists, ranges, steps, month and day names, the
 * @hourly-style macros) and the tick arithmetic on it: the latest tick at
 * or before a time, the first one after.  Ticks are whole minutes in UTC,
 * as pg_cron 1.4 fires them.  This file is pure computation: it must never
 * read or write a table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "cron.h"

PG_FUNCTION_INFO_V1(cf_cron_next_sql);
PG_FUNCTION_INFO_V1(cf_cron_prev_sql);

/*
 * How far a search for a matching day goes: a day-of-month such as the
 * 29th of February with a day-of-week restriction recurs within 28 years.
 */
#define CRON_SEARCH_DAYS (366 * 28 + 7)

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
"jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

static void
invalid_cron(const char *expr, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_CF_INVALID_ARGUMENT),
			 errmsg("invalid cron expression \"%s\": %s", expr, why),
			 errhint("Use five fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly.")));
}

/* One number or name at *p; advances *p. */
static int
parse_value(const char *expr, const char **p, const char *const *names, int nnames, int name_base)
{
	if (isdigit((unsigned char) **p))
	{
		int			v = 0;

		while (isdigit((unsigned char) **p))
		{
			v = v * 10 + (**p - '0');
			if (v > 1000)
				invalid_cron(expr, "number out of range");
			(*p)++;
		}
		return v;
	}
	for (int i = 0; names != NULL && i < nnames; i++)
	{
		if (pg_strncasecmp(*p, names[i], 3) == 0)
		{
			*p += 3;
			return i + name_base;
		}
	}
	invalid_cron(expr, "a field holds something other than numbers, names, '*', '-', '/' and ','");
	return 0;					/* not reached */
}

/*
 * One field (a comma-separated list) into a bit mask over [lo, hi].
 * *star tells whether it began with '*' (for the day-of-month/day-of-week
 * rule).
 */
static uint64
parse_field(const char *expr, const char *field, int lo, int hi,
			const char *const *names, int nnames, int name_base, bool *star)
{
	const char *p = field;
	uint64		mask = 0;

	*star = (*p == '*');
	for (;;)
	{
		int			from;
		int			to;
		int			step = 1;

		if (*p == '*')
		{
			from = lo;
			to = hi;
			p++;
		}
		else
		{
			from = to = parse_value(expr, &p, names, nnames, name_base);
			if (*p == '-')
			{
				p++;
				to = parse_value(expr, &p, names, nnames, name_base);
			}
			else if (*p == '/')
				to = hi;		/* "a/n": from a to the end, every n */
		}
		if (*p == '/')
		{
			p++;
			if (!isdigit((unsigned char) *p))
				invalid_cron(expr, "a step must be a number");
			step = parse_value(expr, &p, NULL, 0, 0);
			if (step < 1)
				invalid_cron(expr, "a step must be at least 1");
		}
		if (from < lo || to > hi || from > to)
			invalid_cron(expr, psprintf("a value is outside %d-%d or a range is reversed", lo, hi));
		for (int v = from; v <= to; v += step)
			mask |= UINT64CONST(1) << v;
		if (*p == '\0')
			break;
		if (*p != ',')
			invalid_cron(expr, "unexpected character in a field");
		p++;
	}
	return mask;
}

void
cf_cron_parse(const char *expr, CfCron *cron)
{
	static const struct
	{
		const char *name;
		const char *fields;
	}			macros[] = {
		{"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"},
		{"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
		{"@daily", "0 0 * * *"}, {"@midnight", "0 0 * * *"},
		{"@hourly", "0 * * * *"},
	};
	const char *text = expr;
	char	   *copy;
	char	   *fields[5];
	int			n = 0;
	char	   *save;
	char	   *tok;
	bool		star;
	uint64		dow;

	while (isspace((unsigned char) *text))
		text++;
	if (*text == '@')
	{
		size_t		len = strcspn(text, " \t\n");
		size_t		i;

		for (i = 0; i < lengthof(macros); i++)
			if (strlen(macros[i].name) == len && pg_strncasecmp(text, macros[i].name, len) == 0)
				break;
		if (i == lengthof(macros) || text[len + strspn(text + len, " \t\n")] != '\0')
			invalid_cron(expr, "unknown macro (@reboot has no tick time)");
		text = macros[i].fields;
	}
	copy = pstrdup(text);
	for (tok = strtok_r(copy, " \t\n", &save); tok != NULL; tok = strtok_r(NULL, " \t\n", &save))
	{
		if (n == 5)
			invalid_cron(expr, "more than five fields");
		fields[n++] = tok;
	}
	if (n != 5)
		invalid_cron(expr, "fewer than five fields");

	cron->minutes = parse_field(expr, fields[0], 0, 59, NULL, 0, 0, &star);
	cron->hours = (uint32) parse_field(expr, fields[1], 0, 23, NULL, 0, 0, &star);
	cron->days = (uint32) parse_field(expr, fields[2], 1, 31, NULL, 0, 0, &star);
	cron->days_star = star;
	cron->months = (uint32) parse_field(expr, fields[3], 1, 12, month_names, 12, 1, &star);
	dow = parse_field(expr, fields[4], 0, 7, day_names, 7, 0, &star);
	cron->weekdays = (uint8) ((dow | (dow >> 7)) & 0x7F);	/* 7 is Sunday too */
	cron->weekdays_star = star;
	pfree(copy);
}

/*
 * Does the day (a Julian day number) match?  As in cron: when both
 * day-of-month and day-of-week are restricted, either may match.
 */
static bool
day_matches(const CfCron *cron, int julian)
{
	int			year;
	int			month;
	int			day;
	bool		by_day;
	bool		by_weekday;

	j2date(julian, &year, &month, &day);
	if (!(cron->months & (((uint32) 1) << month)))
		return false;
	by_day = (cron->days & (((uint32) 1) << day)) != 0;
	by_weekday = (cron->weekdays & (1 << j2day(julian))) != 0;
	if (!cron->days_star && !cron->weekdays_star)
		return by_day || by_weekday;
	return by_day && by_weekday;
}

static TimestampTz
make_tick(int julian, int minute_of_day)
{
	return (TimestampTz) (julian - POSTGRES_EPOCH_JDATE) * USECS_PER_DAY +
		(TimestampTz) minute_of_day * USECS_PER_MINUTE;
}

static bool
minute_matches(const CfCron *cron, int minute_of_day)
{
	return (cron->hours & (((uint32) 1) << (minute_of_day / 60))) &&
		(cron->minutes & (UINT64CONST(1) << (minute_of_day % 60)));
}

/* Split t into a Julian day and the minute of that day (UTC), rounding down. */
static void
split_minute(TimestampTz t, int *julian, int *minute_of_day)
{
	TimestampTz days = t / USECS_PER_DAY;
	TimestampTz rest = t % USECS_PER_DAY;

	if (rest < 0)
	{
		days--;
		rest += USECS_PER_DAY;
	}
	*julian = (int) days + POSTGRES_EPOCH_JDATE;
	*minute_of_day = (int) (rest / USECS_PER_MINUTE);
}

/* The latest tick at or before t; false if none within the search span. */
bool
cf_cron_prev(const CfCron *cron, TimestampTz t, TimestampTz *tick)
{
	int			julian;
	int			minute;

	split_minute(t, &julian, &minute);
	for (int d = 0; d < CRON_SEARCH_DAYS; d++, julian--, minute = 24 * 60 - 1)
	{
		CHECK_FOR_INTERRUPTS();
		if (!day_matches(cron, julian))
			continue;
		for (; minute >= 0; minute--)
			if (minute_matches(cron, minute))
			{
				*tick = make_tick(julian, minute);
				/* Past either end of the timestamp range: no tick. */
				return IS_VALID_TIMESTAMP(*tick);
			}
	}
	return false;
}

/* The first tick strictly after t; false if none within the search span. */
bool
cf_cron_next(const CfCron *cron, TimestampTz t, TimestampTz *tick)
{
	int			julian;
	int			minute;

	split_minute(t, &julian, &minute);
	minute++;					/* strictly after t's minute */
	for (int d = 0; d < CRON_SEARCH_DAYS; d++, julian++, minute = 0)
	{
		CHECK_FOR_INTERRUPTS();
		if (!day_matches(cron, julian))
			continue;
		for (; minute < 24 * 60; minute++)
			if (minute_matches(cron, minute))
			{
				*tick = make_tick(julian, minute);
				/* Past either end of the timestamp range: no tick. */
				return IS_VALID_TIMESTAMP(*tick);
			}
	}
	return false;
}

/* A cron expression that never fires (e.g. 30 February) is bad input. */
void
cf_cron_parse_firing(const char *expr, CfCron *cron)
{
	TimestampTz ignored;

	cf_cron_parse(expr, cron);
	if (!cf_cron_next(cron, 0, &ignored))
		invalid_cron(expr, "it never fires");
}

static Datum
cron_sql(FunctionCallInfo fcinfo, bool (*search) (const CfCron *, TimestampTz, TimestampTz *))
{
	CfCron		cron;
	TimestampTz t = PG_GETARG_TIMESTAMPTZ(1);
	TimestampTz tick;

	cf_cron_parse_firing(text_to_cstring(PG_GETARG_TEXT_PP(0)), &cron);
	/* Infinity has no minute: the search would start from garbage. */
	if (TIMESTAMP_NOT_FINITE(t))
		ereport(ERROR,
				(errcode(ERRCODE_CF_INVALID_ARGUMENT),
				 errmsg("cron_next and cron_prev need a finite timestamp")));
	if (!search(&cron, t, &tick))
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(tick);
}

/* cron_next(expr, after): the first tick strictly after `after`. */
Datum
cf_cron_next_sql(PG_FUNCTION_ARGS)
{
	return cron_sql(fcinfo, cf_cron_next);
}

/* cron_prev(expr, at): the latest tick at or before `at`. */
Datum
cf_cron_prev_sql(PG_FUNCTION_ARGS)
{
	return cron_sql(fcinfo, cf_cron_prev);
}
