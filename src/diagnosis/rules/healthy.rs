//! HEALTHY: no medium or high finding — the server handled its load. Runs after every
//! other rule and holds only when none of them scored medium or worse, so "healthy"
//! never restates another rule's thresholds.
use crate::diagnosis::{Context, Rule, Verdict, ev, severity};
use crate::vocab::{Hypothesis, Phase};

pub const RULE: Rule = Rule {
    id: Hypothesis::Healthy,
    title: "Healthy: load served without pressure",
    check,
    needs_latency: false,
    runs_last: true,
};

fn check(ctx: &Context) -> Verdict {
    let worst = ctx.worst_other_score;
    if severity(worst, ctx.thresholds).is_loud() {
        return Verdict::RuledOut(format!(
            "a {} finding (score {worst:.2}) was made",
            severity(worst, ctx.thresholds)
        ));
    }
    let s = ctx.server;
    let observed: f64 = s.phases.values().map(|p| p.seconds).sum();
    let min = ctx.threshold("min_observed_s");
    if observed < min {
        return Verdict::RuledOut(format!(
            "only {observed:.0} s of telemetry (< {min} s): too little to call it healthy (INDETERMINATE)"
        ));
    }
    Verdict::Found {
        sustained_s: None,
        score: 0.1,
        summary: format!(
            "load served without pressure: KV at most {:.0}%, {:.0} preemptions, waiting at most {:.0}, TTFT p95 median {:.3} s",
            s.kv_max_pct.unwrap_or(0.0),
            s.preemptions.unwrap_or(0.0),
            s.waiting_max.unwrap_or(0.0),
            s.ttft_p95_median_s.unwrap_or(0.0)
        ),
        evidence: vec![
            ev("share of time HEALTHY", ctx.phase_share(Phase::Healthy)),
            ev("kv_cache_usage_pct (max)", s.kv_max_pct.unwrap_or(0.0))
                .threshold(ctx.threshold("kv_saturated_pct")),
        ],
        counter_evidence: vec![],
        recommendations: vec![],
    }
}
