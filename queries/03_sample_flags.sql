-- sample_flags: per sample, what the event queries need from its neighbours, in one
-- window pass per server (Rust kernels where SQL would need extra passes):
--   prev_phase        the phase before this sample (previous_value; NO_DATA counts)
--   prev_ok           whether the previous scrape succeeded
--   prev_running, prev_waiting, prev_kv_max_pct
--                     the gauges of the previous sample
--   next_ok_t         t of the next successful scrape, this one included (next_time_where)
--   next_ts, next_t   the next sample
--   *_change          'start' / 'end' where a condition turns on / off (condition_change)
--   kv_trouble_episode, load_trouble_episode
--                     the same for trouble with the KV cache exhausted, and without
--   *_episode         number of the kept episode the sample belongs to (episode_id):
--                     islands of the condition, merged when less than
--                     ${episode_merge_gap_s} s apart, kept when they last at least
--                     ${episode_min_s} s; an island ends at the first sample where the
--                     condition is no longer on.
CREATE TABLE sample_flags AS
SELECT
  server, ts, t_rel_sec, phase, scrape_ok, scrape_error, counter_reset, interval_s,
  interval_median_s, kv_max_pct, running, waiting, ttft_p95_s, preemptions_per_s, gen_tps,
  computed_prompt_tps, kv_pct, prompt_tps, preemptions_recent,
  gpu_util_pct, gpu_sm_active_pct, gpu_mem_used_pct, api_cpu_util_pct,
  -- Trouble, where the bottleneck is judged, in two kinds so that a queue with KV to
  -- spare and a KV exhaustion next to it are judged apart: the KV cache exhausted
  -- (kv_exhausted, 02_timeline.sql), and load trouble without it
  -- (queueing, slow first tokens). Episodes are kept when >= ${finding_min_s} s.
  episode_id(kv_exhausted IS TRUE,
             t_rel_sec, ${episode_merge_gap_s}, ${finding_min_s}) OVER w AS kv_trouble_episode,
  episode_id(((phase = 'QUEUE_PRESSURE' OR ttft_elevated OR queue_delay)
              AND NOT kv_exhausted) IS TRUE,
             t_rel_sec, ${episode_merge_gap_s}, ${finding_min_s}) OVER w AS load_trouble_episode,
  previous_value(phase) OVER w AS prev_phase,
  LAG(scrape_ok) OVER w AS prev_ok,
  -- What the server held at the sample before (a SCRAPE_GAP's evidence: the work in
  -- flight when it stopped answering).
  LAG(running) OVER w AS prev_running,
  LAG(waiting) OVER w AS prev_waiting,
  LAG(kv_max_pct) OVER w AS prev_kv_max_pct,
  next_time_where(scrape_ok, t_rel_sec) OVER w AS next_ok_t,
  LEAD(ts) OVER w AS next_ts,
  LEAD(t_rel_sec) OVER w AS next_t,
  condition_change(prefill_pressure) OVER w AS prefill_pressure_change,
  condition_change(high_prompt_ingestion) OVER w AS high_prompt_ingestion_change,
  condition_change(ttft_elevated) OVER w AS ttft_elevated_change,
  condition_change(queue_delay) OVER w AS queue_delay_change,
  condition_change(engine_stalled) OVER w AS engine_stalled_change,
  episode_id(prefill_pressure, t_rel_sec, ${episode_merge_gap_s}, ${episode_min_s}) OVER w
    AS prefill_pressure_episode,
  episode_id(high_prompt_ingestion, t_rel_sec, ${episode_merge_gap_s}, ${episode_min_s}) OVER w
    AS high_prompt_ingestion_episode,
  episode_id(ttft_elevated, t_rel_sec, ${episode_merge_gap_s}, ${episode_min_s}) OVER w
    AS ttft_elevated_episode,
  episode_id(queue_delay, t_rel_sec, ${episode_merge_gap_s}, ${episode_min_s}) OVER w
    AS queue_delay_episode,
  episode_id(engine_stalled, t_rel_sec, ${episode_merge_gap_s}, ${stall_min_s}) OVER w
    AS engine_stalled_episode
FROM timeline
WINDOW w AS (PARTITION BY server ORDER BY ts)
ORDER BY server, ts
