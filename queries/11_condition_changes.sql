-- condition_change events: a (debounced) condition started or ended.
SELECT
  'condition_change' AS type, server, ts, t_rel_sec, condition,
  CASE WHEN active THEN 'start' ELSE 'end' END AS state,
  metric, metric_value AS value
FROM (
  SELECT *, LAG(active) OVER (PARTITION BY server, condition ORDER BY ts) AS prev_active
  FROM condition_samples
  WHERE active IS NOT NULL
)
WHERE (prev_active IS NULL AND active) OR (prev_active IS NOT NULL AND prev_active <> active)
