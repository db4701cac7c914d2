//! `kvscope report`: a self-contained HTML report of a session (into the session by
//! default, `s3://` too) or of many sessions (a fleet report).

use std::path::PathBuf;
use std::process::ExitCode;

use super::common::{self, ThresholdArgs};
use crate::analysis::{self, AnalyzeOptions, Thresholds};
use crate::diagnosis;
use crate::present::report::{self, SessionView};
use crate::store::location::Location;

/// The report's file name inside a session.
pub const REPORT_HTML: &str = "report.html";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A session (directory, file:// or s3://), several, or a directory/prefix holding
    /// sessions (then a fleet report).
    #[arg(required = true)]
    pub sessions: Vec<String>,
    /// Output file (default: report.html in the session; fleet.html for many).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

/// Everything a report of one session is made from.
pub struct Loaded {
    pub name: String,
    pub meta: Option<crate::store::Metadata>,
    pub analysis: analysis::Analysis,
    pub report: diagnosis::Report,
    pub series: Vec<analysis::EngineSeries>,
}

impl Loaded {
    pub fn view(&self) -> SessionView<'_> {
        SessionView {
            name: self.name.clone(),
            meta: self.meta.as_ref(),
            summary: &self.analysis.summary,
            events: &self.analysis.events,
            phases: &self.analysis.series,
            series: &self.series,
            report: &self.report,
        }
    }
}

/// Analyses and diagnoses a session and reads its chart series. A session of up to
/// [`report::MAX_CHARTED_SERVERS`] servers (all charted) is analysed in memory; a
/// larger one is analysed streamed (its event files to a temporary directory, only the
/// events the rules read kept), diagnosed, and then its charted servers alone are
/// analysed again for their events and phases: memory holds what the page shows, not the
/// fleet's events and per-sample phases.
pub async fn load(loc: &Location, th: &Thresholds) -> anyhow::Result<Loaded> {
    let meta = loc.read_metadata().await?;
    let fleet = analysis::session_servers(loc).await?.len() > report::MAX_CHARTED_SERVERS;
    let (analysis, report, only) = if fleet {
        let tmp = tempfile::tempdir()?;
        let (written, read) = analysis::analyze_write_and_keep(
            loc,
            Some(&Location::Local(tmp.path().to_path_buf())),
            th,
            AnalyzeOptions::default(),
            diagnosis::rules_read,
        )
        .await?;
        let report = diagnosis::diagnose(&written.summary, &read, meta.as_ref());
        drop(read);
        let charted: Vec<String> = report::charted_servers(&report, &written.summary)
            .into_iter()
            .map(str::to_string)
            .collect();
        let (events, series) = analysis::analyze_servers(loc, &charted, th, true).await?;
        let analysis = analysis::Analysis {
            events,
            summary: written.summary,
            series,
        };
        (analysis, report, Some(charted))
    } else {
        let opts = AnalyzeOptions {
            series: true,
            ..Default::default()
        };
        let analysis = analysis::analyze_location(loc, th, opts).await?;
        let report = diagnosis::diagnose(&analysis.summary, &analysis.events, meta.as_ref());
        (analysis, report, None)
    };
    // Chart series (every sample of six metrics) only for the servers the report charts.
    let series = analysis::chart_series(loc, only.as_deref()).await?;
    let name = meta
        .as_ref()
        .map(|m| m.session_id.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| loc.name());
    Ok(Loaded {
        name,
        meta,
        analysis,
        report,
        series,
    })
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let th = a.thresholds.load()?;
    let sessions = common::find_sessions(&a.sessions).await?;
    let mut loaded = Vec::new();
    for loc in &sessions {
        loaded.push(load(loc, &th).await?);
    }
    if let [one] = loaded.as_slice() {
        let html = report::session_html(&one.view());
        match &a.out {
            Some(p) => write_file(p, html)?,
            None => {
                let loc = &sessions[0];
                loc.write(REPORT_HTML, html.into_bytes()).await?;
                println!("{}", loc.file_url(REPORT_HTML));
            }
        }
    } else {
        let views: Vec<SessionView> = loaded.iter().map(Loaded::view).collect();
        let html = report::fleet_html(&views);
        write_file(
            &a.out.clone().unwrap_or_else(|| PathBuf::from("fleet.html")),
            html,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_file(p: &std::path::Path, html: String) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::write(p, html).with_context(|| format!("writing {}", p.display()))?;
    println!("{}", p.display());
    Ok(())
}
