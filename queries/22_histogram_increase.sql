-- Session-wide histogram increase per (server, metric, bucket): the per-scrape,
-- reset-aware increases the recorder stored, summed over time and engines. Session
-- quantiles come from these merged deltas, not from averaging interval quantiles.
SELECT server, metric, le, SUM(increase) AS count
FROM histograms
GROUP BY server, metric, le
ORDER BY server, metric, le
