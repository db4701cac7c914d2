//! Command line: one module per command, each a clap `Args` struct (common flag groups
//! flattened from [`common`]) and a `run` that does the work through the stages and then
//! prints. The only place with clap, anyhow, the tokio runtime and error printing.

mod analyze;
mod common;
mod dashboard;
mod demo;
mod doctor;
mod export;
pub(crate) mod import;
mod record;
mod replay;
mod report;
mod simulate;
mod timeline;
mod verify;
mod worker;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kvscope", version, about = "Observability and diagnostics for vLLM inference servers", long_about = None)]
pub struct Cli {
    /// Log level (error, warn, info, debug) for diagnostics on stderr.
    #[arg(long, global = true, default_value = "warn", env = "KVSCOPE_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Record a vLLM server's /metrics into a session directory.
    Record(record::Args),
    /// Analyse a session: writes summary.json, events.jsonl and events.parquet.
    Analyze(analyze::Args),
    /// Show phase transitions, episodes and events of a session.
    Timeline(timeline::Args),
    /// Diagnose a session: ranked root causes with evidence and fixes (writes doctor.json).
    Doctor(doctor::Args),
    /// Run the built-in vLLM simulator (HTTP server, or --describe its ground truth).
    Simulate(simulate::Args),
    /// Simulate an incident, record it, and print timeline and diagnosis.
    Demo(demo::Args),
    /// Live terminal view of vLLM servers (same phases and events as analyze).
    Dashboard(dashboard::Args),
    /// Serve a real capture (or a session recorded with --raw) as a live /metrics endpoint.
    Replay(replay::Args),
    /// Rebuild a crashed session's Parquet from samples.jsonl.
    Repair(verify::RepairArgs),
    /// Write sessions into one Hive-partitioned Parquet dataset (pandas, Polars, DuckDB).
    Export(export::Args),
    /// Check a session's files and say what is wrong (exit 1 on any error).
    Verify(verify::VerifyArgs),
    /// A self-contained HTML report of a session, or of many (fleet).
    Report(report::Args),
    /// Turn Prometheus history or a vLLM server log into a session.
    #[command(subcommand)]
    Import(import::Args),
    /// Serve this machine to a cluster: `analyze|doctor --cluster URL` run their work here.
    Worker(worker::Args),
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("kvscope={level}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kvscope=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // A log line that cannot be written (stderr a closed pipe: `2>&1 | head`) is
        // dropped. By default the subscriber reports it with `eprintln!`, which panics
        // there, inside whatever task logged: a DataFusion task died and the analysis
        // waited for it forever.
        .log_internal_errors(false)
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// What `kvscope` prints for an error: its chain, each cause once ([`crate::error_chain`]).
pub fn error_message(e: &anyhow::Error) -> String {
    crate::error_chain(e.as_ref())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging(&cli.log);
    let rt = runtime()?;
    match cli.command {
        Command::Record(a) => rt.block_on(record::run(a)),
        Command::Analyze(a) => rt.block_on(analyze::run(a)),
        Command::Timeline(a) => rt.block_on(timeline::run(a)),
        Command::Doctor(a) => rt.block_on(doctor::run(a)),
        Command::Simulate(a) => rt.block_on(simulate::run(a)),
        Command::Demo(a) => rt.block_on(demo::run(a)),
        Command::Dashboard(a) => rt.block_on(dashboard::run(a)),
        Command::Export(a) => rt.block_on(export::run(a)),
        Command::Replay(a) => rt.block_on(replay::run(a)),
        Command::Verify(a) => verify::verify(a),
        Command::Import(a) => rt.block_on(import::run(a)),
        Command::Report(a) => rt.block_on(report::run(a)),
        Command::Repair(a) => verify::repair(a),
        Command::Worker(a) => rt.block_on(worker::run(a)),
    }
}

#[cfg(test)]
mod tests {
    use super::error_message;
    use anyhow::Context;

    #[test]
    fn a_cause_shown_inline_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("/x/samples.parquet: {source}")]
        struct Named {
            #[source]
            source: std::io::Error,
        }
        let inner = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Named { source: inner }).context("reading the session");
        assert_eq!(
            error_message(&e),
            "reading the session: /x/samples.parquet: no such file"
        );
        // Causes not in their parent's message are all kept, in order.
        let e = Err::<(), _>(std::io::Error::other("disk full"))
            .context("writing events.jsonl")
            .context("analyze")
            .unwrap_err();
        assert_eq!(
            error_message(&e),
            "analyze: writing events.jsonl: disk full"
        );
        // A cause that merely ends its parent's text, not after ": ", is kept.
        let e = Err::<(), _>(std::io::Error::other("1"))
            .context("reading line 1")
            .unwrap_err();
        assert_eq!(error_message(&e), "reading line 1: 1");
    }
}
