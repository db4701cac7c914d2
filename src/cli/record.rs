//! `kvscope record`: scrape servers into a session (local, or staged then uploaded).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::common::{self, AuthArgs, ScrapeArgs, parse_duration, parse_vllm_version};
use crate::adapter::version::VllmVersion;
use crate::record::{self, RecordConfig, Target};
use crate::store::location::Location;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server address (host:port), base URL or metrics URL (repeatable).
    #[arg(long = "server", required = true)]
    pub servers: Vec<String>,
    /// How long to record (e.g. 90, 90s, 5m). Until Ctrl-C when absent.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub scrape: ScrapeArgs,
    /// Session directory (default results/sessions/<session-id>), or s3://bucket/prefix:
    /// recorded locally first (crash-safe), uploaded when the session closes.
    #[arg(long)]
    pub out: Option<String>,
    /// With --out s3://…: the local directory recorded into before upload
    /// (default results/sessions/<session-id>).
    #[arg(long)]
    pub staging: Option<PathBuf>,
    /// Label for the session id.
    #[arg(long)]
    pub label: Option<String>,
    /// Keep retrying until the servers answer instead of failing at start.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Also keep every raw page, gzip-compressed, in the session (raw_pages.jsonl.gz):
    /// the session can then be replayed (`kvscope replay`) or re-normalized later.
    #[arg(long)]
    pub raw: bool,
    /// A GPU exporter to scrape beside the servers (NVIDIA dcgm-exporter, or any page in
    /// DCGM field names; repeatable): its GPUs fill the `gpu_*` columns of the server on
    /// the same host (or of the only server).
    #[arg(long = "gpu-metrics", value_name = "URL")]
    pub gpu_metrics: Vec<String>,
    /// A GPU exporter for a named server: `SERVER=URL`, SERVER being the server's label
    /// (host:port) or its --server value (repeatable).
    #[arg(long = "gpu-for", value_name = "SERVER=URL")]
    pub gpu_for: Vec<String>,
    /// The servers' vLLM release (e.g. 0.29.0), recorded in metadata.json; otherwise
    /// inferred from the `vllm:cache_config_info` label set where it identifies one.
    #[arg(long, value_parser = parse_vllm_version)]
    pub vllm_version: Option<VllmVersion>,
}

/// What a recording ended as.
pub struct Outcome {
    pub recorded: record::RecordOutcome,
    /// Where the session was uploaded to, and how many bytes.
    pub uploaded: Option<(Location, u64)>,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let o = execute(a).await?;
    let r = &o.recorded;
    eprintln!(
        "recorded {} scrape(s), {} failed{}",
        r.scrapes,
        r.failed_scrapes,
        if r.interrupted { " (interrupted)" } else { "" }
    );
    match &o.uploaded {
        Some((remote, bytes)) => {
            eprintln!("uploaded {bytes} bytes to {remote}");
            println!("{remote}");
        }
        None => println!("{}", r.dir.display()),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn execute(a: Args) -> anyhow::Result<Outcome> {
    let servers = a
        .servers
        .iter()
        .map(|s| Ok((s.clone(), Target::parse(s)?)))
        .collect::<Result<Vec<_>, record::RecordError>>()?;
    let mut targets = record::gpu_targets(&a.gpu_metrics, &a.gpu_for, &servers)?;
    targets.extend(servers.into_iter().map(|(_, t)| t));
    let label = a
        .label
        .clone()
        .or_else(|| {
            targets
                .iter()
                .find(|t| t.gpu_for.is_none())
                .map(|t| t.label.replace(':', "-"))
        })
        .unwrap_or_else(|| "session".into());
    let id = record::session_id(chrono::Utc::now(), &label);
    let dest = a.out.as_deref().map(Location::parse).transpose()?;
    let (out, upload_to) = match dest {
        None => (common::default_session_dir(&id), None),
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
                .unwrap_or_else(|| common::default_session_dir(&id));
            (staging, Some(remote))
        }
    };
    let cfg = RecordConfig {
        targets,
        duration: a.duration,
        interval: a.scrape.interval,
        timeout: a.scrape.timeout,
        out_dir: out,
        session_id: id,
        wait: a.wait,
        bearer: a.auth.bearer()?,
        progress: true,
        source_kind: "scrape".into(),
        raw: a.raw,
        vllm_version: a.vllm_version,
    };
    let recorded = record::record(cfg, common::shutdown_signal()).await?;
    let uploaded = match upload_to {
        Some(remote) => {
            let bytes = remote.upload_dir(&recorded.dir).await.with_context(|| {
                format!(
                    "uploading to {remote} failed; the session is kept at {}",
                    recorded.dir.display()
                )
            })?;
            Some((remote, bytes))
        }
        None => None,
    };
    Ok(Outcome { recorded, uploaded })
}
