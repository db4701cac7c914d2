//! TELEMETRY_GAPS: scrapes failed or samples are missing; conclusions over those periods
//! are weaker.
use crate::diagnosis::{Context, Rule, Verdict, ev, rec};
use crate::source::scrape::FailureKind;
use crate::vocab::{EventName, Hypothesis};

pub const RULE: Rule = Rule {
    id: Hypothesis::TelemetryGaps,
    title: "Telemetry gaps: missing samples",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let gaps = ctx.events_named(EventName::ScrapeGap);
    let s = ctx.server;
    if gaps.is_empty() && s.failed_scrapes == 0 {
        return Verdict::RuledOut("every scrape succeeded on time".into());
    }
    let share = s.failed_scrapes as f64 / (s.samples.max(1)) as f64;
    let mut score = 0.25 + 0.4 * (share / 0.2).min(1.0);
    let mut counter = Vec::new();
    if !ctx.events_named(EventName::CounterReset).is_empty() {
        score *= 0.6;
        counter.push("a server restart explains the gap (SERVER_RESTART)".to_string());
    }
    // The server gone at the end (SERVER_DOWN) explains its last gap: the telemetry is
    // not the trouble then, and a gap it alone explains is information.
    if super::server_down(ctx).is_some() {
        score *= if gaps.len() <= 1 { 0.3 } else { 0.6 };
        counter.push("the server went down and did not come back (SERVER_DOWN)".to_string());
    }
    let reasons: Vec<String> = gaps.iter().filter_map(|e| e.reason.clone()).collect();
    // Timed-out scrapes of a server that held work: vLLM's API server answers /metrics on
    // the event loop that also tokenizes, detokenizes and streams every request, so a
    // busy loop answers late — the gap is load, not the network.
    let timed_out_under_load = gaps.iter().any(|g| {
        g.reason
            .as_deref()
            .is_some_and(|r| FailureKind::of_reason(r) == FailureKind::Timeout)
            && super::HeldBefore::of(g).requests() > 0.0
    });
    let mut recommendations = Vec::new();
    if timed_out_under_load {
        recommendations.push(rec(
            "scrapes timed out while the server held requests: its API server's event loop (which also serves every request) was busy; check its CPU (api_cpu_util_pct, API_SERVER_SATURATED) and give the recorder a longer --timeout",
            None,
            "a saturated API server delays /metrics and first tokens alike",
            "none",
        ));
    }
    recommendations.push(rec(
        "check the path from recorder to server (timeouts, load balancer, auth)",
        reasons.first().cloned(),
        "missing samples hide what the engine did",
        "none",
    ));
    Verdict::Found {
        sustained_s: Some(s.no_data_s),
        score,
        summary: format!(
            "{} gap(s), {} failed scrape(s) ({:.0}% of samples)",
            gaps.len(),
            s.failed_scrapes,
            share * 100.0
        ),
        evidence: vec![
            ev("SCRAPE_GAP events", gaps.len() as f64).window(Context::window_of(&gaps)),
            ev("failed scrapes", s.failed_scrapes as f64),
        ],
        counter_evidence: counter,
        recommendations,
    }
}
