-- Time per phase: each known sample stands for the time until the next sample.
SELECT server, phase, SUM(dt) AS seconds, COUNT(*) AS samples
FROM (
  SELECT server, phase,
    COALESCE(LEAD(t_rel_sec) OVER (PARTITION BY server ORDER BY ts) - t_rel_sec, interval_median_s, 0) AS dt
  FROM timeline
)
WHERE phase IS NOT NULL
GROUP BY server, phase
ORDER BY server, phase
