//! `kvscope dashboard`: the live terminal view (or `--once`, one text snapshot).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use super::common::{AuthArgs, ScrapeArgs, parse_seconds};
use crate::present::dashboard::{self, DashboardConfig, state::Density};
use crate::record::Target;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DensityArg {
    Compact,
    Full,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server base URL or metrics URL (repeatable).
    #[arg(long = "server", required = true)]
    pub servers: Vec<String>,
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
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let targets = a
        .servers
        .iter()
        .map(|s| Target::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = DashboardConfig {
        targets,
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
