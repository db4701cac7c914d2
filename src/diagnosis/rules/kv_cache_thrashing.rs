//! KV_CACHE_THRASHING: the KV cache ran out and the scheduler preempts running requests
//! (V1 preempts by recompute: the work done for the victim is thrown away). Recurring
//! preemption is the signal, not the sampled KV % (see [`super::kv_exhausted`]).
use crate::diagnosis::{Context, Rule, Verdict, ev};
use crate::vocab::{Hypothesis, Phase};

pub const RULE: Rule = Rule {
    id: Hypothesis::KvCacheThrashing,
    title: "KV cache thrashing: cache exhausted, requests preempted and recomputed",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let sat = ctx.threshold("kv_saturated_pct");
    let kv_max = s.kv_max_pct.unwrap_or(0.0);
    let preempt = s.preemptions.unwrap_or(0.0);
    if preempt < 1.0 {
        return Verdict::RuledOut(format!(
            "no request was preempted (KV peaked at {kv_max:.1}%)"
        ));
    }
    let window = ctx.threshold("preemption_window_s");
    let burst = ctx.threshold("preemption_burst_count").max(1.0);
    let in_window = s.preemptions_window_max.unwrap_or(0.0);
    let sustained = super::kv_exhausted(ctx);
    let score = if sustained {
        0.6 + 0.2 * (s.preempting_s / 60.0).min(1.0) + 0.15 * (in_window / (3.0 * burst)).min(1.0)
    } else {
        // Isolated preemptions: the cache ran out for a moment.
        0.3
    };
    let span = match (&s.exhausted_start, &s.exhausted_end) {
        (Some(a), Some(b)) => Some(format!("{a} … {b}")),
        _ => None,
    };
    let mut evidence = vec![
        ev("preemptions", preempt),
        ev(
            "seconds with preemption in the trailing window",
            s.preempting_s,
        )
        .threshold(ctx.threshold("finding_min_s"))
        .window(span.clone()),
        ev(
            &format!("preemptions within {window:.0} s (max)"),
            in_window,
        )
        .threshold(burst),
        ev("kv_cache_usage_pct (max)", kv_max)
            .threshold(sat)
            .window(span),
        ev("time SATURATED (s)", ctx.phase_seconds(Phase::Saturated)),
    ];
    if let Some(w) = s.waiting_max {
        evidence.push(ev("requests_waiting (max)", w));
    }
    let mut counter = Vec::new();
    if kv_max < sat {
        counter.push(format!(
            "sampled KV usage peaked at {kv_max:.1}% (< {sat}%): vLLM V1 measures usage after the preempted request's blocks are freed, so a thrashing cache often reads 85–92%"
        ));
    }
    if !sustained {
        counter.push(format!(
            "only {preempt:.0} preemption(s), not sustained: the cache ran out briefly"
        ));
    }
    let mut recs: Vec<_> = super::max_num_seqs_rec(
        ctx,
        "the scheduler stops admitting before it has to preempt",
        "lower peak concurrency: more requests wait in the queue instead of being preempted and recomputed",
    )
    .into_iter()
    .collect();
    recs.extend(super::kv_memory_recs(ctx));
    Verdict::Found {
        sustained_s: Some(s.preempting_s.max(ctx.phase_seconds(Phase::Saturated))),
        score,
        summary: format!(
            "{preempt:.0} preemptions (up to {in_window:.0} within {window:.0} s, preempting for {:.0} s) with KV at up to {kv_max:.1}%: the KV cache ran out, requests are evicted and recomputed",
            s.preempting_s
        ),
        evidence,
        counter_evidence: counter,
        recommendations: recs,
    }
}
