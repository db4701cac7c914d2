//! `kvscope import vllm-log`: when only the server log exists, vLLM's periodic stats
//! lines ([`crate::adapter::log`]) become a coarse session — one row per logged line and
//! engine, at the log's interval (10 s in V1, 5 s in V0). Throughputs, running/waiting,
//! KV usage and the prefix-cache hit rate are there; latency quantiles, counters and
//! preemptions are not, and metadata says so.
//!
//! Silence is read the way vLLM writes it: V1 logs a line at INFO only while the engine
//! produced tokens in the interval or the one before (else at DEBUG, "to avoid log noise
//! on an idle production system"), and V0 logs only when the engine stepped. So a gap
//! after a line with zero throughput means zero tokens since; the gap is filled at the
//! log's interval with zero throughput and the gauges of that last line (idle when it
//! read 0 running, frozen when it did not).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate, TimeZone};

use super::ImportError;
use crate::adapter::log::{self, LogBanner, LogStat};
use crate::record::rfc3339;
use crate::store::schema::Sample;
use crate::store::{Metadata, RecorderSettings, ServerMeta, SessionWriter, SourceInfo, StoreError};

/// What an import of log files needs.
#[derive(Debug, Clone)]
pub struct LogImportConfig {
    pub files: Vec<PathBuf>,
    /// The server label written into the session.
    pub server: String,
    /// Year of the `MM-DD` timestamps (vLLM logs none); None: the current year, or the
    /// previous one where that would put a line in the future.
    pub year: Option<i32>,
    /// Offset of the log's clock from UTC, hours.
    pub utc_offset_h: f64,
    pub out_dir: PathBuf,
    pub session_id: String,
}

/// How an import went.
#[derive(Debug, Clone)]
pub struct LogImportOutcome {
    pub dir: PathBuf,
    pub lines: usize,
    pub rows: usize,
    pub filled_rows: usize,
    pub interval_s: f64,
    pub engines: usize,
}

/// Reads the stats lines of `files` (plain text or gzip) and writes a session.
pub fn import(cfg: &LogImportConfig) -> Result<LogImportOutcome, ImportError> {
    let mut stats: Vec<LogStat> = Vec::new();
    let mut banner = LogBanner::default();
    for f in &cfg.files {
        read_file(f, &mut stats, &mut banner)?;
    }
    if stats.is_empty() {
        return Err(ImportError::Empty(format!(
            "{}: no vLLM stats lines (`Avg prompt throughput: …`); is the server logging at INFO?",
            cfg.files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let now = chrono::Utc::now();
    let mut timed: Vec<(i64, LogStat)> = stats
        .into_iter()
        .filter_map(|s| Some((to_utc_us(&s, cfg, now)?, s)))
        .collect();
    timed.sort_by(|a, b| (&a.1.engine, a.0).cmp(&(&b.1.engine, b.0)));
    let mut engines: Vec<String> = timed.iter().map(|(_, s)| s.engine.clone()).collect();
    engines.dedup();
    // The log's interval: the median gap between an engine's consecutive lines.
    let mut gaps: Vec<f64> = timed
        .windows(2)
        .filter(|w| w[0].1.engine == w[1].1.engine)
        .map(|w| (w[1].0 - w[0].0) as f64 / 1e6)
        .filter(|g| *g > 0.0)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let interval = gaps.get(gaps.len() / 2).copied().unwrap_or(10.0);
    let t0 = timed.iter().map(|(t, _)| *t).min().unwrap_or(0);
    let model = banner.model.clone().unwrap_or_default();
    let mut rows: Vec<Sample> = Vec::new();
    let mut filled = 0;
    let mut prev: Option<(i64, &LogStat)> = None;
    for (ts, s) in &timed {
        if let Some((pts, p)) = prev
            && p.engine == s.engine
        {
            // Silence after a zero-throughput line: zero tokens since (vLLM's rule).
            let quiet =
                p.prompt_tps.unwrap_or(0.0) == 0.0 && p.generation_tps.unwrap_or(0.0) == 0.0;
            let step = (interval * 1e6) as i64;
            let mut t = pts + step;
            while quiet && step > 0 && t + step / 2 < *ts {
                let mut r = row(p, t, t0, &cfg.server, &model, interval);
                r.prompt_tokens_per_s = Some(0.0);
                r.generation_tokens_per_s = Some(0.0);
                rows.push(r);
                filled += 1;
                t += step;
            }
        }
        let gap = prev
            .filter(|(_, p)| p.engine == s.engine)
            .map(|(pts, _)| (*ts - pts) as f64 / 1e6);
        rows.push(row(
            s,
            *ts,
            t0,
            &cfg.server,
            &model,
            gap.unwrap_or(interval),
        ));
        prev = Some((*ts, s));
    }
    rows.sort_by_key(|r| (r.ts, r.engine.clone()));
    let first = rows.first().map_or(0, |r| r.ts);
    let last = rows.last().map_or(0, |r| r.ts);
    let meta = Metadata::new(
        &cfg.session_id,
        &rfc3339(first),
        SourceInfo {
            kind: "vllm-log".into(),
            urls: cfg.files.iter().map(|p| p.display().to_string()).collect(),
            window_start: Some(rfc3339(first)),
            window_end: Some(rfc3339(last)),
            notes: vec![
                format!("coarse: vLLM's periodic stats log, one line per {interval} s and engine"),
                "latency quantiles, counters, preemptions and cache config are absent from the log"
                    .into(),
            ],
            ..Default::default()
        },
        RecorderSettings {
            interval_s: interval,
            timeout_s: 0.0,
            duration_s: Some((last - first) as f64 / 1e6),
        },
    );
    let mut w = SessionWriter::create(&cfg.out_dir, meta)?;
    w.append(&rows, &[])?;
    w.metadata_mut().servers = vec![ServerMeta {
        server: cfg.server.clone(),
        engine_kind: "vllm".into(),
        vllm_version: banner
            .version
            .as_deref()
            .and_then(crate::adapter::version::VllmVersion::parse)
            .map(|v| v.to_string()),
        vllm_version_source: banner
            .version
            .as_ref()
            .map(|_| "the log's start-up banner".into()),
        model_names: [model].into_iter().filter(|m| !m.is_empty()).collect(),
        engines: engines.iter().cloned().collect(),
        ..Default::default()
    }];
    let dir = w.finish(&rfc3339(last))?;
    Ok(LogImportOutcome {
        dir,
        lines: timed.len(),
        rows: rows.len(),
        filled_rows: filled,
        interval_s: interval,
        engines: engines.len(),
    })
}

fn read_file(
    path: &Path,
    stats: &mut Vec<LogStat>,
    banner: &mut LogBanner,
) -> Result<(), ImportError> {
    let (reader, _) =
        crate::source::open_text(path).map_err(|e| ImportError::Invalid(e.to_string()))?;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|e| ImportError::Store(StoreError::io(path, e)))?;
        let line = String::from_utf8_lossy(&line);
        if let Some(s) = log::parse_line(&line, i + 1) {
            stats.push(s);
        } else if banner.version.is_none() || banner.model.is_none() {
            log::banner(&line, banner);
        }
    }
    Ok(())
}

/// The line's time in UTC µs.
fn to_utc_us(
    s: &LogStat,
    cfg: &LogImportConfig,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<i64> {
    let at = |year: i32| -> Option<i64> {
        let day = NaiveDate::from_ymd_opt(year, s.month, s.day)?;
        let midnight = chrono::Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0)?);
        let local_us = midnight.timestamp_micros() + (s.secs_of_day * 1e6) as i64;
        Some(local_us - (cfg.utc_offset_h * 3600e6) as i64)
    };
    if let Some(y) = s.year.or(cfg.year) {
        return at(y);
    }
    let this = at(now.year())?;
    // A line "in the future" is from last year (a log spanning New Year, or an old log).
    if this > now.timestamp_micros() + 86_400_000_000 {
        at(now.year() - 1)
    } else {
        Some(this)
    }
}

fn row(s: &LogStat, ts: i64, t0: i64, server: &str, model: &str, interval: f64) -> Sample {
    let int = |v: Option<f64>| v.map(|x| x.round() as i64);
    Sample {
        ts,
        t_rel_sec: (ts - t0) as f64 / 1e6,
        server: server.to_string(),
        model_name: model.to_string(),
        engine: s.engine.clone(),
        scrape_ok: true,
        interval_s: Some(interval),
        kv_cache_usage_pct: s.kv_pct,
        requests_running: int(s.running),
        requests_waiting: int(s.waiting),
        requests_swapped: int(s.swapped),
        prompt_tokens_per_s: s.prompt_tps,
        generation_tokens_per_s: s.generation_tps,
        prefix_cache_hit_rate_pct: s.prefix_hit_pct,
        ..Default::default()
    }
}
