-- chrono_forge.now() follows the transaction clock, or fake_now when set.
SELECT chrono_forge.now() = now() AS real_clock;
SET chrono_forge.fake_now = '2030-01-01 12:00:00+00';
SELECT chrono_forge.now() AT TIME ZONE 'UTC' AS fake;
BEGIN;
SELECT pg_sleep(0.01);
SELECT chrono_forge.now() = '2030-01-01 12:00:00+00' AS frozen;
COMMIT;
-- An invalid timestamp is refused and leaves the setting alone.
SET chrono_forge.fake_now = 'not a time';
SHOW chrono_forge.fake_now;
RESET chrono_forge.fake_now;
SELECT chrono_forge.now() = now() AS real_again;
-- Only superusers may travel in time.
CREATE ROLE cf_clock_user;
SET ROLE cf_clock_user;
SET chrono_forge.fake_now = '2030-01-01';
RESET ROLE;
DROP ROLE cf_clock_user;
