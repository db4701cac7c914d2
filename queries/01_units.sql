-- units: one row per (server, ts). A data-parallel server is analysed as one unit:
-- request gauges and rates are summed over engines, KV usage is averaged with the most
-- loaded engine kept (kv_max_pct drives the phases, as vLLM's KV dashboard does), and
-- latency quantiles take the worst engine. Progress and idleness are judged per engine
-- first (frozen_engines, hung_engines, idle_engine_kv_pct), then counted.
CREATE TABLE units AS
WITH engine_rows AS (
  SELECT
    *,
    -- Frozen: the engine had work and its progress counters all stood still over the
    -- interval (NULL, unknown, counts as not frozen below).
    (scrape_ok AND interval_s IS NOT NULL
     AND (COALESCE(requests_running, 0) > 0 OR COALESCE(requests_waiting, 0) > 0)
     AND (generation_tokens_per_s IS NOT NULL OR engine_steps_per_s IS NOT NULL)
     AND COALESCE(generation_tokens_per_s, 0) = 0 AND COALESCE(prompt_tokens_per_s, 0) = 0
     AND COALESCE(requests_finished_per_s, 0) = 0 AND COALESCE(engine_steps_per_s, 0) = 0)
    AS frozen,
    -- Every gauge of the engine as in its previous sample: vLLM V1's hung engine core
    -- publishes nothing, so its gauges freeze too; an engine that is alive but schedules
    -- nothing (its KV cache held by leaked blocks) still moves waiting.
    (unchanged(requests_running) OVER e AND unchanged(requests_waiting) OVER e
     AND unchanged(kv_cache_usage_pct) OVER e) AS gauges_same,
    -- Idle: nothing running or waiting on the engine and no tokens coming out (a source
    -- without request counts, e.g. profilemate, only with no KV held). The IDLE phase
    -- is every engine idle; each engine has its own KV cache and gauge, and an idle
    -- one must read ~0 % whatever the others serve (KV_LEAK).
    (scrape_ok
     AND COALESCE(requests_running, CASE WHEN kv_cache_usage_pct > 0 THEN 1 END, 0) = 0
     AND COALESCE(requests_waiting, 0) = 0
     AND COALESCE(generation_tokens_per_s, 0) < ${idle_tokens_per_s}) AS idle_engine
  FROM samples
  WINDOW e AS (PARTITION BY server, engine ORDER BY ts)
)
SELECT
  server,
  ts,
  MIN(t_rel_sec) AS t_rel_sec,
  BOOL_AND(scrape_ok) AS scrape_ok,
  MAX(scrape_error) AS scrape_error,
  BOOL_OR(counter_reset) AS counter_reset,
  MAX(interval_s) AS interval_s,
  AVG(kv_cache_usage_pct) AS kv_pct,
  MAX(kv_cache_usage_pct) AS kv_max_pct,
  CAST(SUM(requests_running) AS DOUBLE) AS running,
  -- The most loaded engine's running: --max-num-seqs is per engine, and an uneven
  -- router pins one engine at it while the sum stays below the sum of the limits.
  CAST(MAX(requests_running) AS DOUBLE) AS running_busiest,
  CAST(SUM(requests_waiting) AS DOUBLE) AS waiting,
  SUM(preemptions_per_s) AS preemptions_per_s,
  SUM(prompt_tokens_per_s) AS prompt_tps,
  SUM(prompt_tokens_cached_per_s) AS prompt_cached_tps,
  SUM(generation_tokens_per_s) AS gen_tps,
  SUM(requests_finished_per_s) AS finished_per_s,
  SUM(requests_abandoned_per_s) AS abandoned_per_s,
  -- Turned away at admission (HTTP 503): the API server's count, on one engine's row.
  SUM(requests_rejected_per_s) AS rejected_per_s,
  AVG(prefix_cache_hit_rate_pct) AS prefix_hit_rate_pct,
  MAX(ttft_p50_s) AS ttft_p50_s,
  MAX(ttft_p95_s) AS ttft_p95_s,
  SUM(ttft_count) AS ttft_count,
  MAX(ttft_p95_floor_s) AS ttft_p95_floor_s,
  MAX(e2e_p95_s) AS e2e_p95_s,
  SUM(e2e_count) AS e2e_count,
  MAX(e2e_p95_floor_s) AS e2e_p95_floor_s,
  MAX(itl_p50_s) AS itl_p50_s,
  MAX(itl_p95_s) AS itl_p95_s,
  MAX(queue_time_mean_s) AS queue_time_mean_s,
  MAX(queue_time_p95_s) AS queue_time_p95_s,
  MAX(iteration_tokens_p50) AS iteration_tokens_p50,
  MAX(prompt_len_p95) AS prompt_len_p95,
  AVG(gpu_util_pct) AS gpu_util_pct,
  AVG(gpu_sm_active_pct) AS gpu_sm_active_pct,
  AVG(gpu_mem_used_pct) AS gpu_mem_used_pct,
  -- Throttling that holds a GPU back, any engine: clock-event bits 236 = SW power cap
  -- (0x4) | HW slowdown (0x8) | SW thermal (0x20) | HW thermal (0x40) | HW power brake
  -- (0x80); GPU idle (0x1), application clocks (0x2), sync boost (0x10) and display
  -- clocks (0x100) are not throttling. (01_units_single_engine.sql: the same mask.)
  BOOL_OR((gpu_throttle & 236) <> 0) AS gpu_throttled,
  -- Residency (--kv-cache-metrics): sampled evictions summed, the shortest median
  -- lifetime and idle time of any engine (the engine that churns).
  SUM(kv_evictions_sampled) AS kv_evictions_sampled,
  MIN(kv_block_lifetime_p50_s) AS kv_block_lifetime_p50_s,
  MIN(kv_block_idle_p50_s) AS kv_block_idle_p50_s,
  -- One API server process for all engines: the same value on every engine row.
  MAX(api_cpu_util_pct) AS api_cpu_util_pct,
  -- Engines judged one by one (one frozen engine of several disappears in a sum).
  SUM(CASE WHEN frozen THEN 1 ELSE 0 END) AS frozen_engines,
  SUM(CASE WHEN frozen AND gauges_same THEN 1 ELSE 0 END) AS hung_engines,
  -- The frozen engines' own gauges (the others' would hide in a sum).
  CAST(SUM(CASE WHEN frozen THEN requests_running END) AS DOUBLE) AS frozen_running,
  CAST(SUM(CASE WHEN frozen THEN requests_waiting END) AS DOUBLE) AS frozen_waiting,
  MAX(CASE WHEN frozen THEN kv_cache_usage_pct END) AS frozen_kv_pct,
  -- The KV the idle engines hold (the highest: one engine's leak would hide in an
  -- average with the others, and behind the others' load).
  MAX(CASE WHEN idle_engine THEN kv_cache_usage_pct END) AS idle_engine_kv_pct,
  -- The IDLE phase (02_timeline.sql) is every engine idle.
  SUM(CASE WHEN idle_engine THEN 1 ELSE 0 END) AS idle_engines,
  SUM(engine_steps_per_s) AS steps_per_s,
  COUNT(*) AS engines
FROM engine_rows
GROUP BY server, ts
ORDER BY server, ts
