//! Adapter stage: the only module that knows vLLM metric names.
//!
//! [`read`] maps one parsed `/metrics` page onto per-engine readings using [`METRICS`], a
//! table with one row per exposed spelling across vLLM 0.2–0.33 (V0 and V1), Ray Serve's
//! `ray_vllm:` re-export and Triton's `model`/`version` labels. [`Normalizer`] then turns
//! successive readings into [`Sample`] rows: rates from counters (reset-aware, like
//! Prometheus `rate()`), interval quantiles from histogram bucket deltas. vLLM's KV-usage
//! fraction becomes a 0–100 percentage here and nowhere else.

pub mod gpu;
pub mod histogram;
pub mod log;
pub mod version;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::source::prom::{Exposition, Family, MetricType, parse_le};
use crate::store::schema::{HistogramRow, Sample};
use histogram::{Clamp, Histogram};

/// vLLM's KV residency buckets (`vllm/v1/metrics/loggers.py`, `--kv-cache-metrics`),
/// seconds.
pub const RESIDENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1200.0, 1800.0,
];

/// A histogram family the analysis uses, by its canonical (current vLLM) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hist {
    Ttft,
    E2e,
    Itl,
    Tpot,
    Queue,
    Prefill,
    Decode,
    Inference,
    IterationTokens,
    PromptLen,
    GenerationLen,
    /// `--kv-cache-metrics` residency (sampled blocks): allocation → eviction.
    KvBlockLifetime,
    /// Last access → eviction.
    KvBlockIdle,
    /// Between consecutive accesses of a block (last four kept).
    KvBlockReuseGap,
}

impl Hist {
    /// Canonical family name (without prefix) written to `histograms.parquet`.
    pub fn canonical(self) -> &'static str {
        match self {
            Self::Ttft => "time_to_first_token_seconds",
            Self::E2e => "e2e_request_latency_seconds",
            Self::Itl => "inter_token_latency_seconds",
            Self::Tpot => "request_time_per_output_token_seconds",
            Self::Queue => "request_queue_time_seconds",
            Self::Prefill => "request_prefill_time_seconds",
            Self::Decode => "request_decode_time_seconds",
            Self::Inference => "request_inference_time_seconds",
            Self::IterationTokens => "iteration_tokens_total",
            Self::PromptLen => "request_prompt_tokens",
            Self::GenerationLen => "request_generation_tokens",
            Self::KvBlockLifetime => "kv_block_lifetime_seconds",
            Self::KvBlockIdle => "kv_block_idle_before_evict_seconds",
            Self::KvBlockReuseGap => "kv_block_reuse_gap_seconds",
        }
    }

    /// Inverse of [`Hist::canonical`].
    pub fn from_canonical(name: &str) -> Option<Self> {
        ALL_HISTS.iter().copied().find(|h| h.canonical() == name)
    }
}

const ALL_HISTS: &[Hist] = &[
    Hist::Ttft,
    Hist::E2e,
    Hist::Itl,
    Hist::Tpot,
    Hist::Queue,
    Hist::Prefill,
    Hist::Decode,
    Hist::Inference,
    Hist::IterationTokens,
    Hist::PromptLen,
    Hist::GenerationLen,
    Hist::KvBlockLifetime,
    Hist::KvBlockIdle,
    Hist::KvBlockReuseGap,
];

/// What an exposed vLLM family feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    KvUsageFraction,
    Running,
    Waiting,
    WaitingByReason,
    Swapped,
    Preemptions,
    PromptTokens,
    PromptTokensCached,
    PromptTokensBySource,
    GenerationTokens,
    RequestSuccess,
    PrefixQueries,
    PrefixHits,
    /// V0 gauge, a 0–1 fraction where −1 means "no data".
    PrefixHitRateV0,
    /// V0 gauges deprecated in 0.3 and removed in 0.7.
    AvgPromptThroughput,
    AvgGenerationThroughput,
    /// Front-end admission rejections (0.32+; no `engine` label).
    AdmissionRejections,
    Histogram(Hist),
    CacheConfig,
    /// Recognised vLLM family that KVScope does not use.
    Known,
}

/// One row of the alias table.
#[derive(Debug, Clone, Copy)]
pub struct Alias {
    /// Name as exposed in text 0.0.4, without the `vllm:` prefix.
    pub name: &'static str,
    pub target: Target,
    /// Lower wins when several spellings of the same target are present (0.9.2–0.10.x
    /// expose old and new names side by side).
    pub priority: u8,
}

const fn a(name: &'static str, target: Target, priority: u8) -> Alias {
    Alias {
        name,
        target,
        priority,
    }
}

/// Every vLLM spelling KVScope understands (see `reference/vllm-metrics.md` §2–3).
pub const METRICS: &[Alias] = &[
    a("kv_cache_usage_perc", Target::KvUsageFraction, 0),
    a("gpu_cache_usage_perc", Target::KvUsageFraction, 1),
    a("num_requests_running", Target::Running, 0),
    a("num_requests_waiting", Target::Waiting, 0),
    a("num_requests_waiting_by_reason", Target::WaitingByReason, 0),
    a("num_requests_swapped", Target::Swapped, 0),
    a("num_preemptions_total", Target::Preemptions, 0),
    a("prompt_tokens_total", Target::PromptTokens, 0),
    a("prompt_tokens_cached_total", Target::PromptTokensCached, 0),
    a(
        "prompt_tokens_by_source_total",
        Target::PromptTokensBySource,
        0,
    ),
    a("generation_tokens_total", Target::GenerationTokens, 0),
    a("request_success_total", Target::RequestSuccess, 0),
    a("prefix_cache_queries_total", Target::PrefixQueries, 0),
    a("prefix_cache_hits_total", Target::PrefixHits, 0),
    // Blocks in 0.7.3–0.8.x, tokens from 0.9.0: converted in `read` (see `blocks_era`).
    a("gpu_prefix_cache_queries_total", Target::PrefixQueries, 1),
    a("gpu_prefix_cache_hits_total", Target::PrefixHits, 1),
    a("gpu_prefix_cache_hit_rate", Target::PrefixHitRateV0, 0),
    a(
        "avg_prompt_throughput_toks_per_s",
        Target::AvgPromptThroughput,
        0,
    ),
    a(
        "avg_generation_throughput_toks_per_s",
        Target::AvgGenerationThroughput,
        0,
    ),
    a(
        "time_to_first_token_seconds",
        Target::Histogram(Hist::Ttft),
        0,
    ),
    a(
        "e2e_request_latency_seconds",
        Target::Histogram(Hist::E2e),
        0,
    ),
    a(
        "inter_token_latency_seconds",
        Target::Histogram(Hist::Itl),
        0,
    ),
    a(
        "time_per_output_token_seconds",
        Target::Histogram(Hist::Itl),
        1,
    ),
    a(
        "request_time_per_output_token_seconds",
        Target::Histogram(Hist::Tpot),
        0,
    ),
    a(
        "request_queue_time_seconds",
        Target::Histogram(Hist::Queue),
        0,
    ),
    a(
        "request_prefill_time_seconds",
        Target::Histogram(Hist::Prefill),
        0,
    ),
    a(
        "request_decode_time_seconds",
        Target::Histogram(Hist::Decode),
        0,
    ),
    a(
        "request_inference_time_seconds",
        Target::Histogram(Hist::Inference),
        0,
    ),
    a(
        "iteration_tokens_total",
        Target::Histogram(Hist::IterationTokens),
        0,
    ),
    a(
        "request_prompt_tokens",
        Target::Histogram(Hist::PromptLen),
        0,
    ),
    a(
        "request_generation_tokens",
        Target::Histogram(Hist::GenerationLen),
        0,
    ),
    a("admission_rejections_total", Target::AdmissionRejections, 0),
    a("cache_config_info", Target::CacheConfig, 0),
    // Recognised, not used by the analysis.
    a("cpu_cache_usage_perc", Target::Known, 0),
    a("cpu_prefix_cache_hit_rate", Target::Known, 0),
    a("num_requests_kv_fetch_by_stage", Target::Known, 0),
    a("engine_sleep_state", Target::Known, 0),
    a("external_prefix_cache_queries_total", Target::Known, 0),
    a("external_prefix_cache_hits_total", Target::Known, 0),
    a("prompt_tokens_cached_by_source_total", Target::Known, 0),
    a("prompt_tokens_recomputed_total", Target::Known, 0),
    a("mm_cache_queries_total", Target::Known, 0),
    a("mm_cache_hits_total", Target::Known, 0),
    a("corrupted_requests_total", Target::Known, 0),
    a("watermark_requests_total", Target::Known, 0),
    a("request_max_num_generation_tokens", Target::Known, 0),
    a("request_params_n", Target::Known, 0),
    a("request_params_max_tokens", Target::Known, 0),
    a("request_params_best_of", Target::Known, 0),
    a("request_num_preemptions", Target::Known, 0),
    a("request_prefill_kv_computed_tokens", Target::Known, 0),
    a(
        "kv_block_lifetime_seconds",
        Target::Histogram(Hist::KvBlockLifetime),
        0,
    ),
    a(
        "kv_block_idle_before_evict_seconds",
        Target::Histogram(Hist::KvBlockIdle),
        0,
    ),
    a(
        "kv_block_reuse_gap_seconds",
        Target::Histogram(Hist::KvBlockReuseGap),
        0,
    ),
    a("lora_requests_info", Target::Known, 0),
    a("estimated_flops_per_gpu_total", Target::Known, 0),
    a("estimated_read_bytes_per_gpu_total", Target::Known, 0),
    a("estimated_write_bytes_per_gpu_total", Target::Known, 0),
    a("spec_decode_num_drafts_total", Target::Known, 0),
    a("spec_decode_num_draft_tokens_total", Target::Known, 0),
    a("spec_decode_num_accepted_tokens_total", Target::Known, 0),
    a(
        "spec_decode_num_accepted_tokens_per_pos_total",
        Target::Known,
        0,
    ),
    a("spec_decode_num_emitted_tokens_total", Target::Known, 0),
    a("spec_decode_draft_acceptance_rate", Target::Known, 0),
    a("spec_decode_efficiency", Target::Known, 0),
    a("time_in_queue_requests", Target::Known, 0),
    a("model_forward_time_milliseconds", Target::Known, 0),
    a("model_execute_time_milliseconds", Target::Known, 0),
];

/// Metric-name prefixes under which vLLM families appear.
const PREFIXES: &[&str] = &["vllm:", "ray_vllm:"];

/// A PromQL regex for the names of every vLLM series the adapter can read (for
/// importing from Prometheus).
pub const PROMQL_VLLM_NAMES: &str = "vllm:.+|ray_vllm:.+";

/// The same plus the server's process metrics the adapter reads (restarts, API server CPU
/// and memory) and its HTTP request counter (requests that left without finishing).
pub const PROMQL_ALL_NAMES: &str = "vllm:.+|ray_vllm:.+|process_start_time_seconds|process_cpu_seconds_total|process_resident_memory_bytes|http_requests_total";

/// The gauge every vLLM release exposes (its presence at a step means the server was
/// scraped then).
pub const CORE_GAUGE: &str = "num_requests_running";

/// The [`CORE_GAUGE`]'s full names, as a PromQL name regex.
pub fn core_gauge_names() -> String {
    PREFIXES
        .iter()
        .map(|p| format!("{p}{CORE_GAUGE}"))
        .collect::<Vec<_>>()
        .join("|")
}

/// Whether a full series name (`vllm:num_requests_running`) is the [`CORE_GAUGE`].
pub fn is_core_gauge(name: &str) -> bool {
    PREFIXES
        .iter()
        .any(|p| name.strip_prefix(p) == Some(CORE_GAUGE))
}

/// The families whose absence means "not a vLLM endpoint".
pub const REQUIRED_FOR_VLLM: &[&str] = &[
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc (or vllm:gpu_cache_usage_perc)",
];

/// The label the vLLM production-stack router puts on the `vllm:`-named gauges it
/// re-exports, one series per backend (`vllm:num_requests_running{server="http://…"}`,
/// no `model_name`, no `engine`; its `metrics_service`). Summed, they would read as one
/// engine running every backend's requests, with no KV usage.
pub const ROUTER_BACKEND_LABEL: &str = "server";

/// The alias a bare family name reads as: an exact name first, then a counter named
/// without `_total` (OpenMetrics TYPE lines), the first alias in [`METRICS`] winning.
/// An index, not a scan: every family of every page is looked up.
fn lookup(bare: &str) -> Option<&'static Alias> {
    static INDEX: std::sync::LazyLock<HashMap<&'static str, &'static Alias>> =
        std::sync::LazyLock::new(|| {
            let mut index = HashMap::new();
            for m in METRICS {
                index.entry(m.name).or_insert(m);
            }
            for m in METRICS {
                if let Some(stem) = m.name.strip_suffix("_total") {
                    index.entry(stem).or_insert(m);
                }
            }
            index
        });
    INDEX.get(bare).copied()
}

/// Values read for one (model_name, engine) series from one page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineReading {
    pub model_name: String,
    pub engine: String,
    /// Chosen value and the priority of the alias it came from, per target.
    kv_fraction: Option<(f64, u8)>,
    running: Option<f64>,
    waiting: Option<f64>,
    waiting_capacity: Option<f64>,
    waiting_deferred: Option<f64>,
    swapped: Option<f64>,
    preemptions: Option<f64>,
    prompt_tokens: Option<f64>,
    prompt_cached: Option<f64>,
    prompt_cached_by_source: Option<f64>,
    generation_tokens: Option<f64>,
    finished: Option<f64>,
    aborted: Option<f64>,
    rejected: Option<f64>,
    prefix_queries: Option<(f64, u8)>,
    prefix_hits: Option<(f64, u8)>,
    prefix_hit_rate_v0: Option<f64>,
    avg_prompt_tps: Option<f64>,
    avg_gen_tps: Option<f64>,
    hists: BTreeMap<Hist, (Histogram, u8)>,
}

impl EngineReading {
    /// KV usage in percent (0–100): vLLM's fraction × 100 — the one place this happens.
    pub fn kv_cache_usage_pct(&self) -> Option<f64> {
        self.kv_fraction.map(|(f, _)| f * 100.0)
    }
    pub fn requests_running(&self) -> Option<f64> {
        self.running
    }
    pub fn requests_waiting(&self) -> Option<f64> {
        self.waiting
    }
    pub fn preemptions_total(&self) -> Option<f64> {
        self.preemptions
    }
    pub fn histogram(&self, h: Hist) -> Option<&Histogram> {
        self.hists.get(&h).map(|(x, _)| x)
    }
}

/// Everything read from one `/metrics` page.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub engines: Vec<EngineReading>,
    /// `cache_config_info` label sets, one per engine.
    pub cache_config: Vec<BTreeMap<String, String>>,
    /// `vllm:` families not in [`METRICS`] (forks, connectors): ignored, counted.
    pub unknown_vllm: BTreeSet<String>,
    /// Number of families recognised as vLLM's.
    pub vllm_families: usize,
    /// GPUs in DCGM names on the page (a merged exposition), or from a GPU exporter
    /// scraped beside the server (`record --gpu-metrics`).
    pub gpus: Vec<gpu::GpuStat>,
    /// `process_resident_memory_bytes` of the process serving the page.
    pub process_rss_bytes: Option<f64>,
    /// `process_cpu_seconds_total` of the process serving the page.
    pub process_cpu_s: Option<f64>,
    /// `process_start_time_seconds` of the process serving the page (restart detection).
    pub process_start_time_s: Option<f64>,
    /// Generation requests whose HTTP exchange ended with a 2xx status
    /// (`http_requests_total` of [`GENERATE_HANDLERS`]): finished, or aborted because the
    /// client disconnected. None when the page has no `http_requests_total` family.
    pub http_completed: Option<f64>,
    /// Backends of a router's re-exported gauges on the page ([`series_of`]): not
    /// read as engines.
    pub router_backends: BTreeSet<String>,
    /// Why the page's engines were not read when it holds several servers' series (the
    /// core gauge more than once for one engine, or for two `model_name`s): summed,
    /// they would read as one engine.
    pub mixed_servers: Option<String>,
}

impl Reading {
    /// Names of the required families this page lacks (empty for a vLLM endpoint).
    pub fn missing_required(&self) -> Vec<&'static str> {
        let has = |f: fn(&EngineReading) -> bool| self.engines.iter().any(f);
        let mut missing = Vec::new();
        if !has(|e| e.running.is_some()) {
            missing.push(REQUIRED_FOR_VLLM[0]);
        }
        if !has(|e| e.waiting.is_some()) {
            missing.push(REQUIRED_FOR_VLLM[1]);
        }
        if !has(|e| e.kv_fraction.is_some()) {
            missing.push(REQUIRED_FOR_VLLM[2]);
        }
        missing
    }

    /// KV capacity of the server in tokens: `num_gpu_blocks × block_size` from
    /// `cache_config_info`. vLLM reports `num_gpu_blocks` already summed over its
    /// data-parallel engines on every engine's label set (flag reference §3), so one
    /// label set is the whole server.
    pub fn kv_capacity_tokens(&self) -> Option<f64> {
        let c = self.cache_config.first()?;
        let blocks = c.get("num_gpu_blocks")?.parse::<f64>().ok()?;
        let bs = c.get("block_size")?.parse::<f64>().ok()?;
        Some(blocks * bs)
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn add(slot: &mut Option<f64>, v: f64) {
    if let Some(v) = finite(v) {
        *slot = Some(slot.unwrap_or(0.0) + v);
    }
}

/// Replaces a prioritised slot when `priority` is better than what it holds; adds when equal.
fn add_prio(slot: &mut Option<(f64, u8)>, v: f64, priority: u8) {
    let Some(v) = finite(v) else { return };
    match slot {
        Some((old, p)) if *p == priority => *old += v,
        Some((_, p)) if *p < priority => {}
        _ => *slot = Some((v, priority)),
    }
}

/// Maps one parsed page onto per-engine readings.
pub fn read(exp: &Exposition) -> Reading {
    let mut out = Reading::default();
    // A page has a handful of (model, engine) series: a vector searched by borrowed
    // labels costs no allocation per sample (a map keyed by owned strings cost two).
    let mut engines: Vec<EngineReading> = Vec::new();
    let mut saw_blocks_era_alias = false;
    // The core gauge twice for one engine: several servers' series on one page.
    let mut core_twice = false;

    for fam in &exp.families {
        let Some(bare) = PREFIXES.iter().find_map(|p| fam.name.strip_prefix(p)) else {
            match fam.name {
                "process_resident_memory_bytes" => {
                    out.process_rss_bytes = fam
                        .samples
                        .iter()
                        .map(|s| s.value)
                        .filter(|v| v.is_finite() && *v >= 0.0)
                        .reduce(f64::max);
                }
                "process_cpu_seconds" | "process_cpu_seconds_total" => {
                    out.process_cpu_s = fam
                        .samples
                        .iter()
                        .map(|s| s.value)
                        .filter(|v| v.is_finite() && *v >= 0.0)
                        .reduce(f64::max);
                }
                "http_requests" | "http_requests_total" => {
                    out.http_completed = Some(http_completed(fam));
                }
                // One process serves /metrics; with several label sets (multiprocess
                // mode) the earliest start stands for the server.
                "process_start_time_seconds" => {
                    out.process_start_time_s = fam
                        .samples
                        .iter()
                        .map(|s| s.value)
                        .filter(|v| v.is_finite() && *v > 0.0)
                        .reduce(f64::min);
                }
                _ => {}
            }
            continue;
        };
        let Some(alias) = lookup(bare) else {
            // `_created` companions of known families are known too.
            let known_created = bare
                .strip_suffix("_created")
                .is_some_and(|b| lookup(b).is_some() || lookup(&format!("{b}_total")).is_some());
            if !known_created {
                out.unknown_vllm.insert(fam.name.to_string());
            }
            continue;
        };
        out.vllm_families += 1;
        if alias.target == Target::Known {
            continue;
        }
        if alias.target == Target::CacheConfig {
            for s in &fam.samples {
                out.cache_config.push(
                    s.labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                );
            }
            continue;
        }
        if matches!(
            alias.name,
            "gpu_prefix_cache_queries_total" | "gpu_prefix_cache_hits_total"
        ) {
            saw_blocks_era_alias = true;
        }
        for s in &fam.samples {
            // OpenMetrics puts `_created` samples inside the counter family.
            if s.name.ends_with("_created") && fam.kind != MetricType::Gauge {
                continue;
            }
            let (model, engine) = match series_of(|k| s.label(k)) {
                SeriesOf::Engine { model, engine } => (model, engine),
                SeriesOf::Router(backend) => {
                    if !out.router_backends.contains(backend) {
                        out.router_backends.insert(backend.to_string());
                    }
                    continue;
                }
            };
            let i = match engines
                .iter()
                .position(|e| e.engine == engine && e.model_name == model)
            {
                Some(i) => i,
                None => {
                    engines.push(EngineReading {
                        model_name: model.to_string(),
                        engine: engine.to_string(),
                        ..Default::default()
                    });
                    engines.len() - 1
                }
            };
            let Some(e) = engines.get_mut(i) else {
                continue;
            };
            let v = s.value;
            match alias.target {
                Target::KvUsageFraction => add_prio(&mut e.kv_fraction, v, alias.priority),
                Target::Running => {
                    core_twice |= e.running.is_some();
                    add(&mut e.running, v)
                }
                Target::Waiting => add(&mut e.waiting, v),
                Target::WaitingByReason => match s.label("reason") {
                    Some("capacity") => add(&mut e.waiting_capacity, v),
                    Some("deferred") => add(&mut e.waiting_deferred, v),
                    _ => {}
                },
                Target::Swapped => add(&mut e.swapped, v),
                Target::Preemptions => add(&mut e.preemptions, v),
                Target::PromptTokens => add(&mut e.prompt_tokens, v),
                Target::PromptTokensCached => add(&mut e.prompt_cached, v),
                Target::PromptTokensBySource => {
                    if matches!(
                        s.label("source"),
                        Some("local_cache_hit" | "external_kv_transfer")
                    ) {
                        add(&mut e.prompt_cached_by_source, v);
                    }
                }
                Target::GenerationTokens => add(&mut e.generation_tokens, v),
                Target::RequestSuccess => {
                    add(&mut e.finished, v);
                    if matches!(s.label("finished_reason"), Some("abort" | "error")) {
                        add(&mut e.aborted, v);
                    } else if e.aborted.is_none() {
                        e.aborted = Some(0.0);
                    }
                }
                Target::PrefixQueries => add_prio(&mut e.prefix_queries, v, alias.priority),
                Target::PrefixHits => add_prio(&mut e.prefix_hits, v, alias.priority),
                Target::PrefixHitRateV0 => {
                    if v >= 0.0 {
                        e.prefix_hit_rate_v0 = finite(v);
                    }
                }
                Target::AdmissionRejections => add(&mut e.rejected, v),
                Target::AvgPromptThroughput => e.avg_prompt_tps = finite(v),
                Target::AvgGenerationThroughput => e.avg_gen_tps = finite(v),
                Target::Histogram(h) => {
                    let slot = e
                        .hists
                        .entry(h)
                        .or_insert_with(|| (Histogram::default(), alias.priority));
                    if alias.priority < slot.1 {
                        *slot = (Histogram::default(), alias.priority);
                    } else if alias.priority > slot.1 {
                        continue;
                    }
                    let hist = &mut slot.0;
                    if let Some(suffix) = s.name.strip_prefix(fam.name) {
                        match suffix {
                            "_bucket" => {
                                if let Some(le) = s.label("le").and_then(parse_le) {
                                    hist.buckets.push((le, v));
                                }
                            }
                            "_sum" => hist.sum = v,
                            "_count" => hist.count = v,
                            _ => {}
                        }
                    }
                }
                Target::CacheConfig | Target::Known => {}
            }
        }
    }

    // gpu_prefix_cache_* counted blocks until 0.9.0; `cache_config_info` got its `engine`
    // label in the same release, so a page whose cache config lacks `engine` is from the
    // blocks era. Convert blocks to tokens so the column keeps one unit.
    let blocks_era = saw_blocks_era_alias
        && !out.cache_config.is_empty()
        && out.cache_config.iter().all(|c| !c.contains_key("engine"));
    let block_size = out
        .cache_config
        .first()
        .and_then(|c| c.get("block_size"))
        .and_then(|b| b.parse::<f64>().ok());
    for e in engines.iter_mut() {
        for h in e.hists.values_mut() {
            h.0.normalize();
        }
        if let (true, Some(bs)) = (blocks_era, block_size) {
            for slot in [&mut e.prefix_queries, &mut e.prefix_hits] {
                if let Some((v, 1)) = slot {
                    *v *= bs;
                }
            }
        }
    }
    // Ordered by (model, engine), as the rows are written.
    engines.sort_by(|a, b| (&a.model_name, &a.engine).cmp(&(&b.model_name, &b.engine)));
    // (Looked into only when the engines read suggest it: never on a vLLM server's page.)
    let mut core_models = engines
        .iter()
        .filter(|e| e.running.is_some())
        .map(|e| &e.model_name);
    let first = core_models.next();
    let several_models = core_models.any(|m| Some(m) != first);
    out.mixed_servers = (core_twice || several_models)
        .then(|| mixed_servers(exp))
        .flatten();
    if out.mixed_servers.is_none() {
        out.engines = engines;
    }
    out.gpus = gpu::read(exp);
    out
}

/// The API server's handlers that submit exactly one engine request per HTTP request
/// (prometheus-fastapi-instrumentator's `handler` label, vLLM 0.10–0.33). Left out on
/// purpose: `/v1/responses` (a background response answers 200 at once while its
/// request runs on: it would read as an abort until it finishes), and the handlers
/// that fan one HTTP request out into several engine requests (embeddings and
/// scoring of lists, audio split into chunks, chat batches).
pub const GENERATE_HANDLERS: &[&str] = &[
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/messages",
    "/inference/v1/generate",
    "/cohere/v2/chat",
];

/// Generation requests the API server answered with a 2xx status so far. The
/// instrumentator counts a request once its response ends: a stream that ran to its
/// end, and one whose client disconnected (the status was sent with the first byte; a
/// non-streaming request cancelled by `with_cancellation` is answered with an empty
/// 200). Statuses are grouped (`2xx`) by vLLM's instrumentator; a bare `200` counts too.
fn http_completed(fam: &Family) -> f64 {
    fam.samples
        .iter()
        .filter(|s| !s.name.ends_with("_created"))
        .filter(|s| {
            s.label("handler")
                .is_some_and(|h| GENERATE_HANDLERS.contains(&h))
        })
        .filter(|s| s.label("status").is_some_and(|c| c.starts_with('2')))
        .filter_map(|s| finite(s.value))
        .filter(|v| *v >= 0.0)
        .sum()
}

/// Whose a `vllm:` series is, from its labels: an engine's (`model_name`, else Triton's
/// `model`, and `engine`, "0" when not exposed) or a router's re-export for a backend.
pub enum SeriesOf<'s> {
    Engine { model: &'s str, engine: &'s str },
    Router(&'s str),
}

/// Whose series a sample's labels (`label` looks one up) make it. A router's series
/// names a [`ROUTER_BACKEND_LABEL`] and neither `model_name` nor `engine` (vLLM labels
/// every series of these families with `model_name`).
pub fn series_of<'s>(label: impl Fn(&str) -> Option<&'s str>) -> SeriesOf<'s> {
    let model_name = label("model_name");
    let engine = label("engine");
    // (The backend label is looked up only without the other two: no extra lookups on
    // vLLM's own pages.)
    if model_name.is_none()
        && engine.is_none()
        && let Some(backend) = label(ROUTER_BACKEND_LABEL)
    {
        return SeriesOf::Router(backend);
    }
    SeriesOf::Engine {
        model: model_name.or_else(|| label("model")).unwrap_or(""),
        engine: engine.unwrap_or("0"),
    }
}

/// One series' labels as (name, value) pairs.
type LabelSet<'a> = Vec<(&'a str, &'a str)>;

/// Labels whose values differ between label sets (absent counts as a value): what tells
/// apart series that should have been one.
fn differing_labels<'a>(sets: &[LabelSet<'a>]) -> Vec<&'a str> {
    let value =
        |set: &LabelSet<'a>, key: &str| set.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let Some(first) = sets.first() else {
        return Vec::new();
    };
    let keys: BTreeSet<&str> = sets.iter().flatten().map(|(k, _)| *k).collect();
    keys.into_iter()
        .filter(|k| sets.iter().any(|set| value(set, k) != value(first, k)))
        .collect()
}

/// Whether a page holds several vLLM servers' series, and which: vLLM writes one series
/// of the core gauge per (`model_name`, `engine`), and labels every series of a server
/// with its one served model name (the first of `--served-model-name`). Two series for
/// one engine, or two `model_name`s, are several servers (a federation, an aggregating
/// sidecar, a Prometheus import grouped by too coarse a label), whose values must not
/// be summed into one. (Triton's vLLM backend labels `model` instead: one Triton server
/// may host several models, each read as its own series.)
fn mixed_servers(exp: &Exposition) -> Option<String> {
    let fam = exp.families.iter().find(|f| is_core_gauge(f.name))?;
    let mut by_engine: BTreeMap<(&str, &str), Vec<LabelSet>> = BTreeMap::new();
    let mut models: BTreeSet<&str> = BTreeSet::new();
    let mut all: Vec<LabelSet> = Vec::new();
    for s in &fam.samples {
        if let SeriesOf::Engine { model, engine } = series_of(|k| s.label(k)) {
            let labels: LabelSet = s.labels.iter().map(|(k, v)| (*k, v.as_ref())).collect();
            models.extend(s.label("model_name"));
            all.push(labels.clone());
            by_engine.entry((model, engine)).or_default().push(labels);
        }
    }
    let listed = |sets: &[LabelSet]| {
        let differ = differing_labels(sets);
        if differ.is_empty() {
            "nothing but their order".to_string()
        } else {
            differ
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let what =
        if let Some(((model, engine), sets)) = by_engine.iter().find(|(_, sets)| sets.len() > 1) {
            format!(
                "{} series of {} for model_name `{model}`, engine {engine}, differing in {}",
                sets.len(),
                fam.name,
                listed(sets)
            )
        } else if models.len() > 1 {
            format!(
                "{} series of {} for {} models ({}), differing in {}",
                all.len(),
                fam.name,
                models.len(),
                models
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                listed(&all)
            )
        } else {
            return None;
        };
    Some(format!(
        "{what}: several servers on one page (a federation or aggregating endpoint)"
    ))
}

/// Index of the admission rejections in a series' counters.
const REJECTED: usize = 8;

#[derive(Debug, Clone, Default)]
struct PrevState {
    ts_us: i64,
    process_start_s: Option<f64>,
    process_cpu_s: Option<f64>,
    /// Running and waiting at the previous scrape (the abort books).
    running: Option<f64>,
    waiting: Option<f64>,
    counters: [Option<f64>; 9],
    hists: BTreeMap<Hist, Histogram>,
}

/// A server's books of requests that left without finishing, kept across its pages:
/// the engines' balances (per engine, per interval) and the HTTP book (per page: the
/// instrumentator's counters have no `engine` label). Both count from when they started.
#[derive(Debug, Clone, Default)]
struct LeftBooks {
    /// Σ of the engines' per-interval lower bounds.
    engines: f64,
    /// (HTTP completions − requests vLLM finished) when the HTTP book started, and the
    /// highest value seen since.
    http: Option<(f64, f64)>,
    /// What has been credited to intervals so far: the larger of the two books.
    credited: f64,
}

impl LeftBooks {
    /// Starts over (first page, restart): what came before is not this process's.
    fn start(balance: Option<f64>) -> Self {
        Self {
            http: balance.map(|b| (b, b)),
            ..Self::default()
        }
    }

    /// Requests that left without finishing in this interval: the growth of the larger
    /// book. Each book is a lower bound of the aborts since it started, so the larger
    /// one is too, and crediting only its growth never counts a request twice when the
    /// two books see it in different intervals.
    ///
    /// The HTTP book is `completed − finished`, where completed counts the generation
    /// requests whose HTTP exchange ended (finished or aborted) and finished those vLLM
    /// finished other than by abort or error. It is exact where the engines' books are
    /// bounds: a client that gives up while its request waits, replaced by a retry,
    /// moves no gauge. vLLM records a step's finished requests before their streams
    /// close, so the balance dips by the streams still closing at a scrape and recovers
    /// at the next: only its highest value so far counts (a dip is never an abort).
    fn credit(&mut self, engines: f64, balance: Option<f64>) -> f64 {
        self.engines += engines.max(0.0);
        if let Some(b) = balance {
            self.http = Some(match self.http {
                Some((base, high)) => (base, high.max(b)),
                // The family appeared (the first request ever answered).
                None => (b, b),
            });
        }
        let http = self.http.map_or(0.0, |(base, high)| high - base);
        let total = self.engines.max(http);
        let grew = (total - self.credited).max(0.0);
        self.credited = total;
        grew
    }
}

/// Turns successive readings into samples; keeps per-series state for rates and deltas.
#[derive(Debug, Default)]
pub struct Normalizer {
    prev: HashMap<(String, String, String), PrevState>,
    left: HashMap<String, LeftBooks>,
}

/// Everything one normalization step produces.
#[derive(Debug, Default)]
pub struct Normalized {
    pub samples: Vec<Sample>,
    pub histograms: Vec<HistogramRow>,
}

impl Normalizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Series (model_name, engine) seen so far for `server`.
    pub fn known_series(&self, server: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .prev
            .keys()
            .filter(|k| k.0 == server)
            .map(|k| (k.1.clone(), k.2.clone()))
            .collect();
        v.sort();
        v
    }

    /// Normalizes one reading of `server` taken at `ts_us`.
    pub fn normalize(
        &mut self,
        server: &str,
        ts_us: i64,
        t_rel_sec: f64,
        scrape_ms: Option<f64>,
        reading: &Reading,
    ) -> Normalized {
        let mut out = Normalized::default();
        // Per engine row: what its own books say left in the interval (None on its first
        // scrape and across a restart).
        let mut left: Vec<Option<f64>> = Vec::with_capacity(reading.engines.len());
        let mut restarted = false;
        for e in &reading.engines {
            let key = (server.to_string(), e.model_name.clone(), e.engine.clone());
            let prev = self.prev.get(&key);
            let interval_s = prev
                .map(|p| (ts_us - p.ts_us) as f64 / 1e6)
                .filter(|d| *d > 0.0);
            let prompt_cached = e.prompt_cached.or(e.prompt_cached_by_source);
            let counters = [
                e.preemptions,
                e.prompt_tokens,
                e.generation_tokens,
                e.finished,
                e.aborted,
                prompt_cached,
                e.prefix_queries.map(|x| x.0),
                e.prefix_hits.map(|x| x.0),
                e.rejected,
            ];
            // A new process start time is a restart even when no counter went down yet
            // (a restart between two scrapes of an idle server).
            let mut reset = matches!(
                (prev.and_then(|p| p.process_start_s), reading.process_start_time_s),
                (Some(a), Some(b)) if (a - b).abs() > 1e-3
            );
            let mut increases = [None; 9];
            for (i, cur) in counters.iter().enumerate() {
                let mut prev_v = prev.and_then(|p| p.counters.get(i).copied().flatten());
                // Admission rejections are counted per `reason`, a series that appears
                // at the first rejection of its kind: absent from the previous page of a
                // running server, it stood at 0 then.
                if i == REJECTED {
                    prev_v = prev_v.or(prev.map(|_| 0.0));
                }
                if let (Some(c), Some(p)) = (cur, prev_v) {
                    if *c < p {
                        reset = true;
                        increases[i] = Some(*c);
                    } else {
                        increases[i] = Some(c - p);
                    }
                }
            }
            let rate = |i: usize| -> Option<f64> {
                let dt = interval_s?;
                increases.get(i).copied().flatten().map(|d| d / dt)
            };
            let hit_rate = match (increases[7], increases[6]) {
                (Some(h), Some(q)) if q > 0.0 => Some((h / q * 100.0).clamp(0.0, 100.0)),
                _ => e.prefix_hit_rate_v0.map(|r| r * 100.0),
            };

            let mut deltas: BTreeMap<Hist, Histogram> = BTreeMap::new();
            for (h, (cur, _)) in &e.hists {
                if let Some(p) = prev.and_then(|p| p.hists.get(h)) {
                    let (d, r) = cur.delta_since(p);
                    reset |= r;
                    deltas.insert(*h, d);
                }
                let delta = deltas.get(h);
                for (i, (le, c)) in cur.buckets.iter().enumerate() {
                    // Reset-aware increase of this bucket since the previous scrape (0 on
                    // the first scrape of a series).
                    let increase = delta.and_then(|d| d.buckets.get(i)).map_or(0.0, |b| b.1);
                    out.histograms.push(HistogramRow {
                        ts: ts_us,
                        server: server.to_string(),
                        model_name: e.model_name.clone(),
                        engine: e.engine.clone(),
                        metric: h.canonical().to_string(),
                        le: *le,
                        cumulative_count: *c,
                        increase,
                        sum: cur.sum,
                        count: cur.count,
                    });
                }
            }
            let mut flags: Vec<String> = Vec::new();
            let mut q = |h: Hist, quantile: f64, col: &str| -> Option<f64> {
                let (v, clamp) = deltas.get(&h)?.quantile(quantile)?;
                match clamp {
                    Clamp::Lower => flags.push(format!("{col}:lower")),
                    Clamp::Upper => flags.push(format!("{col}:upper")),
                    Clamp::None => {}
                }
                Some(v)
            };
            let count = |h: Hist| deltas.get(&h).map(|d| round(d.count));
            let g = gpu::columns(&reading.gpus, &e.engine, reading.engines.len());
            let mut s = Sample {
                ts: ts_us,
                t_rel_sec,
                server: server.to_string(),
                model_name: e.model_name.clone(),
                engine: e.engine.clone(),
                scrape_ok: true,
                scrape_ms,
                scrape_error: None,
                interval_s,
                counter_reset: reset,
                kv_cache_usage_pct: e.kv_cache_usage_pct(),
                requests_running: e.running.map(round),
                requests_waiting: e.waiting.map(round),
                requests_waiting_capacity: e.waiting_capacity.map(round),
                requests_waiting_deferred: e.waiting_deferred.map(round),
                requests_swapped: e.swapped.map(round),
                preemptions_total: e.preemptions.map(round),
                preemptions_per_s: rate(0),
                prompt_tokens_total: e.prompt_tokens.map(round),
                prompt_tokens_per_s: rate(1).or(e.avg_prompt_tps),
                prompt_tokens_cached_per_s: rate(5),
                generation_tokens_total: e.generation_tokens.map(round),
                generation_tokens_per_s: rate(2).or(e.avg_gen_tps),
                requests_finished_total: e.finished.map(round),
                requests_finished_per_s: rate(3),
                requests_aborted_per_s: rate(4),
                requests_rejected_per_s: rate(REJECTED),
                prefix_cache_queries_total: e.prefix_queries.map(|x| round(x.0)),
                prefix_cache_hits_total: e.prefix_hits.map(|x| round(x.0)),
                prefix_cache_hit_rate_pct: hit_rate,
                ttft_p50_s: q(Hist::Ttft, 0.5, "ttft_p50_s"),
                ttft_p95_s: q(Hist::Ttft, 0.95, "ttft_p95_s"),
                ttft_p99_s: q(Hist::Ttft, 0.99, "ttft_p99_s"),
                ttft_p95_floor_s: deltas.get(&Hist::Ttft).and_then(|d| d.quantile_floor(0.95)),
                ttft_mean_s: None,
                ttft_count: None,
                e2e_p50_s: q(Hist::E2e, 0.5, "e2e_p50_s"),
                e2e_p95_s: q(Hist::E2e, 0.95, "e2e_p95_s"),
                e2e_p99_s: q(Hist::E2e, 0.99, "e2e_p99_s"),
                e2e_p95_floor_s: deltas.get(&Hist::E2e).and_then(|d| d.quantile_floor(0.95)),
                e2e_count: None,
                itl_p50_s: q(Hist::Itl, 0.5, "itl_p50_s"),
                itl_p95_s: q(Hist::Itl, 0.95, "itl_p95_s"),
                itl_mean_s: None,
                queue_time_p95_s: q(Hist::Queue, 0.95, "queue_time_p95_s"),
                queue_time_mean_s: None,
                prefill_time_p95_s: q(Hist::Prefill, 0.95, "prefill_time_p95_s"),
                decode_time_p95_s: q(Hist::Decode, 0.95, "decode_time_p95_s"),
                iteration_tokens_p50: q(Hist::IterationTokens, 0.5, "iteration_tokens_p50"),
                iteration_tokens_mean: None,
                prompt_len_p95: q(Hist::PromptLen, 0.95, "prompt_len_p95"),
                gpu_util_pct: g.util_pct,
                gpu_mem_used_pct: g.mem_used_pct,
                gpu_sm_active_pct: g.sm_active_pct,
                gpu_sm_occupancy_pct: g.sm_occupancy_pct,
                gpu_tensor_active_pct: g.tensor_active_pct,
                gpu_sm_clock_mhz: g.sm_clock_mhz,
                gpu_power_w: g.power_w,
                gpu_temp_c: g.temp_c,
                gpu_throttle: g.throttle,
                gpu_xid: g.xid,
                api_rss_mib: reading.process_rss_bytes.map(|b| b / 1_048_576.0),
                kv_evictions_sampled: count(Hist::KvBlockLifetime),
                kv_evictions_sampled_per_s: interval_s
                    .and_then(|dt| deltas.get(&Hist::KvBlockLifetime).map(|d| d.count / dt)),
                kv_block_lifetime_p50_s: q(Hist::KvBlockLifetime, 0.5, "kv_block_lifetime_p50_s"),
                kv_block_idle_p50_s: q(Hist::KvBlockIdle, 0.5, "kv_block_idle_p50_s"),
                kv_block_reuse_gap_p50_s: q(Hist::KvBlockReuseGap, 0.5, "kv_block_reuse_gap_p50_s"),
                kv_block_reuses: count(Hist::KvBlockReuseGap),
                engine_steps_per_s: interval_s
                    .and_then(|dt| deltas.get(&Hist::IterationTokens).map(|d| d.count / dt)),
                process_start_time_s: reading.process_start_time_s,
                // CPU seconds per second of the serving process; none across a restart.
                api_cpu_util_pct: match (
                    prev.and_then(|p| p.process_cpu_s),
                    reading.process_cpu_s,
                    interval_s,
                ) {
                    (Some(a), Some(b), Some(dt)) if b >= a && !reset => Some((b - a) / dt * 100.0),
                    _ => None,
                },
                requests_abandoned_per_s: None,
                quantile_flags: None,
            };
            s.quantile_flags = (!flags.is_empty()).then(|| flags.join(","));
            let mean = |h: Hist| deltas.get(&h).and_then(Histogram::mean);
            s.ttft_mean_s = mean(Hist::Ttft);
            s.ttft_count = count(Hist::Ttft);
            s.e2e_count = count(Hist::E2e);
            s.itl_mean_s = mean(Hist::Itl);
            s.queue_time_mean_s = mean(Hist::Queue);
            s.iteration_tokens_mean = mean(Hist::IterationTokens);
            left.push(abandoned(
                prev,
                e,
                &increases,
                deltas.get(&Hist::Ttft).map(|d| d.count),
                reset,
            ));
            restarted |= reset || prev.is_none();
            out.samples.push(s);

            self.prev.insert(
                key,
                PrevState {
                    ts_us,
                    process_start_s: reading.process_start_time_s,
                    process_cpu_s: reading.process_cpu_s,
                    running: e.running,
                    waiting: e.waiting,
                    counters,
                    hists: e.hists.iter().map(|(h, (x, _))| (*h, x.clone())).collect(),
                },
            );
        }
        self.credit_left(server, reading, &mut out.samples, &left, restarted);
        out
    }

    /// Fills each engine row's `requests_abandoned_per_s` from the server's books. The
    /// HTTP book belongs to no engine: what it finds beyond the engines' books is shared
    /// in proportion to them (all to the first engine when they found none).
    fn credit_left(
        &mut self,
        server: &str,
        reading: &Reading,
        samples: &mut [Sample],
        left: &[Option<f64>],
        restarted: bool,
    ) {
        // Completed − finished: every engine's finished counter is needed (a page
        // without one has no balance).
        let finished_ok = reading
            .engines
            .iter()
            .map(|e| e.finished.map(|f| f - e.aborted.unwrap_or(0.0)))
            .sum::<Option<f64>>();
        let balance = reading.http_completed.zip(finished_ok).map(|(h, f)| h - f);
        let books = match self.left.get_mut(server) {
            Some(books) if !restarted => books,
            _ => {
                self.left
                    .insert(server.to_string(), LeftBooks::start(balance));
                return;
            }
        };
        let own: f64 = left.iter().flatten().sum();
        let grew = books.credit(own, balance);
        let first = left.iter().position(Option::is_some);
        for (i, (s, own_e)) in samples.iter_mut().zip(left).enumerate() {
            let Some(v) = own_e else { continue };
            let share = if own > 0.0 {
                grew * v / own
            } else if Some(i) == first {
                grew
            } else {
                0.0
            };
            s.requests_abandoned_per_s = s.interval_s.map(|dt| share / dt);
        }
    }

    /// Rows for a failed scrape: one per series already known for `server` (or one with
    /// empty model/engine when none is), metrics null, `scrape_ok` false.
    pub fn failed(
        &self,
        server: &str,
        ts_us: i64,
        t_rel_sec: f64,
        scrape_ms: Option<f64>,
    ) -> Vec<Sample> {
        let mut series = self.known_series(server);
        if series.is_empty() {
            series.push((String::new(), String::new()));
        }
        series
            .into_iter()
            .map(|(model_name, engine)| Sample {
                ts: ts_us,
                t_rel_sec,
                server: server.to_string(),
                model_name,
                engine,
                scrape_ok: false,
                scrape_ms,
                ..Default::default()
            })
            .collect()
    }
}

/// Requests that left without finishing, per second, from books that must balance.
/// vLLM 0.26 counts no abort in `request_success_total`, so:
/// - everyone: requests leave only by finishing or by being aborted (a client
///   disconnected), so aborted = arrivals − Δ(running + waiting) − finished ≥
///   −Δ(running + waiting) − finished (exact when nothing arrives);
/// - decoding: a request that produced a first token (the TTFT histogram counts them,
///   arrivals included, at any interval) runs until it finishes, is aborted or is
///   preempted back to waiting, so aborted ≥ first tokens − finished − preemptions −
///   Δrunning (up to requests still in prefill).
///
/// The largest of the two bounds and the counted `finished_reason="abort"|"error"` wins.
/// None on a series' first scrape and across a restart (the books start over). The
/// server's HTTP book is added to these in [`LeftBooks::credit`].
fn abandoned(
    prev: Option<&PrevState>,
    e: &EngineReading,
    increases: &[Option<f64>; 9],
    first_tokens: Option<f64>,
    reset: bool,
) -> Option<f64> {
    let p = prev?;
    if reset {
        return None;
    }
    let finished = increases[3].unwrap_or(0.0);
    let counted = increases[4].unwrap_or(0.0);
    let n = |r: Option<f64>, w: Option<f64>| r.unwrap_or(0.0) + w.unwrap_or(0.0);
    let everyone = n(p.running, p.waiting) - n(e.running, e.waiting) - finished;
    let decoding = first_tokens.map_or(0.0, |f| {
        f - finished
            - increases[0].unwrap_or(0.0)
            - (e.running.unwrap_or(0.0) - p.running.unwrap_or(0.0))
    });
    Some(counted.max(everyone).max(decoding).max(0.0))
}

fn round(v: f64) -> i64 {
    v.round() as i64
}
