//! `kvscope import nvidia-smi`: GPU utilization and memory from an `nvidia-smi` CSV log,
//! joined by time into an existing (local) session's `gpu_util_pct` and
//! `gpu_mem_used_pct` columns. Each sample gets the mean of the polls inside the interval
//! it stands for (`(ts − interval_s, ts]`), else the nearest poll within one second;
//! samples the log does not cover stay null.

use std::path::PathBuf;

use super::ImportError;
use crate::source::nvidia_smi::{self, GpuPoll};
use crate::store;

/// What a join needs.
#[derive(Debug, Clone)]
pub struct GpuJoinConfig {
    pub session: PathBuf,
    pub csv: PathBuf,
    /// Only this server's samples (default: every server).
    pub server: Option<String>,
    pub utc_offset_h: f64,
}

/// How a join went.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuJoinOutcome {
    pub polls: usize,
    pub samples: usize,
    pub joined: usize,
}

pub fn join(cfg: &GpuJoinConfig) -> Result<GpuJoinOutcome, ImportError> {
    store::check_session_dir(&cfg.session)?;
    let polls = nvidia_smi::read_file(&cfg.csv, cfg.utc_offset_h)
        .map_err(|e| ImportError::Invalid(e.to_string()))?;
    if polls.is_empty() {
        return Err(ImportError::Empty(format!(
            "{}: no GPU polls",
            cfg.csv.display()
        )));
    }
    let jsonl = cfg.session.join(store::SAMPLES_JSONL);
    let mut rows = store::read_samples_jsonl(&jsonl)?;
    let mut joined = 0;
    for r in rows.iter_mut() {
        if !r.scrape_ok || cfg.server.as_ref().is_some_and(|s| *s != r.server) {
            continue;
        }
        let span = (r.interval_s.unwrap_or(1.0).max(0.001) * 1e6) as i64;
        let (from, to) = (r.ts - span, r.ts);
        // Polls are in time order: the first poll after `from`.
        let start = polls.partition_point(|p| p.ts_us <= from);
        let inside: Vec<&GpuPoll> = polls[start..]
            .iter()
            .take_while(|p| p.ts_us <= to)
            .collect();
        let pick: Vec<&GpuPoll> = if inside.is_empty() {
            let near = [start.checked_sub(1), Some(start)]
                .into_iter()
                .flatten()
                .filter_map(|i| polls.get(i))
                .filter(|p| (p.ts_us - r.ts).abs() <= 1_000_000)
                .min_by_key(|p| (p.ts_us - r.ts).abs());
            near.into_iter().collect()
        } else {
            inside
        };
        let mean = |f: fn(&GpuPoll) -> Option<f64>| {
            let v: Vec<f64> = pick.iter().filter_map(|p| f(p)).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let util = mean(|p| p.util_pct);
        if util.is_some() {
            joined += 1;
        }
        r.gpu_util_pct = util;
        r.gpu_mem_used_pct = mean(|p| p.mem_used_pct);
    }
    store::rewrite_samples(&cfg.session, &rows)?;
    Ok(GpuJoinOutcome {
        polls: polls.len(),
        samples: rows.len(),
        joined,
    })
}
