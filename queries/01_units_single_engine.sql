-- units, when every (server, ts) has one row (one engine per server): the same columns
-- as 01_units.sql, where each aggregate of one row is the row's value. Chosen by the
-- analyzer after checking the rows; a test keeps the two files equivalent.
CREATE TABLE units AS
WITH engine_rows AS (
  SELECT
    *,
    (scrape_ok AND interval_s IS NOT NULL
     AND (COALESCE(requests_running, 0) > 0 OR COALESCE(requests_waiting, 0) > 0)
     AND (generation_tokens_per_s IS NOT NULL OR engine_steps_per_s IS NOT NULL)
     AND COALESCE(generation_tokens_per_s, 0) = 0 AND COALESCE(prompt_tokens_per_s, 0) = 0
     AND COALESCE(requests_finished_per_s, 0) = 0 AND COALESCE(engine_steps_per_s, 0) = 0)
    AS frozen,
    (unchanged(requests_running) OVER e AND unchanged(requests_waiting) OVER e
     AND unchanged(kv_cache_usage_pct) OVER e) AS gauges_same,
    (scrape_ok
     AND COALESCE(requests_running, CASE WHEN kv_cache_usage_pct > 0 THEN 1 END, 0) = 0
     AND COALESCE(requests_waiting, 0) = 0
     AND COALESCE(generation_tokens_per_s, 0) < ${idle_tokens_per_s}) AS idle_engine
  FROM samples
  -- (One engine per server here: the server's rows are the engine's, in the order the
  -- chunk comes in.)
  WINDOW e AS (PARTITION BY server ORDER BY ts)
)
SELECT
  server,
  ts,
  t_rel_sec,
  scrape_ok,
  scrape_error,
  counter_reset,
  interval_s,
  kv_cache_usage_pct AS kv_pct,
  kv_cache_usage_pct AS kv_max_pct,
  CAST(requests_running AS DOUBLE) AS running,
  CAST(requests_running AS DOUBLE) AS running_busiest,
  CAST(requests_waiting AS DOUBLE) AS waiting,
  preemptions_per_s,
  prompt_tokens_per_s AS prompt_tps,
  prompt_tokens_cached_per_s AS prompt_cached_tps,
  generation_tokens_per_s AS gen_tps,
  requests_finished_per_s AS finished_per_s,
  requests_abandoned_per_s AS abandoned_per_s,
  requests_rejected_per_s AS rejected_per_s,
  prefix_cache_hit_rate_pct AS prefix_hit_rate_pct,
  ttft_p50_s,
  ttft_p95_s,
  ttft_count,
  ttft_p95_floor_s,
  e2e_p95_s,
  e2e_count,
  e2e_p95_floor_s,
  itl_p50_s,
  itl_p95_s,
  queue_time_mean_s,
  queue_time_p95_s,
  iteration_tokens_p50,
  prompt_len_p95,
  gpu_util_pct,
  gpu_sm_active_pct,
  gpu_mem_used_pct,
  (gpu_throttle & 236) <> 0 AS gpu_throttled,
  kv_evictions_sampled,
  kv_block_lifetime_p50_s,
  kv_block_idle_p50_s,
  api_cpu_util_pct,
  CASE WHEN frozen THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END AS frozen_engines,
  CASE WHEN frozen AND gauges_same THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END
    AS hung_engines,
  CASE WHEN frozen THEN CAST(requests_running AS DOUBLE) END AS frozen_running,
  CASE WHEN frozen THEN CAST(requests_waiting AS DOUBLE) END AS frozen_waiting,
  CASE WHEN frozen THEN kv_cache_usage_pct END AS frozen_kv_pct,
  CASE WHEN idle_engine THEN kv_cache_usage_pct END AS idle_engine_kv_pct,
  CASE WHEN idle_engine THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END AS idle_engines,
  engine_steps_per_s AS steps_per_s,
  CAST(1 AS BIGINT) AS engines
FROM engine_rows
ORDER BY server, ts
