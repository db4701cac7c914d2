//! Dashboard state: per-server windows of recent samples and the analysis of that window
//! (phases, conditions, events come from the same SQL catalog as `analyze`).

use std::collections::VecDeque;

use crate::analysis::Analysis;
use crate::store::events::Event;
use crate::store::schema::Sample;

/// Compact fits 80×24; full adds latency, counters and engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Density {
    Compact,
    Full,
}

/// One unit (all engines of a server) at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitPoint {
    pub ts: i64,
    pub ok: bool,
    pub kv_max_pct: Option<f64>,
    pub running: Option<i64>,
    pub waiting: Option<i64>,
    pub ttft_p95_s: Option<f64>,
    pub gen_tps: Option<f64>,
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

    /// The unit series (engines combined like `queries/01_units.sql`: sums for requests
    /// and tokens, max for KV and latency).
    pub fn units(&self) -> Vec<UnitPoint> {
        let mut out: Vec<UnitPoint> = Vec::new();
        for r in &self.rows {
            let same = out.last().is_some_and(|u| u.ts == r.ts);
            if !same {
                out.push(UnitPoint {
                    ts: r.ts,
                    ok: r.scrape_ok,
                    ..Default::default()
                });
            }
            let Some(u) = out.last_mut() else { continue };
            u.ok &= r.scrape_ok;
            u.kv_max_pct = max_opt(u.kv_max_pct, r.kv_cache_usage_pct);
            u.running = sum_opt(u.running, r.requests_running);
            u.waiting = sum_opt(u.waiting, r.requests_waiting);
            u.ttft_p95_s = max_opt(u.ttft_p95_s, r.ttft_p95_s);
            u.gen_tps = match (u.gen_tps, r.generation_tokens_per_s) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
        }
        out
    }

    /// Rows of the latest scrape (one per engine).
    pub fn latest(&self) -> Vec<&Sample> {
        let Some(ts) = self.rows.back().map(|r| r.ts) else {
            return Vec::new();
        };
        self.rows.iter().filter(|r| r.ts == ts).collect()
    }

    /// The current (debounced) phase from the window's analysis.
    pub fn phase(&self) -> Option<String> {
        self.analysis
            .as_ref()?
            .series
            .iter()
            .rev()
            .find_map(|p| p.phase.clone())
    }

    /// Conditions active at the end of the window.
    pub fn active_conditions(&self) -> Vec<String> {
        let Some(a) = &self.analysis else {
            return Vec::new();
        };
        let mut state: std::collections::BTreeMap<String, bool> = Default::default();
        for e in a.events.iter().filter(|e| e.kind == "condition_change") {
            if let (Some(c), Some(s)) = (&e.condition, &e.state) {
                state.insert(c.clone(), s == "start");
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
                    e.kind.as_str(),
                    "phase_transition" | "transient" | "data_quality"
                )
            })
            .take(n)
            .collect()
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

fn sum_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
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
