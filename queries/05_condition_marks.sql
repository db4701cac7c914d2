-- condition_marks: the samples where a condition changed or that belong to one of its
-- episodes, one row per (sample, condition), each with the metric that is the
-- condition's evidence (for condition_change values and episode peaks).
CREATE TABLE condition_marks AS
SELECT server, ts, t_rel_sec, next_ts, next_t, 'PREFILL_PRESSURE' AS condition,
       prefill_pressure_change AS change, prefill_pressure_episode AS episode,
       'prompt_tokens_per_s' AS metric, computed_prompt_tps AS metric_value
FROM sample_flags
WHERE prefill_pressure_change IS NOT NULL OR prefill_pressure_episode IS NOT NULL
UNION ALL
SELECT server, ts, t_rel_sec, next_ts, next_t, 'HIGH_PROMPT_INGESTION',
       high_prompt_ingestion_change, high_prompt_ingestion_episode,
       'prompt_tokens_per_s', computed_prompt_tps
FROM sample_flags
WHERE high_prompt_ingestion_change IS NOT NULL OR high_prompt_ingestion_episode IS NOT NULL
UNION ALL
SELECT server, ts, t_rel_sec, next_ts, next_t, 'TTFT_ELEVATED',
       ttft_elevated_change, ttft_elevated_episode, 'ttft_p95_s', ttft_p95_s
FROM sample_flags
WHERE ttft_elevated_change IS NOT NULL OR ttft_elevated_episode IS NOT NULL
UNION ALL
SELECT server, ts, t_rel_sec, next_ts, next_t, 'QUEUE_DELAY',
       queue_delay_change, queue_delay_episode, 'requests_waiting', waiting
FROM sample_flags
WHERE queue_delay_change IS NOT NULL OR queue_delay_episode IS NOT NULL
UNION ALL
SELECT server, ts, t_rel_sec, next_ts, next_t, 'ENGINE_STALLED',
       engine_stalled_change, engine_stalled_episode, 'requests_running', running
FROM sample_flags
WHERE engine_stalled_change IS NOT NULL OR engine_stalled_episode IS NOT NULL
