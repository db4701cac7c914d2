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
    // Judged on the seconds requests waited with the cache hot, not on the session's KV
    // percentiles: idle time recorded around the load would pull those down.
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
        score: 0.45 + 0.25 * (s.kv_wait_s / ctx.threshold("queue_sustained_s")).min(1.0),
        summary: format!(
            "requests waited for KV capacity for {:.0} s (KV at or above {rising:.0}%, up to {:.1}%), up to {waiting:.0} waiting",
            s.kv_wait_s,
            s.kv_max_pct.unwrap_or(p95)
        ),
        evidence: vec![
            ev("time with requests waiting and KV hot (s)", s.kv_wait_s).threshold(min),
            ev("kv_cache_usage_pct (p95)", p95).threshold(rising),
            ev("requests_waiting (max)", waiting),
            ev("preemptions", preempt),
        ],
        counter_evidence: vec![],
        recommendations: recs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::summary::ServerSummary;
    use crate::diagnosis::{ServerFacts, test_context};

    fn verdict(kv_wait_s: f64, kv_p95_pct: f64) -> Verdict {
        let s = ServerSummary {
            server: "s".into(),
            kv_p95_pct: Some(kv_p95_pct),
            kv_max_pct: Some(93.0),
            waiting_max: Some(12.0),
            kv_wait_s,
            ..Default::default()
        };
        let thresholds = test_context::default_thresholds();
        check(&test_context::of(&s, ServerFacts::default(), &thresholds))
    }

    /// 30 s of requests waiting with the cache hot is the same finding whether the
    /// recording's KV p95 reads 88 % (the load alone) or 12 % (an hour of idle around
    /// it); 5 s is not one.
    #[test]
    fn judged_on_the_seconds_requests_waited_not_the_sessions_percentiles() {
        let score = |v: Verdict| match v {
            Verdict::Found { score, summary, .. } => {
                assert!(
                    summary.starts_with("requests waited for KV capacity for 30 s"),
                    "{summary}"
                );
                score
            }
            Verdict::RuledOut(r) => panic!("ruled out: {r}"),
        };
        // 0.45 + 0.25 × 30 / 60
        assert!((score(verdict(30.0, 88.0)) - 0.575).abs() < 1e-9);
        assert!((score(verdict(30.0, 12.0)) - 0.575).abs() < 1e-9);
        assert!(matches!(verdict(5.0, 88.0), Verdict::RuledOut(r) if r.contains("only 5 s")));
    }
}
