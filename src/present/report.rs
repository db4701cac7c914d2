//! `kvscope report`: one self-contained HTML file — inline SVG and CSS, no script, no
//! external fetch of any kind — that opens anywhere, years later, offline.
//!
//! The SVG is written by hand rather than with a plotting crate: the charts are a few
//! paths, rectangles and `<title>`s over a shared time axis, and plotters' SVG backend
//! would add a dependency tree and font handling for text we place ourselves.
//!
//! Long sessions are reduced per pixel column to a min/max envelope (a peak is never
//! averaged away); a column without a good sample is a gap in every line (`NO_DATA`).
//! Phases are bands behind every chart, each phase with its own colour *and* pattern
//! (readable without colour and when printed); episodes are spans in their own lane,
//! transient events markers; the thresholds that define the phases are drawn as lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::analysis::summary::Summary;
use crate::analysis::{EngineSeries, PhasePoint};
use crate::diagnosis::Report;
use crate::store::Metadata;
use crate::store::events::Event;
use crate::vocab::{EventType, Phase, Severity};

/// Plot area width in pixels: the envelope has one min/max pair per pixel column.
const PLOT_W: f64 = 900.0;
const LEFT: f64 = 64.0;
const PANEL_H: f64 = 110.0;
const GAP: f64 = 26.0;

/// What one session's report shows.
pub struct SessionView<'a> {
    /// The session's id (or directory name).
    pub name: String,
    pub meta: Option<&'a Metadata>,
    pub summary: &'a Summary,
    pub events: &'a [Event],
    pub phases: &'a [PhasePoint],
    pub series: &'a [EngineSeries],
    pub report: &'a Report,
}

struct Panel {
    id: &'static str,
    title: &'static str,
    /// Indices into [`CHART_COLUMNS`] and their legend names.
    columns: &'static [(usize, &'static str)],
    /// A fixed y range (KV %), else 0..max.
    fixed_max: Option<f64>,
    /// Threshold names (from the summary's thresholds) drawn as lines.
    thresholds: &'static [&'static str],
}

const PANELS: &[Panel] = &[
    Panel {
        id: "kv",
        title: "KV cache usage (%)",
        columns: &[(0, "KV %")],
        fixed_max: Some(100.0),
        thresholds: &["kv_saturated_pct", "kv_rising_pct"],
    },
    Panel {
        id: "scheduler",
        title: "Requests running and waiting",
        columns: &[(1, "running"), (2, "waiting")],
        fixed_max: None,
        thresholds: &[],
    },
    Panel {
        id: "ttft",
        title: "Time to first token (s): p50, p95, p99",
        columns: &[(3, "p50"), (4, "p95"), (5, "p99")],
        fixed_max: None,
        thresholds: &[],
    },
    Panel {
        id: "itl",
        title: "Inter-token latency p95 (s)",
        columns: &[(6, "ITL p95")],
        fixed_max: None,
        thresholds: &[],
    },
    Panel {
        id: "tokens",
        title: "Tokens per second: prompt, generation",
        columns: &[(7, "prompt"), (8, "generation")],
        fixed_max: None,
        thresholds: &[],
    },
    Panel {
        id: "preemptions",
        title: "Preemptions per second",
        columns: &[(9, "preemptions/s")],
        fixed_max: None,
        thresholds: &[],
    },
];

/// Okabe–Ito colours (distinguishable with the common colour-vision deficiencies).
const LINE_COLOURS: &[&str] = &["#0072B2", "#D55E00", "#009E73", "#CC79A7"];
const ENGINE_DASH: &[&str] = &["", "6 3", "2 2", "8 2 2 2"];

fn phase_style(p: Phase) -> (&'static str, &'static str) {
    // (fill colour, pattern id): the pattern tells phases apart without colour.
    match p {
        Phase::Healthy => ("#009E73", "p-plain"),
        Phase::Idle => ("#999999", "p-dots"),
        Phase::KvPressureRising => ("#E69F00", "p-slash"),
        Phase::QueuePressure => ("#F0E442", "p-back"),
        Phase::Saturated => ("#D55E00", "p-cross"),
        Phase::NoData => ("#ffffff", "p-nodata"),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc}h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
.sev{font-weight:bold;padding:1px 6px;border-radius:3px;border:1px solid #555}
.sev-high{background:#D55E00;color:#fff}.sev-medium{background:#E69F00}.sev-low{background:#56B4E9}.sev-info{background:#eee}
.verdict{font-size:16px;font-weight:600;margin:10px 0}.finding{margin:10px 0 16px;padding:8px 12px;border-left:4px solid #888;background:#fafafa}
.muted{color:#666}code{background:#f3f3f3;padding:0 3px}svg text{font:11px system-ui,sans-serif;fill:#333}
@media print{body{margin:0}.finding{break-inside:avoid}svg{break-inside:avoid}}";

fn defs() -> String {
    let mut d = String::from("<defs>");
    for (id, body) in [
        ("p-plain", ""),
        (
            "p-dots",
            "<circle cx='3' cy='3' r='1' fill='#000' opacity='.35'/>",
        ),
        (
            "p-slash",
            "<path d='M0,6 L6,0' stroke='#000' stroke-width='.8' opacity='.35'/>",
        ),
        (
            "p-back",
            "<path d='M0,0 L6,6' stroke='#000' stroke-width='.8' opacity='.35'/>",
        ),
        (
            "p-cross",
            "<path d='M0,6 L6,0 M0,0 L6,6' stroke='#000' stroke-width='.8' opacity='.45'/>",
        ),
        (
            "p-nodata",
            "<path d='M0,3 L6,3' stroke='#000' stroke-width='.6' opacity='.5'/>",
        ),
    ] {
        let _ = write!(
            d,
            "<pattern id='{id}' width='6' height='6' patternUnits='userSpaceOnUse'>{body}</pattern>"
        );
    }
    d.push_str("</defs>");
    d
}

/// A time axis from `t0` to `t1` (µs) over the plot width.
struct Axis {
    t0: i64,
    t1: i64,
}

impl Axis {
    fn x(&self, ts: i64) -> f64 {
        let span = (self.t1 - self.t0).max(1) as f64;
        LEFT + (ts - self.t0) as f64 / span * PLOT_W
    }
    fn column(&self, ts: i64) -> usize {
        (((self.x(ts) - LEFT).floor()).clamp(0.0, PLOT_W - 1.0)) as usize
    }
}

/// One pixel column of a line.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Col {
    /// No sample falls here (samples are sparser than pixels): the line goes on.
    Empty,
    /// A failed scrape, or a silence longer than three intervals: the line breaks.
    Gap,
    /// Min and max of the good samples here.
    Value(f64, f64),
}

/// Per pixel column: the min/max envelope of the good samples, and where the line breaks.
fn envelope(axis: &Axis, e: &EngineSeries, col: usize) -> Vec<Col> {
    let mut out = vec![Col::Empty; PLOT_W as usize];
    let Some(values) = e.values.get(col) else {
        return out;
    };
    let mut gaps: Vec<i64> = e.ts.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    let long = gaps.get(gaps.len() / 2).copied().unwrap_or(i64::MAX / 4) * 3;
    let mut prev: Option<i64> = None;
    for ((ts, ok), v) in e.ts.iter().zip(&e.ok).zip(values) {
        let c = axis.column(*ts);
        let silent = prev.is_some_and(|p| ts - p > long);
        match (*ok, v) {
            (true, Some(v)) => {
                if silent && out[c] == Col::Empty {
                    // Break just before this column.
                    if c > 0 && out[c - 1] == Col::Empty {
                        out[c - 1] = Col::Gap;
                    }
                }
                out[c] = match out[c] {
                    Col::Value(lo, hi) => Col::Value(lo.min(*v), hi.max(*v)),
                    _ => Col::Value(*v, *v),
                };
                prev = Some(*ts);
            }
            (false, _) => {
                if out[c] == Col::Empty {
                    out[c] = Col::Gap;
                }
                prev = None;
            }
            (true, None) => {}
        }
    }
    out
}

/// Phase runs of one server: (start ts, end ts, phase).
fn phase_runs(points: &[&PhasePoint], end: i64) -> Vec<(i64, i64, Phase)> {
    let mut runs: Vec<(i64, i64, Phase)> = Vec::new();
    for p in points {
        let phase = if p.scrape_ok {
            p.phase.unwrap_or(Phase::NoData)
        } else {
            Phase::NoData
        };
        match runs.last_mut() {
            Some(r) if r.2 == phase => r.1 = p.ts,
            Some(r) => {
                r.1 = p.ts;
                runs.push((p.ts, p.ts, phase));
            }
            None => runs.push((p.ts, p.ts, phase)),
        }
    }
    if let Some(r) = runs.last_mut() {
        r.1 = r.1.max(end);
    }
    runs
}

fn rfc(ts: i64) -> String {
    crate::record::rfc3339(ts)
}

/// The charts of one server.
fn server_charts(v: &SessionView, server: &str, anchor: &str) -> String {
    let engines: Vec<&EngineSeries> = v.series.iter().filter(|e| e.server == server).collect();
    let points: Vec<&PhasePoint> = v.phases.iter().filter(|p| p.server == server).collect();
    let t0 = engines
        .iter()
        .filter_map(|e| e.ts.first())
        .min()
        .copied()
        .unwrap_or(0);
    let t1 = engines
        .iter()
        .filter_map(|e| e.ts.last())
        .max()
        .copied()
        .unwrap_or(t0 + 1);
    let axis = Axis {
        t0,
        t1: t1.max(t0 + 1),
    };
    let runs = phase_runs(&points, t1);
    let events: Vec<&Event> = v.events.iter().filter(|e| e.server == server).collect();
    let episodes: Vec<&Event> = events
        .iter()
        .copied()
        .filter(|e| e.event_type() == Some(EventType::ConditionEpisode))
        .collect();
    let markers: Vec<&Event> = events
        .iter()
        .copied()
        .filter(|e| {
            matches!(
                e.event_type(),
                Some(EventType::Transient | EventType::DataQuality)
            )
        })
        .collect();
    let mut conditions: Vec<String> = episodes
        .iter()
        .filter_map(|e| e.condition.clone())
        .collect();
    conditions.sort();
    conditions.dedup();
    let lane_h = 14.0 * conditions.len().max(1) as f64 + 18.0;
    let height = 30.0 + lane_h + PANELS.len() as f64 * (PANEL_H + GAP) + 30.0;
    let width = LEFT + PLOT_W + 20.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg id='{anchor}-charts' class='charts' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img' aria-label='charts of {}'>{}",
        esc(server),
        defs()
    );
    // Legend of phases (colour and pattern, with the name).
    let mut lx = LEFT;
    for p in Phase::ALL {
        let (fill, pat) = phase_style(*p);
        let _ = write!(
            s,
            "<g class='legend'><rect x='{lx}' y='6' width='14' height='12' fill='{fill}' fill-opacity='.35' stroke='#555'/><rect x='{lx}' y='6' width='14' height='12' fill='url(#{pat})'/><text x='{}' y='16'>{}</text></g>",
            lx + 18.0,
            p.as_str()
        );
        lx += 30.0 + 7.0 * p.as_str().len() as f64;
    }
    // Episodes lane.
    let lane_y = 30.0;
    let _ = write!(
        s,
        "<g class='episodes'><text x='4' y='{}'>episodes</text>",
        lane_y + 11.0
    );
    for e in &episodes {
        let (Some(c), Some(st), Some(en)) = (&e.condition, &e.start_time, &e.end_time) else {
            continue;
        };
        let row = conditions.iter().position(|x| x == c).unwrap_or(0) as f64;
        let (Some(a), Some(b)) = (parse_rfc(st), parse_rfc(en)) else {
            continue;
        };
        let (x0, x1) = (axis.x(a), axis.x(b).max(axis.x(a) + 2.0));
        let _ = write!(
            s,
            "<rect class='episode' x='{x0:.1}' y='{:.1}' width='{:.1}' height='10' fill='#0072B2' fill-opacity='.7'><title>{} {st} … {en} ({:.0} s)</title></rect><text x='{:.1}' y='{:.1}' class='muted'>{}</text>",
            lane_y + 2.0 + row * 14.0,
            x1 - x0,
            esc(c),
            e.duration_sec.unwrap_or(0.0),
            x1 + 3.0,
            lane_y + 11.0 + row * 14.0,
            esc(c)
        );
    }
    s.push_str("</g>");
    let mut y = 30.0 + lane_h;
    for panel in PANELS {
        s.push_str(&panel_svg(v, panel, &engines, &axis, &runs, &markers, y));
        y += PANEL_H + GAP;
    }
    // Time axis labels.
    for k in 0..=4 {
        let ts = t0 + (axis.t1 - t0) * k / 4;
        let x = axis.x(ts);
        let label = rfc(ts);
        let _ = write!(
            s,
            "<text x='{x:.1}' y='{:.1}' text-anchor='middle'>{}</text>",
            y + 4.0,
            label.get(11..19).unwrap_or(&label)
        );
    }
    s.push_str("</svg>");
    s
}

fn value(c: &Col) -> Option<(f64, f64)> {
    match c {
        Col::Value(lo, hi) => Some((*lo, *hi)),
        _ => None,
    }
}

fn parse_rfc(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_micros())
}

fn panel_svg(
    v: &SessionView,
    panel: &Panel,
    engines: &[&EngineSeries],
    axis: &Axis,
    runs: &[(i64, i64, Phase)],
    markers: &[&Event],
    top: f64,
) -> String {
    let mut s = String::new();
    let envs: Vec<(usize, usize, &str, Vec<Col>)> = engines
        .iter()
        .enumerate()
        .flat_map(|(ei, e)| {
            panel
                .columns
                .iter()
                .enumerate()
                .map(move |(ci, (col, name))| (ei, ci, *name, envelope(axis, e, *col)))
        })
        .collect();
    let data_max = envs
        .iter()
        .flat_map(|(_, _, _, env)| env.iter().filter_map(value).map(|(_, hi)| hi))
        .fold(0.0f64, f64::max);
    let ymax = panel
        .fixed_max
        .unwrap_or(if data_max > 0.0 { data_max * 1.1 } else { 1.0 });
    let yv = |val: f64| top + PANEL_H - (val / ymax).clamp(0.0, 1.05) * PANEL_H;
    let _ = write!(
        s,
        "<g class='panel' id='panel-{}'><text x='{LEFT}' y='{:.1}' font-weight='bold'>{}</text>",
        panel.id,
        top - 6.0,
        esc(panel.title)
    );
    // Phase bands.
    for (a, b, p) in runs {
        let (fill, pat) = phase_style(*p);
        let (x0, x1) = (axis.x(*a), axis.x(*b));
        let w = (x1 - x0).max(0.5);
        let _ = write!(
            s,
            "<g class='band'><rect x='{x0:.1}' y='{top:.1}' width='{w:.1}' height='{PANEL_H}' fill='{fill}' fill-opacity='.18'/><rect x='{x0:.1}' y='{top:.1}' width='{w:.1}' height='{PANEL_H}' fill='url(#{pat})'><title>{} {} … {}</title></rect></g>",
            p.as_str(),
            rfc(*a),
            rfc(*b)
        );
    }
    let _ = write!(
        s,
        "<rect x='{LEFT}' y='{top:.1}' width='{PLOT_W}' height='{PANEL_H}' fill='none' stroke='#999'/><text x='{:.1}' y='{:.1}' text-anchor='end'>{}</text><text x='{:.1}' y='{:.1}' text-anchor='end'>0</text>",
        LEFT - 4.0,
        top + 10.0,
        fmt_num(ymax),
        LEFT - 4.0,
        top + PANEL_H
    );
    // Threshold lines.
    for name in panel.thresholds {
        if let Some(t) = v.summary.thresholds.get(*name) {
            let y = yv(*t);
            let _ = write!(
                s,
                "<g class='threshold'><line x1='{LEFT}' x2='{:.1}' y1='{y:.1}' y2='{y:.1}' stroke='#333' stroke-dasharray='4 3'/><text x='{:.1}' y='{:.1}' text-anchor='end' class='muted'>{name} {t}</text><title>{name} = {t}</title></g>",
                LEFT + PLOT_W,
                LEFT + PLOT_W - 4.0,
                y - 3.0
            );
        }
    }
    // Lines: min/max envelope per pixel column, broken where there is no data.
    for (ei, ci, name, env) in &envs {
        let mut d = String::new();
        let mut open = false;
        for (px, slot) in env.iter().enumerate() {
            let x = LEFT + px as f64 + 0.5;
            match slot {
                Col::Value(lo, hi) => {
                    let _ = write!(
                        d,
                        "{}{x:.1},{:.1}L{x:.1},{:.1}",
                        if open { "L" } else { "M" },
                        yv(*hi),
                        yv(*lo)
                    );
                    open = true;
                }
                Col::Gap => open = false,
                Col::Empty => {}
            }
        }
        if d.is_empty() {
            continue;
        }
        let engine = engines.get(*ei).map_or("", |e| e.engine.as_str());
        let peak = env
            .iter()
            .filter_map(value)
            .map(|(_, hi)| hi)
            .fold(f64::MIN, f64::max);
        let _ = write!(
            s,
            "<path class='series' d='{d}' fill='none' stroke='{}' stroke-width='1.3' stroke-dasharray='{}'><title>{name}{} (max {})</title></path>",
            LINE_COLOURS[ci % LINE_COLOURS.len()],
            ENGINE_DASH[ei % ENGINE_DASH.len()],
            if engines.len() > 1 {
                format!(", engine {engine}")
            } else {
                String::new()
            },
            fmt_num(peak)
        );
    }
    // Legend of lines.
    let mut lx = LEFT + 330.0;
    for (ci, (_, name)) in panel.columns.iter().enumerate() {
        let _ = write!(
            s,
            "<line x1='{lx}' x2='{}' y1='{:.1}' y2='{:.1}' stroke='{}' stroke-width='2'/><text x='{}' y='{:.1}'>{name}</text>",
            lx + 16.0,
            top - 10.0,
            top - 10.0,
            LINE_COLOURS[ci % LINE_COLOURS.len()],
            lx + 20.0,
            top - 6.0
        );
        lx += 40.0 + 7.0 * name.len() as f64;
    }
    // Transient and data-quality events as markers, on the KV chart.
    if panel.id == "kv" {
        for e in markers {
            let Some(ts) = parse_rfc(&e.ts) else { continue };
            let x = axis.x(ts);
            let name = e.event.clone().unwrap_or_default();
            let _ = write!(
                s,
                "<path class='marker' d='M{x:.1},{:.1} l-4,-7 h8 z' fill='#000'><title>{} at {}{}{}</title></path>",
                top + 8.0,
                esc(&name),
                esc(&e.ts),
                e.value
                    .map(|v| format!(": {}", fmt_num(v)))
                    .unwrap_or_default(),
                super::baseline_note(e, fmt_num)
            );
        }
        // Exact values on hover: one transparent column per 10 pixels.
        for px in (0..PLOT_W as usize).step_by(10) {
            let mut parts = Vec::new();
            for (ei, ci, name, env) in &envs {
                let _ = ci;
                if let Some((lo, hi)) = env
                    .get(px..px + 10)
                    .into_iter()
                    .flatten()
                    .filter_map(value)
                    .fold(None, |acc: Option<(f64, f64)>, (l, h)| {
                        Some(acc.map_or((l, h), |(a, b)| (a.min(l), b.max(h))))
                    })
                {
                    let eng = engines.get(*ei).map_or("", |e| e.engine.as_str());
                    parts.push(format!("{name}[{eng}] {}–{}", fmt_num(lo), fmt_num(hi)));
                }
            }
            if parts.is_empty() {
                continue;
            }
            let t = axis.t0 + ((px as f64 / PLOT_W) * (axis.t1 - axis.t0) as f64) as i64;
            let _ = write!(
                s,
                "<rect class='hover' x='{:.1}' y='{top:.1}' width='10' height='{PANEL_H}' fill='transparent'><title>{} {}</title></rect>",
                LEFT + px as f64,
                rfc(t),
                parts.join(", ")
            );
        }
    }
    s.push_str("</g>");
    s
}

fn severity_tag(s: Severity) -> String {
    format!("<span class='sev sev-{0}'>{0}</span>", s.as_str())
}

/// The diagnosis, header and charts of one session, as an HTML fragment.
fn session_body(v: &SessionView, anchor: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<section id='{anchor}'><h2>Session {}</h2>",
        esc(&v.name)
    );
    // Header facts.
    h.push_str("<table class='facts'>");
    let mut row = |k: &str, val: String| {
        let _ = write!(h, "<tr><th>{k}</th><td>{val}</td></tr>");
    };
    if let Some(m) = v.meta {
        row(
            "window",
            format!(
                "{} … {}",
                esc(&m.started_at),
                esc(m.ended_at.as_deref().unwrap_or("?"))
            ),
        );
        row(
            "source",
            format!("{} {}", esc(&m.source.kind), esc(&m.source.urls.join(", "))),
        );
        row("interval", format!("{} s", m.recorder.interval_s));
        for s in &m.servers {
            let cfg = s
                .cache_config
                .first()
                .map(|c| {
                    [
                        "block_size",
                        "num_gpu_blocks",
                        "gpu_memory_utilization",
                        "cache_dtype",
                        "enable_prefix_caching",
                    ]
                    .iter()
                    .filter_map(|k| c.get(*k).map(|v| format!("{k}={}", esc(v))))
                    .collect::<Vec<_>>()
                    .join(" ")
                })
                .unwrap_or_default();
            row(
                "server",
                format!(
                    "<b>{}</b> — model {}; vLLM {}; engines {}; {}",
                    esc(&s.server),
                    esc(&s.model_names.iter().cloned().collect::<Vec<_>>().join(", ")),
                    esc(s.vllm_version.as_deref().unwrap_or("unknown")),
                    s.engines.len(),
                    cfg
                ),
            );
        }
        for n in &m.source.notes {
            row("note", esc(n));
        }
    }
    let dq = &v.report.data_quality;
    row(
        "data quality",
        format!(
            "{} failed scrapes, {} gaps, {} counter resets{}{}",
            dq.observed.failed_scrapes,
            dq.observed.scrape_gaps,
            dq.observed.counter_resets,
            if dq.notes.is_empty() { "" } else { "; " },
            esc(&dq.notes.join("; "))
        ),
    );
    h.push_str("</table>");
    // Diagnosis.
    let _ = write!(
        h,
        "<p class='verdict'>{} {}</p>",
        severity_tag(v.report.severity),
        esc(&v.report.verdict)
    );
    for f in &v.report.hypotheses {
        let _ = write!(
            h,
            "<div class='finding' id='{anchor}-{}-{}'><h3>#{} {} — {} {} <span class='muted'>(score {:.2}, confidence {:.2}, {})</span></h3><p>{}</p>",
            f.id.as_str().to_lowercase(),
            esc(&f.server).replace([':', '.'], "-"),
            f.rank,
            f.id.as_str(),
            esc(&f.title),
            severity_tag(f.severity),
            f.score,
            f.confidence,
            esc(&f.server),
            esc(&f.summary)
        );
        if !f.evidence.is_empty() {
            h.push_str("<table class='evidence'><tr><th>evidence</th><th>observed</th><th>threshold</th><th>window</th></tr>");
            for e in &f.evidence {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&e.metric),
                    esc(&e.observed.to_string()),
                    esc(&e
                        .threshold
                        .as_ref()
                        .map(|t| t.to_string())
                        .unwrap_or_default()),
                    esc(e.window.as_deref().unwrap_or(""))
                );
            }
            h.push_str("</table>");
        }
        for r in &f.recommendations {
            let _ = write!(
                h,
                "<p>→ <code>{}{}</code> {} <span class='muted'>({}{})</span></p>",
                esc(&r.action),
                r.value
                    .as_ref()
                    .map(|v| format!(" {}", esc(v)))
                    .unwrap_or_default(),
                esc(&r.reason),
                esc(&r.tradeoff),
                r.accepted_by
                    .as_ref()
                    .map(|a| format!("; accepted by {}", esc(a)))
                    .unwrap_or_default()
            );
        }
        for c in &f.counter_evidence {
            let _ = write!(h, "<p class='muted'>but: {}</p>", esc(c));
        }
        h.push_str("</div>");
    }
    // Charts per server (on a fleet session, the ones that matter most).
    let servers = session_servers(v);
    let charted = charted_servers(v.report, v.summary);
    if charted.len() < servers.len() {
        let _ = write!(
            h,
            "<p class='muted'>Charts for the {} of {} servers the findings rank first, then by time in trouble; every server is in summary.json, and <code>kvscope timeline SESSION --server PATTERN</code> shows any one.</p>",
            charted.len(),
            servers.len()
        );
    }
    for server in &charted {
        // Anchored by the server's place in the session, as the fleet table links it.
        let i = servers.iter().position(|s| s == server).unwrap_or_default();
        let a = format!("{anchor}-s{i}");
        let _ = write!(h, "<h3 id='{a}'>{}</h3>", esc(server));
        h.push_str(&server_charts(v, server, &a));
    }
    h.push_str("</section>");
    h
}

/// Most servers charted in one session's report: a fleet session's 1,000 servers made a
/// 437 MB page that took minutes to write and no browser opens.
pub const MAX_CHARTED_SERVERS: usize = 24;

/// A session's servers in session order (the summary's: sorted by name).
fn session_servers<'a>(v: &SessionView<'a>) -> Vec<&'a str> {
    v.summary
        .servers
        .iter()
        .map(|s| s.server.as_str())
        .collect()
}

/// The servers to chart: all of them up to [`MAX_CHARTED_SERVERS`], in session order;
/// beyond, the servers the findings name, in rank order, then the others by time in
/// trouble. `kvscope report` reads chart series for these alone.
pub fn charted_servers<'s>(report: &Report, summary: &'s Summary) -> Vec<&'s str> {
    let servers = &summary.servers;
    if servers.len() <= MAX_CHARTED_SERVERS {
        return servers.iter().map(|s| s.server.as_str()).collect();
    }
    let first_finding = |server: &str| {
        report
            .hypotheses
            .iter()
            .position(|f| f.severity.is_loud() && f.server == server)
            .unwrap_or(usize::MAX)
    };
    let mut ranked: Vec<(usize, f64, &str)> = servers
        .iter()
        .map(|s| (first_finding(&s.server), -s.trouble_s, s.server.as_str()))
        .collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(b.2)));
    ranked
        .into_iter()
        .take(MAX_CHARTED_SERVERS)
        .map(|(_, _, s)| s)
        .collect()
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'><title>{}</title><style>{STYLE}</style></head><body>{body}<p class='muted'>Made by KVScope {} — one file, no network needed.</p></body></html>\n",
        esc(title),
        env!("CARGO_PKG_VERSION")
    )
}

/// A one-session report.
pub fn session_html(v: &SessionView) -> String {
    let body = format!(
        "<h1>KVScope incident report</h1><p class='muted'>{}</p>{}",
        esc(&v.name),
        session_body(v, "session")
    );
    page(&format!("KVScope — {}", v.name), &body)
}

/// A tiny KV % (and waiting, scaled) line for the fleet table.
fn sparkline(series: &[EngineSeries], server: &str) -> String {
    let (w, h) = (140.0, 26.0);
    let pts: Vec<(i64, f64, f64)> = series
        .iter()
        .filter(|e| e.server == server)
        .flat_map(|e| {
            e.ts.iter()
                .zip(&e.values[0])
                .zip(&e.values[2])
                .map(|((t, kv), wait)| (*t, kv.unwrap_or(0.0), wait.unwrap_or(0.0)))
        })
        .collect();
    let (Some(t0), Some(t1)) = (pts.iter().map(|p| p.0).min(), pts.iter().map(|p| p.0).max())
    else {
        return String::new();
    };
    let wmax = pts.iter().map(|p| p.2).fold(1.0, f64::max);
    let cols = w as usize;
    let mut kv = vec![f64::NAN; cols];
    let mut wa = vec![f64::NAN; cols];
    for (t, k, q) in &pts {
        let c = (((t - t0) as f64 / (t1 - t0).max(1) as f64) * (w - 1.0)) as usize;
        kv[c] = if kv[c].is_nan() { *k } else { kv[c].max(*k) };
        wa[c] = if wa[c].is_nan() { *q } else { wa[c].max(*q) };
    }
    let path = |vals: &[f64], max: f64| {
        let mut d = String::new();
        for (i, v) in vals.iter().enumerate() {
            if v.is_nan() {
                continue;
            }
            let _ = write!(
                d,
                "{}{i},{:.1}",
                if d.is_empty() { "M" } else { "L" },
                h - v / max * (h - 2.0)
            );
        }
        d
    };
    format!(
        "<svg class='spark' xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}'><path d='{}' fill='none' stroke='#0072B2'/><path d='{}' fill='none' stroke='#D55E00' stroke-dasharray='2 1'/><title>KV % (solid, 0–100) and waiting (dashed, 0–{wmax:.0})</title></svg>",
        path(&kv, 100.0),
        path(&wa, wmax)
    )
}

/// A fleet report: a table of every session and server ranked by severity, then each
/// session's section.
pub fn fleet_html(views: &[SessionView]) -> String {
    let mut rows: Vec<(u8, f64, String)> = Vec::new();
    for (i, v) in views.iter().enumerate() {
        let servers = session_servers(v);
        let charted = charted_servers(v.report, v.summary);
        for (j, server) in servers.iter().enumerate() {
            let top = v.report.hypotheses.iter().find(|f| f.server == *server);
            let sev = top.map_or(Severity::Info, |f| f.severity);
            let score = top.map_or(0.0, |f| f.score);
            // Linked where its session's section charts it.
            let name = if charted.contains(server) {
                format!("<a href='#s{i}-s{j}'>{}</a>", esc(server))
            } else {
                esc(server)
            };
            rows.push((
                sev.rank(),
                score,
                format!(
                    "<tr><td>{}</td><td>{name}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    severity_tag(sev),
                    esc(&v.name),
                    top.map_or("—".to_string(), |f| format!(
                        "{} ({:.2})",
                        f.id.as_str(),
                        f.score
                    )),
                    sparkline(v.series, server)
                ),
            ));
        }
    }
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)));
    let mut body = String::from("<h1>KVScope fleet report</h1>");
    let _ = write!(
        body,
        "<p class='muted'>{} session(s), {} server(s), ranked by severity</p><table class='fleet'><tr><th>severity</th><th>server</th><th>session</th><th>top finding</th><th>KV % · waiting</th></tr>",
        views.len(),
        rows.len()
    );
    for (_, _, r) in &rows {
        body.push_str(r);
    }
    body.push_str("</table>");
    for (i, v) in views.iter().enumerate() {
        body.push_str(&session_body(v, &format!("s{i}")));
    }
    page("KVScope fleet report", &body)
}

/// How many elements of each tag and of each class a report has: the structure the
/// tests snapshot (not pixels or coordinates).
pub fn structure(html: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (i, _) in html.match_indices('<') {
        let name: String = html[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if !name.is_empty() {
            *out.entry(format!("<{name}>")).or_insert(0) += 1;
        }
    }
    for (i, _) in html.match_indices("class='") {
        let class: String = html[i + 7..].chars().take_while(|c| *c != '\'').collect();
        *out.entry(format!(".{class}")).or_insert(0) += 1;
    }
    out
}
