-- Time per phase: each sample stands for the time until the next sample. Time nobody
-- observed is NO_DATA: failed scrapes, and the part of a long interval between good
-- samples (>= ${scrape_gap_factor} x the median) beyond one median interval, so a phase
-- is never credited with an outage.
SELECT server, phase,
       SUM(CASE
             WHEN next_t IS NULL THEN COALESCE(interval_median_s, 0)
             WHEN phase <> 'NO_DATA' AND next_t - t_rel_sec >= ${scrape_gap_factor} * interval_median_s
               THEN interval_median_s
             ELSE next_t - t_rel_sec
           END) AS seconds,
       COUNT(*) AS samples
FROM sample_flags
WHERE phase IS NOT NULL
GROUP BY server, phase
UNION ALL
SELECT server, 'NO_DATA' AS phase,
       SUM(next_t - t_rel_sec - interval_median_s) AS seconds,
       CAST(0 AS BIGINT) AS samples
FROM sample_flags
WHERE phase <> 'NO_DATA' AND next_t - t_rel_sec >= ${scrape_gap_factor} * interval_median_s
GROUP BY server
ORDER BY server, phase
