-- Per-server aggregates for summary.json and the doctor rules. An aggregate over some
-- samples says so with FILTER (a mask the aggregate reads) rather than a CASE inside it
-- (a copy of each argument with the other rows set to NULL): ~25 of them per server.
-- Medians keep the CASE: DataFusion's median with a FILTER allocated fresh memory per
-- batch (its system time ate the gain). The predicates several aggregates share are
-- defined once, below (the queue window, its KV-to-spare part, running at its peak, the
-- time a sample stands for), and evaluated once per sample.
WITH s AS (
  SELECT
    *,
    phase = 'QUEUE_PRESSURE' AS queueing,
    -- queueing with KV to spare (below ${kv_rising_pct} %)
    phase = 'QUEUE_PRESSURE' AND kv_max_pct < ${kv_rising_pct} AS queueing_kv_to_spare,
    -- running at its peak: within 10 %, as requests finish and start between scrapes;
    -- judged on the busiest engine (--max-num-seqs is per engine)
    running_busiest >= 0.9 * running_peak AS running_at_peak,
    COALESCE(interval_s, interval_median_s) AS span_s
  FROM timeline
)
SELECT
  server,
  MIN(ts) AS start_ts,
  MAX(ts) AS end_ts,
  MAX(t_rel_sec) - MIN(t_rel_sec) AS duration_s,
  COUNT(*) AS samples,
  COUNT(*) FILTER (WHERE scrape_ok IS NOT TRUE) AS failed_scrapes,
  MAX(engines) AS engines,
  MAX(interval_median_s) AS interval_median_s,
  AVG(kv_pct) AS kv_avg_pct,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY kv_pct) AS kv_p95_pct,
  MAX(kv_max_pct) AS kv_max_pct,
  MIN(kv_pct) AS kv_min_pct,
  AVG(running) AS running_avg,
  MAX(running) AS running_max,
  AVG(waiting) AS waiting_avg,
  MAX(waiting) AS waiting_max,
  AVG(gen_tps) AS gen_tps_avg,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY gen_tps) AS gen_tps_p95,
  AVG(prompt_tps) AS prompt_tps_avg,
  MAX(prompt_tps) AS prompt_tps_max,
  SUM(COALESCE(prompt_tps, 0) * COALESCE(interval_s, 0)) AS prompt_tokens,
  SUM(COALESCE(prompt_cached_tps, 0) * COALESCE(interval_s, 0)) AS prompt_tokens_cached,
  SUM(COALESCE(gen_tps, 0) * COALESCE(interval_s, 0)) AS generation_tokens,
  SUM(COALESCE(finished_per_s, 0) * COALESCE(interval_s, 0)) AS requests_finished,
  SUM(COALESCE(preemptions_per_s, 0) * COALESCE(interval_s, 0)) AS preemptions,
  MAX(preemptions_per_s) AS preemptions_peak_per_s,
  SUM(prefix_hit_rate_pct * prompt_tps * interval_s) / NULLIF(SUM(prompt_tps * interval_s) FILTER (WHERE prefix_hit_rate_pct IS NOT NULL), 0)
    AS prefix_hit_rate_pct,
  MAX(ttft_p95_s) AS ttft_p95_max_s,
  median(ttft_p95_s) AS ttft_p95_median_s,
  median(itl_p95_s) AS itl_p95_median_s,
  MAX(itl_p95_s) AS itl_p95_max_s,
  MAX(queue_time_mean_s) AS queue_time_mean_max_s,
  MAX(prompt_len_p95) AS prompt_len_p95_max,
  AVG(gpu_util_pct) AS gpu_util_avg_pct,
  AVG(gpu_sm_active_pct) AS gpu_sm_active_avg_pct,
  AVG(gpu_mem_used_pct) AS gpu_mem_used_avg_pct,
  COALESCE(SUM(span_s) FILTER (WHERE gpu_throttled), 0) AS gpu_throttled_s,
  COALESCE(SUM(span_s) FILTER (WHERE api_cpu_util_pct >= ${api_cpu_saturated_pct}), 0) AS api_cpu_saturated_s,
  -- Residency: sampled evictions while the KV cache was exhausted (kv_exhausted,
  -- 02_timeline.sql), and the blocks' median lifetime and idle time there.
  SUM(kv_evictions_sampled) AS kv_evictions_sampled,
  SUM(kv_evictions_sampled) FILTER (WHERE kv_exhausted) AS kv_evictions_sampled_exhausted,
  median(CASE WHEN kv_exhausted THEN kv_block_lifetime_p50_s END) AS kv_block_lifetime_p50_exhausted_s,
  median(CASE WHEN kv_exhausted THEN kv_block_idle_p50_s END) AS kv_block_idle_p50_exhausted_s,
  AVG(api_cpu_util_pct) AS api_cpu_util_avg_pct,
  MAX(api_cpu_util_pct) AS api_cpu_util_max_pct,
  -- KV held while nothing runs: vLLM counts only blocks of live requests, so this is
  -- zero on a healthy server. Judged per engine (idle_engine_kv_pct, 01_units.sql: a
  -- data-parallel engine that leaks while another serves is never "idle" as a whole)
  -- on samples that are idle themselves, not the debounced phase: a 1-2 s burst inside
  -- an idle stretch is not idle KV. The median, because one snapshot taken between a
  -- request's end and its blocks' release can read high.
  MAX(idle_engine_kv_pct) AS idle_kv_max_pct,
  MIN(idle_engine_kv_pct) AS idle_kv_min_pct,
  median(idle_engine_kv_pct) AS idle_kv_median_pct,
  COUNT(idle_engine_kv_pct) AS idle_samples,
  COALESCE(SUM(span_s) FILTER (WHERE idle_engine_kv_pct IS NOT NULL), 0) AS idle_s,
  -- ENGINE_STALLED time (frozen progress with work present) and the frozen engines'
  -- gauges at the freeze.
  COALESCE(SUM(span_s) FILTER (WHERE engine_stalled), 0) AS stalled_s,
  -- ...of which with every gauge frozen too: the engine core hung (not merely unable to
  -- schedule).
  COALESCE(SUM(span_s) FILTER (WHERE engine_stalled AND hung), 0) AS hung_s,
  COALESCE(SUM(span_s) FILTER (WHERE prefill_pressure), 0) AS prefill_pressure_s,
  -- ...its KV usage (busiest engine, time-weighted, where requests were running: a
  -- snapshot after the surge's requests left reads an empty cache) and worst counted
  -- TTFT there: vLLM admits a waiting request only when its KV blocks can be
  -- allocated, so surges that come with the cache near full queue for memory, not for
  -- the step's token budget.
  SUM(kv_max_pct * span_s) FILTER (WHERE prefill_pressure AND running > 0)
    / NULLIF(SUM(span_s) FILTER (WHERE prefill_pressure AND running > 0), 0)
    AS prefill_kv_avg_pct,
  MAX(ttft_p95_counted_s) FILTER (WHERE prefill_pressure) AS prefill_ttft_p95_max_s,
  MAX(computed_prompt_tps) FILTER (WHERE prefill_pressure) AS prefill_prompt_tps_max,
  MAX(frozen_running) FILTER (WHERE engine_stalled) AS stall_running_max,
  MAX(frozen_waiting) FILTER (WHERE engine_stalled) AS stall_waiting_max,
  MAX(frozen_kv_pct) FILTER (WHERE engine_stalled) AS stall_kv_max_pct,
  -- Time with at least one preemption in the trailing window: the KV cache ran out.
  COALESCE(SUM(span_s) FILTER (WHERE preemptions_recent >= 1), 0)
    AS preempting_s,
  MAX(preemptions_recent) AS preemptions_window_max,
  -- Requests waiting while the KV cache ran hot: waiting for capacity.
  COALESCE(SUM(span_s) FILTER (WHERE waiting >= ${queue_min_waiting} AND kv_max_pct >= ${kv_rising_pct}), 0) AS kv_wait_s,
  SUM(COALESCE(abandoned, 0)) AS requests_abandoned,
  -- Requests the API server turned away at admission (HTTP 503, vLLM >= 0.32's
  -- --max-num-queued-reqs / --max-num-queued-tokens): NULL where it does not count them.
  SUM(rejected_per_s * interval_s) AS requests_rejected,
  MIN(ts) FILTER (WHERE rejected_per_s > 0) AS rejected_start_ts,
  MAX(ts) FILTER (WHERE rejected_per_s > 0) AS rejected_end_ts,
  MAX(abandoned_recent) AS abandoned_window_max,
  COALESCE(SUM(span_s) FILTER (WHERE decode_drop), 0) AS decode_drop_s,
  COUNT(*) FILTER (WHERE scrape_ok AND counter_reset) AS counter_resets,
  -- The server gone at the end of the recording (SERVER_DOWN): seconds from its last
  -- successful scrape to the last sample, zero when the last scrape succeeded. (What it
  -- held then is the last SCRAPE_GAP's evidence, 14_data_quality_events.sql.)
  MAX(ts) FILTER (WHERE scrape_ok) AS last_ok_ts,
  MAX(t_rel_sec) - MAX(t_rel_sec) FILTER (WHERE scrape_ok) AS down_at_end_s,
  -- The KV-exhaustion window (kv_exhausted, 02_timeline.sql): its
  -- span and the KV share each running request held there (episode-local advice).
  MIN(ts) FILTER (WHERE kv_exhausted) AS exhausted_start_ts,
  MAX(ts) FILTER (WHERE kv_exhausted) AS exhausted_end_ts,
  median(CASE WHEN kv_exhausted AND running > 0 THEN kv_pct / running END)
    AS exhausted_kv_pct_per_running_median,
  -- The queue window (QUEUE_PRESSURE): why the queue grew. Running pinned at its peak
  -- with KV to spare is the sequence limit; KV near full or preemption is capacity.
  -- Running and KV of the busiest engine: the limit and the cache are per engine.
  MIN(ts) FILTER (WHERE queueing) AS queue_start_ts,
  MAX(ts) FILTER (WHERE queueing) AS queue_end_ts,
  AVG(CASE WHEN running_at_peak THEN 1.0 ELSE 0.0 END) FILTER (WHERE queueing)
    AS queue_running_at_peak_share,
  COALESCE(SUM(span_s) FILTER (WHERE queueing AND running_at_peak), 0)
    AS queue_running_at_peak_s,
  MAX(running_busiest) FILTER (WHERE queueing) AS queue_running_max,
  -- Queueing under PREFILL_PRESSURE, and with decode throughput dropped
  -- (DECODE_THROUGHPUT_DROP): the shares of the queue those may explain.
  COALESCE(SUM(span_s) FILTER (WHERE queueing AND prefill_pressure), 0) AS queue_prefill_s,
  COALESCE(SUM(span_s) FILTER (WHERE queueing AND decode_drop), 0) AS queue_decode_drop_s,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY CASE WHEN queueing THEN kv_max_pct END) AS queue_kv_p95_pct,
  MAX(kv_max_pct) FILTER (WHERE queueing) AS queue_kv_max_pct,
  -- The same for the queueing with KV to spare (below ${kv_rising_pct} %): what a KV
  -- exhaustion elsewhere in the session does not explain (a server can run out of
  -- sequence slots with KV to spare at one time and out of KV at another, under another
  -- workload).
  MIN(ts) FILTER (WHERE queueing_kv_to_spare) AS spare_kv_queue_start_ts,
  MAX(ts) FILTER (WHERE queueing_kv_to_spare) AS spare_kv_queue_end_ts,
  COALESCE(SUM(span_s) FILTER (WHERE queueing_kv_to_spare), 0)
    AS spare_kv_queue_s,
  MAX(waiting) FILTER (WHERE queueing_kv_to_spare) AS spare_kv_queue_waiting_max,
  AVG(CASE WHEN running_at_peak THEN 1.0 ELSE 0.0 END) FILTER (WHERE queueing_kv_to_spare)
    AS spare_kv_queue_running_at_peak_share,
  COALESCE(SUM(span_s) FILTER (WHERE queueing_kv_to_spare AND running_at_peak), 0)
    AS spare_kv_queue_running_at_peak_s,
  MAX(running_busiest) FILTER (WHERE queueing_kv_to_spare) AS spare_kv_queue_running_max,
  COALESCE(SUM(span_s) FILTER (WHERE queueing_kv_to_spare AND prefill_pressure), 0)
    AS spare_kv_queue_prefill_s,
  COALESCE(SUM(span_s) FILTER (WHERE queueing_kv_to_spare AND decode_drop), 0)
    AS spare_kv_queue_decode_drop_s,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY CASE WHEN queueing_kv_to_spare THEN kv_max_pct END)
    AS spare_kv_queue_kv_p95_pct,
  MAX(kv_max_pct) FILTER (WHERE queueing_kv_to_spare) AS spare_kv_queue_kv_max_pct,
  -- Tokens each running request holds at the worst moment, from KV usage and running.
  MAX(kv_pct / running) FILTER (WHERE running > 0) AS kv_pct_per_running_max,
  median(CASE WHEN running > 0 THEN kv_pct / running END) AS kv_pct_per_running_median
FROM s
GROUP BY server
ORDER BY server
