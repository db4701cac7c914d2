-- condition_change events: a (debounced) condition started or ended
-- (condition_marks, 05_condition_marks.sql).
SELECT
  'condition_change' AS type, server, ts, t_rel_sec, condition,
  change AS state, metric, metric_value AS value
FROM condition_marks
WHERE change IS NOT NULL
