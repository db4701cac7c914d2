//! `kvscope dashboard`: the live terminal view (or `--once`, one text snapshot).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use super::common::{AuthArgs, ScrapeArgs, parse_seconds};
use crate::present::dashboard::{self, DashboardConfig, state::Density};
use crate::record::Target;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DensityArg {
    /// KV gauge, sparklines and recent events per server.
    Compact,
    /// Also latency quantiles, counters and each engine (`d` toggles while running).
    Full,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server address (host:port), base URL or metrics URL (repeatable).
    #[arg(long = "server", required = true)]
    pub servers: Vec<String>,
    /// How much each server's pane shows.
    #[arg(long, value_enum, default_value = "compact")]
    pub density: DensityArg,
    #[command(flatten)]
    pub scrape: ScrapeArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Seconds of history kept and analysed.
    #[arg(long, default_value_t = 300.0, value_parser = parse_seconds)]
    pub window: f64,
    /// Print one text snapshot and exit (no terminal needed).
    #[arg(long)]
    pub once: bool,
    /// Where `r` writes sessions.
    #[arg(long, default_value = "results/sessions")]
    pub sessions_dir: PathBuf,
    /// A GPU exporter (DCGM field names) for the server on its host, as `record
    /// --gpu-metrics` (repeatable).
    #[arg(long = "gpu-metrics", value_name = "URL")]
    pub gpu_metrics: Vec<String>,
    /// A GPU exporter for a named server, `SERVER=URL` (repeatable).
    #[arg(long = "gpu-for", value_name = "SERVER=URL")]
    pub gpu_for: Vec<String>,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let servers = a
        .servers
        .iter()
        .map(|s| Ok((s.clone(), Target::parse(s)?)))
        .collect::<Result<Vec<_>, crate::record::RecordError>>()?;
    let gpu_targets = crate::record::gpu_targets(&a.gpu_metrics, &a.gpu_for, &servers)?;
    let cfg = DashboardConfig {
        targets: servers.into_iter().map(|(_, t)| t).collect(),
        gpu_targets,
        interval: a.scrape.interval,
        timeout: a.scrape.timeout,
        density: match a.density {
            DensityArg::Compact => Density::Compact,
            DensityArg::Full => Density::Full,
        },
        window_s: a.window,
        sessions_dir: a.sessions_dir,
        bearer: a.auth.bearer()?,
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
