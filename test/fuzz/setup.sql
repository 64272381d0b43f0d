-- Fuzz fixture (test/fuzz/run loads it as superuser into a fresh database):
-- the values each argument type is fuzzed with, the calls generated from
-- pg_proc for every routine of schema chrono_forge, a workflow procedure
-- per routine that calls it from inside a pass, and the checksum of every
-- chrono_forge table.  Owns nothing else.
CREATE EXTENSION chrono_forge;
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cf_fuzz_user') THEN
        CREATE ROLE cf_fuzz_user LOGIN;
    END IF;
END $$;
CREATE SCHEMA fuzz;
GRANT USAGE ON SCHEMA fuzz TO PUBLIC;

CREATE FUNCTION fuzz.big() RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT repeat('x', 1048576) $$;
CREATE FUNCTION fuzz.deep() RETURNS jsonb LANGUAGE sql IMMUTABLE
    AS $$ SELECT (repeat('[', 5000) || repeat(']', 5000))::jsonb $$;
CREATE FUNCTION fuzz.bigjson() RETURNS jsonb LANGUAGE sql IMMUTABLE
    AS $$ SELECT jsonb_build_object('k', fuzz.big()) $$;
-- Targets the fuzzed calls name (a step, a condition, a workflow).
CREATE FUNCTION fuzz.step(args jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT '1'::jsonb $$;
CREATE FUNCTION fuzz.cond() RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE PROCEDURE fuzz.wf(args jsonb) LANGUAGE plpgsql AS $$
BEGIN
    CALL chrono_forge.durably_execute('fuzz.step');
END $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA fuzz TO PUBLIC;
GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA fuzz TO PUBLIC;

-- Every write leaves a new (ctid, xmin): a checksum of them over every
-- table of the schema tells whether a call wrote anything (as the
-- superuser, so row-level security hides nothing).
CREATE FUNCTION fuzz.snap() RETURNS text LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog AS $$
DECLARE t regclass; h text; acc text := '';
BEGIN
    FOR t IN SELECT c.oid FROM pg_class c
              WHERE c.relnamespace = 'chrono_forge'::regnamespace
                AND c.relkind IN ('r', 'p') ORDER BY c.relname LOOP
        EXECUTE format('SELECT md5(coalesce(string_agg(ctid::text || xmin::text, %L ORDER BY ctid), %L)) FROM %s', ',', '', t)
           INTO h;
        acc := acc || h;
    END LOOP;
    RETURN md5(acc);
END $$;
GRANT EXECUTE ON FUNCTION fuzz.snap() TO PUBLIC;

-- The values: per type, the base (valid) value and the fuzzed ones.
CREATE TABLE fuzz.vals (typ regtype, label text, expr text);
INSERT INTO fuzz.vals VALUES
  ('text', 'null', 'NULL'), ('text', 'empty', ''''''), ('text', 'dollar', '''$'''),
  ('text', '1MB', 'fuzz.big()'), ('text', 'multibyte-600', 'repeat(''é'', 600)'),
  ('text', 'dotted', '''a.b.c.d'''), ('text', 'quote', '''"x'''), ('text', 'comma', '''a,b'''),
  ('integer', 'null', 'NULL'), ('integer', 'zero', '0'), ('integer', '-1', '-1'),
  ('integer', 'max', '2147483647'), ('integer', 'min', '-2147483648'),
  ('bigint', 'null', 'NULL'), ('bigint', 'zero', '0'), ('bigint', '-1', '-1'),
  ('bigint', 'max', '9223372036854775807'), ('bigint', 'min', '-9223372036854775808'),
  ('double precision', 'null', 'NULL'), ('double precision', 'nan', '''NaN'''),
  ('double precision', 'inf', '''Infinity'''), ('double precision', '-inf', '''-Infinity'''),
  ('double precision', '-1', '-1'), ('double precision', '1e308', '1e308'),
  ('boolean', 'null', 'NULL'),
  ('interval', 'null', 'NULL'), ('interval', 'zero', '''0'''), ('interval', '-1us', '''-1 microsecond'''),
  ('interval', '1us', '''1 microsecond'''), ('interval', 'max', '''178000000 years'''),
  ('interval', 'min', '''-178000000 years'''), ('interval', 'mixed', '''1 mon -31 days'''),
  ('timestamp with time zone', 'null', 'NULL'), ('timestamp with time zone', 'inf', '''infinity'''),
  ('timestamp with time zone', '-inf', '''-infinity'''),
  ('timestamp with time zone', 'first', '''4713-01-01 00:00:00+00 BC'''),
  ('timestamp with time zone', 'last', '''294276-12-31 23:59:59+00'''),
  ('date', 'null', 'NULL'), ('date', 'inf', '''infinity'''), ('date', '-inf', '''-infinity'''),
  ('date', 'first', '''4713-01-01 BC'''), ('date', 'last', '''5874897-12-31'''),
  ('jsonb', 'null', 'NULL'), ('jsonb', 'json-null', '''null'''), ('jsonb', 'array', '''[1, {}]'''),
  ('jsonb', 'number', '''1e400'''), ('jsonb', 'string', '''"s"'''), ('jsonb', 'object', '''{"a": {"b": [1]}}'''),
  ('jsonb', 'deep', 'fuzz.deep()'), ('jsonb', '1MB', 'fuzz.bigjson()'),
  ('jsonb', 'policy-huge', '''{"max_attempts": 1e30, "base": -1e308, "cap": "x", "retry_on": 5}'''),
  ('text[]', 'null', 'NULL'), ('text[]', 'empty', '''{}'''), ('text[]', 'null-elem', '''{NULL}'''),
  ('text[]', '1MB-elem', 'ARRAY[fuzz.big()]'), ('text[]', '100k', 'array_fill(''b''::text, ARRAY[100000])'),
  ('text[]', 'commas', '''{"a,b","$"}'''),
  ('bigint[]', 'null', 'NULL'), ('bigint[]', 'empty', '''{}'''), ('bigint[]', 'null-elem', '''{NULL}'''),
  ('bigint[]', '100k', 'array_fill(1::bigint, ARRAY[100000])'), ('bigint[]', 'neg', '''{-1}'''),
  ('uuid', 'null', 'NULL'), ('uuid', 'nil', '''00000000-0000-0000-0000-000000000000''');

-- The valid value of an argument, by its name and type.
CREATE FUNCTION fuzz.base(typ regtype, argname text) RETURNS text LANGUAGE sql AS $$
SELECT CASE
  WHEN typ = 'text'::regtype THEN CASE
      WHEN argname IN ('workflow') THEN '''fuzz.wf'''
      WHEN argname IN ('key') THEN '''k1'''
      WHEN argname IN ('step') THEN '''fuzz.step'''
      WHEN argname IN ('condition', 'till') THEN '''fuzz.cond'''
      WHEN argname IN ('cron', 'cleanup_cron', 'reap_cron') THEN '''* * * * *'''
      WHEN argname = 'state' THEN '''all'''
      WHEN argname = 'branch' THEN '''b'''
      WHEN argname = 'source' THEN '''SELECT 1 AS item_key'''
      WHEN argname = 'on_error' THEN '''continue'''
      WHEN argname = 'catch_up' THEN '''latest'''
      ELSE '''n1''' END
  WHEN typ IN ('integer'::regtype, 'bigint'::regtype) THEN '1'
  WHEN typ = 'double precision'::regtype THEN '0.5'
  WHEN typ = 'boolean'::regtype THEN 'false'
  WHEN typ = 'interval'::regtype THEN
      CASE WHEN argname = 'max_interval' THEN '''5 minutes''' ELSE '''1 second''' END
  WHEN typ = 'timestamp with time zone'::regtype THEN '''2030-01-01 00:00:00+00'''
  WHEN typ = 'date'::regtype THEN '''2030-01-01'''
  WHEN typ = 'jsonb'::regtype THEN
      CASE WHEN argname IN ('retry_policy', 'policy', 'result', 'payload') THEN 'NULL' ELSE '''{}''' END
  WHEN typ = 'text[]'::regtype THEN '''{b}'''
  WHEN typ = 'bigint[]'::regtype THEN '''{1}'''
  WHEN typ = 'uuid'::regtype THEN 'gen_random_uuid()'
  ELSE 'NULL' END
$$;

-- The routines and their input arguments (OUT ones are not passed).
CREATE VIEW fuzz.routines AS
SELECT p.oid, p.oid::regprocedure::text AS sig, p.prokind, p.proname::text AS name,
       coalesce((SELECT array_agg(a.t ORDER BY a.n) FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]),
                  coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[p.pronargs])))
                  WITH ORDINALITY AS a(t, m, n) WHERE a.m IN ('i', 'b')), '{}')::regtype[] AS types,
       coalesce((SELECT array_agg(coalesce(nullif(a.nm, ''), 'a' || a.n) ORDER BY a.n)
                   FROM unnest(coalesce(p.proargnames, array_fill(''::text, ARRAY[cardinality(coalesce(p.proallargtypes, p.proargtypes::oid[]))])),
                               coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[p.pronargs])))
                   WITH ORDINALITY AS a(nm, m, n) WHERE a.m IN ('i', 'b')), '{}') AS names,
       coalesce((SELECT array_agg(a.n::int ORDER BY a.n) FROM unnest(coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[p.pronargs])))
                   WITH ORDINALITY AS a(m, n) WHERE a.m IN ('i', 'b')), '{}') AS positions,
       coalesce((SELECT array_agg(a.m = 'b' ORDER BY a.n) FROM unnest(coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[p.pronargs])))
                   WITH ORDINALITY AS a(m, n) WHERE a.m IN ('i', 'b')), '{}') AS inout
  FROM pg_proc p
 WHERE p.pronamespace = 'chrono_forge'::regnamespace;

-- One call per routine with every argument valid (arg 0), then one per
-- argument and fuzzed value of its type; exprs[i] is argument i's value.
CREATE VIEW fuzz.calls AS
WITH variants AS (
    SELECT r.*, 0 AS argno, 'base' AS label,
           (SELECT array_agg(fuzz.base(r.types[i], r.names[i]) ORDER BY i)
              FROM generate_subscripts(r.types, 1) i) AS exprs
      FROM fuzz.routines r
    UNION ALL
    SELECT r.*, i AS argno, v.label,
           (SELECT array_agg(CASE WHEN j = i THEN v.expr ELSE fuzz.base(r.types[j], r.names[j]) END ORDER BY j)
              FROM generate_subscripts(r.types, 1) j) AS exprs
      FROM fuzz.routines r, generate_subscripts(r.types, 1) i
      JOIN fuzz.vals v ON true
     WHERE v.typ = r.types[i]
)
SELECT row_number() OVER (ORDER BY sig, argno, label) AS id, sig, prokind, name, oid, types, inout,
       argno, CASE WHEN argno = 0 THEN 'base' ELSE names[argno] || '=' || label END AS what,
       exprs,
       coalesce((SELECT string_agg('(' || coalesce(exprs[i], 'NULL') || ')::' || types[i]::text, ', ' ORDER BY i)
          FROM generate_subscripts(types, 1) i), '') AS arglist
  FROM variants;

-- Expression evaluation for the in-pass workflows (their CALLs are static:
-- a CALL run by EXECUTE is atomic, so the fuzzed values arrive as text).
DO $$
DECLARE t regtype;
BEGIN
    FOR t IN SELECT DISTINCT typ FROM fuzz.vals LOOP
        EXECUTE format('CREATE FUNCTION fuzz.%s(e text) RETURNS %s LANGUAGE plpgsql AS $f$
            DECLARE r %2$s; BEGIN IF e IS NULL THEN RETURN NULL; END IF; EXECUTE ''SELECT ('' || e || '')::%2$s'' INTO r; RETURN r; END $f$',
            'v_' || regexp_replace(t::text, '\W', '_', 'g'), t);
    END LOOP;
END $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA fuzz TO PUBLIC;

-- Per routine, a workflow whose body calls it with the values in its args
-- (a1, a2, ...), after opening (and sealing) a branch where it needs one.
CREATE FUNCTION fuzz.pass_proc(r fuzz.routines) RETURNS text LANGUAGE sql AS $pp$
SELECT format($f$CREATE PROCEDURE fuzz.p_%s(args jsonb) LANGUAGE plpgsql AS $b$
DECLARE %s
BEGIN
    %s
    %s
END $b$$f$,
    r.oid,
    coalesce((SELECT string_agg(format('v%s %s := fuzz.%s(args->>%L);', i, r.types[i],
                  'v_' || regexp_replace(r.types[i]::text, '\W', '_', 'g'), 'a' || i), ' ')
                FROM generate_subscripts(r.types, 1) i), ''),
    CASE WHEN r.name IN ('spawn', 'spawn_each', 'seal_branch') THEN 'CALL chrono_forge.branch(''b'');'
         WHEN r.name = 'merge_branches' THEN 'CALL chrono_forge.branch(''b''); CALL chrono_forge.seal_branch();'
         ELSE '' END,
    CASE WHEN r.prokind = 'p' THEN 'CALL ' ELSE 'PERFORM ' END || 'chrono_forge.' || quote_ident(r.name) || '('
      || coalesce((SELECT string_agg('v' || i, ', ' ORDER BY i) FROM generate_subscripts(r.types, 1) i), '') || ');')
$pp$;
