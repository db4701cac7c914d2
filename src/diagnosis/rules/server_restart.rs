//! SERVER_RESTART: counters went back to zero — the vLLM process restarted.
use crate::diagnosis::{Context, Rule, Verdict, ev, rec};
use crate::vocab::{EventName, Hypothesis};

pub const RULE: Rule = Rule {
    id: Hypothesis::ServerRestart,
    title: "Server restarted during the session",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let resets = ctx.events_named(EventName::CounterReset);
    if resets.is_empty() {
        return Verdict::RuledOut("no counter decreased".into());
    }
    let gaps = ctx.events_named(EventName::ScrapeGap);
    let downtime: f64 = gaps.iter().filter_map(|e| e.value).sum();
    Verdict::Found {
        sustained_s: None,
        score: 0.75,
        summary: format!(
            "{} restart(s); /metrics unavailable for {downtime:.0} s",
            resets.len()
        ),
        evidence: vec![
            ev("COUNTER_RESET events", resets.len() as f64).window(Context::window_of(&resets)),
            ev("seconds without metrics", downtime).window(Context::window_of(&gaps)),
        ],
        counter_evidence: vec![],
        recommendations: vec![rec(
            "read the server's logs around the restart (OOM killer, CUDA errors, liveness-probe kills)",
            None,
            "an unplanned restart drops every in-flight request",
            "none",
        )],
    }
}
