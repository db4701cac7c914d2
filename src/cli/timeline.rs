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
    /// Only this server.
    #[arg(long)]
    pub server: Option<String>,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let th = a.thresholds.load()?;
    let events = load_or_analyze_events(&Location::parse(&a.session)?, &th).await?;
    let opts = present::timeline::TimelineOptions {
        verbose: a.verbose,
        server: a.server.clone(),
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
pub async fn load_or_analyze_events(loc: &Location, th: &Thresholds) -> anyhow::Result<Vec<Event>> {
    if loc.has_samples().await? {
        return Ok(
            analysis::analyze_location(loc, th, analysis::AnalyzeOptions::default())
                .await?
                .events,
        );
    }
    match loc.read(store::EVENTS_JSONL).await? {
        Some(b) => Ok(store::events::events_from_reader(
            &b[..],
            Path::new(&loc.file_url(store::EVENTS_JSONL)),
        )?),
        None => bail!("{loc}: no samples and no events.jsonl"),
    }
}
