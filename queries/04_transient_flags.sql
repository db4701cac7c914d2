-- Transient events, each where its predicate starts to hold after being false for
-- ${event_rearm_samples} samples:
--   TTFT_SPIKE / E2E_LATENCY_SPIKE  p95 >= ${spike_factor} x its rolling
--                                   ${baseline_window_s} s median (and above a floor)
--   KV_SATURATION                   KV usage crosses ${kv_saturated_pct} %
--   DECODE_THROUGHPUT_DROP          generation tokens/s <= ${decode_drop_share} x its rolling
--                                   median while running stays >= ${decode_drop_running_share}
--                                   x its rolling median, for ${debounce_samples} samples
--   PREEMPTION_BURST                preemptions/s >= ${preemption_burst_per_s}
--
-- This table holds each sample's predicates and re-arm windows, computed once (a CTE
-- read by five UNION branches would be computed five times); 13_transient_events.sql
-- turns them into events.
CREATE TABLE transient_flags AS
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
)
SELECT
  server, ts, t_rel_sec, running, waiting, kv_max_pct, preemptions_per_s,
  ttft_p95_s, ttft_p95_baseline_s, e2e_p95_s, e2e_p95_baseline_s, gen_tps, gen_tps_baseline,
  is_ttft_spike, is_e2e_spike, is_kv_saturated, is_decode_drop, is_preemption_burst,
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
ORDER BY server, ts
