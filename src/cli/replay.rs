//! `kvscope replay`: serve a real capture (or a session recorded with `--raw`) as a live
//! `/metrics` endpoint.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::common::{self, parse_speed};
use crate::source::{raw, replay};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A real capture (directory with metrics_scrapes.jsonl.gz, or the file itself) or a
    /// session recorded with --raw.
    pub capture: PathBuf,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// Capture seconds per wall second.
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Start over at the end (timestamps keep increasing) instead of answering 503.
    #[arg(long = "loop")]
    pub looped: bool,
    /// With a multi-server session: the server whose pages to serve (default: the first).
    #[arg(long)]
    pub server: Option<String>,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let file = raw::pages_file(&a.capture)?;
    let pages = raw::read_pages(&file)?;
    let r = replay::Replay::new(pages, a.server.as_deref(), a.speed, a.looped)
        .with_context(|| file.display().to_string())?;
    let (n, span) = (r.len(), r.span_s());
    let server = replay::spawn(r, &a.listen).await?;
    eprintln!(
        "replaying {n} pages ({span:.0} s) of {} on {}/metrics at ×{}{}; Ctrl-C to stop",
        file.display(),
        server.url(),
        a.speed,
        if a.looped { ", looping" } else { "" }
    );
    common::shutdown_signal().await;
    server.abort();
    Ok(ExitCode::SUCCESS)
}
