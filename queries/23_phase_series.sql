-- The debounced phase and the unit values of every sample (the dashboard's panels and
-- ground-truth checks read these rather than re-aggregating engines themselves).
SELECT server, ts, t_rel_sec, scrape_ok, phase, raw_phase, kv_max_pct, running, waiting,
       ttft_p95_s, gen_tps
FROM timeline
ORDER BY server, ts
