-- Transient events, each where its predicate starts to hold after being false for
-- ${event_rearm_s} s:
--   TTFT_SPIKE / E2E_LATENCY_SPIKE  p95 >= ${spike_factor} x its rolling
--                                   ${baseline_window_s} s median (and above a floor)
--   KV_SATURATION                   KV usage crosses ${kv_saturated_pct} %
--   DECODE_THROUGHPUT_DROP          generation per running request <= ${decode_drop_share} x
--                                   its rolling median while running stays >=
--                                   ${decode_drop_running_share} x its rolling median, for
--                                   ${decode_drop_min_s} s; never on frozen telemetry
--                                   (02_timeline.sql: decode_drop)
--   PREEMPTION_BURST                >= ${preemption_burst_count} preemptions within
--                                   ${preemption_window_s} s
--   CLIENT_ABORT_SURGE              >= ${abort_surge_count} requests left without finishing
--                                   within ${abort_window_s} s (02_timeline.sql: abandoned)
--   KV_BLOCK_CHURN                  with the KV cache exhausted (kv_exhausted,
--                                   02_timeline.sql), KV blocks evicted in the interval lived a
--                                   median <= ${kv_churn_lifetime_s} s (vLLM's residency
--                                   histograms, --kv-cache-metrics; shortest-lived engine)
--
-- This table holds each sample's predicates and whether each fires (`rearm`: samples
-- without it covering ${event_rearm_s} s since it last held; consecutive samples with it
-- are one event however far apart; `rearm_held`: KV_SATURATION and PREEMPTION_BURST also
-- wait for the KV cache's exhaustion to end, TTFT_SPIKE for requests waiting through
-- intervals without a first token to end), computed once; 13_transient_events.sql turns
-- the firing ones into events.
CREATE TABLE transient_flags AS
WITH p AS (
  SELECT
    *,
    ttft_spike AS is_ttft_spike,
    -- (as ttft_spike, 02_timeline.sql: no spike without a baseline)
    (e2e_p95_counted_s >= ${spike_factor} * e2e_p95_baseline_s
     AND e2e_p95_counted_s >= ${e2e_spike_min_s}) IS TRUE AS is_e2e_spike,
    (kv_max_pct >= ${kv_saturated_pct}) IS TRUE AS is_kv_saturated,
    (scrape_ok AND decode_drop) IS TRUE AS is_decode_drop,
    (preemptions_recent >= ${preemption_burst_count} - 1e-9) IS TRUE AS is_preemption_burst,
    (abandoned_recent >= ${abort_surge_count} - 1e-9) IS TRUE AS is_abort_surge,
    (kv_evictions_sampled > 0
     AND kv_block_lifetime_p50_s <= ${kv_churn_lifetime_s}
     AND kv_exhausted) IS TRUE AS is_kv_churn
  FROM timeline
  WHERE scrape_ok
)
SELECT
  server, ts, t_rel_sec, running, waiting, kv_max_pct, preemptions_per_s, preemptions_recent,
  abandoned_recent, queue_time_mean_s, ttft_count, kv_block_lifetime_p50_s, kv_evictions_sampled,
  ttft_p95_s, ttft_p95_baseline_s, e2e_p95_s, e2e_p95_baseline_s, gen_tps, gen_tps_expected,
  computed_prompt_tps, itl_p95_s, itl_p95_baseline_s,
  -- A saturated engine's first tokens come seconds apart: at 0.5-2 s scrapes most
  -- intervals observe none, and they are no quiet (ttft_spike_held, 02_timeline.sql).
  rearm_held(is_ttft_spike, ttft_spike_held, t_rel_sec, ${event_rearm_s}) OVER w
    AS fire_ttft_spike,
  rearm(is_e2e_spike, t_rel_sec, ${event_rearm_s}) OVER w AS fire_e2e_spike,
  -- KV usage is a gauge: a saturated engine's saws between ~85 and 100 % as it preempts
  -- every few seconds, and reads 5-15 s apart can land in the troughs several times in a
  -- row. Preemptions are counted, not sampled: KV_SATURATION re-arms only once the KV
  -- cache was not exhausted either (kv_exhausted, 02_timeline.sql) for the quiet time.
  rearm_held(is_kv_saturated, kv_exhausted IS TRUE, t_rel_sec, ${event_rearm_s}) OVER w
    AS fire_kv_saturated,
  rearm(is_decode_drop, t_rel_sec, ${event_rearm_s}) OVER w AS fire_decode_drop,
  -- A burst is one while the KV cache stays exhausted: at 10 s scrapes the window holds
  -- one interval, and an interval of a long stretch with fewer preemptions is no quiet.
  rearm_held(is_preemption_burst, kv_exhausted IS TRUE, t_rel_sec, ${event_rearm_s}) OVER w
    AS fire_preemption_burst,
  rearm(is_abort_surge, t_rel_sec, ${event_rearm_s}) OVER w AS fire_abort_surge,
  rearm(is_kv_churn, t_rel_sec, ${event_rearm_s}) OVER w AS fire_kv_churn
FROM p
WINDOW w AS (PARTITION BY server ORDER BY ts)
ORDER BY server, ts
