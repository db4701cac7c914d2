-- The debounced phase of every sample (for the dashboard and ground-truth checks).
SELECT server, ts, t_rel_sec, phase, raw_phase, kv_max_pct, running, waiting
FROM timeline
ORDER BY server, ts
