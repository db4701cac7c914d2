//! KV_CACHE_THRASHING: KV usage saturated while the scheduler preempts running requests
//! (V1 preempts by recompute: the work done for the victim is thrown away).

use crate::diagnosis::{Context, Rule, Verdict, ev, rec};

pub const RULE: Rule = Rule {
    id: "KV_CACHE_THRASHING",
    title: "KV cache thrashing: saturated cache, requests preempted and recomputed",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let sat = ctx.threshold("kv_saturated_pct");
    let kv_max = s.kv_max_pct.unwrap_or(0.0);
    let preempt = s.preemptions.unwrap_or(0.0);
    if kv_max < sat {
        return Verdict::RuledOut(format!("KV usage peaked at {kv_max:.1}% (< {sat}%)"));
    }
    if preempt < 1.0 {
        return Verdict::RuledOut(format!(
            "KV reached {kv_max:.1}% but no request was preempted"
        ));
    }
    let sat_share = ctx.phase_share("SATURATED");
    let peak = s.preemptions_peak_per_s.unwrap_or(0.0);
    let burst = ctx.threshold("preemption_burst_per_s").max(0.001);
    let score = 0.55 + 0.25 * (sat_share / 0.3).min(1.0) + 0.2 * (peak / (5.0 * burst)).min(1.0);
    let bursts = ctx.events_named("PREEMPTION_BURST");
    let sats = ctx.events_named("KV_SATURATION");
    let mut evidence = vec![
        ev("kv_cache_usage_pct (max)", kv_max)
            .threshold(sat)
            .window(Context::window_of(&sats)),
        ev("time SATURATED (s)", ctx.phase_seconds("SATURATED")),
        ev("preemptions", preempt),
        ev("preemptions_per_s (peak)", peak)
            .threshold(burst)
            .window(Context::window_of(&bursts)),
    ];
    if let Some(w) = s.waiting_max {
        evidence.push(ev("requests_waiting (max)", w));
    }
    let mut recs = Vec::new();
    if let Some((seqs, tokens)) = super::safe_max_num_seqs(ctx) {
        recs.push(rec(
            "--max-num-seqs",
            Some(seqs.to_string()),
            &format!(
                "running requests held ~{tokens:.0} tokens each (median); {seqs} of them fill 90% of the {:.0}-token KV cache, so the scheduler stops admitting before it has to preempt",
                ctx.facts.kv_capacity_tokens().unwrap_or(0.0)
            ),
            "lower peak concurrency: more requests wait in the queue instead of being preempted and recomputed",
        ));
    }
    let gmu = ctx.facts.gpu_memory_utilization;
    recs.push(rec(
        "--gpu-memory-utilization",
        gmu.map(|g| format!("{:.2}", (g + 0.05).min(0.95))),
        "a larger share of GPU memory for the KV cache means more blocks, so long contexts fit without preemption",
        "less headroom for activations and other processes on the GPU; raise in small steps and watch for OOM at start-up",
    ));
    recs.push(rec(
        "--kv-cache-dtype",
        Some("fp8".into()),
        "an fp8 KV cache holds about twice the tokens in the same memory",
        "small accuracy cost on some models; check your evals",
    ));
    recs.push(rec(
        "--tensor-parallel-size",
        None,
        "sharding the model over more GPUs frees memory per GPU for KV blocks",
        "more GPUs per replica and inter-GPU communication per step",
    ));
    Verdict::Found {
        score,
        summary: format!(
            "KV cache saturated ({kv_max:.1}% peak, {:.0} s SATURATED) and {preempt:.0} preemptions (peak {peak:.1}/s): requests are evicted and recomputed",
            ctx.phase_seconds("SATURATED")
        ),
        evidence,
        counter_evidence: vec![],
        recommendations: recs,
    }
}
