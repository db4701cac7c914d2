-- Trouble episodes (sample_flags: KV exhausted, or queueing / slow first tokens with KV
-- to spare, for at least ${finding_min_s} s) with what the GPU, the API server
-- and the engine did meanwhile: the doctor's bottleneck call is made per episode from
-- these (KV-bound, compute-bound, outside the GPU, or not enough telemetry).
WITH troubled AS (
  SELECT *, 'kv' AS trouble, kv_trouble_episode AS episode
  FROM sample_flags WHERE kv_trouble_episode IS NOT NULL
  UNION ALL
  SELECT *, 'load' AS trouble, load_trouble_episode AS episode
  FROM sample_flags WHERE load_trouble_episode IS NOT NULL
)
SELECT
  server,
  trouble,
  episode,
  MIN(ts) AS start_ts,
  MAX(COALESCE(next_ts, ts)) AS end_ts,
  MAX(COALESCE(next_t, t_rel_sec)) - MIN(t_rel_sec) AS duration_s,
  COUNT(*) AS samples,
  COUNT(gpu_util_pct) AS gpu_samples,
  AVG(gpu_util_pct) AS gpu_util_avg_pct,
  COUNT(gpu_sm_active_pct) AS sm_samples,
  AVG(gpu_sm_active_pct) AS gpu_sm_active_avg_pct,
  AVG(gpu_mem_used_pct) AS gpu_mem_used_avg_pct,
  COUNT(api_cpu_util_pct) AS api_cpu_samples,
  AVG(api_cpu_util_pct) AS api_cpu_avg_pct,
  MAX(api_cpu_util_pct) AS api_cpu_max_pct,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY kv_max_pct) AS kv_p95_pct,
  MAX(kv_max_pct) AS kv_max_pct,
  SUM(COALESCE(preemptions_per_s, 0) * COALESCE(interval_s, 0)) AS preemptions,
  AVG(running) AS running_avg,
  MAX(waiting) AS waiting_max,
  MAX(ttft_p95_s) AS ttft_p95_max_s,
  AVG(gen_tps) AS gen_tps_avg,
  AVG(prompt_tps) AS prompt_tps_avg
FROM troubled
GROUP BY server, trouble, episode
ORDER BY server, start_ts
