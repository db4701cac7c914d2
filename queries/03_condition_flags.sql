-- condition_flags: per sample, each condition's change and episode (Rust kernels over
-- the debounced conditions of the timeline, one pass per server):
--   *_change   'start' / 'end' where the condition turns on / off (condition_change)
--   *_episode  number of the kept episode the sample belongs to (episode_id): islands of
--              the condition, merged when less than ${episode_merge_gap_s} s apart, kept
--              when they last at least ${episode_min_s} s; an island ends at the first
--              sample where the condition is no longer on.
CREATE TABLE condition_flags AS
SELECT
  server, ts, t_rel_sec, computed_prompt_tps, ttft_p95_s, waiting,
  LEAD(ts) OVER w AS next_ts,
  LEAD(t_rel_sec) OVER w AS next_t,
  condition_change(prefill_pressure) OVER w AS prefill_pressure_change,
  condition_change(high_prompt_ingestion) OVER w AS high_prompt_ingestion_change,
  condition_change(ttft_elevated) OVER w AS ttft_elevated_change,
  condition_change(queue_delay) OVER w AS queue_delay_change,
  episode_id(prefill_pressure, t_rel_sec, ${episode_merge_gap_s}, ${episode_min_s}) OVER w
    AS prefill_pressure_episode,
  episode_id(high_prompt_ingestion, t_rel_sec, ${episode_merge_gap_s}, ${episode_min_s}) OVER w
    AS high_prompt_ingestion_episode,
  episode_id(ttft_elevated, t_rel_sec, ${episode_merge_gap_s}, ${episode_min_s}) OVER w
    AS ttft_elevated_episode,
  episode_id(queue_delay, t_rel_sec, ${episode_merge_gap_s}, ${episode_min_s}) OVER w
    AS queue_delay_episode
FROM timeline
WINDOW w AS (PARTITION BY server ORDER BY ts)
ORDER BY server, ts
