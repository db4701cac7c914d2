//! `kvscope doctor` text: the verdict first, then the evidence with times, then the fix.

use std::fmt::Write;

use super::paint;
use crate::diagnosis::Report;
use crate::vocab::{Severity, Status};

fn sev_color(s: Severity) -> &'static str {
    match s {
        Severity::High => "1;31",
        Severity::Medium => "33",
        Severity::Low => "36",
        Severity::Info => "32",
    }
}

/// Renders a report. Quiet mode shows the top findings with their first fix; verbose adds
/// every piece of evidence, every recommendation and what was ruled out.
pub fn render(report: &Report, verbose: bool, color: bool) -> String {
    let mut out = String::new();
    let top = report.hypotheses.first();
    let sev = top.map_or(Severity::Info, |f| f.severity);
    // Too little data, or none: say so instead of a severity.
    let tag = match report.status {
        Status::Indeterminate | Status::NoData => report.status.as_str().to_uppercase(),
        Status::Findings | Status::Healthy => sev.as_str().to_uppercase(),
    };
    let _ = writeln!(
        out,
        "{} {}",
        paint(&format!("[{tag}]"), sev_color(sev), color),
        paint(&report.verdict, "1", color)
    );
    let loud: Vec<_> = report
        .hypotheses
        .iter()
        .filter(|f| verbose || f.severity.is_loud() || f.rank == 1)
        .collect();
    let shown = if verbose { loud.len() } else { 3 };
    for f in loud.iter().take(shown) {
        let _ = writeln!(
            out,
            "\n#{} {} — {} ({}, score {:.2}, confidence {:.2})",
            f.rank,
            paint(f.id.as_str(), sev_color(f.severity), color),
            f.title,
            f.severity,
            f.score,
            f.confidence
        );
        let _ = writeln!(out, "   server: {}", f.server);
        let _ = writeln!(out, "   {}", f.summary);
        if verbose {
            for e in &f.evidence {
                let mut line = format!("   · {} = {}", e.metric, e.observed);
                if let Some(t) = &e.threshold {
                    let _ = write!(line, " (threshold {t})");
                }
                if let Some(b) = &e.baseline {
                    let _ = write!(line, " (baseline {b})");
                }
                if let Some(w) = &e.window {
                    let _ = write!(line, " [{w}]");
                }
                let _ = writeln!(out, "{line}");
            }
            for c in &f.counter_evidence {
                let _ = writeln!(out, "   ↔ {c}");
            }
        }
        let recs: Vec<_> = f
            .recommendations
            .iter()
            .take(if verbose { usize::MAX } else { 1 })
            .collect();
        for r in recs {
            let value = r
                .value
                .as_ref()
                .map(|v| format!(" {v}"))
                .unwrap_or_default();
            let _ = writeln!(out, "   → fix: {}{value}", paint(&r.action, "1", color));
            if verbose {
                let _ = writeln!(out, "     why: {}", r.reason);
                let _ = writeln!(out, "     cost: {}", r.tradeoff);
            }
        }
    }
    // Findings the quiet view leaves out are named, never silently dropped.
    if let Some(rest) = loud.get(shown..).filter(|r| !r.is_empty()) {
        let names: Vec<String> = rest
            .iter()
            .map(|f| format!("{} ({}, {})", f.id, f.severity, f.server))
            .collect();
        let _ = writeln!(
            out,
            "\n… {} more: {} (--verbose)",
            rest.len(),
            names.join(", ")
        );
    }
    for c in &report.context {
        let _ = writeln!(out, "\nContext on {}: {}", c.server, c.note);
    }
    // The longest episodes first; all of them with --verbose.
    let mut bn: Vec<&crate::diagnosis::Bottleneck> = report.bottleneck.iter().collect();
    bn.sort_by(|a, b| b.duration_s.total_cmp(&a.duration_s));
    if !bn.is_empty() {
        let _ = writeln!(out, "\nBottleneck per episode of trouble:");
    }
    let shown = if verbose { bn.len() } else { 3 };
    for b in bn.iter().take(shown) {
        let _ = writeln!(
            out,
            "   {} {} ({:.0} s from {}): {}",
            b.server,
            paint(&b.kind.to_string(), "1", color),
            b.duration_s,
            b.start,
            b.reason
        );
    }
    if bn.len() > shown {
        let _ = writeln!(out, "   … {} more (--verbose)", bn.len() - shown);
    }
    if verbose {
        if !report.ruled_out.is_empty() {
            let _ = writeln!(out, "\nRuled out:");
            for r in &report.ruled_out {
                let _ = writeln!(out, "   {:<28} {}", r.id, r.reason);
            }
        }
        let dq = &report.data_quality;
        let _ = writeln!(
            out,
            "\nData quality: {} failed scrape(s), {} gap(s), {} counter reset(s); confidence ×{:.2}",
            dq.observed.failed_scrapes,
            dq.observed.scrape_gaps,
            dq.observed.counter_resets,
            dq.confidence_factor
        );
        for n in &dq.notes {
            let _ = writeln!(out, "   {n}");
        }
    }
    out
}

/// A fleet table: one row per session, worst first.
pub fn render_fleet(reports: &[(String, &Report)], color: bool) -> String {
    let mut rows: Vec<&(String, &Report)> = reports.iter().collect();
    rows.sort_by(|a, b| {
        let s = |r: &Report| r.hypotheses.first().map(|f| f.score).unwrap_or(0.0);
        s(b.1)
            .partial_cmp(&s(a.1))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<28} {:<22} {:>5}  session",
        "severity", "top finding", "server", "score"
    );
    for (name, r) in rows {
        let top = r.hypotheses.first();
        let _ = writeln!(
            out,
            "{:<8} {:<28} {:<22} {:>5.2}  {}",
            paint(r.severity.as_str(), sev_color(r.severity), color),
            top.map(|f| f.id.as_str()).unwrap_or("-"),
            top.map(|f| f.server.as_str()).unwrap_or("-"),
            top.map(|f| f.score).unwrap_or(0.0),
            name
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnosis::Finding;
    use crate::vocab::Hypothesis;

    fn finding(rank: usize, id: Hypothesis, severity: Severity) -> Finding {
        Finding {
            id,
            title: format!("{id} title"),
            server: "s:8000".into(),
            rank,
            score: 0.5,
            severity,
            confidence: 1.0,
            summary: format!("{id} summary"),
            evidence: Vec::new(),
            counter_evidence: Vec::new(),
            recommendations: Vec::new(),
        }
    }

    #[test]
    fn the_quiet_view_names_the_loud_findings_it_leaves_out() {
        let ids = [
            Hypothesis::KvCacheThrashing,
            Hypothesis::PrefillStarvation,
            Hypothesis::ClientAborts,
            Hypothesis::QueueSaturation,
            Hypothesis::PrefixCacheIneffective,
        ];
        let severities = [
            Severity::High,
            Severity::High,
            Severity::Medium,
            Severity::Medium,
            Severity::Info,
        ];
        let report = Report {
            status: Status::Findings,
            hypotheses: ids
                .iter()
                .zip(severities)
                .enumerate()
                .map(|(k, (id, sev))| finding(k + 1, *id, sev))
                .collect(),
            ..Default::default()
        };
        let quiet = render(&report, false, false);
        assert!(quiet.contains("#3 CLIENT_ABORTS"), "{quiet}");
        assert!(!quiet.contains("#4 "), "{quiet}");
        assert!(
            quiet.contains("… 1 more: QUEUE_SATURATION (medium, s:8000) (--verbose)"),
            "{quiet}"
        );
        // An informational finding is not loud: neither shown nor counted.
        assert!(!quiet.contains("PREFIX_CACHE_INEFFECTIVE"), "{quiet}");
        let verbose = render(&report, true, false);
        assert!(verbose.contains("#5 PREFIX_CACHE_INEFFECTIVE"), "{verbose}");
        assert!(!verbose.contains("more:"), "{verbose}");
    }
}
