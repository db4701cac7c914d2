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
-- This table holds each sample's predicates and whether each fires (`rearm`: held on
-- none of the previous ${event_rearm_samples} samples), computed once; 13_transient_events.sql
-- turns the firing ones into events.
CREATE TABLE transient_flags AS
WITH p AS (
  SELECT
    *,
    ttft_spike AS is_ttft_spike,
    COALESCE(e2e_p95_s >= GREATEST(${spike_factor} * e2e_p95_baseline_s, ${e2e_spike_min_s}), false) AS is_e2e_spike,
    COALESCE(kv_max_pct >= ${kv_saturated_pct}, false) AS is_kv_saturated,
    -- A collapse is sustained: debounced like phases, so a blip of one or two samples
    -- (a short stall upstream) is not a drop.
    debounce(COALESCE(gen_tps_baseline >= ${decode_drop_min_tokens_per_s}
      AND gen_tps <= ${decode_drop_share} * gen_tps_baseline
      AND running > 0 AND running >= ${decode_drop_running_share} * running_baseline, false),
      ${debounce_samples}) OVER (PARTITION BY server ORDER BY ts) AS is_decode_drop,
    COALESCE(preemptions_per_s >= ${preemption_burst_per_s}, false) AS is_preemption_burst
  FROM timeline
  WHERE scrape_ok
)
SELECT
  server, ts, t_rel_sec, running, waiting, kv_max_pct, preemptions_per_s,
  ttft_p95_s, ttft_p95_baseline_s, e2e_p95_s, e2e_p95_baseline_s, gen_tps, gen_tps_baseline,
  rearm(is_ttft_spike, ${event_rearm_samples}) OVER w AS fire_ttft_spike,
  rearm(is_e2e_spike, ${event_rearm_samples}) OVER w AS fire_e2e_spike,
  rearm(is_kv_saturated, ${event_rearm_samples}) OVER w AS fire_kv_saturated,
  rearm(is_decode_drop, ${event_rearm_samples}) OVER w AS fire_decode_drop,
  rearm(is_preemption_burst, ${event_rearm_samples}) OVER w AS fire_preemption_burst
FROM p
WINDOW w AS (PARTITION BY server ORDER BY ts)
ORDER BY server, ts
