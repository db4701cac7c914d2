//! Command line: clap structs become plain config once, then each command calls the
//! stages. The only place with clap, anyhow, the tokio runtime and error printing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};

use kvscope::adapter::version::VllmVersion;
use kvscope::analysis::{self, Thresholds};
use kvscope::diagnosis;
use kvscope::present;
use kvscope::record::{self, RecordConfig, Target};
use kvscope::sim::{self, scenario};
use kvscope::store;
use kvscope::store::export::{ExportReport, PartitionKey};
use kvscope::store::location::Location;

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
    Record(RecordArgs),
    /// Analyse a session: writes summary.json and events.jsonl.
    Analyze(AnalyzeArgs),
    /// Show phase transitions, episodes and events of a session.
    Timeline(TimelineArgs),
    /// Diagnose a session: ranked root causes with evidence and fixes (writes doctor.json).
    Doctor(DoctorArgs),
    /// Run the built-in vLLM simulator (HTTP server, or --describe its ground truth).
    Simulate(SimulateArgs),
    /// Simulate an incident, record it, and print timeline and diagnosis.
    Demo(DemoArgs),
    /// Live terminal view of vLLM servers (same phases and events as analyze).
    Dashboard(DashboardArgs),
    /// Serve a real capture (or a session recorded with --raw) as a live /metrics endpoint.
    Replay(ReplayArgs),
    /// Rebuild a crashed session's Parquet from samples.jsonl.
    Repair { session: PathBuf },
    /// Write sessions into one Hive-partitioned Parquet dataset (pandas, Polars, DuckDB).
    Export(ExportArgs),
    /// Check a session's files and say what is wrong (exit 1 on any error).
    Verify {
        session: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct RecordArgs {
    /// Server base URL or metrics URL (repeatable).
    #[arg(long = "server", required = true)]
    servers: Vec<String>,
    /// How long to record (e.g. 90, 90s, 5m). Until Ctrl-C when absent.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Scrape interval (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Per-scrape timeout.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// Session directory (default results/sessions/<session-id>), or s3://bucket/prefix:
    /// recorded locally first (crash-safe), uploaded when the session closes.
    #[arg(long)]
    out: Option<String>,
    /// With --out s3://…: the local directory recorded into before upload
    /// (default results/sessions/<session-id>).
    #[arg(long)]
    staging: Option<PathBuf>,
    /// Label for the session id.
    #[arg(long)]
    label: Option<String>,
    /// Keep retrying until the servers answer instead of failing at start.
    #[arg(long)]
    wait: bool,
    /// File holding a bearer token for the server (never logged or stored).
    #[arg(long)]
    bearer_token_file: Option<PathBuf>,
    /// Also keep every raw page, gzip-compressed, in the session (raw_pages.jsonl.gz):
    /// the session can then be replayed (`kvscope replay`) or re-normalized later.
    #[arg(long)]
    raw: bool,
    /// The servers' vLLM release (e.g. 0.29.0), recorded in metadata.json; otherwise
    /// inferred from the `vllm:cache_config_info` label set where it identifies one.
    #[arg(long, value_parser = parse_vllm_version)]
    vllm_version: Option<VllmVersion>,
}

fn parse_vllm_version(s: &str) -> Result<VllmVersion, String> {
    VllmVersion::parse(s).ok_or_else(|| format!("`{s}` is not a vLLM version (e.g. 0.29.0)"))
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// A real capture (directory with metrics_scrapes.jsonl.gz, or the file itself) or a
    /// session recorded with --raw.
    capture: PathBuf,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: String,
    /// Capture seconds per wall second.
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    speed: f64,
    /// Start over at the end (timestamps keep increasing) instead of answering 503.
    #[arg(long = "loop")]
    looped: bool,
    /// With a multi-server session: the server whose pages to serve (default: the first).
    #[arg(long)]
    server: Option<String>,
}

/// A positive, finite speed factor (at most 10,000).
fn parse_speed(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !(v > 0.0 && v <= 10_000.0) {
        return Err(format!("`{s}` must be > 0 and ≤ 10000"));
    }
    Ok(v)
}

#[derive(Debug, clap::Args)]
struct AnalyzeArgs {
    /// Session directory, file:// or s3:// URL.
    session: String,
    /// Where summary.json and events.jsonl go (default: next to the session).
    #[arg(long)]
    out: Option<String>,
    /// TOML file with a [thresholds] table overriding defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print summary.json to stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct TimelineArgs {
    /// Session directory, file:// or s3:// URL.
    session: String,
    #[arg(long)]
    verbose: bool,
    #[arg(long)]
    json: bool,
    /// Only this server.
    #[arg(long)]
    server: Option<String>,
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FailOn {
    High,
    Medium,
}

#[derive(Debug, clap::Args)]
struct DoctorArgs {
    /// Session directories or s3:// prefixes, or directories/prefixes holding sessions.
    #[arg(required = true)]
    sessions: Vec<String>,
    /// Sessions diagnosed concurrently (default: number of CPUs).
    #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..=1024))]
    jobs: Option<u16>,
    #[arg(long)]
    verbose: bool,
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when a finding of this severity or worse exists.
    #[arg(long, value_enum)]
    fail_on: Option<FailOn>,
    #[arg(long)]
    config: Option<PathBuf>,
    /// The servers' vLLM release (e.g. 0.26.0): advice then names only flags it accepts
    /// (wins over what metadata.json says).
    #[arg(long, value_parser = parse_vllm_version)]
    vllm_version: Option<VllmVersion>,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// Session directories or s3:// URLs, or directories/prefixes holding sessions.
    #[arg(required = true)]
    sessions: Vec<String>,
    /// Dataset root: a local directory or s3:// prefix.
    #[arg(long)]
    out: String,
    /// Hive partition columns, comma-separated: server, date.
    #[arg(long, value_delimiter = ',', value_parser = PartitionKey::parse, default_value = "server,date")]
    partition_by: Vec<PartitionKey>,
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    #[arg(long, default_value = "healthy")]
    scenario: String,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: String,
    /// Simulated seconds per wall second.
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    speed: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Data-parallel engines behind the endpoint (1–64).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    engines: u16,
    /// KV blocks per engine (overrides the scenario).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=100_000_000))]
    num_gpu_blocks: Option<u32>,
    /// Print the scenario's ground truth and exit.
    #[arg(long)]
    describe: bool,
    /// With --describe: JSON.
    #[arg(long)]
    json: bool,
    /// Record offline (no HTTP, simulated clock) into this session directory and exit.
    #[arg(long)]
    record_to: Option<PathBuf>,
    /// Simulated seconds for --record-to (default: the scenario's length).
    #[arg(long, value_parser = parse_seconds)]
    seconds: Option<f64>,
    /// Scrape interval for --record-to, simulated seconds (0.01–3600).
    #[arg(long, default_value_t = 1.0, value_parser = parse_interval_s)]
    interval: f64,
    /// With --record-to: the server label written into the session.
    #[arg(long, default_value = "sim:8000")]
    server_name: String,
    /// With --record-to: write a synthetic fleet of N servers (core columns, 1 Hz,
    /// --seconds long) for scale tests instead of running the scheduler model.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    fleet: Option<u32>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DensityArg {
    Compact,
    Full,
}

#[derive(Debug, clap::Args)]
struct DashboardArgs {
    /// Server base URL or metrics URL (repeatable).
    #[arg(long = "server", required = true)]
    servers: Vec<String>,
    #[arg(long, value_enum, default_value = "compact")]
    density: DensityArg,
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// Seconds of history kept and analysed.
    #[arg(long, default_value_t = 300.0, value_parser = parse_seconds)]
    window: f64,
    /// Print one text snapshot and exit (no terminal needed).
    #[arg(long)]
    once: bool,
    /// Where `r` writes sessions.
    #[arg(long, default_value = "results/sessions")]
    sessions_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    #[arg(long, default_value = "mixed-incident")]
    scenario: String,
    /// Simulated seconds to record (default: the scenario's length).
    #[arg(long, value_parser = parse_seconds)]
    seconds: Option<f64>,
    /// Simulated seconds per wall second.
    #[arg(long, default_value_t = 6.0, value_parser = parse_speed)]
    speed: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Session directory (default results/sessions/<id>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Longest duration any flag takes: a year.
const MAX_DURATION_S: f64 = 366.0 * 86_400.0;

/// Parses `90`, `90s`, `500ms`, `5m`, `1h`: positive, finite, at most a year.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 90s, 500ms, 5m)"))?;
    let secs = v * mult;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("`{s}` must be positive"));
    }
    if secs > MAX_DURATION_S {
        return Err(format!("`{s}` is longer than a year"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

/// Seconds as a plain number: positive, finite, at most a year.
fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v > 0.0 && v <= MAX_DURATION_S) {
        return Err(format!("`{s}` must be > 0 and at most a year"));
    }
    Ok(v)
}

/// A scrape interval in seconds: 0.01–3600 (a smaller one would write millions of rows
/// per simulated minute).
fn parse_interval_s(s: &str) -> Result<f64, String> {
    let v = parse_seconds(s)?;
    if !(0.01..=3600.0).contains(&v) {
        return Err(format!("`{s}` must be between 0.01 and 3600 s"));
    }
    Ok(v)
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("kvscope={level}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kvscope=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging(&cli.log);
    let rt = runtime()?;
    match cli.command {
        Command::Record(a) => rt.block_on(cmd_record(a)),
        Command::Analyze(a) => rt.block_on(cmd_analyze(a)),
        Command::Timeline(a) => rt.block_on(cmd_timeline(a)),
        Command::Doctor(a) => rt.block_on(cmd_doctor(a)),
        Command::Simulate(a) => rt.block_on(cmd_simulate(a)),
        Command::Demo(a) => rt.block_on(cmd_demo(a)),
        Command::Dashboard(a) => rt.block_on(cmd_dashboard(a)),
        Command::Export(a) => rt.block_on(cmd_export(a)),
        Command::Replay(a) => rt.block_on(cmd_replay(a)),
        Command::Verify { session, json } => {
            store::check_session_dir(&session)?;
            let checks = store::verify::verify(&session);
            if json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                for c in &checks {
                    let tag = match c.level {
                        store::verify::Level::Ok => "ok",
                        store::verify::Level::Warning => "warning",
                        store::verify::Level::Error => "ERROR",
                    };
                    println!("{tag:<8} {:<20} {}", c.file, c.message);
                }
            }
            let bad = checks
                .iter()
                .any(|c| c.level == store::verify::Level::Error);
            Ok(if bad {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Repair { session } => {
            let r = store::repair(&session)?;
            match r.rebuilt_rows {
                Some(n) => println!(
                    "{}: rebuilt samples.parquet from samples.jsonl ({n} rows)",
                    session.display()
                ),
                None => println!("{}: nothing to repair", session.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_thresholds(config: Option<&Path>) -> anyhow::Result<Thresholds> {
    let Some(path) = config else {
        return Ok(Thresholds::default());
    };
    // Unknown tables or keys are errors naming them (a misspelt `[threshold]` table
    // would otherwise silently leave every default in force).
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        thresholds: Thresholds,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let f: File =
        toml::from_str(&text).with_context(|| format!("{}: invalid config", path.display()))?;
    Ok(f.thresholds)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn default_session_dir(id: &str) -> PathBuf {
    PathBuf::from("results").join("sessions").join(id)
}

async fn cmd_record(a: RecordArgs) -> anyhow::Result<ExitCode> {
    let targets = a
        .servers
        .iter()
        .map(|s| Target::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let label = a
        .label
        .clone()
        .or_else(|| targets.first().map(|t| t.label.replace(':', "-")))
        .unwrap_or_else(|| "session".into());
    let id = record::session_id(chrono::Utc::now(), &label);
    let dest = a.out.as_deref().map(Location::parse).transpose()?;
    let (out, upload_to) = match dest {
        None => (default_session_dir(&id), None),
        Some(Location::Local(p)) => (p, None),
        Some(remote) => {
            // Fail before recording, not after, when the store is unreachable.
            remote
                .check_access()
                .await
                .with_context(|| format!("checking access to {remote}"))?;
            let staging = a
                .staging
                .clone()
                .unwrap_or_else(|| default_session_dir(&id));
            (staging, Some(remote))
        }
    };
    let bearer = match &a.bearer_token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading bearer token file {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("KVSCOPE_BEARER_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let cfg = RecordConfig {
        targets,
        duration: a.duration,
        interval: a.interval,
        timeout: a.timeout,
        out_dir: out,
        session_id: id,
        wait: a.wait,
        bearer,
        progress: true,
        source_kind: "scrape".into(),
        raw: a.raw,
        vllm_version: a.vllm_version,
    };
    let outcome = record::record(cfg, shutdown_signal()).await?;
    eprintln!(
        "recorded {} scrape(s), {} failed{}",
        outcome.scrapes,
        outcome.failed_scrapes,
        if outcome.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    );
    if let Some(remote) = upload_to {
        let bytes = remote.upload_dir(&outcome.dir).await.with_context(|| {
            format!(
                "uploading to {remote} failed; the session is kept at {}",
                outcome.dir.display()
            )
        })?;
        eprintln!("uploaded {bytes} bytes to {remote}");
        println!("{remote}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", outcome.dir.display());
    Ok(ExitCode::SUCCESS)
}

async fn cmd_analyze(a: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let th = load_thresholds(a.config.as_deref())?;
    let loc = Location::parse(&a.session)?;
    let out = a.out.as_deref().map(Location::parse).transpose()?;
    let analysis = analysis::analyze_and_write_location(&loc, out.as_ref(), &th).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&analysis.summary)?);
    } else {
        for s in &analysis.summary.servers {
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
            "{} events; wrote {}/summary.json and events.jsonl",
            analysis.events.len(),
            out.as_ref().unwrap_or(&loc)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn cmd_timeline(a: TimelineArgs) -> anyhow::Result<ExitCode> {
    let th = load_thresholds(a.config.as_deref())?;
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

/// Events of a session: analysed now when the session has samples (so they match the
/// thresholds in force), else read from a legacy `events.jsonl`.
async fn load_or_analyze_events(
    loc: &Location,
    th: &Thresholds,
) -> anyhow::Result<Vec<store::events::Event>> {
    // Analysed in memory: `timeline` reads a session, it never writes into it.
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

/// Expands arguments into sessions: a directory (prefix) with metadata or samples is a
/// session; otherwise the sessions below it.
async fn find_sessions(args: &[String]) -> anyhow::Result<Vec<Location>> {
    let mut out = Vec::new();
    for a in args {
        let loc = Location::parse(a)?;
        let found = loc.find_sessions().await?;
        if found.is_empty() {
            bail!("{loc}: not a session and holds no sessions");
        }
        out.extend(found);
    }
    Ok(out)
}

async fn doctor_one(
    loc: &Location,
    th: &Thresholds,
    version: Option<VllmVersion>,
) -> anyhow::Result<diagnosis::Report> {
    let analysis = analysis::analyze_and_write_location(loc, None, th).await?;
    let mut meta = loc.read_metadata().await?;
    if let (Some(v), Some(m)) = (version, meta.as_mut()) {
        m.state_vllm_version(&v.to_string(), "stated (doctor --vllm-version)");
    }
    let report = diagnosis::diagnose(&analysis.summary, &analysis.events, meta.as_ref());
    loc.write(store::DOCTOR_JSON, serde_json::to_vec_pretty(&report)?)
        .await?;
    Ok(report)
}

/// A progress bar on stderr (drawn only on a terminal).
fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(len as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed} {msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(what.to_string());
    pb
}

async fn cmd_doctor(a: DoctorArgs) -> anyhow::Result<ExitCode> {
    use futures::StreamExt as _;
    let th = load_thresholds(a.config.as_deref())?;
    let sessions = find_sessions(&a.sessions).await?;
    let color = present::use_color();
    let jobs = a
        .jobs
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let pb = progress(sessions.len(), "doctor");
    // Bounded concurrency; one failing session is reported and does not stop the others.
    let mut done: Vec<(usize, Location, anyhow::Result<diagnosis::Report>)> =
        futures::stream::iter(sessions.iter().cloned().enumerate())
            .map(|(i, loc)| {
                let th = &th;
                let pb = &pb;
                async move {
                    let r = doctor_one(&loc, th, a.vllm_version).await;
                    pb.inc(1);
                    (i, loc, r)
                }
            })
            .buffer_unordered(jobs)
            .collect()
            .await;
    pb.finish_and_clear();
    done.sort_by_key(|(i, _, _)| *i);
    let mut reports = Vec::new();
    let mut failures = 0;
    for (_, loc, r) in done {
        match r {
            Ok(r) => reports.push((loc.to_string(), r)),
            Err(e) => {
                failures += 1;
                eprintln!("error: {loc}: {e:#}");
            }
        }
    }
    if a.json {
        let docs: Vec<_> = reports.iter().map(|(_, r)| r).collect();
        if docs.len() == 1 {
            println!("{}", serde_json::to_string_pretty(&docs[0])?);
        } else {
            println!("{}", serde_json::to_string_pretty(&fleet_json(&reports))?);
        }
    } else if reports.len() == 1 {
        print!(
            "{}",
            present::doctor::render(&reports[0].1, a.verbose, color)
        );
    } else {
        print!(
            "{}",
            present::doctor::render_fleet(&reports_view(&reports), color)
        );
        if a.verbose {
            for (dir, r) in &reports {
                println!("\n== {dir}");
                print!("{}", present::doctor::render(r, true, color));
            }
        }
    }
    let threshold = match a.fail_on {
        Some(FailOn::High) => Some(3),
        Some(FailOn::Medium) => Some(2),
        None => None,
    };
    let worst = reports
        .iter()
        .map(|(_, r)| match r.severity.as_str() {
            "high" => 3,
            "medium" => 2,
            "low" => 1,
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    if failures > 0 && reports.is_empty() {
        return Ok(ExitCode::from(2));
    }
    if threshold.is_some_and(|t| worst >= t) {
        return Ok(ExitCode::from(1));
    }
    if failures > 0 {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn reports_view(reports: &[(String, diagnosis::Report)]) -> Vec<(String, &diagnosis::Report)> {
    reports.iter().map(|(d, r)| (d.clone(), r)).collect()
}

async fn cmd_export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let sessions = find_sessions(&a.sessions).await?;
    let out = Location::parse(&a.out)?;
    let pb = progress(sessions.len(), "export");
    let mut report = ExportReport::default();
    let started = std::time::Instant::now();
    // A bad session is reported and skipped; the others are still exported (exit 2).
    let mut failures = 0;
    for loc in &sessions {
        if let Err(e) = store::export::export_session(loc, &out, &a.partition_by, &mut report).await
        {
            failures += 1;
            pb.suspend(|| eprintln!("error: exporting {loc}: {e:#}"));
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    eprintln!(
        "exported {} session(s): {} rows in {} file(s), {:.1} MB, {:.2} s",
        report.sessions,
        report.rows,
        report.files,
        report.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!("{out}");
    Ok(if failures > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn fleet_json(reports: &[(String, diagnosis::Report)]) -> serde_json::Value {
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

async fn cmd_simulate(a: SimulateArgs) -> anyhow::Result<ExitCode> {
    let Some(mut sc) = scenario::scenario(&a.scenario) else {
        bail!(
            "unknown scenario `{}`; choose one of: {}",
            a.scenario,
            scenario::NAMES.join(", ")
        );
    };
    if let Some(b) = a.num_gpu_blocks {
        sc.engine.num_gpu_blocks = b;
    }
    if a.describe {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&sc)?);
        } else {
            println!("{}: {}", sc.name, sc.description);
            println!("root cause: {}", sc.truth.root_cause);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let (Some(dir), Some(n)) = (&a.record_to, a.fleet) {
        let secs = a.seconds.unwrap_or(3600.0).max(1.0) as usize;
        let n = n as usize;
        let rows = sim::fleet::generate(dir, n, secs, a.seed)?;
        eprintln!("wrote {rows} rows ({n} servers × {secs} s)");
        println!("{}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = a.record_to {
        let run = sim::OfflineRun {
            scenario: sc,
            seed: a.seed,
            engines: usize::from(a.engines),
            interval_s: a.interval,
            seconds: a.seconds,
            epoch_unix: sim::server::unix_now().floor(),
            server: a.server_name.clone(),
        };
        let id = record::session_id(chrono::Utc::now(), &format!("sim-{}", a.scenario));
        let out = sim::record_offline(&run, &dir, &id)?;
        println!("{}", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    let sim = sim::Simulation::new(sc, a.seed, usize::from(a.engines), sim::server::unix_now());
    let server = sim::server::spawn(sim, &a.listen, a.speed).await?;
    eprintln!(
        "simulating `{}` on {}/metrics (speed ×{}); Ctrl-C to stop",
        a.scenario,
        server.url(),
        a.speed
    );
    shutdown_signal().await;
    server.abort();
    Ok(ExitCode::SUCCESS)
}

async fn cmd_replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    use kvscope::source::{raw, replay};
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
    shutdown_signal().await;
    server.abort();
    Ok(ExitCode::SUCCESS)
}

async fn cmd_dashboard(a: DashboardArgs) -> anyhow::Result<ExitCode> {
    use present::dashboard::{self, DashboardConfig, state::Density};
    let targets = a
        .servers
        .iter()
        .map(|s| Target::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = DashboardConfig {
        targets,
        interval: a.interval,
        timeout: a.timeout,
        density: match a.density {
            DensityArg::Compact => Density::Compact,
            DensityArg::Full => Density::Full,
        },
        window_s: a.window,
        sessions_dir: a.sessions_dir,
        bearer: std::env::var("KVSCOPE_BEARER_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    if a.once {
        print!("{}", dashboard::once(cfg).await?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = dashboard::run(cfg).await? {
        println!("{}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn cmd_demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let Some(sc) = scenario::scenario(&a.scenario) else {
        bail!(
            "unknown scenario `{}`; choose one of: {}",
            a.scenario,
            scenario::NAMES.join(", ")
        );
    };
    let seconds = a.seconds.unwrap_or(sc.duration_s);
    let speed = a.speed.max(0.1);
    eprintln!("KVScope demo: scenario `{}` — {}", sc.name, sc.description);
    let sim = sim::Simulation::new(sc, a.seed, 1, sim::server::unix_now());
    let server = sim::server::spawn(sim, "127.0.0.1:0", speed).await?;
    eprintln!(
        "simulator on {}/metrics; recording {seconds:.0} simulated seconds (≈{:.0} s at ×{speed})…",
        server.url(),
        seconds / speed
    );
    let id = record::session_id(chrono::Utc::now(), &format!("demo-{}", a.scenario));
    let out = a.out.clone().unwrap_or_else(|| default_session_dir(&id));
    let cfg = RecordConfig {
        targets: vec![Target::parse(&server.url())?],
        duration: Some(Duration::from_secs_f64(seconds / speed)),
        interval: Duration::from_secs_f64(1.0 / speed),
        timeout: Duration::from_secs(2),
        out_dir: out,
        session_id: id,
        wait: false,
        bearer: None,
        progress: true,
        source_kind: "simulator".into(),
        raw: false,
        vllm_version: None,
    };
    let outcome = record::record(cfg, shutdown_signal()).await?;
    server.abort();
    let dir = outcome.dir;
    let th = Thresholds::default();
    let report = doctor_one(&Location::Local(dir.clone()), &th, None).await?;
    let events = store::events::read_events(&dir.join(store::EVENTS_JSONL))?;
    let color = present::use_color();
    println!("\n=== Timeline ===\n");
    let opts = present::timeline::TimelineOptions {
        verbose: false,
        server: None,
        color,
    };
    print!("{}", present::timeline::render(&events, &opts));
    println!("\n=== Doctor ===\n");
    print!("{}", present::doctor::render(&report, true, color));
    println!("\nSession: {}", dir.display());
    println!(
        "Next: kvscope timeline {0} --verbose | kvscope doctor {0} --json",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
