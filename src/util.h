/*-------------------------------------------------------------------------
 *
 * util.h
 *	  What util.c exports.
 *
 * Small pure helpers: input validation, JSON, intervals, timestamps.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CF_UTIL_H
#define CF_UTIL_H

#include "chrono_forge.h"

extern void cf_validate_name_segment(const char *what, const char *segment);
extern void cf_check_length(const char *what, const char *s, int max_bytes);
extern void cf_validate_workflow_name(const char *workflow);
extern void cf_validate_routine_name(const char *name, const char *what);
extern char *cf_optional_text(FunctionCallInfo fcinfo, int n);
extern char *cf_required_text(FunctionCallInfo fcinfo, int n, const char *what);
extern Jsonb *cf_jsonb_parse(const char *text);
extern Jsonb *cf_jsonb_transfer(Jsonb *value);
extern Jsonb *cf_jsonb_get(Jsonb *object, const char *key);
extern bool cf_jsonb_string_field(Jsonb *object, const char *key, char **out);
extern char *cf_json_string(const char *s);
extern char *cf_json_timestamp(TimestampTz t);
extern double cf_interval_seconds(Interval *i);
extern bool cf_interval_is_negative(Interval *i);
extern bool cf_metadata_timestamp(Jsonb *metadata, const char *key, TimestampTz *t);
extern bool cf_jsonb_is_true(Jsonb *v);

#endif							/* CF_UTIL_H */
