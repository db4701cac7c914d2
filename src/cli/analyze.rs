//! `kvscope analyze`: run the SQL catalog over a session; write summary.json and
//! events.jsonl next to it (or to `--out`).

use std::process::ExitCode;

use super::common::{self, ClusterArgs, ThresholdArgs};
use crate::analysis::{self, Written};
use crate::present::fleet;
use crate::store::location::Location;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Session directory, file:// or s3:// URL.
    pub session: String,
    /// Where summary.json, events.jsonl and events.parquet go (default: next to the session).
    #[arg(long)]
    pub out: Option<String>,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Print summary.json to stdout.
    #[arg(long)]
    pub json: bool,
    /// Only these servers in the printout (globs such as 'srv-01*'; repeatable).
    #[arg(long = "server")]
    pub servers: Vec<String>,
    /// Every server in full, even on a fleet (default: a ranked fleet summary above 10
    /// servers).
    #[arg(long)]
    pub all: bool,
    /// Samples analysed per chunk (whole servers; peak memory is about two chunks per
    /// core). Results do not depend on it.
    #[arg(long, default_value_t = analysis::CHUNK_ROWS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_rows: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let filter = fleet::ServerFilter::parse(&a.servers).map_err(anyhow::Error::msg)?;
    if !filter.is_empty() {
        // Before the analysis: a pattern that selects nothing is a mistyped flag.
        common::select_servers(&Location::parse(&a.session)?, &filter).await?;
    }
    let (analysis, written_to) = execute(&a).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&analysis.summary)?);
        return Ok(ExitCode::SUCCESS);
    }
    if fleet::use_fleet_view(&analysis.summary, &filter, a.all) {
        print!("{}", fleet::render(&analysis.summary, &filter));
        println!(
            "{} events; wrote {written_to}/summary.json, events.jsonl and events.parquet",
            analysis.events,
        );
        return Ok(ExitCode::SUCCESS);
    }
    for s in analysis
        .summary
        .servers
        .iter()
        .filter(|s| filter.matches(&s.server))
    {
        let phases: Vec<String> = s
            .phases
            .iter()
            .map(|(p, t)| format!("{p} {:.0}%", t.share * 100.0))
            .collect();
        println!(
            "{}: {:.0} s, {} samples; KV avg {:.1}% max {:.1}%; waiting max {:.0}; {:.0} gen tok/s avg; {:.0} preemptions",
            s.server,
            s.duration_s,
            s.samples,
            s.kv_avg_pct.unwrap_or(0.0),
            s.kv_max_pct.unwrap_or(0.0),
            s.waiting_max.unwrap_or(0.0),
            s.generation_tokens_per_s_avg.unwrap_or(0.0),
            s.preemptions.unwrap_or(0.0)
        );
        println!("  phases: {}", phases.join(", "));
    }
    println!(
        "{} events; wrote {written_to}/summary.json, events.jsonl and events.parquet",
        analysis.events,
    );
    Ok(ExitCode::SUCCESS)
}

/// Analyses and writes; returns the analysis and where it was written.
pub async fn execute(a: &Args) -> anyhow::Result<(Written, Location)> {
    let th = a.thresholds.load()?;
    let loc = Location::parse(&a.session)?;
    let out = a.out.as_deref().map(Location::parse).transpose()?;
    let opts = analysis::AnalyzeOptions {
        chunk_rows: Some(usize::try_from(a.chunk_rows).unwrap_or(usize::MAX)),
        ..Default::default()
    };
    let analysis = match a.cluster.get()? {
        #[cfg(feature = "cluster")]
        Some(cluster) => {
            cluster
                .analyze_and_write(&loc, out.as_ref(), &th, opts)
                .await?
        }
        #[cfg(not(feature = "cluster"))]
        Some(never) => match never {},
        None => analysis::analyze_and_write_location(&loc, out.as_ref(), &th, opts).await?,
    };
    Ok((analysis, out.unwrap_or(loc)))
}
