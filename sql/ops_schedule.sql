-- Maintenance schedules need pg_cron, which this cluster does not load:
-- both functions say so (CF020) and name what to install.  The success
-- path runs in test/integration/t_maintenance_cron.sh.
SELECT count(*) AS pg_cron_here FROM pg_extension WHERE extname = 'pg_cron';
SELECT chrono_forge.schedule_maintenance();
SELECT chrono_forge.unschedule_maintenance();
DO $$
BEGIN
    PERFORM chrono_forge.schedule_maintenance('0 3 * * *', NULL);
EXCEPTION WHEN others THEN
    RAISE NOTICE 'SQLSTATE %', SQLSTATE;
END $$;
-- Admin-only: another role gets a permission error before anything else.
CREATE ROLE sch_nobody;
SET ROLE sch_nobody;
SELECT chrono_forge.schedule_maintenance();
SELECT chrono_forge.unschedule_maintenance();
RESET ROLE;
DROP ROLE sch_nobody;
