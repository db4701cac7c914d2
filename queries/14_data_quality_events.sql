-- Data-quality events (neighbours from sample_flags, 03_sample_flags.sql):
--   SCRAPE_GAP     a run of failed scrapes (NO_DATA; value: seconds until the next good
--                  sample, end_ts: that sample; evidence: running, waiting and KV at the
--                  last good sample before it, the work the server held when it stopped
--                  answering), or an interval >= ${scrape_gap_factor} x the median
--                  interval between good ones
--   COUNTER_RESET  a counter went down or process_start_time_seconds changed: the server
--                  restarted
SELECT 'data_quality' AS type, server, ts, t_rel_sec, 'SCRAPE_GAP' AS event, 'gap_s' AS metric,
       next_ok_t - t_rel_sec AS value, interval_median_s AS baseline, scrape_error AS reason,
       CAST(ts AS BIGINT) + CAST(ROUND((next_ok_t - t_rel_sec) * 1e6) AS BIGINT) AS end_ts,
       CASE WHEN prev_ok THEN prev_running END AS ev_requests_running,
       CASE WHEN prev_ok THEN prev_waiting END AS ev_requests_waiting,
       CASE WHEN prev_ok THEN prev_kv_max_pct END AS ev_kv_cache_usage_pct
FROM sample_flags WHERE NOT scrape_ok AND COALESCE(prev_ok, true)
UNION ALL
SELECT 'data_quality', server, ts, t_rel_sec, 'SCRAPE_GAP', 'gap_s',
       interval_s, interval_median_s, 'no sample for ' || CAST(ROUND(interval_s, 1) AS VARCHAR) || ' s',
       CAST(ts AS BIGINT), prev_running, prev_waiting, prev_kv_max_pct
FROM sample_flags WHERE scrape_ok AND COALESCE(prev_ok, false)
         AND interval_s >= ${scrape_gap_factor} * interval_median_s
UNION ALL
SELECT 'data_quality', server, ts, t_rel_sec, 'COUNTER_RESET', NULL, NULL, NULL,
       'counters decreased or the process start time changed: the server restarted',
       CAST(NULL AS BIGINT), NULL, NULL, NULL
FROM sample_flags WHERE scrape_ok AND counter_reset
