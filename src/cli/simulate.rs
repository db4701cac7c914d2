//! `kvscope simulate`: the built-in vLLM simulator as an HTTP server, offline into a
//! session (`--record-to`), a synthetic fleet (`--fleet`), or its ground truth
//! (`--describe`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use super::common::{self, parse_interval_s, parse_seconds, parse_speed};
use crate::record;
use crate::sim::{self, scenario};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario to run (an unknown name lists them).
    #[arg(long, default_value = "healthy")]
    pub scenario: String,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// Simulated seconds per wall second.
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Random seed: the same seed gives the same telemetry.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Data-parallel engines behind the endpoint (1–64).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub engines: u16,
    /// KV blocks per engine (overrides the scenario).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=100_000_000))]
    pub num_gpu_blocks: Option<u32>,
    /// Print the scenario's ground truth and exit.
    #[arg(long)]
    pub describe: bool,
    /// With --describe: JSON.
    #[arg(long)]
    pub json: bool,
    /// Record offline (no HTTP, simulated clock) into this session directory and exit.
    #[arg(long)]
    pub record_to: Option<PathBuf>,
    /// Simulated seconds for --record-to (default: the scenario's length).
    #[arg(long, value_parser = parse_seconds)]
    pub seconds: Option<f64>,
    /// Scrape interval for --record-to, simulated seconds (0.01–3600).
    #[arg(long, default_value_t = 1.0, value_parser = parse_interval_s)]
    pub interval: f64,
    /// With --record-to: also record the simulated host's DCGM exporter (the live server
    /// always serves it at /dcgm/metrics).
    #[arg(long)]
    pub dcgm: bool,
    /// Turn on vLLM's KV residency metrics (`--kv-cache-metrics`) with this sample rate
    /// (0 < rate <= 1; vLLM's default 0.01).
    #[arg(long, value_parser = parse_sample_rate)]
    pub kv_cache_metrics_sample: Option<f64>,
    /// With --record-to: also keep every page (raw_pages.jsonl.gz), as `record --raw`.
    #[arg(long)]
    pub raw: bool,
    /// With --record-to: the server label written into the session.
    #[arg(long, default_value = "sim:8000")]
    pub server_name: String,
    /// With --record-to: write a synthetic fleet of N servers (core columns, 1 Hz,
    /// --seconds long) for scale tests instead of running the scheduler model.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub fleet: Option<u32>,
    /// With --fleet: `calm` (rare incidents) or `busy` (regime switches every ~2 min,
    /// noisy gauges, TTFT spikes).
    #[arg(long, value_enum, default_value = "calm")]
    pub profile: sim::fleet::FleetProfile,
}

/// The named scenario, or an error listing the known ones.
pub fn scenario_named(name: &str) -> anyhow::Result<scenario::Scenario> {
    match scenario::scenario(name) {
        Some(sc) => Ok(sc),
        None => bail!(
            "unknown scenario `{name}`; choose one of: {}",
            scenario::NAMES.join(", ")
        ),
    }
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut sc = scenario_named(&a.scenario)?;
    if let Some(b) = a.num_gpu_blocks {
        sc.engine.num_gpu_blocks = b;
    }
    sc.engine.kv_cache_metrics_sample = a.kv_cache_metrics_sample;
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
        let rows = sim::fleet::generate_profile(dir, n, secs, a.seed, a.profile)?;
        eprintln!("wrote {rows} rows ({n} servers × {secs} s)");
        println!("{}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &a.record_to {
        let run = sim::OfflineRun {
            scenario: sc,
            seed: a.seed,
            engines: usize::from(a.engines),
            interval_s: a.interval,
            seconds: a.seconds,
            epoch_unix: sim::server::unix_now().floor(),
            server: a.server_name.clone(),
            raw: a.raw,
            gpu: a.dcgm,
        };
        let id = record::session_id(chrono::Utc::now(), &format!("sim-{}", a.scenario));
        let out = sim::record_offline(&run, dir, &id)?;
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
    common::shutdown_signal().await;
    server.abort();
    Ok(ExitCode::SUCCESS)
}

/// `--kv-cache-metrics-sample`: vLLM accepts 0 < rate <= 1.
fn parse_sample_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err(format!("`{s}` is not a sample rate in (0, 1]")),
    }
}
