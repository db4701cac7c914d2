-- Transient events, each where its predicate starts to hold after being false for
-- ${event_rearm_samples} samples:
--   TTFT_SPIKE / E2E_LATENCY_SPIKE  p95 >= ${spike_factor} x its rolling
--                                   ${baseline_window_s} s median (and above a floor)
--   KV_SATURATION                   KV usage crosses ${kv_saturated_pct} %
--   DECODE_THROUGHPUT_DROP          generation tokens/s <= ${decode_drop_share} x its rolling
--                                   median while running stays >= ${decode_drop_running_share}
--                                   x its rolling median, for ${debounce_samples} samples
--   PREEMPTION_BURST                preemptions/s >= ${preemption_burst_per_s}
WITH p AS (
  SELECT
    *,
    ttft_spike AS is_ttft_spike,
    COALESCE(e2e_p95_s >= GREATEST(${spike_factor} * e2e_p95_baseline_s, ${e2e_spike_min_s}), false) AS is_e2e_spike,
    COALESCE(kv_max_pct >= ${kv_saturated_pct}, false) AS is_kv_saturated,
    -- A collapse is sustained: debounced like phases, so a blip of one or two samples
    -- (a short stall upstream) is not a drop.
    debounce(CASE WHEN gen_tps_baseline >= ${decode_drop_min_tokens_per_s}
      AND gen_tps <= ${decode_drop_share} * gen_tps_baseline
      AND running > 0 AND running >= ${decode_drop_running_share} * running_baseline
      THEN 'on' ELSE 'off' END, ${debounce_samples}) OVER (PARTITION BY server ORDER BY ts) = 'on'
      AS is_decode_drop,
    COALESCE(preemptions_per_s >= ${preemption_burst_per_s}, false) AS is_preemption_burst
  FROM timeline
  WHERE scrape_ok
),
e AS (
  SELECT
    *,
    MAX(CAST(is_ttft_spike AS INT)) OVER (PARTITION BY server ORDER BY ts
      ROWS BETWEEN ${event_rearm_samples} PRECEDING AND 1 PRECEDING) = 1 AS prev_ttft_spike,
    MAX(CAST(is_e2e_spike AS INT)) OVER (PARTITION BY server ORDER BY ts
      ROWS BETWEEN ${event_rearm_samples} PRECEDING AND 1 PRECEDING) = 1 AS prev_e2e_spike,
    MAX(CAST(is_kv_saturated AS INT)) OVER (PARTITION BY server ORDER BY ts
      ROWS BETWEEN ${event_rearm_samples} PRECEDING AND 1 PRECEDING) = 1 AS prev_kv_saturated,
    MAX(CAST(is_decode_drop AS INT)) OVER (PARTITION BY server ORDER BY ts
      ROWS BETWEEN ${event_rearm_samples} PRECEDING AND 1 PRECEDING) = 1 AS prev_decode_drop,
    MAX(CAST(is_preemption_burst AS INT)) OVER (PARTITION BY server ORDER BY ts
      ROWS BETWEEN ${event_rearm_samples} PRECEDING AND 1 PRECEDING) = 1 AS prev_preemption_burst
  FROM p
)
SELECT 'transient' AS type, server, ts, t_rel_sec, 'TTFT_SPIKE' AS event, 'ttft_p95_s' AS metric,
       ttft_p95_s AS value, ttft_p95_baseline_s AS baseline,
       running AS ev_requests_running, waiting AS ev_requests_waiting
FROM e WHERE is_ttft_spike AND NOT COALESCE(prev_ttft_spike, false)
UNION ALL
SELECT 'transient', server, ts, t_rel_sec, 'E2E_LATENCY_SPIKE', 'e2e_p95_s',
       e2e_p95_s, e2e_p95_baseline_s, running, waiting
FROM e WHERE is_e2e_spike AND NOT COALESCE(prev_e2e_spike, false)
UNION ALL
SELECT 'transient', server, ts, t_rel_sec, 'KV_SATURATION', 'kv_cache_usage_pct',
       kv_max_pct, ${kv_saturated_pct}, running, waiting
FROM e WHERE is_kv_saturated AND NOT COALESCE(prev_kv_saturated, false)
UNION ALL
SELECT 'transient', server, ts, t_rel_sec, 'DECODE_THROUGHPUT_DROP', 'generation_tokens_per_s',
       gen_tps, gen_tps_baseline, running, waiting
FROM e WHERE is_decode_drop AND NOT COALESCE(prev_decode_drop, false)
UNION ALL
SELECT 'transient', server, ts, t_rel_sec, 'PREEMPTION_BURST', 'preemptions_per_s',
       preemptions_per_s, ${preemption_burst_per_s}, running, waiting
FROM e WHERE is_preemption_burst AND NOT COALESCE(prev_preemption_burst, false)
