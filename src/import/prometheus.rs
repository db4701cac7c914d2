//! `kvscope import prometheus`: a window of Prometheus history becomes a session.
//!
//! Every vLLM series of each server is read through `query_range` at the step Prometheus
//! scraped that server at (detected from its raw samples, or `--step`), in time chunks
//! small enough for Prometheus's 11,000-points-per-series limit and for bounded memory.
//! Each step's values are laid out as the `/metrics` page the server showed then (series
//! names and labels as stored, `# TYPE` from the name's suffix) and go through the same
//! [`Pipeline`] as a live recording: the adapter's aliases, reset-aware rates and
//! interval quantiles from bucket deltas are the recorder's own. A step where the server
//! has no sample (down, or its series went stale), or only one older than the scrape
//! interval allows (Prometheus' lookback repeating it over scrapes that stopped without
//! a staleness marker), is a failed scrape — `NO_DATA` — never interpolated.

use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::adapter;
use crate::record::{Pipeline, rfc3339};
use crate::source::promapi::{self, MAX_POINTS_PER_SERIES, Prometheus, Series};
use crate::source::scrape::{NO_FRESH_PROMETHEUS_SAMPLE, NO_PROMETHEUS_SAMPLE};
use crate::store::{Metadata, RecorderSettings, SessionWriter, SourceInfo};

use super::ImportError;

/// Scrape-interval detections in flight at once (one server each).
const DETECT_CONCURRENCY: usize = 8;

/// Points fetched per request at most (series × steps): bounds memory per chunk.
const POINTS_PER_REQUEST: u64 = 400_000;

/// What an import needs.
#[derive(Debug, Clone)]
pub struct PromImportConfig {
    /// Prometheus base URL (credentials allowed, never stored).
    pub url: String,
    pub bearer: Option<String>,
    /// The window, Unix seconds.
    pub start: f64,
    pub end: f64,
    /// The user's selector (`{job="vllm"}`), may be empty.
    pub matchers: String,
    /// Seconds between points; None: the scrape interval Prometheus used.
    pub step: Option<f64>,
    /// The label that names a server (`instance`, or e.g. `pod`).
    pub server_label: String,
    pub out_dir: PathBuf,
    pub session_id: String,
    pub timeout: Duration,
}

/// How an import went.
#[derive(Debug, Clone)]
pub struct PromImportOutcome {
    pub dir: PathBuf,
    pub servers: Vec<String>,
    /// Seconds between points, per server (`servers`' order): each server's own scrape
    /// interval, or `--step` for all.
    pub steps_s: Vec<f64>,
    /// Steps written (all servers).
    pub steps: u64,
    /// Steps without a sample (NO_DATA).
    pub no_data_steps: u64,
    pub requests: u64,
    /// Instances whose vLLM series are all a router's re-exports
    /// ([`adapter::series_of`]), with their backends: not imported as servers.
    pub routers: BTreeMap<String, BTreeSet<String>>,
    /// Servers with steps whose page was not one engine's vLLM metrics: why, and how
    /// many steps each reason (e.g. several servers' series under one `--server-label`).
    pub unread: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Imports the window into a new session at `cfg.out_dir`.
pub async fn import(cfg: &PromImportConfig) -> Result<PromImportOutcome, ImportError> {
    if cfg.end.partial_cmp(&cfg.start) != Some(std::cmp::Ordering::Greater) {
        return Err(ImportError::Invalid(format!(
            "the window is empty: end ({}) is not after start ({})",
            rfc3339((cfg.end * 1e6) as i64),
            rfc3339((cfg.start * 1e6) as i64)
        )));
    }
    let prom = Prometheus::new(&cfg.url, cfg.bearer.clone(), cfg.timeout)?;
    let discover = promapi::selector(adapter::PROMQL_VLLM_NAMES, &cfg.matchers, &[]);
    let label_sets = prom.series(&discover, cfg.start, cfg.end).await?;
    let window = || {
        format!(
            "between {} and {}",
            rfc3339((cfg.start * 1e6) as i64),
            rfc3339((cfg.end * 1e6) as i64)
        )
    };
    if label_sets.is_empty() {
        return Err(ImportError::Empty(format!(
            "no vLLM series for {} {} at {}",
            if cfg.matchers.trim().is_empty() {
                "{}"
            } else {
                cfg.matchers.trim()
            },
            window(),
            prom.url()
        )));
    }
    // Series per server; a router's backends; servers with an engine's own core gauge.
    let mut servers: BTreeMap<String, u64> = BTreeMap::new();
    let mut routers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut engines: HashSet<&str> = HashSet::new();
    for ls in &label_sets {
        match ls.get(&cfg.server_label) {
            Some(s) => {
                *servers.entry(s.clone()).or_default() += 1;
                match adapter::series_of(|k| ls.get(k).map(String::as_str)) {
                    // Grouped by the router's own backend label, its series are what the
                    // user asked for.
                    adapter::SeriesOf::Router(b)
                        if cfg.server_label != adapter::ROUTER_BACKEND_LABEL =>
                    {
                        routers.entry(s.clone()).or_default().insert(b.to_string());
                    }
                    _ if ls
                        .get("__name__")
                        .is_some_and(|n| adapter::is_core_gauge(n)) =>
                    {
                        engines.insert(s);
                    }
                    _ => {}
                }
            }
            None => {
                return Err(ImportError::Invalid(format!(
                    "series {} has no `{}` label to name its server; choose one with --server-label (labels: {})",
                    ls.get("__name__").map_or("?", String::as_str),
                    cfg.server_label,
                    ls.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    // A server with an engine's core gauge too stays a server (the adapter skips its
    // router series); one without is no engine (the router's own counters have no
    // `server` label): said, not imported.
    routers.retain(|instance, _| !engines.contains(instance.as_str()));
    servers.retain(|instance, _| !routers.contains_key(instance));
    if servers.is_empty() {
        let (instance, backends) = routers
            .iter()
            .next()
            .map_or(("?", String::new()), |(i, b)| {
                (i.as_str(), b.iter().cloned().collect::<Vec<_>>().join(", "))
            });
        return Err(ImportError::Empty(format!(
            "the vLLM series {} are a router's, not an engine's: `{}` {instance} re-exports gauges per backend ({backends}) with no KV usage; scrape the engines themselves into Prometheus and import those",
            window(),
            cfg.server_label
        )));
    }
    // Each server at its own scrape interval: jobs differ (5 s here, 15 s there), and a
    // step shorter than a server's scrapes repeats each of them, so a counter's rate
    // reads 0, 0, then triple — throughput that never dropped. A server with too few
    // raw samples to tell (a pod that lived seconds) takes the finest of the others.
    // One or two small raw queries per server, a few at a time: a 1,000-server fleet
    // must not wait for them one by one.
    let detected: Vec<Option<f64>> = match cfg.step {
        Some(s) => vec![Some(s); servers.len()],
        None => {
            futures::stream::iter(servers.keys())
                .map(|server| detect_step(&prom, cfg, server))
                .buffered(DETECT_CONCURRENCY)
                .try_collect()
                .await?
        }
    };
    let finest = detected
        .iter()
        .flatten()
        .copied()
        .reduce(f64::min)
        .ok_or_else(|| {
            ImportError::Invalid(format!(
                "cannot tell the scrape interval of any server (fewer than two raw samples of {} near either end of the window); give --step",
                servers.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
    let steps_s: Vec<f64> = detected.iter().map(|d| d.unwrap_or(finest)).collect();
    let meta = Metadata::new(
        &cfg.session_id,
        &rfc3339((cfg.start * 1e6) as i64),
        SourceInfo {
            kind: "prometheus-import".into(),
            urls: vec![prom.url()],
            query: Some(discover.clone()),
            window_start: Some(rfc3339((cfg.start * 1e6) as i64)),
            window_end: Some(rfc3339((cfg.end * 1e6) as i64)),
            ..Default::default()
        },
        RecorderSettings {
            interval_s: finest,
            timeout_s: cfg.timeout.as_secs_f64(),
            duration_s: Some(cfg.end - cfg.start),
        },
    );
    let mut pipe = Pipeline::new(SessionWriter::create(&cfg.out_dir, meta)?);
    let mut out = PromImportOutcome {
        dir: cfg.out_dir.clone(),
        servers: servers.keys().cloned().collect(),
        steps_s: steps_s.clone(),
        steps: 0,
        no_data_steps: 0,
        requests: 0,
        routers,
        unread: BTreeMap::new(),
    };
    for ((server, n_series), step) in servers.iter().zip(steps_s) {
        let total_steps = ((cfg.end - cfg.start) / step).floor() as u64 + 1;
        let per_chunk =
            (POINTS_PER_REQUEST / (*n_series).max(1)).clamp(1, MAX_POINTS_PER_SERIES - 1);
        let query = promapi::selector(
            adapter::PROMQL_ALL_NAMES,
            &cfg.matchers,
            &[(cfg.server_label.as_str(), server.as_str())],
        );
        let core = promapi::selector(
            &adapter::core_gauge_names(),
            &cfg.matchers,
            &[(cfg.server_label.as_str(), server.as_str())],
        );
        let mut k0 = 0u64;
        while k0 < total_steps {
            let k1 = (k0 + per_chunk).min(total_steps) - 1;
            let (cs, ce) = (cfg.start + k0 as f64 * step, cfg.start + k1 as f64 * step);
            let series = prom.query_range(&query, cs, ce, step).await?;
            let n_steps = (k1 - k0 + 1) as usize;
            // When each step's newest core sample was taken: a query fills a step with
            // the last sample of the past 5 minutes, so where scrapes stopped without a
            // staleness marker (Prometheus itself down; remote-written series) it
            // repeats an old page whose counters all stand still.
            let stamps = prom
                .query_range(&format!("timestamp({core})"), cs, ce, step)
                .await?;
            out.requests += 2;
            let stale = stale_steps(&stamps, cs, step, n_steps);
            let chunk = Chunk::new(&series, cs, step, n_steps, &cfg.server_label);
            for (i, page) in chunk.pages().enumerate() {
                let ts_us = ((cs + i as f64 * step) * 1e6).round() as i64;
                out.steps += 1;
                match page {
                    Some(_) if stale.get(i) == Some(&true) => {
                        out.no_data_steps += 1;
                        pipe.ingest_failure(server, ts_us, None, NO_FRESH_PROMETHEUS_SAMPLE)?;
                    }
                    Some(text) => {
                        if let Some(reason) = pipe.ingest_text(server, ts_us, None, &text)?.failure
                        {
                            let reasons = out.unread.entry(server.clone()).or_default();
                            *reasons.entry(reason).or_default() += 1;
                        }
                    }
                    None => {
                        out.no_data_steps += 1;
                        pipe.ingest_failure(server, ts_us, None, NO_PROMETHEUS_SAMPLE)?;
                    }
                }
            }
            k0 = k1 + 1;
        }
    }
    pipe.finish((cfg.end * 1e6) as i64)?;
    Ok(out)
}

/// The step (of `n` from `start`) a point at `t` belongs to, if any: Prometheus answers
/// at exactly those times, up to float rounding.
fn step_index(t: f64, start: f64, step: f64, n: usize) -> Option<usize> {
    let k = ((t - start) / step).round();
    (k >= 0.0 && k < n as f64).then_some(k as usize)
}

/// A step is stale when its newest core sample (`stamps`: `timestamp()` of the core
/// gauge, one series per engine) is older than this many scrape intervals: a scrape
/// that should have landed since is missing. (Within one interval is a step between two
/// scrapes; jitter is milliseconds.)
const STALE_AFTER_INTERVALS: f64 = 1.5;

/// Per step of a chunk (`n` steps from `start`), whether Prometheus holds only a sample
/// older than [`STALE_AFTER_INTERVALS`] scrape intervals there. The interval is read
/// from the samples themselves ([`scrape_interval`] of the gaps between the distinct
/// newest samples of successive steps, as they come whatever the step), else the step. A step without any
/// sample is not stale: it has no page at all.
fn stale_steps(stamps: &[Series], start: f64, step: f64, n: usize) -> Vec<bool> {
    let mut newest: Vec<Option<f64>> = vec![None; n];
    for s in stamps {
        for (t, v) in &s.values {
            let (Some(k), Ok(taken)) = (step_index(*t, start, step, n), v.parse::<f64>()) else {
                continue;
            };
            if let Some(slot) = newest.get_mut(k) {
                *slot = Some(slot.map_or(taken, |x: f64| x.max(taken)));
            }
        }
    }
    let mut gaps: Vec<f64> = newest
        .iter()
        .flatten()
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 0.0)
        .collect();
    let interval = scrape_interval(&mut gaps).unwrap_or(step);
    newest
        .iter()
        .enumerate()
        .map(|(k, taken)| {
            taken.is_some_and(|t| start + k as f64 * step - t > STALE_AFTER_INTERVALS * interval)
        })
        .collect()
}

/// The scrape interval Prometheus used for `server`, read from the gaps between raw
/// samples of its core gauge in the last ten minutes of the window (or its first ten);
/// None with fewer than two samples in both.
async fn detect_step(
    prom: &Prometheus,
    cfg: &PromImportConfig,
    server: &str,
) -> Result<Option<f64>, ImportError> {
    let span = (cfg.end - cfg.start).clamp(1.0, 600.0);
    let sel = promapi::selector(
        &adapter::core_gauge_names(),
        &cfg.matchers,
        &[(cfg.server_label.as_str(), server)],
    );
    let query = format!("{sel}[{}ms]", (span * 1000.0).round() as i64);
    for at in [cfg.end, (cfg.start + span).min(cfg.end)] {
        let series = prom.raw_range(&query, at).await?;
        let mut gaps: Vec<f64> = series
            .iter()
            .flat_map(|s| s.values.windows(2).map(|w| w[1].0 - w[0].0))
            .filter(|g| *g > 0.0)
            .collect();
        if let Some(step) = scrape_interval(&mut gaps) {
            return Ok(Some(step));
        }
    }
    Ok(None)
}

/// The configured scrape interval behind raw sample gaps (seconds), or `None` if
/// there are none.
///
/// A single gap is the interval plus the difference of two scrape-start jitters
/// (tens of milliseconds on a loaded Prometheus host), so the median of the gaps
/// can sit a few milliseconds off, and a step of 1.005 s drifts half a step
/// against the scrapes within 100 steps — then a step repeats or skips a scrape
/// and a counter's rate reads 0 then double. Prometheus' ticker does not drift,
/// so jitters cancel in a sum: the interval is the mean of the gaps near the
/// median (missed scrapes, restarts and gaps excluded), snapped to the 50 ms
/// grid intervals are configured on when within 1 % of it (`15s`, `500ms`,
/// `2500ms`), else kept to the millisecond Prometheus stores time in.
fn scrape_interval(gaps: &mut [f64]) -> Option<f64> {
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    let near: Vec<f64> = gaps
        .iter()
        .copied()
        .filter(|g| (g - median).abs() <= 0.5 * median)
        .collect();
    let mean = near.iter().sum::<f64>() / near.len() as f64;
    let grid = (mean / 0.05).round() * 0.05;
    if grid > 0.0 && (mean - grid).abs() <= 0.01 * grid {
        return Some((grid * 1000.0).round() / 1000.0);
    }
    Some((mean * 1000.0).round().max(1.0) / 1000.0)
}

/// How a series name lays out in an exposition page.
#[derive(Debug, Clone)]
struct Layout {
    family: String,
    kind: &'static str,
    /// `name{labels} ` without the value.
    prefix: String,
    core: bool,
}

/// One query_range result, by step.
struct Chunk {
    layouts: Vec<Layout>,
    /// Per step: (layout index, value text), in family order.
    steps: Vec<Vec<(usize, String)>>,
}

impl Chunk {
    fn new(series: &[Series], start: f64, step: f64, n_steps: usize, server_label: &str) -> Self {
        let names: HashSet<&str> = series.iter().map(Series::name).collect();
        let mut layouts: Vec<Layout> = series
            .iter()
            .map(|s| layout(s, &names, server_label))
            .collect();
        // Order series by family so each page groups a family's samples under one TYPE.
        let mut order: Vec<usize> = (0..layouts.len()).collect();
        order.sort_by(|a, b| layouts[*a].family.cmp(&layouts[*b].family));
        let mut steps: Vec<Vec<(usize, String)>> = vec![Vec::new(); n_steps];
        for &i in &order {
            if layouts[i].kind == "skip" {
                continue;
            }
            for (t, v) in &series[i].values {
                if let Some(entries) =
                    step_index(*t, start, step, n_steps).and_then(|k| steps.get_mut(k))
                {
                    entries.push((i, v.clone()));
                }
            }
        }
        layouts.shrink_to_fit();
        Self { layouts, steps }
    }

    /// Each step's page, or None where the server has no core sample.
    fn pages(&self) -> impl Iterator<Item = Option<String>> + '_ {
        self.steps.iter().map(|entries| {
            if !entries.iter().any(|(i, _)| self.layouts[*i].core) {
                return None;
            }
            let mut text = String::with_capacity(entries.len() * 96);
            let mut last_family: Option<&str> = None;
            for (i, v) in entries {
                let l = &self.layouts[*i];
                if last_family != Some(l.family.as_str()) {
                    let _ = writeln!(text, "# TYPE {} {}", l.family, l.kind);
                    last_family = Some(l.family.as_str());
                }
                text.push_str(&l.prefix);
                text.push_str(v);
                text.push('\n');
            }
            Some(text)
        })
    }
}

/// Family and type from the series name (Prometheus keeps no TYPE with the data):
/// `X_bucket` with `le` and its `X_sum`/`X_count` are histogram X, `X_total` is counter
/// X, anything else a gauge; `_created` series are left out.
fn layout(s: &Series, names: &HashSet<&str>, server_label: &str) -> Layout {
    let name = s.name();
    let hist_base = ["_bucket", "_sum", "_count"].iter().find_map(|suf| {
        let base = name.strip_suffix(suf)?;
        names
            .contains(format!("{base}_bucket").as_str())
            .then_some(base)
    });
    let (family, kind) = if name.ends_with("_created") {
        (name.to_string(), "skip")
    } else if let Some(base) = hist_base {
        (base.to_string(), "histogram")
    } else if let Some(base) = name.strip_suffix("_total") {
        (base.to_string(), "counter")
    } else {
        (name.to_string(), "gauge")
    };
    let labels: Vec<String> = s
        .metric
        .iter()
        .filter(|(k, _)| {
            k.as_str() != "__name__" && k.as_str() != server_label && k.as_str() != "job"
        })
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{}}} ", labels.join(","))
    };
    let core = adapter::is_core_gauge(name);
    Layout {
        family,
        kind,
        prefix,
        core,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, labels: &[(&str, &str)], values: &[(f64, &str)]) -> Series {
        let mut metric: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        metric.insert("__name__".into(), name.into());
        metric.insert("instance".into(), "a:8000".into());
        Series {
            metric,
            values: values.iter().map(|(t, v)| (*t, v.to_string())).collect(),
        }
    }

    /// Jittered scrape starts (a loaded host): the median gap is 1.005 s, the
    /// configured interval 1 s; missed scrapes do not stretch it; intervals off the
    /// 50 ms grid keep their milliseconds.
    #[test]
    fn scrape_interval_sees_through_jitter_and_missed_scrapes() {
        // Scrape starts at k s plus a jitter in 0..40 ms, two scrapes missed.
        let jitter = [
            0.0, 0.031, 0.004, 0.038, 0.012, 0.027, 0.009, 0.035, 0.001, 0.022,
        ];
        let starts: Vec<f64> = (0..60)
            .filter(|k| *k != 17 && *k != 41)
            .map(|k| 1000.0 + k as f64 + jitter[k % jitter.len()])
            .collect();
        let mut gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        assert!(sorted[sorted.len() / 2] > 1.004, "the median alone is off");
        assert_eq!(scrape_interval(&mut gaps), Some(1.0));
        let mut half = vec![0.5, 0.52, 0.48, 0.51, 0.49, 1.0];
        assert_eq!(scrape_interval(&mut half), Some(0.5));
        let mut fifteen = vec![15.02, 14.99, 15.01, 30.0, 15.0];
        assert_eq!(scrape_interval(&mut fifteen), Some(15.0));
        let mut odd = vec![0.333, 0.334, 0.333];
        assert_eq!(scrape_interval(&mut odd), Some(0.333));
        assert_eq!(scrape_interval(&mut []), None);
    }

    /// Steps whose newest sample is older than 1.5 scrape intervals are stale, whatever
    /// the step: Prometheus down from 1010 to 1040 s while the 1 s scrapes' last sample
    /// (1009.2 s) fills its steps; at a 0.5 s step, and at a 1 s step of 15 s scrapes.
    #[test]
    fn steps_holding_an_old_sample_are_stale() {
        let stamps = |start: f64, step: f64, n: usize, taken: &dyn Fn(f64) -> Option<f64>| {
            let values = (0..n)
                .filter_map(|k| {
                    let t = start + k as f64 * step;
                    taken(t).map(|x| (t, format!("{x:.3}")))
                })
                .collect();
            vec![Series {
                metric: BTreeMap::new(),
                values,
            }]
        };
        // Scrapes at k + 0.2 s, none from 1010 to 1040 s (the last one 1009.2 s).
        let one_s = |t: f64| {
            let last = (t - 0.2).floor() + 0.2;
            Some(if (1010.0..1040.2).contains(&last) {
                1009.2
            } else {
                last
            })
        };
        let s = stale_steps(&stamps(1000.0, 1.0, 60, &one_s), 1000.0, 1.0, 60);
        let stale: Vec<usize> = (0..60).filter(|k| s[*k]).collect();
        // 1011 s is the first step 1.5 s past 1009.2; 1040 s still holds 1009.2.
        assert_eq!(stale, (11..=40).collect::<Vec<_>>());
        let s = stale_steps(&stamps(1000.0, 0.5, 120, &one_s), 1000.0, 0.5, 120);
        assert_eq!(s.iter().filter(|x| **x).count(), 59, "{s:?}");
        assert!(!s[21] && s[22] && s[80] && !s[81]);
        // 15 s scrapes read at a 1 s step: a sample up to 15 s old is the latest.
        let fifteen = |t: f64| Some(((t - 3.0) / 15.0).floor() * 15.0 + 3.0);
        let s = stale_steps(&stamps(1000.0, 1.0, 300, &fifteen), 1000.0, 1.0, 300);
        assert!(s.iter().all(|x| !x), "{s:?}");
        // No sample at all is not stale (that step has no page).
        let s = stale_steps(&stamps(1000.0, 1.0, 5, &|_| None), 1000.0, 1.0, 5);
        assert_eq!(s, [false; 5]);
    }

    /// A Prometheus 3.x result (float `le`) lays out as pages the adapter reads: a
    /// missing core sample is a NO_DATA step; histograms regain their TYPE.
    #[test]
    fn steps_become_pages_the_adapter_reads() {
        let l = [("model_name", "m"), ("engine", "0")];
        let all = vec![
            series(
                "vllm:num_requests_running",
                &l,
                &[(100.0, "3"), (102.0, "4")],
            ),
            series(
                "vllm:kv_cache_usage_perc",
                &l,
                &[(100.0, "0.5"), (102.0, "0.6")],
            ),
            series(
                "vllm:prompt_tokens_total",
                &l,
                &[(100.0, "10"), (102.0, "30")],
            ),
            series(
                "vllm:time_to_first_token_seconds_bucket",
                &[("model_name", "m"), ("engine", "0"), ("le", "1.0")],
                &[(100.0, "2"), (102.0, "5")],
            ),
            series(
                "vllm:time_to_first_token_seconds_bucket",
                &[("model_name", "m"), ("engine", "0"), ("le", "+Inf")],
                &[(100.0, "2"), (102.0, "6")],
            ),
            series(
                "vllm:time_to_first_token_seconds_count",
                &l,
                &[(100.0, "2"), (102.0, "6")],
            ),
            series(
                "vllm:time_to_first_token_seconds_sum",
                &l,
                &[(100.0, "1"), (102.0, "4")],
            ),
            series(
                "vllm:request_success_total",
                &[
                    ("model_name", "m"),
                    ("engine", "0"),
                    ("finished_reason", "length"),
                ],
                &[(100.0, "10"), (102.0, "12")],
            ),
            // The API server's counter, with no vLLM label: 6 generation requests
            // answered, 2 of them finished.
            series(
                "http_requests_total",
                &[
                    ("handler", "/v1/chat/completions"),
                    ("method", "POST"),
                    ("status", "2xx"),
                ],
                &[(100.0, "10"), (102.0, "16")],
            ),
        ];
        let chunk = Chunk::new(&all, 100.0, 1.0, 3, "instance");
        let pages: Vec<Option<String>> = chunk.pages().collect();
        assert!(pages[1].is_none(), "no sample at 101 s: NO_DATA");
        let p0 = pages[0].as_deref().unwrap();
        assert!(
            p0.contains("# TYPE vllm:time_to_first_token_seconds histogram"),
            "{p0}"
        );
        assert!(p0.contains("# TYPE vllm:prompt_tokens counter"), "{p0}");
        assert!(!p0.contains("instance="), "{p0}");
        let mut norm = adapter::Normalizer::new();
        let mut rows = Vec::new();
        for (k, page) in [(0usize, p0), (2, pages[2].as_deref().unwrap())] {
            let exp = crate::source::prom::parse(page);
            assert!(exp.skipped.is_empty(), "{:?}", exp.skipped);
            let r = adapter::read(&exp);
            assert_eq!(r.engines.len(), 1);
            let ts = (100 + k as i64) * 1_000_000;
            rows.extend(norm.normalize("a:8000", ts, k as f64, None, &r).samples);
        }
        assert_eq!(rows[0].requests_running, Some(3));
        assert_eq!(rows[1].kv_cache_usage_pct, Some(60.0));
        // 20 prompt tokens over the 2 s between the two pages.
        assert_eq!(rows[1].prompt_tokens_per_s, Some(10.0));
        // 4 first tokens in the interval, from the float-`le` buckets.
        assert_eq!(rows[1].ttft_count, Some(4));
        // 4 of the 6 answered requests left without finishing (the engine's own books
        // see 1: 4 first tokens, 2 finished, running up by 1), over 2 s.
        assert_eq!(rows[1].requests_abandoned_per_s, Some(2.0));
    }
}
