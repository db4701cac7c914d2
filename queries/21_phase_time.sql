-- Time per phase: each known sample stands for the time until the next sample.
SELECT server, phase, SUM(COALESCE(next_t - t_rel_sec, interval_median_s, 0)) AS seconds,
       COUNT(*) AS samples
FROM sample_flags
WHERE phase IS NOT NULL
GROUP BY server, phase
ORDER BY server, phase
