//! profilemate session directories (a `sitecustomize` hook for vLLM,
//! `openshift-psap/profilemate`): `session_YYYYMMDD_HHMMSS/` with
//! - `metadata.json` (`session_id` = the process's local start time, `%Y%m%d_%H%M%S`),
//! - `kv_cache_usage.csv`: `timestamp_sec,usage_pct,num_blocks,total_blocks`, one row each
//!   time vLLM reads its KV usage (every scheduler step: millions of rows per hour);
//!   `timestamp_sec` counts from the hook's start, `usage_pct` is already percent,
//! - `kv_cache_evictions.csv`: `timestamp_sec,lifetime_sec,idle_sec`, one per eviction,
//! - `kv_cache_summary.txt` (`Total blocks available: N`, …),
//! - `cuda_graph_captures.csv`: `runtime_mode,num_tokens,num_reqs,uniform,has_lora,capture_time_sec`,
//! - `cuda_graph_usage.csv`: the same descriptor columns and `replay_count`,
//! - `cuda_graph_timeline.csv` (per replay; not read: the usage table has the counts).
//!
//! Columns are found by header name; a missing column or an unreadable value is an error
//! naming the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::FileError;

pub const USAGE_CSV: &str = "kv_cache_usage.csv";
pub const EVICTIONS_CSV: &str = "kv_cache_evictions.csv";
pub const SUMMARY_TXT: &str = "kv_cache_summary.txt";
pub const CAPTURES_CSV: &str = "cuda_graph_captures.csv";
pub const GRAPH_USAGE_CSV: &str = "cuda_graph_usage.csv";
pub const METADATA_JSON: &str = "metadata.json";

/// One KV usage reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Seconds since the hook started.
    pub t: f64,
    pub usage_pct: f64,
    pub used_blocks: Option<f64>,
    pub total_blocks: Option<f64>,
}

/// One block eviction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Eviction {
    pub t: f64,
    pub lifetime_s: f64,
    pub idle_s: f64,
}

/// The CUDA graphs a server captured and replayed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CudaGraphSummary {
    /// Distinct graphs (runtime mode + batch descriptor) captured.
    pub unique_graphs: u64,
    /// Distinct graphs replayed at least once.
    pub replayed_graphs: u64,
    pub total_replays: u64,
    /// The fewest graphs that together take 80 % of the replays.
    pub hot_graphs: u64,
    /// Share of the replays taken by the five most replayed graphs.
    pub top5_replay_share: f64,
    /// Share of replays of uniform (decode-only) batch descriptors.
    pub uniform_replay_share: f64,
    /// Replays per runtime mode (`FULL`, `PIECEWISE`, …).
    pub replays_by_mode: BTreeMap<String, u64>,
    /// Latest capture, seconds after the hook started: captures long after start-up mean
    /// batch shapes met only while serving.
    pub last_capture_s: Option<f64>,
    /// `uniform` (a few hot graphs serve most steps) or `diverse`.
    pub workload: String,
}

fn line_err(path: &Path, line: usize, message: String) -> FileError {
    FileError::Line {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// A CSV file with a header, its columns looked up by name.
struct Table {
    path: PathBuf,
    reader: csv::Reader<Box<dyn std::io::BufRead>>,
    header: Vec<String>,
}

impl Table {
    fn open(path: &Path) -> Result<Self, FileError> {
        let (r, _) = super::open_text(path)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_reader(r);
        let header = reader
            .headers()
            .map_err(|e| line_err(path, 1, e.to_string()))?
            .iter()
            .map(str::to_string)
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            header,
        })
    }

    fn col(&self, name: &str) -> Result<usize, FileError> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            line_err(
                &self.path,
                1,
                format!("no `{name}` column (header: {})", self.header.join(",")),
            )
        })
    }

    /// Every record, with its line number (1-based, the header being line 1).
    fn for_each(
        &mut self,
        mut f: impl FnMut(&csv::ByteRecord, usize) -> Result<(), String>,
    ) -> Result<(), FileError> {
        let mut rec = csv::ByteRecord::new();
        loop {
            match self.reader.read_byte_record(&mut rec) {
                Ok(false) => return Ok(()),
                Ok(true) => {
                    let line = rec.position().map_or(0, |p| p.line() as usize);
                    f(&rec, line).map_err(|m| line_err(&self.path, line, m))?;
                }
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line() as usize);
                    return Err(line_err(&self.path, line, e.to_string()));
                }
            }
        }
    }
}

fn field<'a>(rec: &'a csv::ByteRecord, i: usize, name: &str) -> Result<&'a str, String> {
    let raw = rec.get(i).ok_or_else(|| format!("no `{name}` field"))?;
    std::str::from_utf8(raw).map_err(|_| format!("`{name}` is not UTF-8"))
}

fn num(rec: &csv::ByteRecord, i: usize, name: &str) -> Result<f64, String> {
    let s = field(rec, i, name)?;
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("`{name}` is `{s}`, not a number")),
    }
}

fn opt_num(rec: &csv::ByteRecord, i: Option<usize>, name: &str) -> Result<Option<f64>, String> {
    match i {
        Some(i) if !field(rec, i, name)?.is_empty() => num(rec, i, name).map(Some),
        _ => Ok(None),
    }
}

/// `kv_cache_usage.csv`, in file order.
pub fn read_usage(path: &Path) -> Result<Vec<Usage>, FileError> {
    let mut t = Table::open(path)?;
    let (c_t, c_u) = (t.col("timestamp_sec")?, t.col("usage_pct")?);
    let c_n = t.col("num_blocks").ok();
    let c_total = t.col("total_blocks").ok();
    let mut out = Vec::new();
    t.for_each(|rec, _| {
        let usage_pct = num(rec, c_u, "usage_pct")?;
        if !(0.0..=100.0 + 1e-6).contains(&usage_pct) {
            return Err(format!(
                "usage_pct {usage_pct} is outside 0-100 (profilemate writes percent)"
            ));
        }
        out.push(Usage {
            t: num(rec, c_t, "timestamp_sec")?,
            usage_pct,
            used_blocks: opt_num(rec, c_n, "num_blocks")?,
            total_blocks: opt_num(rec, c_total, "total_blocks")?,
        });
        Ok(())
    })?;
    Ok(out)
}

/// `kv_cache_evictions.csv`.
pub fn read_evictions(path: &Path) -> Result<Vec<Eviction>, FileError> {
    let mut t = Table::open(path)?;
    let (c_t, c_l, c_i) = (
        t.col("timestamp_sec")?,
        t.col("lifetime_sec")?,
        t.col("idle_sec")?,
    );
    let mut out = Vec::new();
    t.for_each(|rec, _| {
        let e = Eviction {
            t: num(rec, c_t, "timestamp_sec")?,
            lifetime_s: num(rec, c_l, "lifetime_sec")?,
            idle_s: num(rec, c_i, "idle_sec")?,
        };
        if e.lifetime_s < 0.0 || e.idle_s < 0.0 {
            return Err("negative lifetime or idle time".into());
        }
        out.push(e);
        Ok(())
    })?;
    Ok(out)
}

/// `Total blocks available: N` from `kv_cache_summary.txt`.
pub fn read_total_blocks(path: &Path) -> Result<Option<f64>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError::io(path, e))?;
    Ok(text.lines().find_map(|l| {
        l.strip_prefix("Total blocks available:")
            .and_then(|v| v.trim().parse::<f64>().ok())
    }))
}

/// A graph's identity in profilemate's tables.
fn descriptor(rec: &csv::ByteRecord, cols: &[usize; 5]) -> Result<String, String> {
    let names = [
        "runtime_mode",
        "num_tokens",
        "num_reqs",
        "uniform",
        "has_lora",
    ];
    let parts: Result<Vec<&str>, String> = cols
        .iter()
        .zip(names)
        .map(|(c, n)| field(rec, *c, n))
        .collect();
    Ok(parts?.join("|"))
}

fn descriptor_cols(t: &Table) -> Result<[usize; 5], FileError> {
    Ok([
        t.col("runtime_mode")?,
        t.col("num_tokens")?,
        t.col("num_reqs")?,
        t.col("uniform")?,
        t.col("has_lora")?,
    ])
}

/// The CUDA graph summary from `cuda_graph_captures.csv` and `cuda_graph_usage.csv`
/// (either may be absent; None when both are).
pub fn read_graphs(dir: &Path) -> Result<Option<CudaGraphSummary>, FileError> {
    let (cap, use_) = (dir.join(CAPTURES_CSV), dir.join(GRAPH_USAGE_CSV));
    if !cap.exists() && !use_.exists() {
        return Ok(None);
    }
    let mut s = CudaGraphSummary::default();
    if cap.exists() {
        let mut t = Table::open(&cap)?;
        let cols = descriptor_cols(&t)?;
        let c_time = t.col("capture_time_sec")?;
        let mut seen = std::collections::BTreeSet::new();
        let mut last: Option<f64> = None;
        t.for_each(|rec, _| {
            seen.insert(descriptor(rec, &cols)?);
            let at = num(rec, c_time, "capture_time_sec")?;
            last = Some(last.map_or(at, |l| l.max(at)));
            Ok(())
        })?;
        s.unique_graphs = seen.len() as u64;
        s.last_capture_s = last;
    }
    let mut replays: Vec<(u64, bool, String)> = Vec::new();
    if use_.exists() {
        let mut t = Table::open(&use_)?;
        let cols = descriptor_cols(&t)?;
        let c_n = t.col("replay_count")?;
        t.for_each(|rec, _| {
            let n = num(rec, c_n, "replay_count")?;
            if n < 0.0 || n.fract() != 0.0 {
                return Err(format!("replay_count `{n}` is not a count"));
            }
            let uniform = field(rec, cols[3], "uniform")?.eq_ignore_ascii_case("true");
            let mode = field(rec, cols[0], "runtime_mode")?
                .trim_start_matches("CUDAGraphMode.")
                .to_string();
            descriptor(rec, &cols)?;
            replays.push((n as u64, uniform, mode));
            Ok(())
        })?;
    }
    replays.sort_by_key(|r| std::cmp::Reverse(r.0));
    let total: u64 = replays.iter().map(|r| r.0).sum();
    s.total_replays = total;
    s.replayed_graphs = replays.iter().filter(|r| r.0 > 0).count() as u64;
    s.unique_graphs = s.unique_graphs.max(replays.len() as u64);
    if total > 0 {
        let mut acc = 0;
        for (i, r) in replays.iter().enumerate() {
            acc += r.0;
            if acc as f64 >= 0.8 * total as f64 {
                s.hot_graphs = i as u64 + 1;
                break;
            }
        }
        let top5: u64 = replays.iter().take(5).map(|r| r.0).sum();
        s.top5_replay_share = crate::analysis::round3(top5 as f64 / total as f64);
        let uniform: u64 = replays.iter().filter(|r| r.1).map(|r| r.0).sum();
        s.uniform_replay_share = crate::analysis::round3(uniform as f64 / total as f64);
        for r in &replays {
            *s.replays_by_mode.entry(r.2.clone()).or_insert(0) += r.0;
        }
    }
    // A few hot graphs serving most steps is a uniform workload (batch shapes repeat);
    // many graphs sharing the replays is a diverse one.
    s.workload = if total == 0 {
        "unknown".into()
    } else if s.hot_graphs <= 3 || s.top5_replay_share >= 0.9 {
        "uniform".into()
    } else {
        "diverse".into()
    };
    Ok(Some(s))
}

/// The session's local start time: `metadata.json`'s `session_id`, else the directory's
/// `session_YYYYMMDD_HHMMSS` name.
pub fn start_local(dir: &Path) -> Result<chrono::NaiveDateTime, FileError> {
    let parse = |id: &str| chrono::NaiveDateTime::parse_from_str(id, "%Y%m%d_%H%M%S").ok();
    let meta = dir.join(METADATA_JSON);
    if meta.exists() {
        let text = std::fs::read_to_string(&meta).map_err(|e| FileError::io(&meta, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| line_err(&meta, e.line(), e.to_string()))?;
        if let Some(t) = v["session_id"].as_str().and_then(parse) {
            return Ok(t);
        }
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    name.strip_prefix("session_")
        .and_then(parse)
        .ok_or_else(|| FileError::Invalid {
            path: dir.to_path_buf(),
            message: "no start time: neither metadata.json's session_id nor a session_YYYYMMDD_HHMMSS directory name; pass --start".into(),
        })
}
