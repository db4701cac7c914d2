//! `kvscope timeline`: phase transitions, episodes and events of a session. Reads the
//! session, never writes into it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;

use super::common::ThresholdArgs;
use crate::analysis::{self, Thresholds};
use crate::present;
use crate::store::{self, events::Event, location::Location};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Session directory, file:// or s3:// URL.
    pub session: String,
    #[arg(long)]
    pub verbose: bool,
    #[arg(long)]
    pub json: bool,
    /// Only these servers (globs such as 'srv-01*'; repeatable).
    #[arg(long = "server")]
    pub servers: Vec<String>,
    /// Every server's events, even on a fleet (default: a ranked fleet summary above 10
    /// servers, as `analyze` prints).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let th = a.thresholds.load()?;
    let servers = present::fleet::ServerFilter::parse(&a.servers).map_err(anyhow::Error::msg)?;
    let (events, summary) = load_or_analyze(&Location::parse(&a.session)?, &th).await?;
    if let Some(summary) = &summary
        && !a.json
        && present::fleet::use_fleet_view(summary, &servers, a.all)
    {
        print!("{}", present::fleet::render(summary, &servers));
        println!("(a fleet: the timeline of one server with --server NAME, of all with --all)");
        return Ok(ExitCode::SUCCESS);
    }
    let opts = present::timeline::TimelineOptions {
        verbose: a.verbose,
        servers,
        color: present::use_color(),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&present::timeline::doc(&events, &opts))?
        );
    } else {
        print!("{}", present::timeline::render(&events, &opts));
    }
    Ok(ExitCode::SUCCESS)
}

/// Events of a session: analysed now, in memory, when the session has samples (so they
/// match the thresholds in force), else read from a legacy `events.jsonl`.
pub async fn load_or_analyze(
    loc: &Location,
    th: &Thresholds,
) -> anyhow::Result<(Vec<Event>, Option<analysis::Summary>)> {
    if loc.has_samples().await? {
        let a = analysis::analyze_location(loc, th, analysis::AnalyzeOptions::default()).await?;
        return Ok((a.events, Some(a.summary)));
    }
    match loc.read(store::EVENTS_JSONL).await? {
        Some(b) => Ok((
            store::events::events_from_reader(
                &b[..],
                Path::new(&loc.file_url(store::EVENTS_JSONL)),
            )?,
            None,
        )),
        None => bail!("{loc}: no samples and no events.jsonl"),
    }
}
