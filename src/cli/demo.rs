//! `kvscope demo`: simulate an incident, record it through the real recorder, then print
//! its timeline and diagnosis.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::common::{self, parse_seconds, parse_speed};
use super::doctor::doctor_one;
use super::simulate::scenario_named;
use crate::analysis::Thresholds;
use crate::present;
use crate::record::{self, RecordConfig, Target};
use crate::sim;
use crate::store::{self, location::Location};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The incident to simulate (`kvscope simulate --describe --scenario NAME` tells what it does).
    #[arg(long, default_value = "mixed-incident")]
    pub scenario: String,
    /// Simulated seconds to record (default: the scenario's length).
    #[arg(long, value_parser = parse_seconds)]
    pub seconds: Option<f64>,
    /// Simulated seconds per wall second.
    #[arg(long, default_value_t = 6.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Random seed: the same seed gives the same run.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Session directory (default results/sessions/<id>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let sc = scenario_named(&a.scenario)?;
    let seconds = a.seconds.unwrap_or(sc.duration_s);
    let speed = a.speed;
    eprintln!("KVScope demo: scenario `{}` — {}", sc.name, sc.description);
    let sim = sim::Simulation::new(sc, a.seed, 1, sim::server::unix_now());
    let server = sim::server::spawn(sim, "127.0.0.1:0", speed).await?;
    eprintln!(
        "simulator on {}/metrics; recording {seconds:.0} simulated seconds (≈{:.0} s at ×{speed})…",
        server.url(),
        seconds / speed
    );
    let id = record::session_id(chrono::Utc::now(), &format!("demo-{}", a.scenario));
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| common::default_session_dir(&id));
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
    let outcome = record::record(cfg, common::shutdown_signal()).await?;
    server.abort();
    let dir = outcome.dir;
    let report = doctor_one(&Location::Local(dir.clone()), &Thresholds::default(), None).await?;
    let events = store::events::read_events(&dir.join(store::EVENTS_JSONL))?;
    let color = present::use_color();
    println!("\n=== Timeline ===\n");
    let opts = present::timeline::TimelineOptions {
        verbose: false,
        servers: Default::default(),
        color,
    };
    print!("{}", present::timeline::render(&events, &opts));
    println!("\n=== Doctor ===\n");
    print!("{}", present::doctor::render(&report, true, color));
    let loaded = super::report::load(&Location::Local(dir.clone()), &Thresholds::default()).await?;
    let html = crate::present::report::session_html(&loaded.view());
    let report_path = dir.join(super::report::REPORT_HTML);
    std::fs::write(&report_path, html)?;
    println!("\nSession: {}", dir.display());
    println!(
        "Report:  {} (open in any browser; no network needed)",
        report_path.display()
    );
    println!(
        "Next: kvscope timeline {0} --verbose | kvscope doctor {0} --json",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
