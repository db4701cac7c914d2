//! Every analysis threshold, defined once with its default and the reason for it.
//!
//! The SQL in `queries/` refers to these as `${name}`; [`Thresholds::substitute`] fills
//! them in, and refuses a query that names a threshold that does not exist. A config file
//! (`--config kvscope.toml`, a `[thresholds]` table) overrides any of them, and the
//! values in force are written into `summary.json`.

use serde::{Deserialize, Serialize};

macro_rules! thresholds {
    ($( $(#[doc = $doc:literal])* $name:ident : $default:expr ; )*) => {
        /// Analysis thresholds. See each field for the default and its reason.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Thresholds {
            $( $(#[doc = $doc])* pub $name: f64, )*
        }

        impl Default for Thresholds {
            fn default() -> Self {
                Self { $( $name: $default, )* }
            }
        }

        impl Thresholds {
            /// `(name, value, doc)` for every threshold, in definition order.
            pub fn entries(&self) -> Vec<(&'static str, f64, &'static str)> {
                vec![ $( (stringify!($name), self.$name, concat!($($doc, " "),*).trim_ascii()), )* ]
            }
        }
    };
}

thresholds! {
    /// KV usage (%) from which a server is SATURATED. vLLM preempts when a running request
    /// cannot get a block; at ≥95 % of blocks held by live requests the next decode step of
    /// a long request routinely finds none (vLLM's own KV dashboard turns red at 98 %).
    kv_saturated_pct: 95.0;
    /// KV usage (%) from which pressure is rising (vLLM's dashboard turns orange at 90 %;
    /// 80 % leaves room to act before preemption starts).
    kv_rising_pct: 80.0;
    /// Waiting requests from which the scheduler is under QUEUE_PRESSURE.
    queue_min_waiting: 1.0;
    /// Generation tokens/s below which a server with nothing running or waiting is IDLE.
    idle_tokens_per_s: 0.5;
    /// KV usage (%) an idle server may show (median over idle samples) before KV_LEAK:
    /// vLLM counts only blocks held by live requests (evictable prefix-cache blocks are
    /// free), so an idle server reads ~0 %.
    idle_kv_pct: 2.0;
    /// Seconds a phase or condition must hold before it replaces the previous one
    /// (debounce; each sample stands for the interval since the previous one).
    debounce_s: 3.0;
    /// ...and at least this many samples, so one noisy sample never makes two transitions
    /// even at long scrape intervals.
    debounce_min_samples: 2.0;
    /// Seconds a transient event's predicate must be false before the event can fire again
    /// (one event per episode of trouble, not one per flicker).
    event_rearm_s: 10.0;
    /// Length (s) of the trailing window for rolling baselines.
    baseline_window_s: 60.0;
    /// TTFT p95 (s) from which TTFT is ELEVATED: past ~2 s an interactive user notices.
    ttft_elevated_s: 2.0;
    /// A TTFT/E2E p95 this many times its rolling median is a spike.
    spike_factor: 3.0;
    /// Observations an interval quantile needs before its interpolated value is evidence
    /// (spikes, TTFT_ELEVATED, prefill pressure); below it, the lower edge of the bucket
    /// holding the quantile is used (what the buckets prove): with one or two requests in
    /// an interval, vLLM's coarse buckets make p95 an interpolation artefact.
    quantile_min_count: 3.0;
    /// Smallest TTFT p95 (s) that can count as a spike (ignores 20 ms → 70 ms jitter).
    ttft_spike_min_s: 0.5;
    /// Smallest E2E p95 (s) that can count as a spike.
    e2e_spike_min_s: 2.0;
    /// Share of engine tokens that are (uncached) prompt tokens from which prefill
    /// dominates the step budget.
    prefill_token_share: 0.8;
    /// Running requests, as a share of the session's peak, that count as a high running
    /// count (HIGH_PROMPT_INGESTION; the busiest engine's, on a data-parallel server).
    high_running_share: 0.75;
    /// Prompt tokens/s, as a multiple of the session's median over active samples, that
    /// count as high ingestion.
    high_ingestion_factor: 2.0;
    /// Mean queue time (s) from which QUEUE_DELAY holds even with an empty queue gauge.
    queue_delay_s: 0.5;
    /// Generation per running request at or below this share of its rolling median is a
    /// drop...
    decode_drop_share: 0.5;
    /// ...when running is still at least this share of its rolling median at both ends of
    /// the interval...
    decode_drop_running_share: 0.9;
    /// ...and the batch was expected to generate at least this many tokens/s (its
    /// per-request rolling median times the batch)...
    decode_drop_min_tokens_per_s: 20.0;
    /// ...for at least this many seconds (a drop of one scrape is noise or a frozen page).
    decode_drop_min_s: 5.0;
    /// Trailing window (s) over which preemptions are counted (bursts, sustained
    /// preemption): a count over time, the same at any scrape interval.
    preemption_window_s: 10.0;
    /// Preemptions within `preemption_window_s` that make a PREEMPTION_BURST. vLLM V1
    /// preempts only when a running request cannot get a KV block, so recurring
    /// preemptions mean the cache ran out, whatever the sampled KV % reads.
    preemption_burst_count: 3.0;
    /// Trailing window (s) over which requests that left without finishing are counted.
    abort_window_s: 10.0;
    /// Requests leaving without finishing within `abort_window_s` that make a
    /// CLIENT_ABORT_SURGE (clients disconnecting: vLLM aborts their requests).
    abort_surge_count: 10.0;
    /// Seconds without any progress (prompt and generation tokens, finished requests and
    /// engine steps all frozen) while requests are running or waiting that make
    /// ENGINE_STALLED. vLLM V1's engine steps take milliseconds to ~1 s (a long prefill
    /// chunk), and every step moves a counter; 5 s without one is a hang.
    stall_min_s: 5.0;
    /// Seconds without a successful scrape at the end of a recording from which the
    /// server is SERVER_DOWN. vLLM's API server answers /metrics from its event loop in
    /// milliseconds even under load; it stays away for seconds only when the process has
    /// exited (a dead engine core shuts the API server down: `EngineDeadError`, unless
    /// `VLLM_KEEP_ALIVE_ON_ENGINE_DEATH`) or is being restarted, which loads the weights
    /// again and takes tens of seconds.
    server_down_min_s: 10.0;
    /// Observed seconds (successful scrapes) below which a server without findings is
    /// INDETERMINATE rather than HEALTHY: too little telemetry to call it healthy.
    min_observed_s: 30.0;
    /// Seconds of stall from which STUCK_ENGINE is high and outranks every load finding
    /// (far beyond any single vLLM step).
    stall_high_s: 10.0;
    /// Share of queue-pressure time with running within 10 % of its peak from which the
    /// queue is blamed on the sequence limit (`--max-num-seqs`).
    queue_pinned_share: 0.8;
    /// GPU utilization (%) from which a troubled server is compute-bound.
    gpu_busy_pct: 85.0;
    /// GPU utilization (%) below which a troubled server waits on something outside the
    /// GPU (CPU, tokenization, network).
    gpu_idle_pct: 50.0;
    /// SM activity (%, DCGM `SM_ACTIVE`) from which a busy GPU is compute-bound; below it
    /// the kernels run but leave most SMs idle (small or memory-bound steps).
    gpu_sm_busy_pct: 60.0;
    /// API server CPU (% of one core) from which its one Python thread is saturated.
    api_cpu_saturated_pct: 90.0;
    /// KV block lifetime (s, median of sampled evictions) under which blocks are evicted
    /// "within seconds of birth": with the cache exhausted, it is too small for the
    /// working set.
    kv_churn_lifetime_s: 10.0;
    /// Sampled evictions needed before residency is judged (vLLM samples 1 % of blocks by
    /// default, so a few observations say little).
    kv_churn_min_evictions: 20.0;
    /// Doctor scores (0–1) from which a finding is high...
    severity_high_score: 0.7;
    /// ...medium...
    severity_medium_score: 0.4;
    /// ...or low (below: info).
    severity_low_score: 0.2;
    /// Seconds a trouble must be sustained before a finding can be medium or high (no
    /// verdict from one or two scrapes); severity then grows with duration and magnitude.
    finding_min_s: 10.0;
    /// Seconds of queueing from which QUEUE_SATURATION's duration scores in full (a
    /// minute, as the rolling baselines' window: longer than a burst the running batch
    /// absorbs). Judged in seconds, never as a share of the recording, so an incident
    /// reads the same in a short and in a long recording.
    queue_sustained_s: 60.0;
    /// Prompt tokens/s looked up in the prefix cache from which its hit rate matters
    /// (PREFIX_CACHE_INEFFECTIVE; a small chat load is ~1000 tokens/s).
    prefix_min_prompt_tokens_per_s: 500.0;
    /// Prefix-cache hit rate (%) below which the cache is ineffective.
    prefix_hit_rate_low_pct: 10.0;
    /// A sample interval this many times the session's median interval is a SCRAPE_GAP.
    scrape_gap_factor: 2.5;
    /// Shortest condition episode (s).
    episode_min_s: 5.0;
    /// Episodes of one condition separated by less than this (s) are merged.
    episode_merge_gap_s: 3.0;
}

/// A threshold name in a query that no threshold has.
#[derive(Debug, thiserror::Error)]
#[error("query `{query}` refers to unknown threshold `${{{name}}}`")]
pub struct UnknownThreshold {
    pub query: String,
    pub name: String,
}

impl Thresholds {
    /// Replaces every `${name}` in `sql` with the threshold's value as a float literal.
    pub fn substitute(&self, query: &str, sql: &str) -> Result<String, UnknownThreshold> {
        let entries = self.entries();
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql;
        while let Some(p) = rest.find("${") {
            out.push_str(&rest[..p]);
            let after = &rest[p + 2..];
            let end = after.find('}').ok_or_else(|| UnknownThreshold {
                query: query.to_string(),
                name: after.chars().take(30).collect(),
            })?;
            let name = &after[..end];
            let value = entries
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, v, _)| *v)
                .ok_or_else(|| UnknownThreshold {
                    query: query.to_string(),
                    name: name.to_string(),
                })?;
            // Integral values as integers, so they also fit where SQL wants one
            // (`ROWS BETWEEN n PRECEDING`); others as float literals.
            if value.fract() == 0.0 && value.abs() < 1e15 {
                out.push_str(&format!("{}", value as i64));
            } else {
                out.push_str(&format!("{value:?}"));
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_and_rejects_unknown() {
        let t = Thresholds::default();
        assert_eq!(
            t.substitute("q", "x >= ${kv_saturated_pct}").unwrap(),
            "x >= 95"
        );
        assert_eq!(
            t.substitute("q", "${spike_factor}x${prefill_token_share}")
                .unwrap(),
            "3x0.8"
        );
        assert!(t.substitute("q", "${nope}").is_err());
    }

    #[test]
    fn toml_override() {
        let t: Thresholds = toml::from_str("kv_saturated_pct = 90.0").unwrap();
        assert_eq!(t.kv_saturated_pct, 90.0);
        assert_eq!(t.kv_rising_pct, 80.0);
        assert!(toml::from_str::<Thresholds>("bogus = 1.0").is_err());
    }
}
