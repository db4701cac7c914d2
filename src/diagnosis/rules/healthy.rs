//! HEALTHY: no medium or high finding — the server handled its load.

use crate::diagnosis::{Context, Rule, Verdict, ev};

pub const RULE: Rule = Rule {
    id: "HEALTHY",
    title: "Healthy: load served without pressure",
    check,
    needs_latency: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let sat = ctx.threshold("kv_saturated_pct");
    let bad = s.kv_max_pct.unwrap_or(0.0) >= sat
        || s.preemptions.unwrap_or(0.0) >= 1.0
        || ctx.phase_share("QUEUE_PRESSURE") >= 0.1
        || s.stalled_s >= 10.0
        || s.counter_resets > 0
        || s.idle_kv_max_pct.unwrap_or(0.0) >= 2.0
        || ctx.events.iter().any(|e| {
            matches!(
                e.event.as_deref(),
                Some("TTFT_SPIKE" | "DECODE_THROUGHPUT_DROP" | "PREEMPTION_BURST")
            )
        });
    if bad {
        return Verdict::RuledOut("pressure, spikes or faults were observed".into());
    }
    let healthy = ctx.phase_share("HEALTHY");
    Verdict::Found {
        score: 0.1,
        summary: format!(
            "load served without pressure: KV at most {:.0}%, no preemption, no queue, TTFT p95 median {:.3} s",
            s.kv_max_pct.unwrap_or(0.0),
            s.ttft_p95_median_s.unwrap_or(0.0)
        ),
        evidence: vec![
            ev("share of time HEALTHY", healthy),
            ev("kv_cache_usage_pct (max)", s.kv_max_pct.unwrap_or(0.0)).threshold(sat),
        ],
        counter_evidence: vec![],
        recommendations: vec![],
    }
}
