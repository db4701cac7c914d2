//! Many servers at once: `analyze` and `timeline` on a fleet print servers ranked by time
//! in trouble (saturated or queueing, slow first tokens, preemption), with their time per
//! phase and their worst episode, instead of a block per server. `--server` (globs,
//! repeatable) narrows; `--all` lists every server.

use std::fmt::Write;

use crate::analysis::Summary;
use crate::analysis::summary::ServerSummary;
use crate::vocab::Phase;

/// Above this many servers the fleet view replaces the per-server blocks.
pub const FLEET_VIEW_MIN_SERVERS: usize = 10;

/// Servers listed by default in the fleet view.
pub const FLEET_VIEW_TOP: usize = 20;

/// `--server` patterns (`*`, `?`, `[…]` globs); none selects every server.
#[derive(Debug, Clone, Default)]
pub struct ServerFilter {
    patterns: Vec<glob::Pattern>,
}

impl ServerFilter {
    /// Parses `--server` values; an invalid glob is an error naming it.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let patterns = values
            .iter()
            .map(|v| glob::Pattern::new(v).map_err(|e| format!("--server `{v}`: {}", e.msg)))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn matches(&self, server: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(server))
    }

    /// The servers of `all` (a session's, in its order) the patterns select; an error
    /// naming the patterns and a few of the servers when they select none.
    pub fn select(&self, all: &[String]) -> Result<Vec<String>, String> {
        let selected: Vec<String> = all.iter().filter(|s| self.matches(s)).cloned().collect();
        if selected.is_empty() && !all.is_empty() {
            let patterns: Vec<String> = self
                .patterns
                .iter()
                .map(|p| format!("`{}`", p.as_str()))
                .collect();
            let mut some = all.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            if all.len() > 3 {
                some.push_str(", …");
            }
            return Err(format!(
                "--server {}: no server of the session matches (it has {}: {some})",
                patterns.join(", "),
                all.len()
            ));
        }
        Ok(selected)
    }
}

/// Whether to print the fleet view: many servers selected and no `--all`.
pub fn use_fleet_view(summary: &Summary, filter: &ServerFilter, all: bool) -> bool {
    let selected = summary
        .servers
        .iter()
        .filter(|s| filter.matches(&s.server))
        .count();
    fleet_view_of(selected, all)
}

/// [`use_fleet_view`] from the number of servers selected (known before an analysis).
pub fn fleet_view_of(selected: usize, all: bool) -> bool {
    !all && selected > FLEET_VIEW_MIN_SERVERS
}

fn share(s: &ServerSummary, p: Phase) -> String {
    match s.phases.get(&p) {
        Some(t) if t.share >= 0.005 => format!("{:.0}%", t.share * 100.0),
        Some(t) if t.share > 0.0 => "<1%".into(),
        _ => "-".into(),
    }
}

/// The ranked fleet table of the servers `filter` selects.
pub fn render(summary: &Summary, filter: &ServerFilter) -> String {
    let mut servers: Vec<&ServerSummary> = summary
        .servers
        .iter()
        .filter(|s| filter.matches(&s.server))
        .collect();
    servers.sort_by(|a, b| {
        b.trouble_s
            .total_cmp(&a.trouble_s)
            .then_with(|| a.server.cmp(&b.server))
    });
    let troubled = servers.iter().filter(|s| s.trouble_s > 0.0).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} servers, {} in trouble at some point; ranked by time in trouble (KV exhausted, queueing, slow first tokens)",
        servers.len(),
        troubled
    );
    let _ = writeln!(
        out,
        "{:>4}  {:<24} {:>9} {:>9}  {:>5} {:>5} {:>6} {:>7} {:>5} {:>7}  worst episode",
        "#",
        "server",
        "trouble",
        "episodes",
        "SAT",
        "QUEUE",
        "RISING",
        "HEALTHY",
        "IDLE",
        "NO_DATA"
    );
    for (i, s) in servers.iter().take(FLEET_VIEW_TOP).enumerate() {
        let worst = s
            .trouble
            .iter()
            .max_by(|a, b| a.duration_s.total_cmp(&b.duration_s))
            .map(|e| {
                let what = if e.trouble == "kv" {
                    format!("KV exhausted (KV max {:.0}%)", e.kv_max_pct.unwrap_or(0.0))
                } else {
                    format!(
                        "queue/TTFT ({} waiting max, TTFT p95 max {} s)",
                        e.waiting_max
                            .map_or_else(|| "?".to_string(), |w| format!("{w:.0}")),
                        e.ttft_p95_max_s
                            .map_or_else(|| "?".to_string(), |t| format!("{t:.1}"))
                    )
                };
                format!("{:.0} s from {}: {what}", e.duration_s, e.start)
            })
            .unwrap_or_else(|| "-".into());
        let no_data = if s.no_data_s > 0.0 {
            format!("{:.0} s", s.no_data_s)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{:>4}  {:<24} {:>9} {:>9}  {:>5} {:>5} {:>6} {:>7} {:>5} {:>7}  {}",
            i + 1,
            s.server,
            format!("{:.0} s", s.trouble_s),
            s.trouble_count,
            share(s, Phase::Saturated),
            share(s, Phase::QueuePressure),
            share(s, Phase::KvPressureRising),
            share(s, Phase::Healthy),
            share(s, Phase::Idle),
            no_data,
            worst
        );
    }
    if servers.len() > FLEET_VIEW_TOP {
        let _ = writeln!(
            out,
            "… {} more server(s): --all lists every one, --server 'PATTERN' narrows",
            servers.len() - FLEET_VIEW_TOP
        );
    }
    out
}
