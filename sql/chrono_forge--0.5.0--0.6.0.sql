/* chrono_forge 0.5.0 -> 0.6.0: reliability.  No calling context crashes
 * the server; every merge ends; backups keep every run; standbys wait
 * quietly and serve at promotion.  See README.md.
 * A fresh CREATE EXTENSION runs the 0.1.0 script and then each upgrade
 * script in turn. */

\echo Use "ALTER EXTENSION chrono_forge UPDATE TO '0.6.0'" to load this file. \quit

-- =====================================================================
-- Security, continued (issue 14)
-- =====================================================================

-- (end of section: security)



-- =====================================================================
-- Calling contexts (issue 15, items 1-2)
-- =====================================================================

-- (end of section: calling contexts)



-- =====================================================================
-- Merges that end, repeats, error logs, spawn cursors (issue 15, items 3-4)
-- =====================================================================

-- (end of section: merges)



-- =====================================================================
-- Backups and standbys (issue 15, items 5-6)
-- =====================================================================

-- (end of section: backups)



-- =====================================================================
-- Fuzz findings (issue 15, item 8)
-- =====================================================================

-- cleanup_add(), the internal helper that sums cleanup()'s counts, is
-- callable by every role: given something other than two objects of
-- numbers it raised 22023/22P02 from the JSON functions (found by
-- test/fuzz); now CF012, and the sums are numeric so none overflows.
CREATE OR REPLACE FUNCTION chrono_forge.cleanup_add(a jsonb, b jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF pg_catalog.jsonb_typeof(coalesce(a, '{}')) OPERATOR(pg_catalog.<>) 'object'
       OR pg_catalog.jsonb_typeof(coalesce(b, '{}')) OPERATOR(pg_catalog.<>) 'object'
       OR EXISTS (SELECT FROM (SELECT value FROM pg_catalog.jsonb_each(a)
                               UNION ALL SELECT value FROM pg_catalog.jsonb_each(b)) e
                   WHERE pg_catalog.jsonb_typeof(e.value) OPERATOR(pg_catalog.<>) 'number') THEN
        RAISE EXCEPTION 'cleanup_add takes two objects of counts' USING ERRCODE = 'CF012';
    END IF;
    RETURN (SELECT coalesce(pg_catalog.jsonb_object_agg(k,
                coalesce((a OPERATOR(pg_catalog.->) k)::numeric, 0) OPERATOR(pg_catalog.+)
                coalesce((b OPERATOR(pg_catalog.->) k)::numeric, 0)), '{}')
              FROM (SELECT pg_catalog.jsonb_object_keys(coalesce(b, '{}'))
                    UNION SELECT pg_catalog.jsonb_object_keys(coalesce(a, '{}'))) AS t(k));
END
$$;

-- context_set(NULL, v) outside a pass answered CF012 (its key check came
-- first) where every other context function answers CF013.
CREATE OR REPLACE FUNCTION chrono_forge.context_set(key text, value jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    ctx jsonb := chrono_forge.context();    -- CF013 outside a pass
BEGIN
    IF key IS NULL THEN
        RAISE EXCEPTION 'context key must not be NULL' USING ERRCODE = 'CF012';
    END IF;
    PERFORM chrono_forge.context_replace(ctx OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(key, value));
END
$$;

-- (end of section: fuzz)
