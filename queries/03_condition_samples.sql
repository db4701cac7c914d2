-- condition_samples: the four conditions in long format, each with the metric that is
-- its evidence (used for condition changes and episode peaks).
CREATE TABLE condition_samples AS
SELECT server, ts, t_rel_sec, 'PREFILL_PRESSURE' AS condition, prefill_pressure AS active,
       'prompt_tokens_per_s' AS metric, computed_prompt_tps AS metric_value
FROM timeline
UNION ALL
SELECT server, ts, t_rel_sec, 'HIGH_PROMPT_INGESTION', high_prompt_ingestion,
       'prompt_tokens_per_s', computed_prompt_tps
FROM timeline
UNION ALL
SELECT server, ts, t_rel_sec, 'TTFT_ELEVATED', ttft_elevated, 'ttft_p95_s', ttft_p95_s
FROM timeline
UNION ALL
SELECT server, ts, t_rel_sec, 'QUEUE_DELAY', queue_delay, 'requests_waiting', waiting
FROM timeline
ORDER BY server, condition, ts
