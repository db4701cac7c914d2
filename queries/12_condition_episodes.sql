-- condition_episode events: one per kept episode of condition_marks
-- (03_sample_flags.sql says how episodes are built). An episode ends at the first
-- sample after it where the condition is no longer on; its peak is the evidence
-- metric's maximum (the earliest sample at that value).
SELECT
  'condition_episode' AS type, server,
  MIN(ts) AS ts, MIN(t_rel_sec) AS t_rel_sec, condition,
  MIN(ts) AS start_ts, MAX(COALESCE(next_ts, ts)) AS end_ts,
  MAX(COALESCE(next_t, t_rel_sec)) - MIN(t_rel_sec) AS duration_sec,
  MAX(metric) AS peak_metric, MAX(metric_value) AS peak_value,
  FIRST_VALUE(ts ORDER BY metric_value DESC NULLS LAST, ts) AS peak_ts
FROM condition_marks
WHERE episode IS NOT NULL
GROUP BY server, condition, episode
