//! `kvscope timeline`: phase transitions, episodes and events of a session. Reads the
//! session, never writes into it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;

use super::common::{self, ThresholdArgs};
use crate::analysis::{self, AnalyzeOptions, Thresholds};
use crate::present::{self, fleet::ServerFilter};
use crate::store::{self, events::Event, location::Location};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Session directory, file:// or s3:// URL.
    pub session: String,
    /// Also condition changes, and each event's evidence.
    #[arg(long)]
    pub verbose: bool,
    /// Print the timeline as JSON (phases, episodes, events) instead of text.
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
    let servers = ServerFilter::parse(&a.servers).map_err(anyhow::Error::msg)?;
    let loc = Location::parse(&a.session)?;
    let events = match load(&loc, &th, &servers, a.all || a.json).await? {
        Loaded::Fleet(summary) => {
            print!("{}", present::fleet::render(&summary, &servers));
            println!("(a fleet: the timeline of one server with --server NAME, of all with --all)");
            return Ok(ExitCode::SUCCESS);
        }
        Loaded::Events(events) => events,
    };
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

/// What `timeline` prints from.
enum Loaded {
    /// Many servers selected: the ranked fleet table, from the summary alone.
    Fleet(Box<analysis::Summary>),
    /// The events of the servers selected (or of every server).
    Events(Vec<Event>),
}

/// Analyses a session with samples now (so the events match the thresholds in force);
/// reads a legacy session's `events.jsonl`. Memory holds only what is printed: a fleet
/// table is analysed streamed, as `analyze` does, into a temporary directory (never into
/// the session); the events of a few servers come from an analysis of those servers
/// alone (every query partitions by server, so they are their part of the whole
/// session's); every event of a session from a streamed analysis read back.
/// `events_wanted` (`--all`, `--json`): events even when many servers are selected.
async fn load(
    loc: &Location,
    th: &Thresholds,
    filter: &ServerFilter,
    events_wanted: bool,
) -> anyhow::Result<Loaded> {
    if !loc.has_samples().await? {
        return match loc.read(store::EVENTS_JSONL).await? {
            Some(b) => Ok(Loaded::Events(store::events::events_from_reader(
                &b[..],
                Path::new(&loc.file_url(store::EVENTS_JSONL)),
            )?)),
            None => bail!("{loc}: no samples and no events.jsonl"),
        };
    }
    let (selected, total) = common::select_servers(loc, filter).await?;
    let fleet = present::fleet::fleet_view_of(selected.len(), events_wanted);
    if !fleet && selected.len() < total {
        let (events, _) = analysis::analyze_servers(loc, &selected, th, false).await?;
        return Ok(Loaded::Events(events));
    }
    let dir = tempfile::tempdir()?;
    let scratch = Some(Location::Local(dir.path().to_path_buf()));
    let opts = AnalyzeOptions::default();
    if fleet {
        let written = analysis::analyze_and_write_location(loc, scratch.as_ref(), th, opts);
        return Ok(Loaded::Fleet(Box::new(written.await?.summary)));
    }
    let all = |_: &Event| true;
    let written = analysis::analyze_write_and_keep(loc, scratch.as_ref(), th, opts, all);
    Ok(Loaded::Events(written.await?.1))
}
