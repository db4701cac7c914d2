//! `kvscope timeline`: phase transitions, sustained episodes and transient events of a
//! session, as text or JSON.

use std::fmt::Write;

use serde::Serialize;

use super::{baseline_note, clock, paint};
use crate::store::events::Event;
use crate::vocab::{Condition, EventName, EventType, Phase};

/// Options of the timeline view.
#[derive(Debug, Clone, Default)]
pub struct TimelineOptions {
    pub verbose: bool,
    /// Only these servers (`--server` globs; empty: all).
    pub servers: super::fleet::ServerFilter,
    pub color: bool,
}

/// The structured timeline (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct TimelineDoc<'a> {
    pub phases: Vec<&'a Event>,
    pub episodes: Vec<&'a Event>,
    pub events: Vec<&'a Event>,
    pub data_quality: Vec<&'a Event>,
}

fn keep<'a>(events: &'a [Event], opts: &TimelineOptions) -> impl Iterator<Item = &'a Event> {
    let servers = opts.servers.clone();
    events.iter().filter(move |e| servers.matches(&e.server))
}

/// Groups events for `--json`. Legacy `phase` records (including the historical
/// `PREFILL_PRESSURE` phase) count as phase records.
pub fn doc<'a>(events: &'a [Event], opts: &TimelineOptions) -> TimelineDoc<'a> {
    let mut d = TimelineDoc {
        phases: vec![],
        episodes: vec![],
        events: vec![],
        data_quality: vec![],
    };
    for e in keep(events, opts) {
        match e.event_type() {
            Some(EventType::PhaseTransition) => d.phases.push(e),
            // Legacy sessions wrote a sample's phase as a `phase` record.
            None if e.kind == LEGACY_PHASE_RECORD => d.phases.push(e),
            Some(EventType::ConditionEpisode) => d.episodes.push(e),
            Some(EventType::DataQuality) => d.data_quality.push(e),
            Some(EventType::ConditionChange) if !opts.verbose => {}
            _ => d.events.push(e),
        }
    }
    d
}

/// The `type` of a legacy session's per-sample phase record.
const LEGACY_PHASE_RECORD: &str = "phase";

fn phase_color(p: &str) -> &'static str {
    match p.parse::<Phase>() {
        Ok(Phase::Saturated) => "1;31",
        Ok(Phase::QueuePressure) => "33",
        Ok(Phase::KvPressureRising) => "35",
        Ok(Phase::Healthy) => "32",
        Ok(Phase::NoData) => "7",
        Ok(Phase::Idle) => "2",
        // PREFILL_PRESSURE: a phase in legacy sessions, a condition now.
        Err(_) if p.parse::<Condition>() == Ok(Condition::PrefillPressure) => "33",
        Err(_) => "2",
    }
}

fn evidence_text(e: &Event) -> String {
    match &e.evidence {
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        None => String::new(),
    }
}

/// Renders the text timeline.
pub fn render(events: &[Event], opts: &TimelineOptions) -> String {
    let d = doc(events, opts);
    let c = opts.color;
    let mut out = String::new();
    let _ = writeln!(out, "{}", paint("Phases", "1", c));
    if d.phases.is_empty() {
        let _ = writeln!(out, "  (no phase change)");
    }
    for e in &d.phases {
        let to = e.to.as_deref().or(e.phase.as_deref()).unwrap_or("?");
        let from = e.from.as_deref().unwrap_or("…");
        let _ = write!(
            out,
            "  {} +{:>6.1}s  {:<22} {} → {}",
            clock(&e.ts),
            e.t_rel_sec,
            e.server,
            from,
            paint(to, phase_color(to), c)
        );
        // An outage says why and for how long (its SCRAPE_GAP event).
        if e.to_phase() == Some(Phase::NoData)
            && let Some(gap) = d.data_quality.iter().find(|g| {
                g.server == e.server && g.ts == e.ts && g.event_name() == Some(EventName::ScrapeGap)
            })
        {
            match gap.value {
                Some(v) => {
                    let _ = write!(out, "  for {v:.1} s");
                }
                None => out.push_str("  until the end"),
            }
            if let Some(r) = &gap.reason {
                let _ = write!(out, " — {r}");
            }
        }
        if opts.verbose {
            let _ = write!(out, "   {}", evidence_text(e));
        }
        out.push('\n');
    }
    let _ = writeln!(out, "\n{}", paint("Sustained episodes", "1", c));
    if d.episodes.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for e in &d.episodes {
        let peak = e
            .peak_evidence
            .as_ref()
            .map(|p| {
                format!(
                    "peak {}={} at {}",
                    p.get("metric").and_then(|v| v.as_str()).unwrap_or("?"),
                    p.get("value").cloned().unwrap_or_default(),
                    clock(p.get("at").and_then(|v| v.as_str()).unwrap_or(""))
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} → {}  {:<22} {:<22} {:>6.1}s  {}",
            clock(e.start_time.as_deref().unwrap_or(&e.ts)),
            clock(e.end_time.as_deref().unwrap_or("")),
            e.server,
            e.condition.as_deref().unwrap_or("?"),
            e.duration_sec.unwrap_or(0.0),
            peak
        );
    }
    let _ = writeln!(out, "\n{}", paint("Events", "1", c));
    if d.events.is_empty() && d.data_quality.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    let mut all: Vec<&&Event> = d.events.iter().chain(d.data_quality.iter()).collect();
    all.sort_by(|a, b| {
        a.t_rel_sec
            .partial_cmp(&b.t_rel_sec)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for e in all {
        let name = e
            .event
            .clone()
            .or_else(|| {
                e.condition
                    .as_ref()
                    .map(|c| format!("{c} {}", e.state.as_deref().unwrap_or("")))
            })
            .unwrap_or_else(|| e.kind.clone());
        let mut line = format!(
            "  {} +{:>6.1}s  {:<22} {:<24}",
            clock(&e.ts),
            e.t_rel_sec,
            e.server,
            name
        );
        if let Some(v) = e.value {
            let _ = write!(line, " {}={v}", e.metric.as_deref().unwrap_or("value"));
        }
        line.push_str(&baseline_note(e, |b| b.to_string()));
        if let Some(r) = &e.reason {
            let _ = write!(line, " — {r}");
        }
        if opts.verbose && e.evidence.is_some() {
            let _ = write!(line, "   {}", evidence_text(e));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}
