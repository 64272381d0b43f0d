-- Cron expressions: the ticks they denote (UTC minutes), and bad input.
SET TimeZone = 'UTC';
SELECT e, chrono_forge.cron_prev(e, '2030-01-15 12:34:56+00') AS prev,
       chrono_forge.cron_next(e, '2030-01-15 12:34:56+00') AS next
  FROM (VALUES ('* * * * *'), ('*/15 * * * *'), ('0 3 * * *'), ('30 2-4/2 * * *'),
               ('0 0 1 * *'), ('0 0 * * mon-fri'), ('0 12 * feb,mar sun'),
               ('0 0 31 * *'), ('0 0 29 2 *'), ('5 0 * * 7'), ('10/20 * * * *'),
               ('@hourly'), ('@daily'), ('@weekly'), ('@monthly'), ('@yearly'), ('@annually'),
               ('  0   0  *  *  *  ')) v(e);
-- Day-of-month and day-of-week both restricted: either matches (cron's rule).
SELECT chrono_forge.cron_next('0 0 13 * fri', '2030-01-01 00:00+00') AS the_13th_or_a_friday,
       chrono_forge.cron_next('0 0 13 * *', '2030-01-01 00:00+00') AS the_13th;
-- Exactly on a tick: prev is that tick, next the one after.
SELECT chrono_forge.cron_prev('0 * * * *', '2030-01-01 05:00+00') AS prev,
       chrono_forge.cron_next('0 * * * *', '2030-01-01 05:00+00') AS next;
-- Walking the ticks of an hour one by one.
WITH RECURSIVE t(tick, n) AS (
    SELECT chrono_forge.cron_next('*/20 * * * *', '2030-01-01 00:00+00'), 1
    UNION ALL SELECT chrono_forge.cron_next('*/20 * * * *', tick), n + 1 FROM t WHERE n < 4)
SELECT tick FROM t;
\set VERBOSITY sqlstate
SELECT chrono_forge.cron_next('bogus', now());
SELECT chrono_forge.cron_next('* * * *', now());
SELECT chrono_forge.cron_next('* * * * * *', now());
SELECT chrono_forge.cron_next('60 * * * *', now());
SELECT chrono_forge.cron_next('* 24 * * *', now());
SELECT chrono_forge.cron_next('* * 0 * *', now());
SELECT chrono_forge.cron_next('* * * 13 *', now());
SELECT chrono_forge.cron_next('* * * * 8', now());
SELECT chrono_forge.cron_next('5-1 * * * *', now());
SELECT chrono_forge.cron_next('*/0 * * * *', now());
SELECT chrono_forge.cron_next('1,,2 * * * *', now());
SELECT chrono_forge.cron_next('@reboot', now());
SELECT chrono_forge.cron_next('30 seconds', now());
SELECT chrono_forge.cron_next('0 0 30 2 *', now());
\set VERBOSITY default
SELECT chrono_forge.cron_next('0 0 30 2 *', now());
SELECT chrono_forge.cron_next('61 * * * *', now());
