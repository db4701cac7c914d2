//! `kvscope doctor`: diagnose sessions (one, or a fleet concurrently); writes doctor.json
//! into each. One failing session is reported and does not stop the others.

use std::process::ExitCode;

use clap::ValueEnum;
use futures::StreamExt as _;

use super::common::{self, ThresholdArgs, parse_vllm_version};
use crate::adapter::version::VllmVersion;
use crate::analysis::Thresholds;
use crate::diagnosis::{self, Report};
use crate::present;
use crate::store::location::Location;
use crate::vocab::Severity;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FailOn {
    High,
    Medium,
}

impl FailOn {
    fn severity(self) -> Severity {
        match self {
            Self::High => Severity::High,
            Self::Medium => Severity::Medium,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Session directories or s3:// prefixes, or directories/prefixes holding sessions.
    #[arg(required_unless_present = "prometheus")]
    pub sessions: Vec<String>,
    /// Diagnose from Prometheus history instead: its base URL (imported into a session
    /// first, kept under results/sessions/ or --import-to).
    #[arg(long)]
    pub prometheus: Option<String>,
    /// With --prometheus: how far back from now (e.g. 10m, 1h).
    #[arg(long, default_value = "1h", value_parser = super::common::parse_duration)]
    pub since: std::time::Duration,
    #[command(flatten)]
    pub prom: super::import::PromSource,
    /// With --prometheus: the session directory to import into.
    #[arg(long)]
    pub import_to: Option<std::path::PathBuf>,
    /// Sessions diagnosed concurrently (default: number of CPUs).
    #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: Option<u16>,
    /// Every finding with its evidence and every fix (with a fleet: each session's report too).
    #[arg(long)]
    pub verbose: bool,
    /// Print doctor.json to stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 1 when a finding of this severity or worse exists.
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOn>,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// The servers' vLLM release (e.g. 0.26.0): advice then names only flags it accepts
    /// (wins over what metadata.json says).
    #[arg(long, value_parser = parse_vllm_version)]
    pub vllm_version: Option<VllmVersion>,
    #[command(flatten)]
    pub cluster: common::ClusterArgs,
}

/// Reports of the sessions that could be diagnosed, in argument order, and the errors
/// of those that could not.
#[derive(Default)]
pub struct Outcome {
    pub reports: Vec<(String, Report)>,
    pub failures: Vec<(String, anyhow::Error)>,
}

impl Outcome {
    /// 2 when nothing could be diagnosed; 1 when `fail_on` is reached; 2 when some
    /// session failed; else 0.
    pub fn exit_code(&self, fail_on: Option<FailOn>) -> ExitCode {
        let worst = self.reports.iter().map(|(_, r)| r.severity.rank()).max();
        if !self.failures.is_empty() && self.reports.is_empty() {
            ExitCode::from(2)
        } else if fail_on.is_some_and(|f| worst.is_some_and(|w| w >= f.severity().rank())) {
            ExitCode::from(1)
        } else if !self.failures.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    }
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let th = a.thresholds.load()?;
    let mut sessions = common::find_sessions(&a.sessions).await?;
    if let Some(url) = &a.prometheus {
        let end = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        let start = end - a.since.as_secs_f64();
        let o =
            super::import::import_prometheus(url, start, end, &a.prom, a.import_to.clone()).await?;
        eprintln!("session: {}", o.dir.display());
        sessions.push(Location::Local(o.dir));
    }
    let jobs = a
        .jobs
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let o = match a.cluster.get()? {
        #[cfg(feature = "cluster")]
        Some(cluster) => {
            let version = a.vllm_version.as_ref().map(ToString::to_string);
            let results = cluster.doctor(&sessions, &th, version).await?;
            let mut o = Outcome::default();
            for (loc, r) in sessions.iter().zip(results) {
                match r {
                    Ok(r) => o.reports.push((loc.to_string(), r)),
                    Err(e) => o.failures.push((loc.to_string(), anyhow::Error::msg(e))),
                }
            }
            o
        }
        #[cfg(not(feature = "cluster"))]
        Some(never) => match never {},
        None => execute(&sessions, &th, a.vllm_version, jobs).await,
    };
    for (loc, e) in &o.failures {
        eprintln!("error: {loc}: {}", super::error_message(e));
    }
    print(&o, &a)?;
    Ok(o.exit_code(a.fail_on))
}

/// Diagnoses `sessions`, `jobs` at a time.
pub async fn execute(
    sessions: &[Location],
    th: &Thresholds,
    version: Option<VllmVersion>,
    jobs: usize,
) -> Outcome {
    let pb = common::progress(sessions.len(), "doctor");
    let mut done: Vec<(usize, Location, anyhow::Result<Report>)> =
        futures::stream::iter(sessions.iter().cloned().enumerate())
            .map(|(i, loc)| {
                let pb = &pb;
                async move {
                    let r = doctor_one(&loc, th, version).await;
                    pb.inc(1);
                    (i, loc, r)
                }
            })
            .buffer_unordered(jobs.max(1))
            .collect()
            .await;
    pb.finish_and_clear();
    done.sort_by_key(|(i, _, _)| *i);
    let mut o = Outcome::default();
    for (_, loc, r) in done {
        match r {
            Ok(r) => o.reports.push((loc.to_string(), r)),
            Err(e) => o.failures.push((loc.to_string(), e)),
        }
    }
    o
}

/// Analyses one session, diagnoses it and writes its doctor.json.
pub async fn doctor_one(
    loc: &Location,
    th: &Thresholds,
    version: Option<VllmVersion>,
) -> anyhow::Result<Report> {
    Ok(diagnosis::doctor_location(loc, th, version).await?)
}

fn print(o: &Outcome, a: &Args) -> anyhow::Result<()> {
    let color = present::use_color();
    let reports = &o.reports;
    if a.json {
        if let [(_, one)] = reports.as_slice() {
            println!("{}", serde_json::to_string_pretty(one)?);
        } else {
            println!("{}", serde_json::to_string_pretty(&fleet_json(reports))?);
        }
    } else if let [(_, one)] = reports.as_slice() {
        print!("{}", present::doctor::render(one, a.verbose, color));
    } else {
        let view: Vec<(String, &Report)> = reports.iter().map(|(d, r)| (d.clone(), r)).collect();
        print!("{}", present::doctor::render_fleet(&view, color));
        if a.verbose {
            for (dir, r) in reports {
                println!("\n== {dir}");
                print!("{}", present::doctor::render(r, true, color));
            }
        }
    }
    Ok(())
}

fn fleet_json(reports: &[(String, Report)]) -> serde_json::Value {
    let mut rows: Vec<serde_json::Value> = reports
        .iter()
        .map(|(d, r)| {
            let top = r.hypotheses.first();
            serde_json::json!({
                "session": d,
                "severity": r.severity,
                "top": top.map(|f| f.id),
                "server": top.map(|f| f.server.clone()),
                "score": top.map(|f| f.score),
                "verdict": r.verdict,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        let s = |v: &serde_json::Value| v.get("score").and_then(|x| x.as_f64()).unwrap_or(0.0);
        s(b).partial_cmp(&s(a)).unwrap_or(std::cmp::Ordering::Equal)
    });
    serde_json::json!({ "fleet": rows })
}
