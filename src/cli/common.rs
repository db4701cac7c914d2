//! What several commands share: validated value parsers, flattened flag groups
//! (thresholds, authentication, scrape timing), session discovery, signals, progress.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::adapter::version::VllmVersion;
use crate::analysis::{self, Thresholds};
use crate::present::fleet::ServerFilter;
use crate::store::location::Location;

/// Longest duration any flag takes: a year.
pub const MAX_DURATION_S: f64 = 366.0 * 86_400.0;

/// A duration: `90` (seconds), or humantime's `90s`, `500ms`, `5m`, `1h 30m`; positive,
/// at most a year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = match t.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= MAX_DURATION_S => {
            Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))?
        }
        Ok(secs) if secs > MAX_DURATION_S => return Err(format!("`{s}` is longer than a year")),
        Ok(_) => return Err(format!("`{s}` must be positive")),
        Err(_) => humantime::parse_duration(t)
            .map_err(|e| format!("`{s}` is not a duration ({e}; try 90s, 500ms, 5m)"))?,
    };
    if d.is_zero() {
        return Err(format!("`{s}` must be positive"));
    }
    if d.as_secs_f64() > MAX_DURATION_S {
        return Err(format!("`{s}` is longer than a year"));
    }
    Ok(d)
}

/// A number in `(0, max]` (so never NaN or infinite); `what` names it in errors.
fn positive(s: &str, what: &str, max: f64, max_text: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not {what}"))?;
    if !(v > 0.0 && v <= max) {
        return Err(format!("`{s}` must be > 0 and {max_text}"));
    }
    Ok(v)
}

/// A point in time as Unix seconds: RFC 3339, Unix seconds, `now`, or a duration
/// before now (`1h`, `30m`).
pub fn parse_time(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    if t == "now" {
        return Ok(now);
    }
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_micros() as f64 / 1e6);
    }
    if let Ok(v) = t.parse::<f64>() {
        // Unix seconds from 2000 to 2100; anything else is a mistake.
        if (946_684_800.0..4_102_444_800.0).contains(&v) {
            return Ok(v);
        }
        return Err(format!(
            "`{s}` is not a time (RFC 3339, Unix seconds since 2000, `now`, or a duration before now such as 1h)"
        ));
    }
    let ago = humantime::parse_duration(t.trim_start_matches('-'))
        .map_err(|_| format!("`{s}` is not a time (RFC 3339, Unix seconds, `now`, or a duration before now such as 1h)"))?;
    if ago.as_secs_f64() > MAX_DURATION_S {
        return Err(format!("`{s}` is more than a year ago"));
    }
    Ok(now - ago.as_secs_f64())
}

/// Seconds as a plain number: positive, finite, at most a year.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    positive(s, "a number of seconds", MAX_DURATION_S, "at most a year")
}

/// A scrape interval in seconds: 0.01–3600 (a smaller one would write millions of rows
/// per simulated minute).
pub fn parse_interval_s(s: &str) -> Result<f64, String> {
    let v = parse_seconds(s)?;
    if !(0.01..=3600.0).contains(&v) {
        return Err(format!("`{s}` must be between 0.01 and 3600 s"));
    }
    Ok(v)
}

/// A positive, finite speed factor (at most 10,000).
pub fn parse_speed(s: &str) -> Result<f64, String> {
    positive(s, "a number", 10_000.0, "≤ 10000")
}

pub fn parse_vllm_version(s: &str) -> Result<VllmVersion, String> {
    VllmVersion::parse(s).ok_or_else(|| format!("`{s}` is not a vLLM version (e.g. 0.29.0)"))
}

/// `--config`: a TOML file with a `[thresholds]` table.
#[derive(Debug, Clone, clap::Args)]
pub struct ThresholdArgs {
    /// TOML file with a [thresholds] table overriding defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ThresholdArgs {
    /// The thresholds in force. Unknown tables or keys are errors naming them (a
    /// misspelt `[threshold]` table would otherwise silently leave every default).
    pub fn load(&self) -> anyhow::Result<Thresholds> {
        let Some(path) = &self.config else {
            return Ok(Thresholds::default());
        };
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
}

/// `--cluster`: run on `kvscope worker`s instead of this machine alone.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Run on a cluster of `kvscope worker` processes: their URLs (http://HOST:PORT;
    /// repeatable or comma-separated).
    #[arg(long = "cluster", value_name = "URL")]
    pub urls: Vec<String>,
}

/// What a build without the `cluster` feature says to `--cluster` and `worker`.
#[cfg(not(feature = "cluster"))]
pub const NO_CLUSTER: &str = "this kvscope was built without the cluster feature: \
     build it with the default features (`cargo build --release`) (README, \"Running on a cluster\")";

impl ClusterArgs {
    /// The cluster asked for, if any (an error naming the flag for a bad URL, or for a
    /// build without the feature).
    #[cfg(feature = "cluster")]
    pub fn get(&self) -> anyhow::Result<Option<crate::cluster::Cluster>> {
        if self.urls.is_empty() {
            return Ok(None);
        }
        Ok(Some(crate::cluster::Cluster::parse(&self.urls)?))
    }

    /// Refuses `--cluster` in a build without the feature.
    #[cfg(not(feature = "cluster"))]
    pub fn get(&self) -> anyhow::Result<Option<std::convert::Infallible>> {
        if self.urls.is_empty() {
            return Ok(None);
        }
        anyhow::bail!("--cluster: {NO_CLUSTER}")
    }
}

/// Credentials for a server or Prometheus: never logged, never stored.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// File holding a bearer token (else $KVSCOPE_BEARER_TOKEN); never logged or stored.
    #[arg(long)]
    pub bearer_token_file: Option<PathBuf>,
}

impl AuthArgs {
    /// The bearer token from the file, else from `KVSCOPE_BEARER_TOKEN`.
    pub fn bearer(&self) -> anyhow::Result<Option<String>> {
        match &self.bearer_token_file {
            Some(p) => Ok(Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading bearer token file {}", p.display()))?
                    .trim()
                    .to_string(),
            )),
            None => Ok(std::env::var("KVSCOPE_BEARER_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())),
        }
    }
}

/// How often and how patiently to scrape.
#[derive(Debug, Clone, clap::Args)]
pub struct ScrapeArgs {
    /// Scrape interval (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Per-scrape timeout.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
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

pub fn default_session_dir(id: &str) -> PathBuf {
    Path::new("results").join("sessions").join(id)
}

/// Expands arguments into sessions: a directory (prefix) with metadata or samples is a
/// session; otherwise the sessions below it.
pub async fn find_sessions(args: &[String]) -> anyhow::Result<Vec<Location>> {
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

/// A progress bar on stderr (drawn only on a terminal).
pub fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
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

/// The servers of the session at `loc` that `filter` (`--server`) selects, in the
/// session's order, and how many it has: an error naming the patterns when they select
/// none (a mistyped flag), before any analysis.
pub async fn select_servers(
    loc: &Location,
    filter: &ServerFilter,
) -> anyhow::Result<(Vec<String>, usize)> {
    let names: Vec<String> = analysis::session_servers(loc)
        .await?
        .into_iter()
        .map(|(server, _)| server)
        .collect();
    let selected = filter.select(&names).map_err(anyhow::Error::msg)?;
    Ok((selected, names.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        for bad in [
            "x", "-1", "0", "0s", "1e20s", "1e20", "400days", "NaN", "inf",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
