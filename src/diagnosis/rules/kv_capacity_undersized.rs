//! KV_CAPACITY_UNDERSIZED: the KV cache runs hot and requests wait for it, even without
//! a preemption storm — contexts are too long for the cache.
use crate::diagnosis::{Context, Rule, Verdict, ev};
use crate::vocab::{Hypothesis, Phase};

pub const RULE: Rule = Rule {
    id: Hypothesis::KvCapacityUndersized,
    title: "KV cache too small for the contexts served",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let rising = ctx.threshold("kv_rising_pct");
    let p95 = s.kv_p95_pct.unwrap_or(0.0);
    let waiting = s.waiting_max.unwrap_or(0.0);
    let preempt = s.preemptions.unwrap_or(0.0);
    if p95 < rising {
        return Verdict::RuledOut(format!("KV p95 {p95:.1}% is below {rising}%"));
    }
    let min = ctx.threshold("finding_min_s");
    if waiting < 1.0 || s.kv_wait_s < min {
        return Verdict::RuledOut(format!(
            "requests waited while KV ran hot for only {:.0} s (< {min} s)",
            s.kv_wait_s
        ));
    }
    if super::kv_exhausted(ctx) {
        return Verdict::RuledOut("sustained preemption: KV_CACHE_THRASHING covers this".into());
    }
    // Not --max-model-len: it caps what one request may use, it adds no capacity.
    let recs = super::kv_memory_recs(ctx);
    Verdict::Found {
        sustained_s: Some(
            ctx.phase_seconds(Phase::Saturated) + ctx.phase_seconds(Phase::KvPressureRising),
        ),
        score: 0.45 + 0.25 * ((p95 - rising) / (100.0 - rising)).clamp(0.0, 1.0),
        summary: format!(
            "KV usage p95 {p95:.1}% with up to {waiting:.0} requests waiting for capacity"
        ),
        evidence: vec![
            ev("kv_cache_usage_pct (p95)", p95).threshold(rising),
            ev("requests_waiting (max)", waiting),
            ev("preemptions", preempt),
        ],
        counter_evidence: vec![],
        recommendations: recs,
    }
}
