//! `summary.json`: per-server and whole-session aggregates, built from the summary
//! queries' rows. Session latency quantiles come from merged histogram deltas.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use super::{AnalysisError, Cols, Thresholds, round3};
use crate::adapter::histogram::Histogram;
use crate::store::events::Event;
use crate::store::schema::SCHEMA_VERSION;
use crate::store::{Metadata, ServerMeta};
use crate::vocab::{EventName, EventType, Phase};

/// Time spent in one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub seconds: f64,
    pub share: f64,
    pub samples: u64,
}

/// Session quantiles of one latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub count: f64,
    /// True when a quantile is clamped to the last finite bucket (true value larger).
    pub clamped_upper: bool,
}

/// KV block residency over the session (vLLM `--kv-cache-metrics`): quantiles of the
/// sampled blocks' lifetime (allocation → eviction), idle time before eviction and reuse
/// gaps, from the merged histograms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Residency {
    pub lifetime_s: Quantiles,
    pub idle_before_evict_s: Quantiles,
    pub reuse_gap_s: Quantiles,
    /// Share of sampled evictions with a lifetime at most `kv_churn_lifetime_s` (counted
    /// up to the largest bucket bound not above it).
    pub short_lifetime_share: Option<f64>,
    /// The bound that share was counted at (a bucket edge).
    pub short_lifetime_bound_s: Option<f64>,
    /// Share of reuse gaps at least the median lifetime: reuses that come about as late as
    /// blocks live (counted from the first bucket bound at or above it).
    pub reuse_gap_beyond_lifetime_share: Option<f64>,
}

/// Queueing time of a server and what running and KV did in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueWindow {
    /// First and last sample in it, RFC 3339.
    pub start: Option<String>,
    pub end: Option<String>,
    pub seconds: f64,
    pub waiting_max: Option<f64>,
    /// The busiest engine's running (`--max-num-seqs` is per engine).
    pub running_max: Option<f64>,
    /// Share and seconds of it with the busiest engine's running within 10 % of its
    /// peak.
    pub running_at_peak_share: Option<f64>,
    pub running_at_peak_s: f64,
    /// The most loaded engine's KV usage in it.
    pub kv_p95_pct: Option<f64>,
    pub kv_max_pct: Option<f64>,
    /// Seconds of it under PREFILL_PRESSURE, and with decode throughput dropped.
    pub prefill_s: f64,
    pub decode_drop_s: f64,
}

/// One episode of trouble and what the resources did in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TroubleEpisode {
    /// `kv` (the KV cache exhausted: saturated or preempting) or `load` (queueing or slow
    /// first tokens with KV to spare).
    pub trouble: String,
    pub start: String,
    pub end: String,
    pub duration_s: f64,
    pub samples: u64,
    /// Samples with GPU utilization / SM activity / API CPU.
    pub gpu_samples: u64,
    pub sm_samples: u64,
    pub api_cpu_samples: u64,
    pub gpu_util_avg_pct: Option<f64>,
    pub gpu_sm_active_avg_pct: Option<f64>,
    pub gpu_mem_used_avg_pct: Option<f64>,
    pub api_cpu_avg_pct: Option<f64>,
    pub api_cpu_max_pct: Option<f64>,
    pub kv_p95_pct: Option<f64>,
    pub kv_max_pct: Option<f64>,
    pub preemptions: f64,
    pub running_avg: Option<f64>,
    pub waiting_max: Option<f64>,
    pub ttft_p95_max_s: Option<f64>,
    pub generation_tokens_per_s_avg: Option<f64>,
    pub prompt_tokens_per_s_avg: Option<f64>,
}

/// Episodes of one condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodeStats {
    pub count: u64,
    pub total_s: f64,
    pub longest_s: f64,
}

/// Aggregates for one server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSummary {
    pub server: String,
    pub start: String,
    pub end: String,
    pub duration_s: f64,
    pub samples: u64,
    pub failed_scrapes: u64,
    pub engines: u64,
    pub interval_median_s: Option<f64>,
    pub phases: BTreeMap<Phase, PhaseTime>,
    pub kv_avg_pct: Option<f64>,
    pub kv_p95_pct: Option<f64>,
    pub kv_max_pct: Option<f64>,
    pub kv_min_pct: Option<f64>,
    pub running_avg: Option<f64>,
    pub running_max: Option<f64>,
    pub waiting_avg: Option<f64>,
    pub waiting_max: Option<f64>,
    pub generation_tokens_per_s_avg: Option<f64>,
    pub generation_tokens_per_s_p95: Option<f64>,
    pub prompt_tokens_per_s_avg: Option<f64>,
    pub prompt_tokens_per_s_max: Option<f64>,
    pub prompt_tokens: Option<f64>,
    pub prompt_tokens_cached: Option<f64>,
    pub generation_tokens: Option<f64>,
    pub requests_finished: Option<f64>,
    pub preemptions: Option<f64>,
    pub preemptions_peak_per_s: Option<f64>,
    pub prefix_cache_hit_rate_pct: Option<f64>,
    pub latency: BTreeMap<String, Quantiles>,
    pub ttft_p95_max_s: Option<f64>,
    pub ttft_p95_median_s: Option<f64>,
    pub itl_p95_median_s: Option<f64>,
    pub itl_p95_max_s: Option<f64>,
    pub queue_time_mean_max_s: Option<f64>,
    pub prompt_len_p95_max: Option<f64>,
    pub gpu_util_avg_pct: Option<f64>,
    /// DCGM SM activity (%), when a GPU exporter was scraped.
    pub gpu_sm_active_avg_pct: Option<f64>,
    pub gpu_mem_used_avg_pct: Option<f64>,
    /// Seconds with a GPU held back by power or thermal throttling.
    pub gpu_throttled_s: f64,
    /// Seconds with the API server at or above `api_cpu_saturated_pct` of a core.
    pub api_cpu_saturated_s: f64,
    /// Sampled KV block evictions (`--kv-cache-metrics`), all and while the KV cache was
    /// exhausted, with the median lifetime and idle time of blocks evicted there.
    pub kv_evictions_sampled: Option<f64>,
    pub kv_evictions_sampled_exhausted: Option<f64>,
    pub kv_block_lifetime_p50_exhausted_s: Option<f64>,
    pub kv_block_idle_p50_exhausted_s: Option<f64>,
    /// Session residency quantiles from the merged histograms (None without
    /// `--kv-cache-metrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residency: Option<Residency>,
    /// CUDA graphs captured and replayed (from a profilemate import's metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_graphs: Option<crate::source::profilemate::CudaGraphSummary>,
    /// Seconds in episodes of trouble (KV exhausted; queueing or slow first tokens), and
    /// how many episodes.
    pub trouble_s: f64,
    pub trouble_count: u64,
    /// The longest [`MAX_TROUBLE_KEPT`] episodes of trouble, in time order, with what the
    /// GPU, the API server and the engine did meanwhile.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trouble: Vec<TroubleEpisode>,
    /// CPU of the API server process (`process_cpu_seconds_total`), % of one core.
    pub api_cpu_util_avg_pct: Option<f64>,
    pub api_cpu_util_max_pct: Option<f64>,
    pub idle_kv_max_pct: Option<f64>,
    pub idle_kv_min_pct: Option<f64>,
    pub idle_kv_median_pct: Option<f64>,
    pub idle_samples: u64,
    /// Seconds of samples in which an engine was idle itself (not debounced; per
    /// engine, as the idle KV above).
    pub idle_s: f64,
    /// Seconds of ENGINE_STALLED (frozen progress with work present).
    pub stalled_s: f64,
    /// Seconds of ENGINE_STALLED with every gauge frozen too (the engine core hung).
    pub hung_s: f64,
    /// Seconds of PREFILL_PRESSURE.
    pub prefill_pressure_s: f64,
    /// KV usage (busiest engine, time-weighted), the worst counted TTFT p95 and the
    /// highest uncached prompt tokens/s during PREFILL_PRESSURE.
    pub prefill_kv_avg_pct: Option<f64>,
    pub prefill_ttft_p95_max_s: Option<f64>,
    pub prefill_prompt_tps_max: Option<f64>,
    /// The stalled engines' own gauges (as frozen at the hang; a data-parallel server's
    /// other engines left out).
    pub stall_running_max: Option<f64>,
    pub stall_waiting_max: Option<f64>,
    pub stall_kv_max_pct: Option<f64>,
    /// Seconds with at least one preemption in the trailing `preemption_window_s`.
    pub preempting_s: f64,
    /// Requests that left without finishing (lower bound: −Δ(running + waiting) −
    /// finished per interval, or counted aborts where larger).
    pub requests_abandoned: Option<f64>,
    /// Most of them within one `abort_window_s`.
    pub abandoned_window_max: Option<f64>,
    /// Requests the API server turned away at admission with HTTP 503 (vLLM ≥ 0.32's
    /// `--max-num-queued-reqs` / `--max-num-queued-tokens`), and the first and last
    /// sample that counted some (RFC 3339); absent where the server does not count them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_rejected: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_end: Option<String>,
    /// Seconds of sustained decode-throughput drop (DECODE_THROUGHPUT_DROP).
    pub decode_drop_s: f64,
    /// Seconds with requests waiting while KV was at or above `kv_rising_pct`.
    pub kv_wait_s: f64,
    /// Most preemptions seen within one `preemption_window_s`.
    pub preemptions_window_max: Option<f64>,
    /// Seconds nobody observed (failed scrapes, long gaps): NO_DATA, kept apart from
    /// `phases`, whose shares are of observed time.
    pub no_data_s: f64,
    pub counter_resets: u64,
    /// The server unreachable at the end of the recording (SERVER_DOWN); absent when
    /// its last scrape succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_at_end: Option<Outage>,
    /// The KV-exhaustion window (preemption or saturation), RFC 3339.
    pub exhausted_start: Option<String>,
    pub exhausted_end: Option<String>,
    /// Median KV % per running request inside that window.
    pub exhausted_kv_pct_per_running_median: Option<f64>,
    /// The QUEUE_PRESSURE window, RFC 3339, and what running and KV did there (the
    /// busiest engine's running, the most loaded engine's KV).
    pub queue_start: Option<String>,
    pub queue_end: Option<String>,
    pub queue_running_at_peak_share: Option<f64>,
    /// Seconds of it with running within 10 % of the server's peak.
    pub queue_running_at_peak_s: f64,
    pub queue_running_max: Option<f64>,
    /// Seconds of it under PREFILL_PRESSURE, and with decode throughput dropped.
    pub queue_prefill_s: f64,
    pub queue_decode_drop_s: f64,
    pub queue_kv_p95_pct: Option<f64>,
    pub queue_kv_max_pct: Option<f64>,
    /// The same for the QUEUE_PRESSURE time with KV below `kv_rising_pct`: the queueing
    /// a KV exhaustion elsewhere does not explain (absent when there was none).
    pub queue_kv_to_spare: Option<QueueWindow>,
    pub kv_pct_per_running_max: Option<f64>,
    pub kv_pct_per_running_median: Option<f64>,
    pub episodes: BTreeMap<String, EpisodeStats>,
    pub events: BTreeMap<String, u64>,
}

/// A server that stopped answering and had not come back when the recording ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Outage {
    /// Its last successful scrape, RFC 3339.
    pub last_seen: String,
    /// Seconds from that scrape to the recording's last sample. (What the server held
    /// then is the evidence of the SCRAPE_GAP event that starts the outage.)
    pub seconds: f64,
}

/// Data quality of the whole session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataQuality {
    pub failed_scrapes: u64,
    pub scrape_gaps: u64,
    pub counter_resets: u64,
    /// Latency histograms absent from the session (no `histograms.parquet` or family).
    pub missing_histograms: Vec<String>,
}

/// `summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub schema_version: u32,
    pub kvscope_version: String,
    pub session_id: Option<String>,
    pub thresholds: BTreeMap<String, f64>,
    pub servers: Vec<ServerSummary>,
    pub session: SessionTotals,
    pub data_quality: DataQuality,
}

/// Whole-session totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionTotals {
    pub servers: u64,
    pub duration_s: f64,
    pub samples: u64,
    pub generation_tokens: f64,
    pub prompt_tokens: f64,
    pub preemptions: f64,
    pub kv_max_pct: Option<f64>,
    pub waiting_max: Option<f64>,
    pub events: BTreeMap<String, u64>,
}

/// Latency histograms summarised, and their names in summary.json.
const LATENCY: &[(&str, &str)] = &[
    ("time_to_first_token_seconds", "ttft_s"),
    ("e2e_request_latency_seconds", "e2e_s"),
    ("inter_token_latency_seconds", "itl_s"),
    ("request_queue_time_seconds", "queue_time_s"),
    ("request_prefill_time_seconds", "prefill_time_s"),
    ("request_decode_time_seconds", "decode_time_s"),
];

/// Episodes of trouble kept per server (the longest): a busy server has hundreds in a
/// day, and the doctor judges the ones that matter.
pub const MAX_TROUBLE_KEPT: usize = 20;

/// The summary queries this module reads.
pub(super) const SERVER_SUMMARY: &str = "20_server_summary.sql";
pub(super) const PHASE_TIME: &str = "21_phase_time.sql";
pub(super) const HISTOGRAM_INCREASE: &str = "22_histogram_increase.sql";
pub(super) const TROUBLE_EPISODES: &str = "24_trouble_episodes.sql";

fn r(v: Option<f64>) -> Option<f64> {
    v.map(round3)
}

/// The columns of one summary query, read by name: a name the query does not produce
/// is recorded and [`Columns::check`] fails, instead of the field quietly becoming null.
struct Columns<'a> {
    cols: Cols<'a>,
    query: &'static str,
    missing: std::cell::RefCell<Option<String>>,
}

impl<'a> Columns<'a> {
    fn new(batch: &'a RecordBatch, query: &'static str) -> Self {
        Self {
            cols: Cols(batch),
            query,
            missing: Default::default(),
        }
    }
    fn has(&self, name: &str) -> bool {
        let ok = self.cols.0.column_by_name(name).is_some();
        if !ok {
            self.missing
                .borrow_mut()
                .get_or_insert_with(|| name.to_string());
        }
        ok
    }
    fn f64(&self, name: &str, row: usize) -> Option<f64> {
        self.has(name).then(|| self.cols.f64(name, row)).flatten()
    }
    fn f64_any(&self, name: &str, row: usize) -> Option<f64> {
        self.has(name)
            .then(|| self.cols.f64_any(name, row))
            .flatten()
    }
    fn str(&self, name: &str, row: usize) -> Option<String> {
        self.has(name).then(|| self.cols.str(name, row)).flatten()
    }
    fn ts_us(&self, name: &str, row: usize) -> Option<i64> {
        self.has(name).then(|| self.cols.ts_us(name, row)).flatten()
    }
    fn check(self) -> Result<(), AnalysisError> {
        match self.missing.into_inner() {
            Some(column) => Err(AnalysisError::MissingColumn {
                query: self.query,
                column,
            }),
            None => Ok(()),
        }
    }
}

/// What the summary counts from events, gathered one event at a time: the in-memory
/// paths add a slice, the streamed path (`analyze` of a fleet) each event as it is merged
/// into `events.jsonl`, so no analysis needs every event in memory for its summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventTally {
    servers: std::collections::HashMap<String, ServerTally>,
    scrape_gaps: u64,
    counter_resets: u64,
    total: u64,
}

/// The fields of an event [`EventTally`] counts by, borrowed.
#[derive(Debug, Clone, Copy)]
pub(super) struct TallyKey<'a> {
    pub kind: &'a str,
    pub server: &'a str,
    pub event: Option<&'a str>,
    pub condition: Option<&'a str>,
    pub duration_sec: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ServerTally {
    episodes: BTreeMap<String, EpisodeStats>,
    events: BTreeMap<String, u64>,
}

impl EventTally {
    pub fn from_events(events: &[Event]) -> Self {
        let mut t = Self::default();
        for e in events {
            t.add(e);
        }
        t
    }

    /// Counts one event (events must come in `events.jsonl` order: episode totals are
    /// rounded as they add up).
    pub fn add(&mut self, e: &Event) {
        self.add_key(TallyKey {
            kind: &e.kind,
            server: &e.server,
            event: e.event.as_deref(),
            condition: e.condition.as_deref(),
            duration_sec: e.duration_sec,
        });
    }

    /// [`EventTally::add`] from the fields it reads (the merge of event runs reads them
    /// from columns).
    pub(super) fn add_key(&mut self, e: TallyKey<'_>) {
        self.total += 1;
        match e.event.and_then(|n| n.parse::<EventName>().ok()) {
            Some(EventName::ScrapeGap) => self.scrape_gaps += 1,
            Some(EventName::CounterReset) => self.counter_resets += 1,
            _ => {}
        }
        let s = match self.servers.get_mut(e.server) {
            Some(s) => s,
            None => self.servers.entry(e.server.to_string()).or_default(),
        };
        let key: std::borrow::Cow<'_, str> = match (e.event, e.condition) {
            (Some(ev), _) => ev.into(),
            (None, Some(cond))
                if e.kind.parse::<EventType>().ok() == Some(EventType::ConditionEpisode) =>
            {
                let st = match s.episodes.get_mut(cond) {
                    Some(st) => st,
                    None => s.episodes.entry(cond.to_string()).or_default(),
                };
                let d = e.duration_sec.unwrap_or(0.0);
                st.count += 1;
                st.total_s = round3(st.total_s + d);
                st.longest_s = st.longest_s.max(d);
                format!("{}:{cond}", e.kind).into()
            }
            _ => e.kind.into(),
        };
        // Looked up borrowed: a fleet has hundreds of thousands of events and a few
        // dozen keys.
        match s.events.get_mut(key.as_ref()) {
            Some(n) => *n += 1,
            None => {
                s.events.insert(key.into_owned(), 1);
            }
        }
    }

    /// Events counted.
    pub fn total(&self) -> u64 {
        self.total
    }
}

pub(super) fn build(
    results: &BTreeMap<&'static str, Vec<RecordBatch>>,
    tally: &EventTally,
    thresholds: &Thresholds,
    meta: Option<&Metadata>,
) -> Result<Summary, AnalysisError> {
    let empty = Vec::new();
    let get = |n: &str| results.get(n).unwrap_or(&empty);
    let mut servers: Vec<ServerSummary> = Vec::new();
    for b in get(SERVER_SUMMARY) {
        let c = Columns::new(b, SERVER_SUMMARY);
        for i in 0..b.num_rows() {
            let f = |n: &str| r(c.f64(n, i));
            servers.push(ServerSummary {
                server: c.str("server", i).unwrap_or_default(),
                start: c
                    .ts_us("start_ts", i)
                    .map(crate::record::rfc3339)
                    .unwrap_or_default(),
                end: c
                    .ts_us("end_ts", i)
                    .map(crate::record::rfc3339)
                    .unwrap_or_default(),
                duration_s: f("duration_s").unwrap_or(0.0),
                samples: f("samples").unwrap_or(0.0) as u64,
                failed_scrapes: f("failed_scrapes").unwrap_or(0.0) as u64,
                engines: f("engines").unwrap_or(0.0) as u64,
                interval_median_s: f("interval_median_s"),
                kv_avg_pct: f("kv_avg_pct"),
                kv_p95_pct: f("kv_p95_pct"),
                kv_max_pct: f("kv_max_pct"),
                kv_min_pct: f("kv_min_pct"),
                running_avg: f("running_avg"),
                running_max: f("running_max"),
                waiting_avg: f("waiting_avg"),
                waiting_max: f("waiting_max"),
                generation_tokens_per_s_avg: f("gen_tps_avg"),
                generation_tokens_per_s_p95: f("gen_tps_p95"),
                prompt_tokens_per_s_avg: f("prompt_tps_avg"),
                prompt_tokens_per_s_max: f("prompt_tps_max"),
                prompt_tokens: f("prompt_tokens"),
                prompt_tokens_cached: f("prompt_tokens_cached"),
                generation_tokens: f("generation_tokens"),
                requests_finished: f("requests_finished"),
                preemptions: f("preemptions"),
                preemptions_peak_per_s: f("preemptions_peak_per_s"),
                prefix_cache_hit_rate_pct: f("prefix_hit_rate_pct"),
                ttft_p95_max_s: f("ttft_p95_max_s"),
                ttft_p95_median_s: f("ttft_p95_median_s"),
                itl_p95_median_s: f("itl_p95_median_s"),
                itl_p95_max_s: f("itl_p95_max_s"),
                queue_time_mean_max_s: f("queue_time_mean_max_s"),
                prompt_len_p95_max: f("prompt_len_p95_max"),
                gpu_util_avg_pct: f("gpu_util_avg_pct"),
                gpu_sm_active_avg_pct: f("gpu_sm_active_avg_pct"),
                gpu_mem_used_avg_pct: f("gpu_mem_used_avg_pct"),
                gpu_throttled_s: f("gpu_throttled_s").unwrap_or(0.0),
                api_cpu_saturated_s: f("api_cpu_saturated_s").unwrap_or(0.0),
                kv_evictions_sampled: f("kv_evictions_sampled"),
                kv_evictions_sampled_exhausted: f("kv_evictions_sampled_exhausted"),
                kv_block_lifetime_p50_exhausted_s: f("kv_block_lifetime_p50_exhausted_s"),
                kv_block_idle_p50_exhausted_s: f("kv_block_idle_p50_exhausted_s"),
                api_cpu_util_avg_pct: f("api_cpu_util_avg_pct"),
                api_cpu_util_max_pct: f("api_cpu_util_max_pct"),
                idle_kv_max_pct: f("idle_kv_max_pct"),
                idle_kv_min_pct: f("idle_kv_min_pct"),
                idle_kv_median_pct: f("idle_kv_median_pct"),
                idle_samples: f("idle_samples").unwrap_or(0.0) as u64,
                idle_s: f("idle_s").unwrap_or(0.0),
                stalled_s: f("stalled_s").unwrap_or(0.0),
                hung_s: f("hung_s").unwrap_or(0.0),
                prefill_pressure_s: f("prefill_pressure_s").unwrap_or(0.0),
                prefill_kv_avg_pct: f("prefill_kv_avg_pct"),
                prefill_ttft_p95_max_s: f("prefill_ttft_p95_max_s"),
                prefill_prompt_tps_max: f("prefill_prompt_tps_max"),
                stall_running_max: f("stall_running_max"),
                stall_waiting_max: f("stall_waiting_max"),
                stall_kv_max_pct: f("stall_kv_max_pct"),
                preempting_s: f("preempting_s").unwrap_or(0.0),
                preemptions_window_max: f("preemptions_window_max"),
                kv_wait_s: f("kv_wait_s").unwrap_or(0.0),
                decode_drop_s: f("decode_drop_s").unwrap_or(0.0),
                requests_abandoned: f("requests_abandoned"),
                abandoned_window_max: f("abandoned_window_max"),
                requests_rejected: f("requests_rejected"),
                rejected_start: c.ts_us("rejected_start_ts", i).map(crate::record::rfc3339),
                rejected_end: c.ts_us("rejected_end_ts", i).map(crate::record::rfc3339),
                counter_resets: f("counter_resets").unwrap_or(0.0) as u64,
                down_at_end: c
                    .ts_us("last_ok_ts", i)
                    .map(crate::record::rfc3339)
                    .zip(f("down_at_end_s"))
                    .filter(|(_, seconds)| *seconds > 0.0)
                    .map(|(last_seen, seconds)| Outage { last_seen, seconds }),
                exhausted_start: c.ts_us("exhausted_start_ts", i).map(crate::record::rfc3339),
                exhausted_end: c.ts_us("exhausted_end_ts", i).map(crate::record::rfc3339),
                exhausted_kv_pct_per_running_median: c
                    .f64("exhausted_kv_pct_per_running_median", i),
                queue_start: c.ts_us("queue_start_ts", i).map(crate::record::rfc3339),
                queue_end: c.ts_us("queue_end_ts", i).map(crate::record::rfc3339),
                queue_running_at_peak_share: f("queue_running_at_peak_share"),
                queue_running_at_peak_s: f("queue_running_at_peak_s").unwrap_or(0.0),
                queue_running_max: f("queue_running_max"),
                queue_prefill_s: f("queue_prefill_s").unwrap_or(0.0),
                queue_decode_drop_s: f("queue_decode_drop_s").unwrap_or(0.0),
                queue_kv_p95_pct: f("queue_kv_p95_pct"),
                queue_kv_max_pct: f("queue_kv_max_pct"),
                queue_kv_to_spare: Some(QueueWindow {
                    start: c
                        .ts_us("spare_kv_queue_start_ts", i)
                        .map(crate::record::rfc3339),
                    end: c
                        .ts_us("spare_kv_queue_end_ts", i)
                        .map(crate::record::rfc3339),
                    seconds: f("spare_kv_queue_s").unwrap_or(0.0),
                    waiting_max: f("spare_kv_queue_waiting_max"),
                    running_max: f("spare_kv_queue_running_max"),
                    running_at_peak_share: f("spare_kv_queue_running_at_peak_share"),
                    running_at_peak_s: f("spare_kv_queue_running_at_peak_s").unwrap_or(0.0),
                    kv_p95_pct: f("spare_kv_queue_kv_p95_pct"),
                    kv_max_pct: f("spare_kv_queue_kv_max_pct"),
                    prefill_s: f("spare_kv_queue_prefill_s").unwrap_or(0.0),
                    decode_drop_s: f("spare_kv_queue_decode_drop_s").unwrap_or(0.0),
                })
                .filter(|q| q.seconds > 0.0),
                kv_pct_per_running_max: f("kv_pct_per_running_max"),
                kv_pct_per_running_median: f("kv_pct_per_running_median"),
                ..Default::default()
            });
        }
        c.check()?;
    }
    // Rows of the other queries find their server by name: an index, not a scan of a
    // fleet's thousands of servers per row.
    let at: HashMap<String, usize> = servers
        .iter()
        .enumerate()
        .map(|(k, s)| (s.server.clone(), k))
        .collect();
    for b in get(PHASE_TIME) {
        let c = Columns::new(b, PHASE_TIME);
        for i in 0..b.num_rows() {
            let (Some(server), Some(phase)) = (c.str("server", i), c.str("phase", i)) else {
                continue;
            };
            let phase: Phase = phase.parse().map_err(AnalysisError::Vocabulary)?;
            if let Some(s) = at.get(&server).and_then(|&k| servers.get_mut(k)) {
                let seconds = c.f64("seconds", i).unwrap_or(0.0);
                if phase == Phase::NoData {
                    s.no_data_s = round3(s.no_data_s + seconds);
                    continue;
                }
                s.phases.insert(
                    phase,
                    PhaseTime {
                        seconds: round3(seconds),
                        share: 0.0,
                        samples: c.f64("samples", i).unwrap_or(0.0) as u64,
                    },
                );
            }
        }
        c.check()?;
    }
    for b in get(TROUBLE_EPISODES) {
        let c = Columns::new(b, TROUBLE_EPISODES);
        for i in 0..b.num_rows() {
            let Some(server) = c.str("server", i) else {
                continue;
            };
            let f = |n: &str| r(c.f64(n, i));
            let n = |n: &str| c.f64(n, i).unwrap_or(0.0) as u64;
            let ep = TroubleEpisode {
                trouble: c.str("trouble", i).unwrap_or_default(),
                start: c
                    .ts_us("start_ts", i)
                    .map(crate::record::rfc3339)
                    .unwrap_or_default(),
                end: c
                    .ts_us("end_ts", i)
                    .map(crate::record::rfc3339)
                    .unwrap_or_default(),
                duration_s: f("duration_s").unwrap_or(0.0),
                samples: n("samples"),
                gpu_samples: n("gpu_samples"),
                sm_samples: n("sm_samples"),
                api_cpu_samples: n("api_cpu_samples"),
                gpu_util_avg_pct: f("gpu_util_avg_pct"),
                gpu_sm_active_avg_pct: f("gpu_sm_active_avg_pct"),
                gpu_mem_used_avg_pct: f("gpu_mem_used_avg_pct"),
                api_cpu_avg_pct: f("api_cpu_avg_pct"),
                api_cpu_max_pct: f("api_cpu_max_pct"),
                kv_p95_pct: f("kv_p95_pct"),
                kv_max_pct: f("kv_max_pct"),
                preemptions: f("preemptions").unwrap_or(0.0),
                running_avg: f("running_avg"),
                waiting_max: f("waiting_max"),
                ttft_p95_max_s: f("ttft_p95_max_s"),
                generation_tokens_per_s_avg: f("gen_tps_avg"),
                prompt_tokens_per_s_avg: f("prompt_tps_avg"),
            };
            if let Some(s) = at.get(&server).and_then(|&k| servers.get_mut(k)) {
                s.trouble.push(ep);
            }
        }
        c.check()?;
    }
    let servers_meta: HashMap<&str, &ServerMeta> = meta
        .map(|m| m.servers.iter().map(|x| (x.server.as_str(), x)).collect())
        .unwrap_or_default();
    for s in &mut servers {
        s.trouble_count = s.trouble.len() as u64;
        s.trouble_s = round3(s.trouble.iter().map(|e| e.duration_s).sum());
        if s.trouble.len() > MAX_TROUBLE_KEPT {
            s.trouble
                .sort_by(|a, b| b.duration_s.total_cmp(&a.duration_s));
            s.trouble.truncate(MAX_TROUBLE_KEPT);
        }
        s.trouble.sort_by(|a, b| a.start.cmp(&b.start));
        s.cuda_graphs = servers_meta
            .get(s.server.as_str())
            .and_then(|x| x.cuda_graphs.clone());
    }
    for s in &mut servers {
        let total: f64 = s.phases.values().map(|p| p.seconds).sum();
        for p in s.phases.values_mut() {
            p.share = if total > 0.0 {
                round3(p.seconds / total)
            } else {
                0.0
            };
        }
    }
    // Merged histogram deltas → session quantiles.
    let mut hists: BTreeMap<(String, String), Histogram> = BTreeMap::new();
    for b in get(HISTOGRAM_INCREASE) {
        let c = Columns::new(b, HISTOGRAM_INCREASE);
        for i in 0..b.num_rows() {
            let (Some(server), Some(metric), Some(le), Some(n)) = (
                c.str("server", i),
                c.str("metric", i),
                c.f64_any("le", i),
                c.f64("count", i),
            ) else {
                continue;
            };
            hists
                .entry((server, metric))
                .or_default()
                .buckets
                .push((le, n));
        }
        c.check()?;
    }
    // Merged once: sorted buckets, monotone counts, the count from `+Inf`.
    for h in hists.values_mut() {
        h.normalize();
        h.count = h.total();
    }
    let mut seen_metrics: Vec<String> = Vec::new();
    residency(&mut servers, &hists, thresholds);
    for ((server, metric), h) in &hists {
        let Some(name) = LATENCY.iter().find(|(m, _)| m == metric).map(|(_, n)| *n) else {
            continue;
        };
        if let Some(s) = at.get(server).and_then(|&k| servers.get_mut(k)) {
            s.latency.insert(name.to_string(), quantiles(h));
            seen_metrics.push(name.to_string());
        }
    }
    for s in servers.iter_mut() {
        if let Some(t) = tally.servers.get(&s.server) {
            s.episodes = t.episodes.clone();
            s.events = t.events.clone();
        }
    }
    let mut totals = SessionTotals {
        servers: servers.len() as u64,
        ..Default::default()
    };
    for s in &servers {
        totals.duration_s = totals.duration_s.max(s.duration_s);
        totals.samples += s.samples;
        totals.generation_tokens += s.generation_tokens.unwrap_or(0.0);
        totals.prompt_tokens += s.prompt_tokens.unwrap_or(0.0);
        totals.preemptions += s.preemptions.unwrap_or(0.0);
        totals.kv_max_pct = max_opt(totals.kv_max_pct, s.kv_max_pct);
        totals.waiting_max = max_opt(totals.waiting_max, s.waiting_max);
        for (k, v) in &s.events {
            *totals.events.entry(k.clone()).or_insert(0) += v;
        }
    }
    totals.generation_tokens = round3(totals.generation_tokens);
    totals.prompt_tokens = round3(totals.prompt_tokens);
    totals.preemptions = round3(totals.preemptions);
    let data_quality = DataQuality {
        failed_scrapes: servers.iter().map(|s| s.failed_scrapes).sum(),
        scrape_gaps: tally.scrape_gaps,
        counter_resets: tally.counter_resets,
        missing_histograms: LATENCY
            .iter()
            .map(|(_, n)| n.to_string())
            .filter(|n| !seen_metrics.contains(n))
            .collect(),
    };
    Ok(Summary {
        schema_version: SCHEMA_VERSION,
        kvscope_version: env!("CARGO_PKG_VERSION").to_string(),
        session_id: meta.map(|m| m.session_id.clone()),
        thresholds: thresholds
            .entries()
            .into_iter()
            .map(|(n, v, _)| (n.to_string(), v))
            .collect(),
        servers,
        session: totals,
        data_quality,
    })
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Session quantiles of one merged histogram.
fn quantiles(h: &Histogram) -> Quantiles {
    let q = |p: f64| h.quantile(p);
    Quantiles {
        p50: q(0.5).map(|x| round3(x.0)),
        p95: q(0.95).map(|x| round3(x.0)),
        p99: q(0.99).map(|x| round3(x.0)),
        count: h.count,
        clamped_upper: [0.5, 0.95, 0.99]
            .iter()
            .any(|p| matches!(q(*p), Some((_, crate::adapter::histogram::Clamp::Upper)))),
    }
}

/// Share of a histogram's observations at or below the largest bucket bound `<= x`, and
/// that bound (bucket counts prove no finer split).
fn share_at_most(h: &Histogram, x: f64) -> Option<(f64, f64)> {
    let total = h.total();
    if total <= 0.0 {
        return None;
    }
    let (le, c) = h.buckets.iter().rev().find(|(le, _)| *le <= x)?;
    Some((c / total, *le))
}

/// The residency block of each server with `--kv-cache-metrics` histograms (merged and
/// normalized).
fn residency(
    servers: &mut [ServerSummary],
    hists: &BTreeMap<(String, String), Histogram>,
    thresholds: &Thresholds,
) {
    use crate::adapter::Hist;
    for s in servers.iter_mut() {
        let get = |h: Hist| {
            hists
                .get(&(s.server.clone(), h.canonical().to_string()))
                .cloned()
        };
        let Some(lifetime) = get(Hist::KvBlockLifetime) else {
            continue;
        };
        let idle = get(Hist::KvBlockIdle).unwrap_or_default();
        let gaps = get(Hist::KvBlockReuseGap).unwrap_or_default();
        let short = share_at_most(&lifetime, thresholds.kv_churn_lifetime_s);
        let life_p50 = lifetime.quantile(0.5).map(|x| x.0);
        // Reuse gaps from the first bound at or above the median lifetime on.
        let beyond = life_p50.and_then(|l| {
            let total = gaps.total();
            if total <= 0.0 {
                return None;
            }
            let below = gaps
                .buckets
                .iter()
                .rev()
                .find(|(le, _)| *le < l)
                .map_or(0.0, |(_, c)| *c);
            Some(round3((total - below) / total))
        });
        s.residency = Some(Residency {
            lifetime_s: quantiles(&lifetime),
            idle_before_evict_s: quantiles(&idle),
            reuse_gap_s: quantiles(&gaps),
            short_lifetime_share: short.map(|x| round3(x.0)),
            short_lifetime_bound_s: short.map(|x| x.1),
            reuse_gap_beyond_lifetime_share: beyond,
        });
    }
}
