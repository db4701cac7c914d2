-- Transient events: the samples where a predicate of transient_flags
-- (04_transient_flags.sql) fires.
-- A TTFT spike's load: running, waiting, the interval's mean queue time, the KV usage,
-- the uncached prompt tokens' share of the engine's tokens (as PREFILL_PRESSURE's,
-- 02_timeline.sql) and the inter-token latency against its rolling baseline (slower
-- engine steps). TTFT = time queued + prefill: TTFT_INSTABILITY tells a spike the
-- engine explains from one it does not, spike by spike.
SELECT 'transient' AS type, server, ts, t_rel_sec, 'TTFT_SPIKE' AS event, 'ttft_p95_s' AS metric,
       ttft_p95_s AS value, ttft_p95_baseline_s AS baseline,
       running AS ev_requests_running, waiting AS ev_requests_waiting,
       CAST(NULL AS DOUBLE) AS ev_ttft_p95_s, queue_time_mean_s AS ev_queue_time_mean_s,
       -- How many first tokens the interval's p95 rests on (below quantile_min_count the
       -- value is the bucket floor, 02_timeline.sql).
       CAST(ttft_count AS DOUBLE) AS ev_first_tokens,
       CAST(NULL AS DOUBLE) AS ev_sampled_evictions,
       kv_max_pct AS ev_kv_cache_usage_pct,
       computed_prompt_tps / NULLIF(computed_prompt_tps + COALESCE(gen_tps, 0), 0)
         AS ev_prefill_token_share,
       itl_p95_s AS ev_itl_p95_s, itl_p95_baseline_s AS ev_itl_p95_baseline_s
FROM transient_flags WHERE fire_ttft_spike
UNION ALL
SELECT 'transient', server, ts, t_rel_sec, 'E2E_LATENCY_SPIKE', 'e2e_p95_s',
       e2e_p95_s, e2e_p95_baseline_s, running, waiting, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM transient_flags WHERE fire_e2e_spike
UNION ALL
SELECT 'transient', server, ts, t_rel_sec, 'KV_SATURATION', 'kv_cache_usage_pct',
       kv_max_pct, ${kv_saturated_pct}, running, waiting, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM transient_flags WHERE fire_kv_saturated
UNION ALL
SELECT 'transient', server, ts, t_rel_sec, 'DECODE_THROUGHPUT_DROP', 'generation_tokens_per_s',
       gen_tps, gen_tps_expected, running, waiting, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM transient_flags WHERE fire_decode_drop
UNION ALL
SELECT 'transient', server, ts, t_rel_sec, 'PREEMPTION_BURST', 'preemptions_in_window',
       preemptions_recent, ${preemption_burst_count}, running, waiting, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM transient_flags WHERE fire_preemption_burst
UNION ALL
-- What clients saw when they gave up: the TTFT p95 and mean queue time of the interval.
SELECT 'transient', server, ts, t_rel_sec, 'CLIENT_ABORT_SURGE', 'requests_abandoned_in_window',
       abandoned_recent, ${abort_surge_count}, running, waiting, ttft_p95_s, queue_time_mean_s, NULL, NULL, NULL, NULL, NULL, NULL
FROM transient_flags WHERE fire_abort_surge
UNION ALL
-- How many sampled evictions the median rests on.
SELECT 'transient', server, ts, t_rel_sec, 'KV_BLOCK_CHURN', 'kv_block_lifetime_p50_s',
       kv_block_lifetime_p50_s, ${kv_churn_lifetime_s}, running, waiting, NULL, NULL, NULL,
       CAST(kv_evictions_sampled AS DOUBLE), NULL, NULL, NULL, NULL
FROM transient_flags WHERE fire_kv_churn
