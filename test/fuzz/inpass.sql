-- Generates the psql script of the inside-a-pass calls after id :from
-- (test/fuzz/run): a run of the routine's fuzz workflow with the call's
-- values in its args, driven by run_pending().
\pset format unaligned
\pset tuples_only on
SELECT '\o /dev/null';
SELECT 'SET statement_timeout = ''60s'';';
SELECT format(E'\\echo @@C %s\nSELECT chrono_forge.start(%L, %L, %L);\nCALL chrono_forge.run_pending(20);\n'
              '\\if :ERROR\n\\echo @@E %s :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE\n\\endif',
              id, 'fuzz.p_' || oid, 'c' || id,
              (SELECT coalesce(jsonb_object_agg('a' || i, exprs[i]), '{}') FROM generate_subscripts(exprs, 1) i),
              id)
  FROM fuzz.calls WHERE id > :from AND sig IN (SELECT sig FROM fuzz.primitives) ORDER BY id;
