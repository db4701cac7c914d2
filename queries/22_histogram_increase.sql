-- Session-wide histogram increase per (server, metric, bucket): reset-aware per series
-- (a decrease means the counter restarted from zero), then summed over engines. The
-- session quantiles come from these merged deltas, not from averaging interval quantiles.
SELECT server, metric, le, SUM(inc) AS count
FROM (
  SELECT server, metric, le,
    CASE
      WHEN prev IS NULL THEN 0
      WHEN cumulative_count >= prev THEN cumulative_count - prev
      ELSE cumulative_count
    END AS inc
  FROM (
    SELECT *, LAG(cumulative_count) OVER (
      PARTITION BY server, model_name, engine, metric, le ORDER BY ts) AS prev
    FROM histograms
  )
)
GROUP BY server, metric, le
ORDER BY server, metric, le
