-- condition_episode events: islands of an active condition (gaps-and-islands), merged when
-- separated by less than ${episode_merge_gap_s} s, kept when they last at least
-- ${episode_min_s} s. An island ends at the first sample where the condition is off.
WITH marked AS (
  SELECT
    *,
    LEAD(ts) OVER (PARTITION BY server, condition ORDER BY ts) AS next_ts,
    LEAD(t_rel_sec) OVER (PARTITION BY server, condition ORDER BY ts) AS next_t,
    CASE WHEN active IS DISTINCT FROM LAG(active) OVER (PARTITION BY server, condition ORDER BY ts)
         THEN 1 ELSE 0 END AS new_run
  FROM condition_samples
),
runs AS (
  SELECT *,
    SUM(new_run) OVER (PARTITION BY server, condition ORDER BY ts
                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS run_id
  FROM marked
),
islands AS (
  SELECT
    server, condition, run_id,
    MIN(ts) AS start_ts, MIN(t_rel_sec) AS start_t,
    MAX(COALESCE(next_ts, ts)) AS end_ts, MAX(COALESCE(next_t, t_rel_sec)) AS end_t,
    MAX(metric) AS metric,
    MAX(metric_value) AS peak_value,
    FIRST_VALUE(ts ORDER BY metric_value DESC NULLS LAST) AS peak_ts
  FROM runs
  WHERE active
  GROUP BY server, condition, run_id
),
grouped AS (
  SELECT *,
    SUM(CASE WHEN prev_end_t IS NULL OR start_t - prev_end_t > ${episode_merge_gap_s} THEN 1 ELSE 0 END)
      OVER (PARTITION BY server, condition ORDER BY start_t
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS grp
  FROM (
    SELECT *, LAG(end_t) OVER (PARTITION BY server, condition ORDER BY start_t) AS prev_end_t
    FROM islands
  )
)
SELECT
  'condition_episode' AS type, server,
  MIN(start_ts) AS ts, MIN(start_t) AS t_rel_sec, condition,
  MIN(start_ts) AS start_ts, MAX(end_ts) AS end_ts,
  MAX(end_t) - MIN(start_t) AS duration_sec,
  MAX(metric) AS peak_metric, MAX(peak_value) AS peak_value,
  FIRST_VALUE(peak_ts ORDER BY peak_value DESC NULLS LAST) AS peak_ts
FROM grouped
GROUP BY server, condition, grp
HAVING MAX(end_t) - MIN(start_t) >= ${episode_min_s}
