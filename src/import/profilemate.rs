//! `kvscope import profilemate DIR…`: profilemate session directories become a session
//! (one directory per engine of the server: each engine-core process writes its own).
//!
//! profilemate records KV usage every time vLLM reads it — every scheduler step — so the
//! rows are binned at `--interval`: each sample holds the last usage reading of its bin,
//! as a scrape at the bin's end would see it. A bin without a reading keeps the previous
//! value: vLLM reads usage only while it steps, and usage cannot change without a step.
//! Evictions become the residency columns (count, rate, median lifetime and idle time per
//! bin) and cumulative `kv_block_lifetime_seconds` / `kv_block_idle_before_evict_seconds`
//! histograms on vLLM's residency buckets, so the session's residency block and the churn
//! rule read them as they read vLLM's own. The CUDA graph summary goes to metadata (and
//! from there into `summary.json` and the doctor's context).
//!
//! profilemate has no request counts, tokens or latencies: those columns stay null and
//! metadata says so.

use std::path::PathBuf;

use super::ImportError;
use crate::adapter::{Hist, RESIDENCY_BUCKETS};
use crate::record::rfc3339;
use crate::source::profilemate::{self as pm, Eviction, Usage};
use crate::store::schema::{HistogramRow, Sample};
use crate::store::{Metadata, RecorderSettings, ServerMeta, SessionWriter, SourceInfo};

/// What an import needs.
#[derive(Debug, Clone)]
pub struct ProfilemateConfig {
    /// One profilemate session directory per engine.
    pub dirs: Vec<PathBuf>,
    pub server: String,
    /// Bin width, seconds.
    pub interval_s: f64,
    /// Offset of the profiled host's clock from UTC, hours (profilemate's session id is
    /// local time).
    pub utc_offset_h: f64,
    /// Start time (Unix s) overriding the directories' own.
    pub start_unix: Option<f64>,
    pub out_dir: PathBuf,
    pub session_id: String,
}

/// How an import went.
#[derive(Debug, Clone)]
pub struct ProfilemateOutcome {
    pub dir: PathBuf,
    pub usage_rows: usize,
    pub evictions: usize,
    pub samples: usize,
    pub graphs: Option<pm::CudaGraphSummary>,
}

fn file_err(e: crate::source::FileError) -> ImportError {
    ImportError::Invalid(e.to_string())
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// A cumulative histogram on vLLM's residency buckets.
struct Cumulative {
    metric: Hist,
    counts: Vec<f64>,
    sum: f64,
}

impl Cumulative {
    fn new(metric: Hist) -> Self {
        Self {
            metric,
            counts: vec![0.0; RESIDENCY_BUCKETS.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = RESIDENCY_BUCKETS.partition_point(|le| *le < v);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1.0;
        }
        self.sum += v;
    }

    /// Long-format rows of the histogram now, with each bucket's increase since `prev`.
    fn rows(&self, prev: &[f64], ts: i64, server: &str, engine: &str) -> Vec<HistogramRow> {
        let mut cum = 0.0;
        let mut prev_cum = 0.0;
        let total: f64 = self.counts.iter().sum();
        let bounds = RESIDENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        bounds
            .zip(self.counts.iter().zip(prev))
            .map(|(le, (c, p))| {
                cum += c;
                prev_cum += p;
                HistogramRow {
                    ts,
                    server: server.to_string(),
                    model_name: String::new(),
                    engine: engine.to_string(),
                    metric: self.metric.canonical().to_string(),
                    le,
                    cumulative_count: cum,
                    increase: cum - prev_cum,
                    sum: self.sum,
                    count: total,
                }
            })
            .collect()
    }
}

/// One engine's directory read and binned.
struct Engine {
    rows: Vec<Sample>,
    hists: Vec<HistogramRow>,
    usage_rows: usize,
    evictions: usize,
    total_blocks: Option<f64>,
    graphs: Option<pm::CudaGraphSummary>,
    first_ts: i64,
}

fn read_engine(
    cfg: &ProfilemateConfig,
    dir: &std::path::Path,
    engine: &str,
) -> Result<Engine, ImportError> {
    if !dir.is_dir() {
        return Err(ImportError::Invalid(format!(
            "{}: not a profilemate session directory",
            dir.display()
        )));
    }
    let usage_path = dir.join(pm::USAGE_CSV);
    if !usage_path.exists() {
        return Err(ImportError::Invalid(format!(
            "{}: no {} (was KV cache tracking on?)",
            dir.display(),
            pm::USAGE_CSV
        )));
    }
    let mut usage: Vec<Usage> = pm::read_usage(&usage_path).map_err(file_err)?;
    if usage.is_empty() {
        return Err(ImportError::Empty(format!(
            "{}: no KV usage rows",
            usage_path.display()
        )));
    }
    // profilemate appends in time order; a merged or edited file may not be.
    if usage.windows(2).any(|w| w[1].t < w[0].t) {
        usage.sort_by(|a, b| a.t.total_cmp(&b.t));
    }
    let ev_path = dir.join(pm::EVICTIONS_CSV);
    let mut evictions: Vec<Eviction> = if ev_path.exists() {
        pm::read_evictions(&ev_path).map_err(file_err)?
    } else {
        Vec::new()
    };
    evictions.sort_by(|a, b| a.t.total_cmp(&b.t));
    let summary_path = dir.join(pm::SUMMARY_TXT);
    let total_blocks = usage
        .iter()
        .rev()
        .find_map(|u| u.total_blocks.filter(|b| *b > 0.0))
        .map(Ok)
        .or_else(|| {
            summary_path
                .exists()
                .then(|| pm::read_total_blocks(&summary_path).map(|b| b.unwrap_or(0.0)))
        })
        .transpose()
        .map_err(file_err)?
        .filter(|b| *b > 0.0);
    let graphs = pm::read_graphs(dir).map_err(file_err)?;
    let t0_unix = match cfg.start_unix {
        Some(s) => s,
        None => {
            let local = pm::start_local(dir).map_err(file_err)?;
            local.and_utc().timestamp_micros() as f64 / 1e6 - cfg.utc_offset_h * 3600.0
        }
    };
    let dt = cfg.interval_s;
    let first = usage.first().map_or(0.0, |u| u.t);
    let last = usage
        .last()
        .map_or(0.0, |u| u.t)
        .max(evictions.last().map_or(0.0, |e| e.t));
    let k0 = (first / dt).floor() as i64;
    let k1 = (last / dt).ceil() as i64;
    let mut rows = Vec::with_capacity((k1 - k0).max(0) as usize + 1);
    let mut hists = Vec::new();
    let mut life = Cumulative::new(Hist::KvBlockLifetime);
    let mut idle = Cumulative::new(Hist::KvBlockIdle);
    let (mut ui, mut ei) = (0usize, 0usize);
    let mut kv: Option<f64> = None;
    for k in k0..k1.max(k0 + 1) {
        let end = (k + 1) as f64 * dt;
        while let Some(u) = usage.get(ui).filter(|u| u.t <= end) {
            kv = Some(u.usage_pct);
            ui += 1;
        }
        let (mut lifetimes, mut idles) = (Vec::new(), Vec::new());
        let (prev_l, prev_i) = (life.counts.clone(), idle.counts.clone());
        while let Some(e) = evictions.get(ei).filter(|e| e.t <= end) {
            lifetimes.push(e.lifetime_s);
            idles.push(e.idle_s);
            life.observe(e.lifetime_s);
            idle.observe(e.idle_s);
            ei += 1;
        }
        let ts = ((t0_unix + end) * 1e6).round() as i64;
        let n = lifetimes.len();
        if n > 0 {
            hists.extend(life.rows(&prev_l, ts, &cfg.server, engine));
            hists.extend(idle.rows(&prev_i, ts, &cfg.server, engine));
        }
        rows.push(Sample {
            ts,
            server: cfg.server.clone(),
            engine: engine.to_string(),
            scrape_ok: true,
            interval_s: Some(dt),
            kv_cache_usage_pct: kv,
            kv_evictions_sampled: Some(n as i64),
            kv_evictions_sampled_per_s: Some(n as f64 / dt),
            kv_block_lifetime_p50_s: median(&mut lifetimes),
            kv_block_idle_p50_s: median(&mut idles),
            ..Default::default()
        });
    }
    Ok(Engine {
        first_ts: rows.first().map_or(0, |r| r.ts),
        rows,
        hists,
        usage_rows: usage.len(),
        evictions: evictions.len(),
        total_blocks,
        graphs,
    })
}

/// Reads the directories and writes the session.
pub fn import(cfg: &ProfilemateConfig) -> Result<ProfilemateOutcome, ImportError> {
    if cfg.interval_s.is_nan() || cfg.interval_s <= 0.0 {
        return Err(ImportError::Invalid("--interval must be positive".into()));
    }
    let mut engines = Vec::new();
    for (i, dir) in cfg.dirs.iter().enumerate() {
        engines.push(read_engine(cfg, dir, &i.to_string())?);
    }
    let t0 = engines.iter().map(|e| e.first_ts).min().unwrap_or(0);
    let mut rows: Vec<Sample> = engines.iter_mut().flat_map(|e| e.rows.drain(..)).collect();
    for r in &mut rows {
        r.t_rel_sec = (r.ts - t0) as f64 / 1e6;
    }
    rows.sort_by(|a, b| (a.ts, &a.engine).cmp(&(b.ts, &b.engine)));
    let mut hists: Vec<HistogramRow> = engines.iter_mut().flat_map(|e| e.hists.drain(..)).collect();
    hists.sort_by(|a, b| (a.ts, &a.engine).cmp(&(b.ts, &b.engine)));
    let first = rows.first().map_or(0, |r| r.ts);
    let last = rows.last().map_or(0, |r| r.ts);
    let graphs = engines.iter().find_map(|e| e.graphs.clone());
    let meta = Metadata::new(
        &cfg.session_id,
        &rfc3339(first),
        SourceInfo {
            kind: "profilemate".into(),
            urls: cfg.dirs.iter().map(|p| p.display().to_string()).collect(),
            window_start: Some(rfc3339(first)),
            window_end: Some(rfc3339(last)),
            notes: vec![
                format!(
                    "profilemate: KV usage (last reading per {} s bin) and block evictions; running/waiting requests, tokens and latencies are not recorded by profilemate",
                    cfg.interval_s
                ),
                "evictions are every eviction profilemate saw, not a vLLM --kv-cache-metrics sample".into(),
            ],
            ..Default::default()
        },
        RecorderSettings {
            interval_s: cfg.interval_s,
            timeout_s: 0.0,
            duration_s: Some((last - first) as f64 / 1e6),
        },
    );
    let mut w = SessionWriter::create(&cfg.out_dir, meta)?;
    // In bounded batches: a day at 1 s is 86,400 rows per engine.
    for chunk in rows.chunks(65_536) {
        w.append(chunk, &[])?;
    }
    for chunk in hists.chunks(65_536) {
        w.append(&[], chunk)?;
    }
    // `num_gpu_blocks` the way vLLM's cache_config_info shows it: summed over engines.
    let blocks: f64 = engines.iter().filter_map(|e| e.total_blocks).sum();
    w.metadata_mut().servers = vec![ServerMeta {
        server: cfg.server.clone(),
        engine_kind: "vllm".into(),
        engines: (0..engines.len()).map(|i| i.to_string()).collect(),
        cache_config: if blocks > 0.0 {
            vec![[("num_gpu_blocks".to_string(), format!("{blocks}"))].into()]
        } else {
            Vec::new()
        },
        cuda_graphs: graphs.clone(),
        ..Default::default()
    }];
    let dir = w.finish(&rfc3339(last))?;
    Ok(ProfilemateOutcome {
        dir,
        usage_rows: engines.iter().map(|e| e.usage_rows).sum(),
        evictions: engines.iter().map(|e| e.evictions).sum(),
        samples: rows.len(),
        graphs,
    })
}
