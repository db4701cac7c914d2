-- phase_transition events: the debounced phase changed between consecutive known samples.
SELECT
  'phase_transition' AS type, server, ts, t_rel_sec,
  prev_phase AS from_phase, phase AS to_phase,
  kv_max_pct AS ev_kv_cache_usage_pct, running AS ev_requests_running,
  waiting AS ev_requests_waiting, ttft_p95_s AS ev_ttft_p95_s,
  preemptions_per_s AS ev_preemptions_per_s, gen_tps AS ev_generation_tokens_per_s
FROM sample_flags
WHERE phase IS NOT NULL AND prev_phase IS NOT NULL AND prev_phase <> phase
