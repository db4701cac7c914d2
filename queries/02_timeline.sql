-- timeline: units plus rolling baselines, the phase of every sample and the conditions.
-- Time is in seconds, never in samples: a phase or condition must hold
-- ${debounce_s} s (and ${debounce_min_samples} samples) before it replaces the previous
-- one, so the same incident reads the same at a 0.5 s or a 15 s scrape interval. Short
-- runs flickering among other labels for that long, without the stable one, read as the
-- label that held longest among them (udf.rs, `debounce`).
--
-- Phases, first match wins (CONTRACT.md):
--   NO_DATA           the scrape failed: nothing is known, nothing is carried across
--   IDLE              nothing running or waiting, no tokens produced, on every engine
--   SATURATED         KV usage (most loaded engine) >= ${kv_saturated_pct} %
--   QUEUE_PRESSURE    requests waiting in the scheduler
--   KV_PRESSURE_RISING KV usage >= ${kv_rising_pct} %
--   HEALTHY           active workload without visible pressure
--
-- Conditions (concurrent with the phase; off across failed scrapes):
--   PREFILL_PRESSURE      uncached prompt tokens are >= ${prefill_token_share} of the
--                         engine's tokens and TTFT p95 is a spike over its baseline
--   HIGH_PROMPT_INGESTION running >= ${high_running_share} of the session peak and prompt
--                         tokens/s >= ${high_ingestion_factor} x the session median
--   TTFT_ELEVATED         TTFT p95 >= ${ttft_elevated_s} s (the last observed while
--                         requests wait through intervals without a first token)
--   QUEUE_DELAY           waiting >= ${queue_min_waiting} or mean queue time >= ${queue_delay_s} s
--   ENGINE_STALLED        an engine with running or waiting requests moved none of its
--                         progress counters (prompt and generation tokens, finished
--                         requests, engine steps) for >= ${stall_min_s} s: vLLM V1's API
--                         server keeps answering /metrics with every engine series frozen
--                         when the engine core hangs
CREATE TABLE timeline AS
WITH counted AS (
  -- An interval quantile from fewer than ${quantile_min_count} observations is replaced by
  -- what the buckets prove (the lower edge of the bucket holding the p95 rank): one
  -- 1.01 s TTFT in the (1, 2.5] bucket reads as p95 2.4 s but proves only "> 1 s". These
  -- drive spikes, TTFT_ELEVATED and prefill pressure. Sessions without counts keep their
  -- values.
  SELECT
    u.*,
    CASE WHEN COALESCE(ttft_count, ${quantile_min_count}) >= ${quantile_min_count}
         THEN ttft_p95_s ELSE ttft_p95_floor_s END AS ttft_p95_counted_s,
    CASE WHEN COALESCE(e2e_count, ${quantile_min_count}) >= ${quantile_min_count}
         THEN e2e_p95_s ELSE e2e_p95_floor_s END AS e2e_p95_counted_s
  FROM units u
),
base AS (
  -- One window pass per server: the trailing baselines (window w) and the whole-server
  -- statistics (window whole: same partitioning and order, so DataFusion evaluates both
  -- in one stage; an unbounded frame is computed once per server).
  SELECT
    u.*,
    rolling_median(ttft_p95_counted_s, t_rel_sec, ${baseline_window_s}) OVER w AS ttft_p95_baseline_s,
    rolling_median(e2e_p95_counted_s, t_rel_sec, ${baseline_window_s}) OVER w AS e2e_p95_baseline_s,
    -- What each running request generated (what an engine step delivers per sequence):
    -- the median of the ratio, not the ratio of two medians. Requests in lockstep (same
    -- prompt and output lengths) finish together, so snapshots of running read 0 or the
    -- whole batch while generation goes on: the running median could then sit anywhere
    -- (2 against a batch of 16), and the medians' ratio with it (294 tokens/s per
    -- request where each made 52-127). Intervals that read no one running have no
    -- ratio.
    rolling_median(gen_tps / NULLIF(running, 0), t_rel_sec, ${baseline_window_s}) OVER w
      AS gen_per_running_baseline,
    rolling_median(running, t_rel_sec, ${baseline_window_s}) OVER w AS running_baseline,
    rolling_median(itl_p95_s, t_rel_sec, ${baseline_window_s}) OVER w AS itl_p95_baseline_s,
    -- TTFT p95 as last observed while requests wait: an interval in which no request got
    -- its first token has no TTFT of its own (NULL), yet the requests waiting through it
    -- had none either, so the last observation stands (a saturated engine at 0.5 s
    -- scrapes sees a first token every few seconds; at 15 s in every interval). Not
    -- carried over an interval with nothing waiting, nor over a failed scrape.
    hold_while(ttft_p95_counted_s, scrape_ok AND waiting > 0) OVER w AS ttft_p95_held_s,
    -- The smaller batch of the interval's two ends (this sample and the one before):
    -- rates are averages over the interval, gauges are read at its end, and at a 10 s
    -- scrape the interval in which 64 requests joined 2 averaged the 2's generation, a
    -- drop per request that never was if divided by 64. (LEAST skips an unknown start.)
    LEAST(running, LAG(running) OVER w) AS batch_low,
    -- Preemptions counted over the trailing window (a count over time, not per sample).
    rolling_sum(preemptions_per_s * interval_s, t_rel_sec, ${preemption_window_s}) OVER w
      AS preemptions_recent,
    -- Requests that left without finishing (clients gave up), counted over the window:
    -- the adapter's balancing books (requests_abandoned_per_s).
    abandoned_per_s * interval_s AS abandoned,
    rolling_sum(abandoned_per_s * interval_s, t_rel_sec, ${abort_window_s}) OVER w
      AS abandoned_recent,
    -- The busiest engine's peak (per engine, as --max-num-seqs is).
    MAX(running_busiest) OVER whole AS running_peak,
    median(CASE WHEN prompt_tps > 0 THEN prompt_tps END) OVER whole AS prompt_tps_median,
    median(interval_s) OVER whole AS interval_median_s,
    GREATEST(COALESCE(prompt_tps, 0) - COALESCE(prompt_cached_tps, 0), 0) AS computed_prompt_tps,
    CASE WHEN scrape_ok THEN frozen_engines > 0 END AS frozen,
    -- ...of which with every gauge of the engine frozen too: its core hung (01_units.sql).
    CASE WHEN scrape_ok THEN hung_engines > 0 END AS hung,
    CASE
      WHEN NOT scrape_ok THEN NULL
      -- Every engine idle (idle_engine, 01_units.sql).
      WHEN idle_engines = engines THEN 'IDLE'
      WHEN kv_max_pct >= ${kv_saturated_pct} THEN 'SATURATED'
      WHEN waiting >= ${queue_min_waiting} THEN 'QUEUE_PRESSURE'
      WHEN kv_max_pct >= ${kv_rising_pct} THEN 'KV_PRESSURE_RISING'
      ELSE 'HEALTHY'
    END AS raw_phase
  FROM counted u
  WINDOW
    w AS (PARTITION BY server ORDER BY ts),
    whole AS (PARTITION BY server ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
),
spikes AS (
  SELECT
    *,
    -- The TTFT spike predicate, defined once, on the TTFT as last observed while
    -- requests wait (ttft_p95_held_s: a spike still going through intervals without a
    -- first token; the TTFT_SPIKE event re-arms only after it ends, not on intervals
    -- that observed nothing). A spike is a multiple of a baseline: with nothing observed
    -- in the trailing window (the first requests after idle; a server's first minute at
    -- a 15 s interval) there is none, and no spike.
    (ttft_p95_held_s >= ${spike_factor} * ttft_p95_baseline_s
     AND ttft_p95_held_s >= ${ttft_spike_min_s}) IS TRUE AS ttft_spike_held,
    -- The KV cache exhausted, defined once: saturated, or preemption in the trailing
    -- window (NULL when neither is known). Trouble episodes (03_sample_flags.sql), KV
    -- block churn (04_transient_flags.sql) and the summary's exhaustion window
    -- (20_server_summary.sql) read it.
    kv_max_pct >= ${kv_saturated_pct} OR preemptions_recent >= 1 AS kv_exhausted,
    -- Generation this interval's batch (its smaller end) made before: the per-request
    -- median times the batch. DECODE_THROUGHPUT_DROP compares gen_tps with it.
    gen_per_running_baseline * batch_low AS gen_tps_expected
  FROM base
),
own_spikes AS (
  -- An interval's own TTFT spike: the predicate where the interval observed a TTFT of
  -- its own (there the held TTFT is that one). PREFILL_PRESSURE below and the
  -- TTFT_SPIKE event (13_transient_events.sql) both use it.
  SELECT *, ttft_spike_held AND ttft_p95_counted_s IS NOT NULL AS ttft_spike
  FROM spikes
),
raw_conditions AS (
  -- (`x IS TRUE`, not COALESCE(x, false): the same value, and DataFusion evaluates it
  -- once, where the COALESCE is rewritten to `x IS NOT NULL AND x`.)
  SELECT
    *,
    CASE WHEN NOT scrape_ok THEN NULL ELSE
      (running > 0 AND computed_prompt_tps > 0
        AND computed_prompt_tps >= ${prefill_token_share} * (computed_prompt_tps + COALESCE(gen_tps, 0))
        AND ttft_spike) IS TRUE
    END AS raw_prefill_pressure,
    CASE WHEN NOT scrape_ok THEN NULL ELSE
      (running_peak > 0 AND running_busiest >= ${high_running_share} * running_peak
        AND computed_prompt_tps >= ${high_ingestion_factor} * prompt_tps_median) IS TRUE
    END AS raw_high_prompt_ingestion,
    CASE WHEN NOT scrape_ok THEN NULL ELSE (ttft_p95_held_s >= ${ttft_elevated_s}) IS TRUE END
      AS raw_ttft_elevated,
    CASE WHEN NOT scrape_ok THEN NULL ELSE
      (waiting >= ${queue_min_waiting} OR queue_time_mean_s >= ${queue_delay_s}) IS TRUE
    END AS raw_queue_delay
  FROM own_spikes
),
smoothed AS (
  SELECT
    *,
    debounce(raw_phase, t_rel_sec, ${debounce_s}, ${debounce_min_samples}) OVER w AS stable_phase,
    debounce(raw_prefill_pressure, t_rel_sec, ${debounce_s}, ${debounce_min_samples}) OVER w AS d_prefill_pressure,
    debounce(raw_high_prompt_ingestion, t_rel_sec, ${debounce_s}, ${debounce_min_samples}) OVER w AS d_high_prompt_ingestion,
    debounce(raw_ttft_elevated, t_rel_sec, ${debounce_s}, ${debounce_min_samples}) OVER w AS d_ttft_elevated,
    debounce(raw_queue_delay, t_rel_sec, ${debounce_s}, ${debounce_min_samples}) OVER w AS d_queue_delay,
    sustained(frozen, t_rel_sec, ${stall_min_s}, 1) OVER w AS d_engine_stalled,
    -- Decode throughput drop (DECODE_THROUGHPUT_DROP, 04_transient_flags.sql): generation
    -- per running request at or below ${decode_drop_share} x its rolling median while the
    -- batch holds through the interval (each step got slower; both judged on batch_low:
    -- a batch that changed within the interval proves no slower step), sustained in
    -- time, never on frozen telemetry
    -- (no progress at all is a stall, not slower steps).
    sustained((gen_tps_expected >= ${decode_drop_min_tokens_per_s}
      AND running > 0 AND batch_low >= ${decode_drop_running_share} * running_baseline
      -- generation per running request (what each engine step delivers, whatever the
      -- batch size: a 5x slower step with a batch grown 5x keeps gen_tps but not this)
      -- against its rolling median, i.e. generation against what this batch made before
      AND gen_tps <= ${decode_drop_share} * gen_tps_expected
      -- ...and each step did get slower: the time between a request's tokens rose by
      -- the factor its generation fell (where vLLM's ITL histogram says). Rates are
      -- interval averages and running is read at the interval's ends: under bursts
      -- shorter than the interval (32 prompts every 8 s, scraped every 15 s) the
      -- engine idled between them, generation averaged over the idle time, and running
      -- read mid-burst at both ends, while the steps kept their pace.
      AND (itl_p95_s IS NULL OR itl_p95_baseline_s IS NULL
           OR itl_p95_s * ${decode_drop_share} >= itl_p95_baseline_s)
      AND NOT frozen) IS TRUE,
      t_rel_sec, ${decode_drop_min_s}, 1) OVER w AS decode_drop
  FROM raw_conditions
  WINDOW w AS (PARTITION BY server ORDER BY ts)
)
SELECT
  *,
  CASE WHEN scrape_ok THEN stable_phase ELSE 'NO_DATA' END AS phase,
  d_prefill_pressure IS TRUE AS prefill_pressure,
  d_high_prompt_ingestion IS TRUE AS high_prompt_ingestion,
  d_ttft_elevated IS TRUE AS ttft_elevated,
  d_queue_delay IS TRUE AS queue_delay,
  d_engine_stalled IS TRUE AS engine_stalled
FROM smoothed
ORDER BY server, ts
