//! Diagnosis stage: `kvscope doctor`'s hypotheses as pure functions over analysis results
//! (the [`Summary`] and events) and the session's server facts.
//!
//! Each rule lives in its own file under `rules/` and is listed once in [`RULES`]. A rule
//! returns a [`Verdict`]: a [`Finding`] with a score in 0–1, evidence and computed
//! recommendations, or the reason it was ruled out. Ranking, severity and the data-quality
//! adjustment of confidence happen here, once, for every rule.

pub mod flags;
pub mod rules;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::analysis::Summary;
use crate::analysis::summary::ServerSummary;
use crate::store::Metadata;
use crate::store::events::Event;
use crate::vocab::{Condition, EventName, EventType, Hypothesis, Phase, Severity, Status};

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub metric: String,
    pub observed: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<serde_json::Value>,
    /// `start … end` (RFC 3339) or a single time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

/// A concrete action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The vLLM flag or operational action.
    pub action: String,
    /// Suggested value, computed from the session where one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// For a flag: its value on the server (from `cache_config_info`), or "unknown".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// For a flag: the vLLM releases that accept it ([`flags`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_by: Option<String>,
    pub reason: String,
    pub tradeoff: String,
}

/// A hypothesis that holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: Hypothesis,
    pub title: String,
    pub server: String,
    pub rank: usize,
    pub score: f64,
    pub severity: Severity,
    pub confidence: f64,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    pub counter_evidence: Vec<String>,
    pub recommendations: Vec<Recommendation>,
}

/// A hypothesis considered and rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuledOut {
    pub id: Hypothesis,
    pub server: String,
    pub reason: String,
}

/// What a rule says.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Found {
        /// Seconds the trouble behind the finding was sustained, when it is a state in
        /// time (None for discrete facts such as a restart). Under `finding_min_s` the
        /// finding cannot be medium or high: no verdict from one or two scrapes.
        sustained_s: Option<f64>,
        score: f64,
        summary: String,
        evidence: Vec<Evidence>,
        counter_evidence: Vec<String>,
        recommendations: Vec<Recommendation>,
    },
    RuledOut(String),
}

/// Facts about the server from metadata (cache config).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerFacts {
    /// KV blocks of one engine (vLLM's `cache_config_info` shows the sum over
    /// data-parallel engines; divided here).
    pub num_gpu_blocks: Option<f64>,
    pub block_size: Option<f64>,
    pub gpu_memory_utilization: Option<f64>,
    pub prefix_caching: Option<bool>,
    /// `cache_dtype` (what `--kv-cache-dtype` set).
    pub cache_dtype: Option<String>,
    /// Set when the KV size does not come from `--gpu-memory-utilization`
    /// (`--num-gpu-blocks-override` or `--kv-cache-memory-bytes`).
    pub kv_size_fixed_by: Option<String>,
    pub engines: usize,
    /// `--kv-cache-metrics-sample`, where a `cache_config_info` label shows it (stock vLLM
    /// keeps it in the observability config, off `/metrics`).
    pub kv_cache_metrics_sample: Option<f64>,
    /// `kv_offloading_size` (GiB of the CPU tier) from `cache_config_info`.
    pub kv_offloading_size: Option<String>,
    /// The server's vLLM release, stated or inferred from `cache_config_info`.
    pub vllm_version: Option<crate::adapter::version::VllmVersion>,
}

impl ServerFacts {
    /// KV capacity in tokens per engine.
    pub fn kv_capacity_tokens(&self) -> Option<f64> {
        Some(self.num_gpu_blocks? * self.block_size?)
    }

    /// The server's current value of a flag, where `/metrics` shows it.
    pub fn current(&self, flag: &str) -> Option<String> {
        match flag {
            "--gpu-memory-utilization" => self.gpu_memory_utilization.map(|g| format!("{g}")),
            "--kv-cache-dtype" => self.cache_dtype.clone(),
            "--enable-prefix-caching" => self.prefix_caching.map(|p| p.to_string()),
            // `None` on the label means no CPU tier.
            "--kv-offloading-size" => self.kv_offloading_size.clone(),
            _ => None,
        }
    }

    /// Reads the server's cache config from `metadata.json`.
    pub fn from_metadata(meta: Option<&Metadata>, server: &str) -> Self {
        let Some(meta) = meta else {
            return Self::default();
        };
        let Some(s) = meta.servers.iter().find(|s| s.server == server) else {
            return Self::default();
        };
        let cfg = s.cache_config.first();
        let text = |k: &str| {
            cfg.and_then(|c| c.get(k))
                .map(String::as_str)
                .filter(|v| !v.is_empty() && *v != "None")
        };
        let num = |k: &str| text(k).and_then(|v| v.parse::<f64>().ok());
        let engines = s.engines.len().max(1);
        let kv_size_fixed_by = if num("num_gpu_blocks_override").is_some() {
            Some("--num-gpu-blocks-override".to_string())
        } else if num("kv_cache_memory_bytes").is_some_and(|b| b > 0.0) {
            Some("--kv-cache-memory-bytes".to_string())
        } else {
            None
        };
        Self {
            // The sum over data-parallel engines (flag reference): per engine here.
            num_gpu_blocks: num("num_gpu_blocks").map(|b| b / engines as f64),
            block_size: num("block_size"),
            gpu_memory_utilization: num("gpu_memory_utilization"),
            prefix_caching: text("enable_prefix_caching").map(|v| v.eq_ignore_ascii_case("true")),
            cache_dtype: text("cache_dtype").map(str::to_string),
            kv_size_fixed_by,
            engines,
            kv_cache_metrics_sample: num("kv_cache_metrics_sample")
                .filter(|r| *r > 0.0 && *r <= 1.0),
            // The label reads `None` when there is no CPU tier; absent before 0.26.
            kv_offloading_size: cfg.and_then(|c| c.get("kv_offloading_size")).map(|v| {
                if v == "None" {
                    "none".into()
                } else {
                    v.clone()
                }
            }),
            vllm_version: s
                .vllm_version
                .as_deref()
                .and_then(crate::adapter::version::VllmVersion::parse),
        }
    }
}

/// The transient and data-quality events the rules read ([`Context::events_named`]).
pub const NAMED_READ: &[EventName] = &[
    EventName::TtftSpike,
    EventName::DecodeThroughputDrop,
    EventName::ClientAbortSurge,
    EventName::CounterReset,
    EventName::ScrapeGap,
];
/// The conditions whose episodes the rules read ([`Context::episodes`]).
pub const EPISODES_READ: &[Condition] = &[Condition::EngineStalled, Condition::TtftElevated];
/// The conditions whose every event (changes and episodes) the rules read
/// ([`Context::condition_events`]).
pub const CONDITIONS_READ: &[Condition] = &[Condition::PrefillPressure];

/// Whether a rule reads `e`: all of a session's events a diagnosis needs (the accessors of
/// [`Context`] check, in debug builds, that a rule asks for nothing else). A streamed
/// `doctor` keeps only these in memory: on a busy fleet about a fifth of the events.
pub fn rules_read(e: &Event) -> bool {
    e.event_name().is_some_and(|n| NAMED_READ.contains(&n))
        || e.condition_name().is_some_and(|c| {
            CONDITIONS_READ.contains(&c)
                || (EPISODES_READ.contains(&c)
                    && e.event_type() == Some(EventType::ConditionEpisode))
        })
}

/// The default thresholds as a rule reads them, and a [`Context`] of one server with no
/// events: what the rules' unit tests start from.
#[cfg(test)]
pub(crate) mod test_context {
    use super::{Context, ServerFacts};
    use crate::analysis::summary::ServerSummary;
    use std::collections::BTreeMap;

    pub fn default_thresholds() -> BTreeMap<String, f64> {
        crate::analysis::Thresholds::default()
            .entries()
            .into_iter()
            .map(|(n, v, _)| (n.to_string(), v))
            .collect()
    }

    pub fn of<'a>(
        server: &'a ServerSummary,
        facts: ServerFacts,
        thresholds: &'a BTreeMap<String, f64>,
    ) -> Context<'a> {
        Context {
            server,
            events: vec![],
            facts,
            thresholds,
            worst_other_score: 0.0,
        }
    }
}

/// What a rule sees.
pub struct Context<'a> {
    pub server: &'a ServerSummary,
    pub events: Vec<&'a Event>,
    pub facts: ServerFacts,
    pub thresholds: &'a std::collections::BTreeMap<String, f64>,
    /// Highest score of the rules that ran before this one (for `runs_last` rules).
    pub worst_other_score: f64,
}

impl Context<'_> {
    /// A threshold in force for this analysis. Every name a rule asks for exists in
    /// [`crate::analysis::Thresholds`] (a test reads the rules' sources to check); a
    /// summary from an older KVScope lacking one falls back to today's default.
    pub fn threshold(&self, name: &str) -> f64 {
        threshold_in(self.thresholds, name)
    }
    /// Share of known time in `phase` (0–1).
    pub fn phase_share(&self, phase: Phase) -> f64 {
        self.server.phases.get(&phase).map_or(0.0, |p| p.share)
    }
    /// Share of the busy time (known and not IDLE) in `phase` (0–1): unlike
    /// [`Self::phase_share`], the same whether the recording idles for a minute or an
    /// hour around the load.
    pub fn busy_share(&self, phase: Phase) -> f64 {
        let busy = self.busy_seconds();
        match busy > 0.0 {
            true => self.phase_seconds(phase) / busy,
            false => 0.0,
        }
    }
    /// Seconds known and not IDLE: what rates of the load are averaged over (a session's
    /// average would fall with every idle minute recorded around the load).
    pub fn busy_seconds(&self) -> f64 {
        (self.server.phases.iter())
            .filter(|(p, _)| !matches!(p, Phase::Idle | Phase::NoData))
            .map(|(_, t)| t.seconds)
            .sum()
    }
    /// Seconds in `phase`.
    pub fn phase_seconds(&self, phase: Phase) -> f64 {
        self.server.phases.get(&phase).map_or(0.0, |p| p.seconds)
    }
    /// Events named `name` (transient/data-quality); `name` must be in [`NAMED_READ`].
    pub fn events_named(&self, name: EventName) -> Vec<&Event> {
        debug_assert!(NAMED_READ.contains(&name), "{name:?} is not in NAMED_READ");
        self.events
            .iter()
            .copied()
            .filter(|e| e.event_name() == Some(name))
            .collect()
    }
    /// Every event of `condition`, changes and episodes; `condition` must be in
    /// [`CONDITIONS_READ`].
    pub fn condition_events(&self, condition: Condition) -> Vec<&Event> {
        debug_assert!(
            CONDITIONS_READ.contains(&condition),
            "{condition:?} is not in CONDITIONS_READ"
        );
        self.events
            .iter()
            .copied()
            .filter(|e| e.condition_name() == Some(condition))
            .collect()
    }
    /// Episodes of `condition`; `condition` must be in [`EPISODES_READ`] or
    /// [`CONDITIONS_READ`].
    pub fn episodes(&self, condition: Condition) -> Vec<&Event> {
        debug_assert!(
            EPISODES_READ.contains(&condition) || CONDITIONS_READ.contains(&condition),
            "{condition:?} is not in EPISODES_READ"
        );
        self.events
            .iter()
            .copied()
            .filter(|e| {
                e.event_type() == Some(EventType::ConditionEpisode)
                    && e.condition_name() == Some(condition)
            })
            .collect()
    }
    /// `first … last` time window of some events (an episode's own end where it has
    /// one); a single instant is given as one time, never as `t … t`.
    pub fn window_of(events: &[&Event]) -> Option<String> {
        let first = events.first()?;
        let start = first.start_time.clone().unwrap_or_else(|| first.ts.clone());
        let end = events
            .iter()
            .map(|e| e.end_time.clone().unwrap_or_else(|| e.ts.clone()))
            .max()?;
        Some(if end == start {
            start
        } else {
            format!("{start} … {end}")
        })
    }
}

/// A registered rule.
pub struct Rule {
    pub id: Hypothesis,
    pub title: &'static str,
    pub check: fn(&Context) -> Verdict,
    /// Whether the rule's evidence depends on latency histograms.
    pub needs_latency: bool,
    /// Runs after every other rule and sees their worst score (HEALTHY).
    pub runs_last: bool,
}

pub use rules::RULES;

/// Errors of diagnosing a session where it lives.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error(transparent)]
    Analysis(#[from] crate::analysis::AnalysisError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("doctor.json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Analyses the session at `loc`, diagnoses it and writes its files into it
/// (`summary.json`, `events.jsonl`, `events.parquet`, `doctor.json`): one session of
/// `kvscope doctor`, on this machine or on a cluster worker. `version` is the vLLM
/// release the user stated (wins over metadata.json).
pub async fn doctor_location(
    loc: &crate::store::location::Location,
    thresholds: &crate::analysis::Thresholds,
    version: Option<crate::adapter::version::VllmVersion>,
) -> Result<Report, DoctorError> {
    use crate::analysis;
    // Streamed: the events go to the session's files as the chunks finish, and only
    // those the rules read come back (memory bounded on a fleet session).
    let (written, events) = analysis::analyze_write_and_keep(
        loc,
        None,
        thresholds,
        analysis::AnalyzeOptions::default(),
        rules_read,
    )
    .await?;
    let mut meta = loc.read_metadata().await?;
    if let (Some(v), Some(m)) = (version, meta.as_mut()) {
        m.state_vllm_version(&v.to_string(), "stated (doctor --vllm-version)");
    }
    let report = diagnose(&written.summary, &events, meta.as_ref());
    loc.write(
        crate::store::DOCTOR_JSON,
        serde_json::to_vec_pretty(&report)?,
    )
    .await?;
    Ok(report)
}

/// The data-quality section of doctor.json: the analysis' data quality plus what it
/// does to confidence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataQuality {
    #[serde(flatten)]
    pub observed: crate::analysis::summary::DataQuality,
    pub notes: Vec<String>,
    /// Multiplier applied to every confidence (1 = complete data).
    pub confidence_factor: f64,
}

/// `doctor.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub session_id: Option<String>,
    /// What the report concludes: `findings` (something medium or worse, or low/info
    /// notes), `healthy`, `indeterminate` (too little telemetry to tell) or `no_data`
    /// (no successful scrape).
    #[serde(default)]
    pub status: Status,
    /// One line: the top finding, that nothing is wrong, or why nothing can be said.
    pub verdict: String,
    /// The worst severity found (`high`, `medium`, `low`, `info`).
    pub severity: Severity,
    pub hypotheses: Vec<Finding>,
    pub ruled_out: Vec<RuledOut>,
    /// Where each episode of trouble was bound, per server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bottleneck: Vec<Bottleneck>,
    /// What else the session knows about each server (CUDA graphs from profilemate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<ServerContext>,
    pub data_quality: DataQuality,
}

/// Context beside the findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerContext {
    pub server: String,
    pub cuda_graphs: crate::source::profilemate::CudaGraphSummary,
    /// One line saying what the graphs show.
    pub note: String,
}

/// What a CUDA graph summary says about the workload.
fn cuda_graph_note(g: &crate::source::profilemate::CudaGraphSummary) -> String {
    let shape = match g.workload.as_str() {
        "uniform" => "batch shapes repeat: a few graphs serve most steps",
        "diverse" => "many batch shapes share the steps: a varied mix of batch sizes",
        _ => "no replays recorded",
    };
    format!(
        "{} CUDA graph(s) captured, {} of them serve 80% of {} replays (top 5: {:.0}%), {:.0}% of replays uniform decode batches: {} workload, {shape}",
        g.unique_graphs,
        g.hot_graphs,
        g.total_replays,
        g.top5_replay_share * 100.0,
        g.uniform_replay_share * 100.0,
        g.workload
    )
}

/// Where an episode of trouble was bound (the on-call runbook's first split, made from
/// data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BottleneckKind {
    /// The KV cache limited the batch (preemption, saturation, waiting on capacity).
    KvMemory,
    /// The GPU was busy with full steps: more work needs more compute.
    Compute,
    /// Kernels ran all the time but left most SMs idle (small or memory-bound steps).
    SmallSteps,
    /// The API server's thread was saturated (HTTP, tokenization): requests queue before
    /// the engine.
    ApiServerCpu,
    /// The GPU idled while requests were slow: engine-core CPU, tokenization, network.
    OutsideGpu,
    /// GPU neither busy nor idle: the data do not single one out.
    Unclear,
    /// No GPU telemetry in the episode: compute-bound and outside-the-GPU cannot be told
    /// apart.
    InsufficientTelemetry,
}

impl std::fmt::Display for BottleneckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::KvMemory => "KV-bound",
            Self::Compute => "compute-bound",
            Self::SmallSteps => "GPU busy with small steps",
            Self::ApiServerCpu => "CPU-bound API server",
            Self::OutsideGpu => "outside the GPU",
            Self::Unclear => "unclear",
            Self::InsufficientTelemetry => "not enough GPU telemetry",
        })
    }
}

/// The bottleneck of one episode of trouble, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bottleneck {
    pub server: String,
    pub start: String,
    pub end: String,
    pub duration_s: f64,
    pub kind: BottleneckKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_util_avg_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_sm_active_avg_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_cpu_avg_pct: Option<f64>,
    pub reason: String,
}

/// Classifies each episode of trouble of a server (KV-bound, compute-bound, outside the
/// GPU, …), or says the telemetry cannot tell.
///
/// - KV-bound is read from vLLM's own signals (preemption, KV saturated, waiting with KV
///   high), GPU telemetry or not. GPU memory is no evidence: vLLM reserves
///   `--gpu-memory-utilization` of it at start, so the framebuffer reads full on every
///   server whatever the load.
/// - A saturated API server thread (≥ `api_cpu_saturated_pct` on average) is
///   CPU-bound, from `process_cpu_seconds_total` alone.
/// - Otherwise the GPU decides, and without GPU utilization for at least half the
///   episode's samples the call is "not enough GPU telemetry". Busy (≥ `gpu_busy_pct`)
///   is compute-bound unless DCGM's SM activity is below `gpu_sm_busy_pct` (utilization
///   reads ~100 % for any running kernel, small or memory-bound ones too); idle
///   (< `gpu_idle_pct`) is outside the GPU.
pub fn bottlenecks(
    s: &ServerSummary,
    thresholds: &std::collections::BTreeMap<String, f64>,
) -> Vec<Bottleneck> {
    let t = |n: &str| threshold_in(thresholds, n);
    s.trouble
        .iter()
        .map(|e| {
            let gpu = (e.gpu_samples * 2 >= e.samples.max(1))
                .then_some(e.gpu_util_avg_pct)
                .flatten();
            let sm = (e.sm_samples * 2 >= e.samples.max(1))
                .then_some(e.gpu_sm_active_avg_pct)
                .flatten();
            let cpu = e.api_cpu_avg_pct;
            let kv_p95 = e.kv_p95_pct.unwrap_or(0.0);
            let kv_max = e.kv_max_pct.unwrap_or(0.0);
            let waiting = e.waiting_max.unwrap_or(0.0);
            let waiting_text = match e.waiting_max {
                Some(w) => format!("up to {w:.0} waiting"),
                None => "waiting not recorded".to_string(),
            };
            let gpu_text = match (gpu, sm) {
                (Some(g), Some(m)) => format!("GPU {g:.0}% busy, SMs {m:.0}% active"),
                (Some(g), None) => format!("GPU {g:.0}% busy"),
                _ => "no GPU utilization recorded".to_string(),
            };
            let (kind, reason) = if e.preemptions >= 1.0
                || kv_max >= t("kv_saturated_pct")
                || (kv_p95 >= t("kv_rising_pct") && waiting >= t("queue_min_waiting"))
            {
                (
                    BottleneckKind::KvMemory,
                    format!(
                        "KV p95 {kv_p95:.0}% (max {kv_max:.0}%), {:.0} preemption(s), {waiting_text}; {gpu_text}: memory for KV blocks limits the batch (GPU memory is no evidence: vLLM reserves it at start)",
                        e.preemptions
                    ),
                )
            } else if cpu.is_some_and(|c| c >= t("api_cpu_saturated_pct")) {
                (
                    BottleneckKind::ApiServerCpu,
                    format!(
                        "the API server used {:.0}% of a core on average (peak {:.0}%) with {waiting:.0} waiting in the engine and KV at most {kv_max:.0}%; {gpu_text}: requests queue in the front end (HTTP, tokenization)",
                        cpu.unwrap_or(0.0),
                        e.api_cpu_max_pct.unwrap_or(0.0)
                    ),
                )
            } else if let Some(g) = gpu {
                if g >= t("gpu_busy_pct") && sm.is_some_and(|m| m < t("gpu_sm_busy_pct")) {
                    (
                        BottleneckKind::SmallSteps,
                        format!(
                            "{gpu_text} with KV at most {kv_max:.0}% and {:.0} running on average: kernels run all the time but fill few SMs (small batches or memory-bound decode); larger steps (--max-num-seqs, --max-num-batched-tokens) use the GPU better",
                            e.running_avg.unwrap_or(0.0)
                        ),
                    )
                } else if g >= t("gpu_busy_pct") {
                    (
                        BottleneckKind::Compute,
                        format!(
                            "{gpu_text} with KV at most {kv_max:.0}% and up to {waiting:.0} waiting: the steps are full and compute-bound; more GPUs (replicas or tensor parallelism) serve more"
                        ),
                    )
                } else if g < t("gpu_idle_pct") {
                    let api = match (cpu, e.api_cpu_max_pct) {
                        (Some(c), Some(m)) => format!(
                            "; the API server used {c:.0}% of a core (peak {m:.0}%), so look at the engine core's CPU (scheduling, kernel launches), tokenization or the network"
                        ),
                        _ => ": look at CPU (engine core, API server), tokenization, the network".into(),
                    };
                    (
                        BottleneckKind::OutsideGpu,
                        format!("requests were slow or waiting while the {gpu_text}{api}"),
                    )
                } else {
                    (
                        BottleneckKind::Unclear,
                        format!(
                            "{gpu_text}: neither saturated (>= {:.0}%) nor idle (< {:.0}%), KV at most {kv_max:.0}%",
                            t("gpu_busy_pct"),
                            t("gpu_idle_pct")
                        ),
                    )
                }
            } else {
                (
                    BottleneckKind::InsufficientTelemetry,
                    format!(
                        "KV at most {kv_max:.0}% with no preemption, so not KV-bound, but {} of {} samples have GPU utilization: compute-bound and outside-the-GPU cannot be told apart (record with --gpu-metrics URL of a DCGM exporter, or join nvidia-smi with `kvscope import nvidia-smi`)",
                        e.gpu_samples, e.samples
                    ),
                )
            };
            Bottleneck {
                server: s.server.clone(),
                start: e.start.clone(),
                end: e.end.clone(),
                duration_s: e.duration_s,
                kind,
                gpu_util_avg_pct: gpu,
                gpu_sm_active_avg_pct: sm,
                api_cpu_avg_pct: cpu,
                reason,
            }
        })
        .collect()
}

/// A threshold from the map in force, else today's default (summaries written by an
/// older KVScope may lack newer names).
fn threshold_in(t: &std::collections::BTreeMap<String, f64>, name: &str) -> f64 {
    t.get(name).copied().unwrap_or_else(|| {
        crate::analysis::Thresholds::default()
            .entries()
            .into_iter()
            .find(|(n, _, _)| *n == name)
            .map_or(f64::NAN, |(_, v, _)| v)
    })
}

/// Severity from score, with the cutoffs in force (`severity_*_score`).
pub fn severity(score: f64, t: &std::collections::BTreeMap<String, f64>) -> Severity {
    if score >= threshold_in(t, "severity_high_score") {
        Severity::High
    } else if score >= threshold_in(t, "severity_medium_score") {
        Severity::Medium
    } else if score >= threshold_in(t, "severity_low_score") {
        Severity::Low
    } else {
        Severity::Info
    }
}

/// Runs every rule for every server of the summary and ranks the findings.
pub fn diagnose(summary: &Summary, events: &[Event], meta: Option<&Metadata>) -> Report {
    let dq_src = &summary.data_quality;
    let total_samples: u64 = summary.servers.iter().map(|s| s.samples).sum();
    let failed_share = if total_samples > 0 {
        dq_src.failed_scrapes as f64 / total_samples as f64
    } else {
        1.0
    };
    // Each server's events, in one pass: filtering all events per server is quadratic on
    // a fleet (1,000 servers × 550,000 events took 20 s of string comparisons).
    let mut by_server: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in events {
        by_server.entry(e.server.as_str()).or_default().push(e);
    }
    // A server that went down for good (SERVER_DOWN) failed every scrape after: those
    // failures are that finding's evidence and leave what was recorded before complete.
    // (Counted from the outage's length at the median interval, at most the failures.)
    let after_down: u64 = summary
        .servers
        .iter()
        .filter_map(|s| {
            let own = by_server
                .get(s.server.as_str())
                .map_or(&[][..], Vec::as_slice);
            let d = rules::server_down_of(s, own, &summary.thresholds)?.outage;
            let n = (d.seconds / s.interval_median_s.filter(|i| *i > 0.0)?).round() as u64;
            Some(n.min(s.failed_scrapes))
        })
        .sum();
    let mut notes = Vec::new();
    let mut factor: f64 = 1.0;
    if failed_share > 0.0 {
        let share = (dq_src.failed_scrapes - after_down.min(dq_src.failed_scrapes)) as f64
            / total_samples.max(1) as f64;
        factor -= (share * 2.0).min(0.4);
        notes.push(if after_down > 0 {
            format!(
                "{:.0}% of scrapes failed, {} after a server went down (SERVER_DOWN)",
                failed_share * 100.0,
                if 2 * after_down >= dq_src.failed_scrapes {
                    "most"
                } else {
                    "some"
                }
            )
        } else {
            format!("{:.0}% of scrapes failed", failed_share * 100.0)
        });
    }
    if total_samples < 30 {
        factor -= 0.2;
        notes.push(format!("short session: {total_samples} samples"));
    }
    if !dq_src.missing_histograms.is_empty() {
        notes.push(format!(
            "latency histograms missing: {} (latency evidence is weaker)",
            dq_src.missing_histograms.join(", ")
        ));
    }
    let factor = factor.clamp(0.3, 1.0);
    let mut found: Vec<Finding> = Vec::new();
    let mut ruled_out = Vec::new();
    for server in &summary.servers {
        let mut ctx = Context {
            server,
            events: by_server.remove(server.server.as_str()).unwrap_or_default(),
            facts: ServerFacts::from_metadata(meta, &server.server),
            thresholds: &summary.thresholds,
            worst_other_score: 0.0,
        };
        let ordered = RULES
            .iter()
            .filter(|r| !r.runs_last)
            .chain(RULES.iter().filter(|r| r.runs_last));
        for rule in ordered {
            match (rule.check)(&ctx) {
                Verdict::Found {
                    sustained_s,
                    score,
                    summary: text,
                    evidence,
                    mut counter_evidence,
                    recommendations,
                } => {
                    let mut score = score.clamp(0.0, 1.0);
                    let min_s = ctx.threshold("finding_min_s");
                    let medium = ctx.threshold("severity_medium_score");
                    if let Some(d) = sustained_s
                        && d < min_s
                        && score >= medium
                    {
                        score = medium - 0.01;
                        counter_evidence.push(format!(
                            "sustained only {d:.1} s (a medium or high finding needs ≥ {min_s} s)"
                        ));
                    }
                    ctx.worst_other_score = ctx.worst_other_score.max(score);
                    let mut confidence = factor;
                    if rule.needs_latency && !dq_src.missing_histograms.is_empty() {
                        confidence *= 0.7;
                    }
                    found.push(Finding {
                        id: rule.id,
                        title: rule.title.to_string(),
                        server: server.server.clone(),
                        rank: 0,
                        score: crate::analysis::round3(score),
                        severity: severity(score, &summary.thresholds),
                        confidence: crate::analysis::round3(confidence),
                        summary: text,
                        evidence,
                        counter_evidence,
                        recommendations,
                    })
                }
                Verdict::RuledOut(reason) => ruled_out.push(RuledOut {
                    id: rule.id,
                    server: server.server.clone(),
                    reason,
                }),
            }
        }
    }
    found.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.server.cmp(&b.server))
            .then_with(|| a.id.as_str().cmp(b.id.as_str()))
    });
    for (i, f) in found.iter_mut().enumerate() {
        f.rank = i + 1;
    }
    let worst = found
        .iter()
        .map(|f| f.severity)
        .max_by_key(|s| s.rank())
        .unwrap_or(Severity::Info);
    let observed = |s: &ServerSummary| -> f64 { s.phases.values().map(|p| p.seconds).sum() };
    let min_observed = summary
        .thresholds
        .get("min_observed_s")
        .copied()
        .unwrap_or(0.0);
    let loud = found.iter().any(|f| f.severity.is_loud());
    let thin: Vec<&ServerSummary> = summary
        .servers
        .iter()
        .filter(|s| observed(s) < min_observed)
        .collect();
    let (status, verdict) = match found.first() {
        _ if summary.servers.iter().all(|s| observed(s) <= 0.0) => (
            Status::NoData,
            "NO_DATA: no successful scrape to diagnose".to_string(),
        ),
        Some(f) if loud => (
            Status::Findings,
            format!("{} on {}: {}", f.id, f.server, f.summary),
        ),
        _ if !thin.is_empty() => (
            Status::Indeterminate,
            format!(
                "INDETERMINATE: only {} of telemetry on {} (< {min_observed} s) and nothing of medium or high severity in it: too little to call healthy",
                thin.iter()
                    .map(|s| format!("{:.0} s", observed(s)))
                    .collect::<Vec<_>>()
                    .join(", "),
                thin.iter()
                    .map(|s| s.server.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Some(f) if f.id == Hypothesis::Healthy => {
            (Status::Healthy, format!("{}: {}", f.server, f.summary))
        }
        Some(f) => (
            Status::Findings,
            format!("{} on {}: {}", f.id, f.server, f.summary),
        ),
        None => (
            Status::Indeterminate,
            "INDETERMINATE: nothing to judge".into(),
        ),
    };
    Report {
        schema_version: crate::store::schema::SCHEMA_VERSION,
        session_id: summary.session_id.clone(),
        status,
        verdict,
        severity: worst,
        hypotheses: found,
        ruled_out,
        bottleneck: summary
            .servers
            .iter()
            .flat_map(|s| bottlenecks(s, &summary.thresholds))
            .collect(),
        context: summary
            .servers
            .iter()
            .filter_map(|s| {
                let g = s.cuda_graphs.as_ref()?;
                Some(ServerContext {
                    server: s.server.clone(),
                    cuda_graphs: g.clone(),
                    note: cuda_graph_note(g),
                })
            })
            .collect(),
        data_quality: DataQuality {
            observed: dq_src.clone(),
            notes,
            confidence_factor: crate::analysis::round3(factor),
        },
    }
}

/// Helpers for rules.
pub(crate) fn ev(metric: &str, observed: f64) -> Evidence {
    Evidence {
        metric: metric.to_string(),
        observed: serde_json::json!(crate::analysis::round3(observed)),
        threshold: None,
        baseline: None,
        window: None,
    }
}

impl Evidence {
    pub(crate) fn threshold(mut self, t: f64) -> Self {
        self.threshold = Some(serde_json::json!(crate::analysis::round3(t)));
        self
    }
    pub(crate) fn baseline(mut self, b: f64) -> Self {
        self.baseline = Some(serde_json::json!(crate::analysis::round3(b)));
        self
    }
    pub(crate) fn window(mut self, w: Option<String>) -> Self {
        self.window = w;
        self
    }
}

pub(crate) fn rec(
    action: &str,
    value: Option<String>,
    reason: &str,
    tradeoff: &str,
) -> Recommendation {
    Recommendation {
        action: action.to_string(),
        value,
        current: None,
        accepted_by: None,
        reason: reason.to_string(),
        tradeoff: tradeoff.to_string(),
    }
}

/// A `vllm serve` flag recommendation, or None when it cannot help: the server's release
/// does not accept the flag, or the flag already has that value. States the current
/// value ("unknown" where `/metrics` does not show it) and the releases that accept it.
pub(crate) fn flag_rec(
    ctx: &Context,
    flag: &str,
    value: Option<String>,
    reason: &str,
    tradeoff: &str,
) -> Option<Recommendation> {
    let Some(spec) = flags::lookup(flag) else {
        debug_assert!(false, "{flag} is not in the flag table");
        return None;
    };
    if ctx.facts.vllm_version.is_some_and(|v| !spec.accepts(v)) {
        return None;
    }
    let current = ctx.facts.current(flag);
    if current.is_some() && current == value {
        return None;
    }
    Some(Recommendation {
        current: Some(current.unwrap_or_else(|| "unknown".into())),
        accepted_by: Some(spec.accepted_by()),
        ..rec(flag, value, reason, tradeoff)
    })
}
