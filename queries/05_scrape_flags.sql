-- Each sample's neighbours for the data-quality events (14_data_quality_events.sql),
-- computed once rather than once per UNION branch there.
CREATE TABLE scrape_flags AS
SELECT
  server, ts, t_rel_sec, scrape_ok, scrape_error, counter_reset, interval_s, interval_median_s,
  LAG(scrape_ok) OVER (PARTITION BY server ORDER BY ts) AS prev_ok,
  MIN(CASE WHEN scrape_ok THEN t_rel_sec END) OVER (
    PARTITION BY server ORDER BY ts ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS next_ok_t
FROM timeline
ORDER BY server, ts
