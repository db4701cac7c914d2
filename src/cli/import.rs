//! `kvscope import`: Prometheus history or a vLLM server log becomes a session.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::common::{self, AuthArgs, parse_duration};
use crate::import::prometheus::{self, PromImportConfig, PromImportOutcome};
use crate::import::vllm_log::{self, LogImportConfig};
use crate::record;

#[derive(Debug, Subcommand)]
pub enum Args {
    /// A window of Prometheus history (every vLLM series) becomes a session.
    Prometheus(PromArgs),
    /// vLLM's periodic stats log lines become a coarse session (no latency quantiles).
    VllmLog(LogArgs),
    /// GPU utilization and memory from an nvidia-smi CSV log, joined into a session.
    NvidiaSmi(SmiArgs),
    /// profilemate session directories (KV usage, evictions, CUDA graphs) become a
    /// session.
    Profilemate(ProfilemateArgs),
}

#[derive(Debug, clap::Args)]
pub struct ProfilemateArgs {
    /// profilemate session directories (`session_YYYYMMDD_HHMMSS/`), one per engine of
    /// the server.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// The server label written into the session (default: the first directory's name).
    #[arg(long)]
    pub server: Option<String>,
    /// Bin width: one sample per interval (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Offset of the profiled host's clock from UTC in hours (profilemate names sessions
    /// in local time).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true, value_parser = parse_offset)]
    pub utc_offset: f64,
    /// Start time (RFC 3339 or Unix seconds) instead of the directory's own.
    #[arg(long, value_parser = common::parse_time)]
    pub start: Option<f64>,
    /// Session directory (default results/sessions/<id>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SmiArgs {
    /// `nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,memory.total
    /// --format=csv -lms 500` output (plain or gzip).
    pub csv: PathBuf,
    /// The local session to join it into.
    #[arg(long)]
    pub session: PathBuf,
    /// Only this server's samples (default: all).
    #[arg(long)]
    pub server: Option<String>,
    /// Offset of the log's clock from UTC in hours.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true, value_parser = parse_offset)]
    pub utc_offset: f64,
}

/// Where and what to read from Prometheus (shared with `doctor --prometheus`).
#[derive(Debug, Clone, clap::Args)]
pub struct PromSource {
    /// Series selector narrowing the import, e.g. '{job="vllm"}'.
    #[arg(long = "match", default_value = "")]
    pub matchers: String,
    /// Seconds between imported points: `auto` (the scrape interval Prometheus used),
    /// or a duration (1s, 15s).
    #[arg(long, default_value = "auto", value_parser = parse_step)]
    pub step: Step,
    /// The label naming a server (one session server per value).
    #[arg(long, default_value = "instance")]
    pub server_label: String,
    /// Per-request timeout.
    #[arg(long = "query-timeout", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// `--step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    Auto,
    Seconds(f64),
}

fn parse_step(s: &str) -> Result<Step, String> {
    if s.trim() == "auto" {
        return Ok(Step::Auto);
    }
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!("`{s}` is below Prometheus's 1 ms resolution"));
    }
    Ok(Step::Seconds(d.as_secs_f64()))
}

#[derive(Debug, clap::Args)]
pub struct PromArgs {
    /// Prometheus base URL (HOST:9090 or http://HOST:9090; user:password@ for basic auth).
    #[arg(long)]
    pub url: String,
    /// Window start: RFC 3339, Unix seconds, or a duration before now (e.g. 1h).
    #[arg(long, value_parser = common::parse_time)]
    pub start: f64,
    /// Window end: RFC 3339, Unix seconds, `now`, or a duration before now.
    #[arg(long, default_value = "now", value_parser = common::parse_time)]
    pub end: f64,
    #[command(flatten)]
    pub source: PromSource,
    /// Session directory (default results/sessions/<id>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// vLLM server log files (plain or gzip), in any order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The server label written into the session (default: the first file's name).
    #[arg(long)]
    pub server: Option<String>,
    /// Year of the log's `MM-DD` timestamps (default: the current year).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1970..=9999))]
    pub year: Option<i32>,
    /// Offset of the log's clock from UTC in hours (e.g. -5, 5.5).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true, value_parser = parse_offset)]
    pub utc_offset: f64,
    /// Session directory (default results/sessions/<id>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn parse_offset(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (-14.0..=14.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a UTC offset in hours (-14 to 14)")),
    }
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a {
        Args::Prometheus(p) => {
            let o = import_prometheus(&p.url, p.start, p.end, &p.source, p.out.clone()).await?;
            println!("{}", o.dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Args::NvidiaSmi(a) => {
            let o = crate::import::gpu::join(&crate::import::gpu::GpuJoinConfig {
                session: a.session.clone(),
                csv: a.csv.clone(),
                server: a.server.clone(),
                utc_offset_h: a.utc_offset,
            })?;
            eprintln!(
                "joined {} GPU poll(s) into {} of {} sample(s)",
                o.polls, o.joined, o.samples
            );
            println!("{}", a.session.display());
            Ok(ExitCode::SUCCESS)
        }
        Args::Profilemate(a) => {
            let server = a.server.clone().unwrap_or_else(|| {
                a.dirs
                    .first()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_else(|| "profilemate".into())
            });
            let id = record::session_id(chrono::Utc::now(), &format!("profilemate-{server}"));
            let started = std::time::Instant::now();
            let o = crate::import::profilemate::import(
                &crate::import::profilemate::ProfilemateConfig {
                    dirs: a.dirs.clone(),
                    server,
                    interval_s: a.interval.as_secs_f64(),
                    utc_offset_h: a.utc_offset,
                    start_unix: a.start,
                    out_dir: a
                        .out
                        .clone()
                        .unwrap_or_else(|| common::default_session_dir(&id)),
                    session_id: id,
                },
            )?;
            eprintln!(
                "imported {} KV usage row(s) and {} eviction(s) into {} sample(s) in {:.2} s{}",
                o.usage_rows,
                o.evictions,
                o.samples,
                started.elapsed().as_secs_f64(),
                o.graphs
                    .as_ref()
                    .map(|g| format!(
                        "; {} CUDA graph(s), {} replay(s), {} workload",
                        g.unique_graphs, g.total_replays, g.workload
                    ))
                    .unwrap_or_default()
            );
            println!("{}", o.dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Args::VllmLog(l) => {
            let server = l.server.clone().unwrap_or_else(|| {
                l.files
                    .first()
                    .and_then(|f| f.file_name())
                    .map(|n| n.to_string_lossy().trim_end_matches(".gz").to_string())
                    .unwrap_or_else(|| "vllm-log".into())
            });
            let id = record::session_id(chrono::Utc::now(), &format!("log-{server}"));
            let cfg = LogImportConfig {
                files: l.files.clone(),
                server,
                year: l.year,
                utc_offset_h: l.utc_offset,
                out_dir: l
                    .out
                    .clone()
                    .unwrap_or_else(|| common::default_session_dir(&id)),
                session_id: id,
            };
            let o = vllm_log::import(&cfg)?;
            eprintln!(
                "imported {} stats line(s) of {} engine(s) at a {} s interval ({} idle row(s) filled); latency quantiles are not in a log",
                o.lines, o.engines, o.interval_s, o.filled_rows
            );
            println!("{}", o.dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Imports `[start, end]` from Prometheus into `out` (default results/sessions/<id>).
pub async fn import_prometheus(
    url: &str,
    start: f64,
    end: f64,
    src: &PromSource,
    out: Option<PathBuf>,
) -> anyhow::Result<PromImportOutcome> {
    let id = record::session_id(chrono::Utc::now(), "prometheus");
    let cfg = PromImportConfig {
        url: url.to_string(),
        bearer: src.auth.bearer()?,
        start,
        end,
        matchers: src.matchers.clone(),
        step: match src.step {
            Step::Auto => None,
            Step::Seconds(s) => Some(s),
        },
        server_label: src.server_label.clone(),
        out_dir: out.unwrap_or_else(|| common::default_session_dir(&id)),
        session_id: id,
        timeout: src.timeout,
    };
    let started = std::time::Instant::now();
    let o = prometheus::import(&cfg).await?;
    let (finest, coarsest) = o
        .steps_s
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), s| {
            (lo.min(*s), hi.max(*s))
        });
    let step = if finest < coarsest {
        format!("{finest}–{coarsest} s (each server at its own scrape interval)")
    } else {
        format!("{finest} s")
    };
    eprintln!(
        "imported {} server(s), {} step(s) of {step} ({} without data) in {} request(s), {:.1} s",
        o.servers.len(),
        o.steps,
        o.no_data_steps,
        o.requests,
        started.elapsed().as_secs_f64()
    );
    for (server, reasons) in &o.unread {
        for (reason, steps) in reasons {
            eprintln!("{server}: {steps} step(s) not read (NO_DATA): {reason}");
        }
    }
    for (instance, backends) in &o.routers {
        eprintln!(
            "skipped {instance}: a router's /metrics, not a vLLM engine's (its gauges re-exported per backend: {})",
            backends.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(o)
}
