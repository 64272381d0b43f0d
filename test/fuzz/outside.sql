-- Generates the psql script of the outside-a-pass calls after id :from
-- (test/fuzz/run).  The checksum of the tables is taken after every call:
-- a failing call must leave it as the previous one left it.
\pset format unaligned
\pset tuples_only on
SELECT '\o /dev/null';
SELECT 'SET statement_timeout = ''60s'';';
SELECT 'SELECT fuzz.snap() AS prev \gset';
-- wait_for_run() with no timeout (NULL, 178000000 years) waits for a run
-- that never ends here: 2 s of statement_timeout end it (57014).
SELECT format(E'\\echo @@C %s\n%s%s chrono_forge.%I(%s);\n'
              '\\set err :ERROR\n\\set st :LAST_ERROR_SQLSTATE\n\\set msg :LAST_ERROR_MESSAGE\n%s'
              'SELECT s AS prev, s = :''prev'' AS same FROM fuzz.snap() s \\gset\n'
              '\\if :err\n\\echo @@E %s :st :same :msg\n\\else\n\\echo @@S %s\n\\endif',
              id, CASE WHEN name = 'wait_for_run' THEN E'SET statement_timeout = ''2s'';\n' ELSE '' END,
              CASE prokind WHEN 'p' THEN 'CALL' ELSE 'SELECT' END, name, arglist,
              CASE WHEN name = 'wait_for_run' THEN E'SET statement_timeout = ''60s'';\n' ELSE '' END, id, id)
  FROM fuzz.calls WHERE id > :from ORDER BY id;
