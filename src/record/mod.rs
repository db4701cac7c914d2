//! Recording: wires source → adapter → store for `kvscope record` (HTTP scraping on a
//! fixed cadence) and for offline simulation (exposition text at simulated times).
//!
//! [`Pipeline`] is the one path a page takes from text to stored rows, whoever produced
//! the text. [`record`] adds the clock, the concurrent scrapes, the start-up checks and
//! the shutdown handling.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::adapter::{self, Normalizer};
use crate::source::prom;
use crate::source::raw::{RawError, RawPage, RawWriter};
use crate::source::scrape::{self, ScrapeError};
use crate::store::ServerMeta;
use crate::store::schema::Sample;
use crate::store::{Metadata, RecorderSettings, SessionWriter, SourceInfo, StoreError};

/// Errors of the recorder.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("invalid server URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("nothing reachable at {url}: {reason} (start the server, or pass --wait)")]
    Unreachable { url: String, reason: String },
    #[error("{url} does not look like a vLLM /metrics endpoint: missing {missing}")]
    NotVllm { url: String, missing: String },
    #[error(
        "{url} is a router's /metrics, not a vLLM engine's: its vllm: gauges are re-exported per backend ({backends}) with no KV usage; record the engines themselves, one --server each"
    )]
    RouterPage { url: String, backends: String },
    #[error(
        "{url} is not one vLLM server's /metrics: {what}; record each server with its own --server"
    )]
    MixedServers { url: String, what: String },
    #[error("{url} does not look like a GPU exporter: no DCGM_FI_* field on the page")]
    NotGpu { url: String },
    #[error("--gpu-metrics {url}: {reason}")]
    GpuTarget { url: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One server to scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Full URL of the metrics endpoint.
    pub url: String,
    /// Label written in the `server` column (host:port).
    pub label: String,
    /// For a GPU exporter (`--gpu-metrics`): the server whose rows its GPUs join.
    pub gpu_for: Option<String>,
}

impl Target {
    /// Parses `--server`: `http://` when it names no scheme (`localhost:8000`), and
    /// `/metrics` when the URL has no path.
    pub fn parse(raw: &str) -> Result<Self, RecordError> {
        let bad = |reason: &str| RecordError::BadUrl {
            url: scrape::redact(raw),
            reason: reason.to_string(),
        };
        let mut url = scrape::http_url(raw).map_err(|e| bad(&e))?;
        let host = url.host_str().ok_or_else(|| bad("no host"))?.to_string();
        if url.path().is_empty() || url.path() == "/" {
            url.set_path("/metrics");
        }
        let label = match url.port_or_known_default() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        Ok(Self {
            url: url.to_string(),
            label,
            gpu_for: None,
        })
    }

    fn host(&self) -> Option<String> {
        url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
    }

    /// The URL with any credentials removed, for metadata and logs.
    pub fn redacted_url(&self) -> String {
        scrape::redact(&self.url)
    }
}

/// GPU exporters to scrape beside `servers`: `--gpu-for SERVER=URL` names the server (its
/// label or the `--server` value as given); a plain `--gpu-metrics URL` belongs to the one
/// server on the same host (or to the only server). GPU targets come first, so a round's
/// GPU page is ingested before its server's page.
pub fn gpu_targets(
    gpu_metrics: &[String],
    gpu_for: &[String],
    servers: &[(String, Target)],
) -> Result<Vec<Target>, RecordError> {
    let mut out = Vec::new();
    let find = |name: &str| {
        servers
            .iter()
            .find(|(raw, t)| raw == name || t.label == name)
            .map(|(_, t)| t.label.clone())
    };
    for spec in gpu_for {
        let bad = |reason: String| RecordError::GpuTarget {
            url: scrape::redact(spec),
            reason,
        };
        let (server, url) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected --gpu-for SERVER=URL".into()))?;
        let label = find(server).ok_or_else(|| {
            bad(format!(
                "`{server}` is not one of the recorded servers ({})",
                servers
                    .iter()
                    .map(|(_, t)| t.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let mut t = Target::parse(url)?;
        t.gpu_for = Some(label);
        out.push(t);
    }
    for raw in gpu_metrics {
        let mut t = Target::parse(raw)?;
        let host = t.host();
        let same_host: Vec<&Target> = servers
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.host() == host)
            .collect();
        let label = match (servers, same_host.as_slice()) {
            ([(_, only)], _) => only.label.clone(),
            (_, [one]) => one.label.clone(),
            (_, []) => {
                return Err(RecordError::GpuTarget {
                    url: t.redacted_url(),
                    reason: "no recorded server on that host; name it with --gpu-for SERVER=URL"
                        .into(),
                });
            }
            (_, _) => {
                return Err(RecordError::GpuTarget {
                    url: t.redacted_url(),
                    reason:
                        "several recorded servers on that host; name one with --gpu-for SERVER=URL"
                            .into(),
                });
            }
        };
        t.gpu_for = Some(label);
        out.push(t);
    }
    Ok(out)
}

/// What a recording needs.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    pub targets: Vec<Target>,
    pub duration: Option<Duration>,
    pub interval: Duration,
    pub timeout: Duration,
    pub out_dir: PathBuf,
    pub session_id: String,
    pub wait: bool,
    pub bearer: Option<String>,
    pub progress: bool,
    pub source_kind: String,
    /// Also keep every raw page (`raw_pages.jsonl.gz` in the session).
    pub raw: bool,
    /// The servers' vLLM release as the user states it (`--vllm-version`).
    pub vllm_version: Option<crate::adapter::version::VllmVersion>,
}

/// Builds a session id `YYYYMMDD-HHMMSS-<label>` with the label reduced to safe characters
/// (so it can never escape the output directory).
pub fn session_id(now: chrono::DateTime<chrono::Utc>, label: &str) -> String {
    format!("{}-{}", now.format("%Y%m%d-%H%M%S"), sanitize(label))
}

/// Keeps `[A-Za-z0-9._-]`, maps the rest to `-`, never returns `.`/`..`/empty.
pub fn sanitize(label: &str) -> String {
    let s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let s = s.trim_matches('.').to_string();
    if s.is_empty() { "session".into() } else { s }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// RFC 3339 (UTC, milliseconds) for a µs timestamp.
pub fn rfc3339(ts_us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(ts_us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The path every page takes from text to normalized rows — and, while a session is
/// attached, into its files. `record` attaches one for the whole run; the dashboard runs
/// the same pipeline in memory and attaches a session while `r` is on, so its window and
/// its recordings hold the very same rows.
pub struct Pipeline {
    raw: Option<RawWriter>,
    stated_version: Option<crate::adapter::version::VllmVersion>,
    normalizer: Normalizer,
    writer: Option<SessionWriter>,
    /// First timestamp of the attached session (its `t_rel_sec` origin).
    writer_t0_us: Option<i64>,
    facts: BTreeMap<String, ServerMeta>,
    /// Per server: the GPUs of its exporter's latest page, joined into the server's next
    /// page (each GPU page is used once: a failed GPU scrape leaves the columns null).
    pending_gpus: BTreeMap<String, Vec<crate::adapter::gpu::GpuStat>>,
    /// First timestamp of the stream: relative time is measured from here.
    t0_us: Option<i64>,
    last: BTreeMap<String, Vec<Sample>>,
}

/// What one ingested page produced.
#[derive(Debug, Clone, Default)]
pub struct Ingested {
    /// The page's rows (one per engine and model; failed-scrape rows for a bad page).
    pub samples: Vec<Sample>,
    pub skipped_lines: usize,
    /// Why there are only failed-scrape rows: the scrape failed, or the page was not
    /// usable vLLM metrics.
    pub failure: Option<String>,
}

impl Pipeline {
    /// A pipeline writing into `writer` from its first page.
    pub fn new(writer: SessionWriter) -> Self {
        let mut p = Self::in_memory();
        p.writer = Some(writer);
        p
    }

    /// A pipeline that only normalizes (the dashboard between recordings).
    pub fn in_memory() -> Self {
        Self {
            raw: None,
            stated_version: None,
            normalizer: Normalizer::new(),
            writer: None,
            writer_t0_us: None,
            facts: BTreeMap::new(),
            pending_gpus: BTreeMap::new(),
            t0_us: None,
            last: BTreeMap::new(),
        }
    }

    /// Starts writing into `writer` from the next page on.
    pub fn attach(&mut self, writer: SessionWriter) {
        self.writer = Some(writer);
        self.writer_t0_us = None;
    }

    /// Finalizes the attached session, if any; the pipeline keeps normalizing.
    pub fn detach(&mut self, ended_at_us: i64) -> Result<Option<PathBuf>, StoreError> {
        let Some(mut w) = self.writer.take() else {
            return Ok(None);
        };
        self.raw = None;
        w.metadata_mut().servers = self.facts.values().cloned().collect();
        w.finish(&rfc3339(ended_at_us)).map(Some)
    }

    pub fn is_writing(&self) -> bool {
        self.writer.is_some()
    }

    /// Appends rows to the attached session, with `t_rel_sec` from its own start.
    fn store(
        &mut self,
        samples: &[Sample],
        hists: &[crate::store::schema::HistogramRow],
    ) -> Result<(), StoreError> {
        let Some(w) = &mut self.writer else {
            return Ok(());
        };
        let Some(first) = samples.first().map(|r| r.ts) else {
            return w.append(samples, hists);
        };
        let t0 = *self.writer_t0_us.get_or_insert(first);
        if Some(t0) == self.t0_us {
            return w.append(samples, hists);
        }
        let shifted: Vec<Sample> = samples
            .iter()
            .map(|r| Sample {
                t_rel_sec: (r.ts - t0) as f64 / 1e6,
                ..r.clone()
            })
            .collect();
        w.append(&shifted, hists)
    }

    /// The servers' vLLM release as stated by the user (wins over inference).
    pub fn state_vllm_version(&mut self, v: crate::adapter::version::VllmVersion) {
        self.stated_version = Some(v);
    }

    /// Also keeps every page as it came (`record --raw`) in the attached session.
    pub fn keep_raw(&mut self) -> Result<(), StoreError> {
        if let Some(w) = &self.writer {
            self.raw = Some(RawWriter::create(w.dir()).map_err(raw_err)?);
        }
        Ok(())
    }

    fn append_raw(&mut self, page: RawPage) -> Result<(), StoreError> {
        match &mut self.raw {
            Some(w) => w.append(&page).map_err(raw_err),
            None => Ok(()),
        }
    }

    fn t_rel(&mut self, ts_us: i64) -> f64 {
        let t0 = *self.t0_us.get_or_insert(ts_us);
        (ts_us - t0) as f64 / 1e6
    }

    /// Parses, normalizes and stores one page of `server` taken at `ts_us`.
    pub fn ingest_text(
        &mut self,
        server: &str,
        ts_us: i64,
        scrape_ms: Option<f64>,
        text: &str,
    ) -> Result<Ingested, StoreError> {
        if self.raw.is_some() {
            self.append_raw(RawPage {
                ts: ts_us as f64 / 1e6,
                server: Some(server.to_string()),
                status: Some(200),
                text: Some(text.to_string()),
                ..Default::default()
            })?;
        }
        let exp = prom::parse(text);
        let mut reading = adapter::read(&exp);
        if let Some(gpus) = self.pending_gpus.remove(server) {
            reading.gpus.extend(gpus);
        }
        let facts = self
            .facts
            .entry(server.to_string())
            .or_insert_with(|| ServerMeta {
                server: server.to_string(),
                engine_kind: "vllm".into(),
                ..Default::default()
            });
        facts.skipped_lines += exp.skipped.len();
        if !exp.skipped.is_empty() {
            tracing::warn!(
                "{server}: {} unreadable line(s) skipped (first at line {})",
                exp.skipped.len(),
                exp.skipped.first().map(|s| s.line).unwrap_or(0)
            );
        }
        if reading.engines.is_empty() {
            let reason = not_vllm_reason(&reading);
            let samples = self.ingest_failure(server, ts_us, scrape_ms, &reason)?;
            return Ok(Ingested {
                samples,
                skipped_lines: exp.skipped.len(),
                failure: Some(reason),
            });
        }
        for e in &reading.engines {
            facts.model_names.insert(e.model_name.clone());
            facts.engines.insert(e.engine.clone());
        }
        if !reading.cache_config.is_empty() {
            facts.cache_config = reading.cache_config.clone();
            facts.kv_capacity_tokens = reading.kv_capacity_tokens();
        }
        let (version, source) = match self.stated_version {
            Some(v) => (Some(v), "stated (--vllm-version)"),
            None => (
                reading.cache_config.first().and_then(|c| {
                    adapter::version::from_cache_config_labels(c.keys().map(String::as_str))
                }),
                "inferred from the vllm:cache_config_info label set",
            ),
        };
        if let Some(v) = version {
            facts.vllm_version = Some(v.to_string());
            facts.vllm_version_source = Some(source.to_string());
        }
        facts
            .unknown_vllm_metrics
            .extend(reading.unknown_vllm.iter().cloned());
        let t_rel = self.t_rel(ts_us);
        let out = self
            .normalizer
            .normalize(server, ts_us, t_rel, scrape_ms, &reading);
        self.store(&out.samples, &out.histograms)?;
        self.last.insert(server.to_string(), out.samples.clone());
        Ok(Ingested {
            samples: out.samples,
            skipped_lines: exp.skipped.len(),
            failure: None,
        })
    }

    /// A GPU exporter's page for `server`: its GPUs join the server's next page.
    pub fn ingest_gpu_text(&mut self, server: &str, text: &str) -> usize {
        let gpus = crate::adapter::gpu::read(&prom::parse(text));
        let n = gpus.len();
        self.pending_gpus.insert(server.to_string(), gpus);
        n
    }

    /// One result of a [`Scraper`] round.
    pub fn ingest(&mut self, scraped: Scraped) -> Result<(String, Ingested), StoreError> {
        match scraped {
            Scraped::GpuPage { server, text } => {
                if self.ingest_gpu_text(&server, &text) == 0 {
                    tracing::warn!("{server}: GPU exporter page without DCGM_FI_* fields");
                }
                Ok((server, Ingested::default()))
            }
            Scraped::GpuFailure { server, reason } => {
                self.pending_gpus.remove(&server);
                tracing::warn!("{server}: GPU exporter scrape failed: {reason}");
                Ok((server, Ingested::default()))
            }
            Scraped::Page {
                server,
                ts_us,
                scrape_ms,
                text,
            } => {
                let got = self.ingest_text(&server, ts_us, scrape_ms, &text)?;
                Ok((server, got))
            }
            Scraped::Failure {
                server,
                ts_us,
                scrape_ms,
                reason,
            } => {
                let samples = self.ingest_failure(&server, ts_us, scrape_ms, &reason)?;
                Ok((
                    server,
                    Ingested {
                        samples,
                        skipped_lines: 0,
                        failure: Some(format!("scrape failed: {reason}")),
                    },
                ))
            }
        }
    }

    /// Stores a failed scrape of `server` (rows with `scrape_ok = false` and the reason).
    pub fn ingest_failure(
        &mut self,
        server: &str,
        ts_us: i64,
        scrape_ms: Option<f64>,
        reason: &str,
    ) -> Result<Vec<Sample>, StoreError> {
        if self.raw.is_some() {
            self.append_raw(RawPage {
                ts: ts_us as f64 / 1e6,
                server: Some(server.to_string()),
                error: Some(reason.to_string()),
                ..Default::default()
            })?;
        }
        let t_rel = self.t_rel(ts_us);
        let mut rows = self.normalizer.failed(server, ts_us, t_rel, scrape_ms);
        for r in &mut rows {
            r.scrape_error = Some(reason.to_string());
        }
        self.store(&rows, &[])?;
        self.last.insert(server.to_string(), rows.clone());
        Ok(rows)
    }

    /// The rows of the latest page of each server (for progress displays).
    pub fn latest(&self) -> &BTreeMap<String, Vec<Sample>> {
        &self.last
    }

    /// The attached session's directory.
    pub fn dir(&self) -> Option<&Path> {
        self.writer.as_ref().map(SessionWriter::dir)
    }

    /// Finalizes every file; returns the session directory.
    pub fn finish(mut self, ended_at_us: i64) -> Result<PathBuf, StoreError> {
        self.detach(ended_at_us)?
            .ok_or_else(|| StoreError::Invalid {
                path: PathBuf::new(),
                message: "no session attached to finish".into(),
            })
    }
}

/// Why a page gave no engine (a failed scrape's reason in the session).
fn not_vllm_reason(reading: &adapter::Reading) -> String {
    if let Some(what) = &reading.mixed_servers {
        what.clone()
    } else if reading.router_backends.is_empty() {
        let missing = reading.missing_required().join(", ");
        format!("not vLLM metrics (missing {missing})")
    } else {
        format!(
            "a router's /metrics, not a vLLM engine's (backends: {})",
            backends_list(reading)
        )
    }
}

/// The first few backends a router page names, for a message.
fn backends_list(reading: &adapter::Reading) -> String {
    const SHOWN: usize = 4;
    let b = &reading.router_backends;
    let mut list: Vec<&str> = b.iter().take(SHOWN).map(String::as_str).collect();
    let more = b.len().saturating_sub(SHOWN);
    let tail = format!("{more} more");
    if more > 0 {
        list.push(&tail);
    }
    list.join(", ")
}

fn raw_err(e: RawError) -> StoreError {
    match e {
        RawError::Io { path, source } => StoreError::Io { path, source },
        RawError::Line {
            path,
            line,
            message,
        } => StoreError::Line {
            path,
            line,
            message,
        },
        RawError::Invalid { path, message } => StoreError::Invalid { path, message },
    }
}

/// One target's result in a scrape round, stamped on the target's page clock.
#[derive(Debug, Clone)]
pub enum Scraped {
    Page {
        server: String,
        ts_us: i64,
        scrape_ms: Option<f64>,
        text: String,
    },
    Failure {
        server: String,
        ts_us: i64,
        scrape_ms: Option<f64>,
        reason: String,
    },
    /// A GPU exporter's page, for the server its GPUs serve.
    GpuPage {
        server: String,
        text: String,
    },
    GpuFailure {
        server: String,
        reason: String,
    },
}

/// What one round of scrapes produced.
#[derive(Debug, Default)]
pub struct Round {
    /// Scrapes attempted.
    pub attempted: u64,
    /// New pages and failures (a replayed page already seen is left out).
    pub scraped: Vec<Scraped>,
}

/// Scrapes every target concurrently, one round per call, and keeps each target's
/// clock: a simulator or replay reports its page time (`x-kvscope-sim-time`), and a
/// failed scrape of such a target is stamped on the same clock as the pages around it,
/// so a sped-up source never mixes wall and page time. Used by `record` and the
/// dashboard alike.
pub struct Scraper {
    client: reqwest::Client,
    targets: Vec<Target>,
    bearer: Option<String>,
    timeout: Duration,
    /// Per target: the last page time reported, and how far that clock is from ours.
    clocks: Vec<(Option<i64>, i64)>,
}

impl Scraper {
    pub fn new(
        client: reqwest::Client,
        targets: Vec<Target>,
        bearer: Option<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            clocks: vec![(None, 0); targets.len()],
            client,
            targets,
            bearer,
            timeout,
        }
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Scrapes every target once.
    pub async fn round(&mut self) -> Round {
        let tick_us = now_us();
        let results =
            futures::future::join_all(self.targets.iter().map(|t| {
                scrape::scrape(&self.client, &t.url, self.bearer.as_deref(), self.timeout)
            }))
            .await;
        let mut round = Round::default();
        for ((t, res), clock) in self.targets.iter().zip(results).zip(self.clocks.iter_mut()) {
            if let Some(server) = &t.gpu_for {
                round.scraped.push(match res {
                    Ok(page) => Scraped::GpuPage {
                        server: server.clone(),
                        text: page.body,
                    },
                    Err(e) => Scraped::GpuFailure {
                        server: server.clone(),
                        reason: e.to_string(),
                    },
                });
                continue;
            }
            round.attempted += 1;
            let server = t.label.clone();
            match res {
                Ok(page) => {
                    let ts_us = match page.sim_time {
                        Some(sim) => {
                            let ts = (sim * 1e6).round() as i64;
                            clock.1 = ts - tick_us;
                            // A replay answering with the page already recorded: nothing new.
                            if clock.0.is_some_and(|last| ts <= last) {
                                continue;
                            }
                            clock.0 = Some(ts);
                            ts
                        }
                        None => tick_us,
                    };
                    round.scraped.push(Scraped::Page {
                        server,
                        ts_us,
                        scrape_ms: Some(page.elapsed.as_secs_f64() * 1e3),
                        text: page.body,
                    });
                }
                Err(e) => {
                    let scrape_ms = match &e {
                        ScrapeError::Timeout(d) => Some(d.as_secs_f64() * 1e3),
                        _ => None,
                    };
                    let ts_us = tick_us + clock.1;
                    if clock.0.is_some_and(|last| ts_us <= last) {
                        continue;
                    }
                    clock.0 = clock.0.map(|_| ts_us);
                    round.scraped.push(Scraped::Failure {
                        server,
                        ts_us,
                        scrape_ms,
                        reason: e.to_string(),
                    });
                }
            }
        }
        round
    }
}

/// How a recording ended.
#[derive(Debug, Clone)]
pub struct RecordOutcome {
    pub dir: PathBuf,
    pub scrapes: u64,
    pub failed_scrapes: u64,
    pub interrupted: bool,
}

/// Records until the duration elapses or `shutdown` resolves (Ctrl-C/SIGTERM); every file
/// is finalized either way.
pub async fn record(
    cfg: RecordConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RecordOutcome, RecordError> {
    let client = scrape::client(cfg.timeout).map_err(|e| RecordError::BadUrl {
        url: String::new(),
        reason: e.to_string(),
    })?;
    tokio::pin!(shutdown);

    // Start-up check: every server must answer with vLLM metrics. With --wait the
    // recording starts at once and a server that is down is recorded as NO_DATA until it
    // answers (an outage is part of the incident).
    if !cfg.wait {
        for t in &cfg.targets {
            match scrape::scrape(&client, &t.url, cfg.bearer.as_deref(), cfg.timeout).await {
                Err(e) => {
                    return Err(RecordError::Unreachable {
                        url: t.redacted_url(),
                        reason: e.to_string(),
                    });
                }
                Ok(page) if t.gpu_for.is_some() => {
                    if crate::adapter::gpu::read(&prom::parse(&page.body)).is_empty() {
                        return Err(RecordError::NotGpu {
                            url: t.redacted_url(),
                        });
                    }
                }
                Ok(page) => {
                    let reading = adapter::read(&prom::parse(&page.body));
                    let missing = reading.missing_required();
                    if let Some(what) = reading.mixed_servers {
                        return Err(RecordError::MixedServers {
                            url: t.redacted_url(),
                            what,
                        });
                    }
                    if reading.engines.is_empty() && !reading.router_backends.is_empty() {
                        return Err(RecordError::RouterPage {
                            url: t.redacted_url(),
                            backends: backends_list(&reading),
                        });
                    }
                    if !missing.is_empty() {
                        return Err(RecordError::NotVllm {
                            url: t.redacted_url(),
                            missing: missing.join(", "),
                        });
                    }
                }
            }
        }
    }

    let started_us = now_us();
    let meta = Metadata::new(
        &cfg.session_id,
        &rfc3339(started_us),
        SourceInfo {
            kind: cfg.source_kind.clone(),
            urls: cfg
                .targets
                .iter()
                .filter(|t| t.gpu_for.is_none())
                .map(Target::redacted_url)
                .collect(),
            notes: cfg
                .targets
                .iter()
                .filter_map(|t| {
                    let server = t.gpu_for.as_ref()?;
                    Some(format!(
                        "GPU metrics for {server} from {}",
                        t.redacted_url()
                    ))
                })
                .collect(),
            scenario: None,
            seed: None,
            ..Default::default()
        },
        RecorderSettings {
            interval_s: cfg.interval.as_secs_f64(),
            timeout_s: cfg.timeout.as_secs_f64(),
            duration_s: cfg.duration.map(|d| d.as_secs_f64()),
        },
    );
    let writer = SessionWriter::create(&cfg.out_dir, meta)?;
    let mut pipe = Pipeline::new(writer);
    if cfg.raw {
        pipe.keep_raw()?;
    }
    if let Some(v) = cfg.vllm_version {
        pipe.state_vllm_version(v);
    }
    let mut scraper = Scraper::new(client, cfg.targets.clone(), cfg.bearer.clone(), cfg.timeout);
    let mut ticker = tokio::time::interval(cfg.interval);
    // A late tick is taken late, once: ticks are never bunched to catch up.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let began = Instant::now();
    let (mut scrapes, mut failed) = (0u64, 0u64);
    let mut interrupted = false;
    let tty = cfg.progress && std::io::stderr().is_terminal();

    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut shutdown => { interrupted = true; break; }
        }
        if cfg.duration.is_some_and(|d| began.elapsed() >= d) {
            break;
        }
        let round = scraper.round().await;
        scrapes += round.attempted;
        for s in round.scraped {
            let (server, got) = pipe.ingest(s)?;
            if let Some(reason) = got.failure {
                failed += 1;
                tracing::warn!("{server}: {reason}");
            }
        }
        if tty {
            progress_line(&pipe, began.elapsed(), cfg.duration);
        }
    }
    if tty {
        eprintln!();
    }
    let dir = pipe.finish(now_us())?;
    Ok(RecordOutcome {
        dir,
        scrapes,
        failed_scrapes: failed,
        interrupted,
    })
}

fn progress_line(pipe: &Pipeline, elapsed: Duration, total: Option<Duration>) {
    let mut parts = Vec::new();
    for (server, rows) in pipe.latest() {
        let kv = rows
            .iter()
            .filter_map(|r| r.kv_cache_usage_pct)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let run: i64 = rows.iter().filter_map(|r| r.requests_running).sum();
        let wait: i64 = rows.iter().filter_map(|r| r.requests_waiting).sum();
        match kv {
            Some(kv) => parts.push(format!("{server} KV {kv:.1}% run {run} wait {wait}")),
            None => parts.push(format!("{server} no data")),
        }
    }
    let remaining = total
        .map(|t| format!(" / {:.0}s", t.as_secs_f64()))
        .unwrap_or_default();
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r\x1b[2K{:.0}s{remaining}  {}",
        elapsed.as_secs_f64(),
        parts.join(" | ")
    );
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parse_adds_metrics_path() {
        let t = Target::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(t.url, "http://127.0.0.1:8000/metrics");
        assert_eq!(t.label, "127.0.0.1:8000");
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("not a url").is_err());
        // As vLLM prints its address: http:// assumed.
        let t = Target::parse("localhost:8000").unwrap();
        assert_eq!(t.url, "http://localhost:8000/metrics");
        assert_eq!(t.label, "localhost:8000");
        let t = Target::parse("10.0.0.7:8001/metrics").unwrap();
        assert_eq!(t.url, "http://10.0.0.7:8001/metrics");
        let t = Target::parse("https://u:secret@h/m").unwrap();
        assert!(!t.redacted_url().contains("secret"));
        assert_eq!(t.label, "h:443");
    }

    #[test]
    fn sanitize_blocks_traversal() {
        assert_eq!(sanitize("../../etc"), "-..-etc");
        assert_eq!(sanitize(".."), "session");
        assert_eq!(sanitize("a/b"), "a-b");
    }
}
