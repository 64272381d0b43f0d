-- The contract's tables, their columns, constraints and indexes.
SELECT table_name, column_name, data_type
  FROM information_schema.columns
 WHERE table_schema = 'chrono_forge'
 ORDER BY table_name, ordinal_position;

SELECT conrelid::regclass AS "table", conname, pg_get_constraintdef(oid) AS definition
  FROM pg_constraint
 WHERE connamespace = 'chrono_forge'::regnamespace AND contype IN ('u', 'c', 'f')
 ORDER BY conrelid::regclass::text, 2;

SELECT indexrelid::regclass AS index, pg_get_indexdef(indexrelid) AS definition
  FROM pg_index
 WHERE indrelid::regclass::text LIKE 'chrono_forge.%'
 ORDER BY indexrelid::regclass::text;

-- State types compare with their names as text.
SELECT enum_range(NULL::chrono_forge.workflow_state) AS workflow_states,
       enum_range(NULL::chrono_forge.step_state) AS step_states;
SELECT 'idle'::chrono_forge.workflow_state = 'idle' AS same;

-- Constraints hold even for the engine's own writes.
\set VERBOSITY terse
INSERT INTO chrono_forge.workflows (workflow, key, procedure, owner)
VALUES ('public.w', '', 'public.w', current_user::regrole);
INSERT INTO chrono_forge.workflows (workflow, key, procedure, owner, locked_by)
VALUES ('public.w', 'k', 'public.w', current_user::regrole, 'someone');
\set VERBOSITY default

-- Every SQL-language function pins its search path (C ones pin it
-- internally; the primitives cannot carry SET clauses).
SELECT p.oid::regprocedure AS unpinned
  FROM pg_proc p
 WHERE p.pronamespace = 'chrono_forge'::regnamespace
   AND (p.proconfig IS NULL OR NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%'))
   AND p.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'c')
 ORDER BY 1;

-- Users read, only the engine writes.
SELECT grantee, table_name, privilege_type
  FROM information_schema.role_table_grants
 WHERE table_schema = 'chrono_forge' AND grantee = 'PUBLIC'
 ORDER BY 2, 3;
SELECT relname, relrowsecurity FROM pg_class
 WHERE relnamespace = 'chrono_forge'::regnamespace AND relkind = 'r' ORDER BY 1;
