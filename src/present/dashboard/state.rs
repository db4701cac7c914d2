//! Dashboard state: per-server windows of recent samples and the analysis of that window
//! (phases, conditions, events come from the same SQL catalog as `analyze`).

use std::collections::VecDeque;

use crate::analysis::{Analysis, PhasePoint};
use crate::store::events::Event;
use crate::store::schema::Sample;
use crate::vocab::{Condition, EventType, Phase};

/// Compact fits 80×24; full adds latency, counters and engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Density {
    Compact,
    Full,
}

/// A server shown by the dashboard.
#[derive(Debug, Clone)]
pub struct ServerPane {
    pub label: String,
    pub url: String,
    /// Every engine row of the recent window, oldest first.
    pub rows: VecDeque<Sample>,
    pub last_ok_ts: Option<i64>,
    pub last_error: Option<String>,
    pub analysis: Option<Analysis>,
}

impl ServerPane {
    pub fn new(label: &str, url: &str) -> Self {
        Self {
            label: label.to_string(),
            url: url.to_string(),
            rows: VecDeque::new(),
            last_ok_ts: None,
            last_error: None,
            analysis: None,
        }
    }

    /// Adds one scrape's rows and drops rows older than `window_s`.
    pub fn push(&mut self, rows: Vec<Sample>, window_s: f64) {
        if let Some(r) = rows.first() {
            if r.scrape_ok {
                self.last_ok_ts = Some(r.ts);
                self.last_error = None;
            } else {
                self.last_error = r.scrape_error.clone();
            }
        }
        self.rows.extend(rows);
        if let Some(last) = self.rows.back().map(|r| r.ts) {
            let cutoff = last - (window_s * 1e6) as i64;
            while self.rows.front().is_some_and(|r| r.ts < cutoff) {
                self.rows.pop_front();
            }
        }
    }

    /// The per-sample unit series of the window, as the analysis computed it (engines
    /// combined by `queries/01_units.sql`, not again here).
    pub fn units(&self) -> &[PhasePoint] {
        self.analysis.as_ref().map_or(&[], |a| a.series.as_slice())
    }

    /// Rows of the latest scrape (one per engine).
    pub fn latest(&self) -> Vec<&Sample> {
        let Some(ts) = self.rows.back().map(|r| r.ts) else {
            return Vec::new();
        };
        self.rows.iter().filter(|r| r.ts == ts).collect()
    }

    /// The current (debounced) phase from the window's analysis.
    pub fn phase(&self) -> Option<Phase> {
        self.analysis
            .as_ref()?
            .series
            .iter()
            .rev()
            .find_map(|p| p.phase)
    }

    /// Conditions active at the end of the window.
    pub fn active_conditions(&self) -> Vec<Condition> {
        let Some(a) = &self.analysis else {
            return Vec::new();
        };
        let mut state: std::collections::BTreeMap<Condition, bool> = Default::default();
        for e in a
            .events
            .iter()
            .filter(|e| e.event_type() == Some(EventType::ConditionChange))
        {
            if let (Some(c), Some(s)) = (e.condition_name(), &e.state) {
                state.insert(c, s == "start");
            }
        }
        state
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(c, _)| c)
            .collect()
    }

    /// Phase transitions and transient/data-quality events, newest first.
    pub fn recent_events(&self, n: usize) -> Vec<&Event> {
        let Some(a) = &self.analysis else {
            return Vec::new();
        };
        a.events
            .iter()
            .rev()
            .filter(|e| {
                matches!(
                    e.event_type(),
                    Some(
                        EventType::PhaseTransition | EventType::Transient | EventType::DataQuality
                    )
                )
            })
            .take(n)
            .collect()
    }
}

/// The whole dashboard.
#[derive(Debug, Clone)]
pub struct State {
    pub panes: Vec<ServerPane>,
    pub selected: usize,
    pub density: Density,
    pub paused: bool,
    pub help: bool,
    /// Session directory while recording.
    pub recording: Option<String>,
    pub status: Option<String>,
}

impl State {
    pub fn new(panes: Vec<ServerPane>, density: Density) -> Self {
        Self {
            panes,
            selected: 0,
            density,
            paused: false,
            help: false,
            recording: None,
            status: None,
        }
    }

    pub fn pane(&self) -> Option<&ServerPane> {
        self.panes.get(self.selected)
    }

    pub fn next(&mut self) {
        if !self.panes.is_empty() {
            self.selected = (self.selected + 1) % self.panes.len();
        }
    }

    pub fn prev(&mut self) {
        if !self.panes.is_empty() {
            self.selected = (self.selected + self.panes.len() - 1) % self.panes.len();
        }
    }

    pub fn toggle_density(&mut self) {
        self.density = match self.density {
            Density::Compact => Density::Full,
            Density::Full => Density::Compact,
        };
    }
}
