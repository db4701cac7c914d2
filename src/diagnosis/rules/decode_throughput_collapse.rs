//! DECODE_THROUGHPUT_COLLAPSE: generation tokens/s falls while the running batch stays
//! full — each step got slower (compute, throttling, interference), not emptier.
use crate::diagnosis::{Context, Rule, Verdict, ev, rec};
use crate::vocab::{Condition, EventName, Hypothesis};

pub const RULE: Rule = Rule {
    id: Hypothesis::DecodeThroughputCollapse,
    title: "Decode throughput collapsed with the batch still full",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let drops = ctx.events_named(EventName::DecodeThroughputDrop);
    if drops.is_empty() {
        return Verdict::RuledOut(
            "generation per running request never fell to half its rolling baseline (with the batch steady) for the minimum time"
                .into(),
        );
    }
    if s.stalled_s >= ctx.threshold("stall_min_s") && s.decode_drop_s < s.stalled_s {
        return Verdict::RuledOut("progress stopped entirely: STUCK_ENGINE".into());
    }
    if super::kv_exhausted(ctx) {
        return Verdict::RuledOut(
            "throughput fell while the KV cache ran out (preemption and recompute): KV_CACHE_THRASHING".into(),
        );
    }
    let first = drops
        .first()
        .map(|e| (e.value.unwrap_or(0.0), e.baseline.unwrap_or(0.0)));
    let (value, baseline) = first.unwrap_or((0.0, 0.0));
    let mut recs = vec![rec(
        "check GPU clocks, temperature and power (DCGM_FI_DEV_SM_CLOCK, *_VIOLATION, XID errors)",
        None,
        "steps slowed with the same batch: throttling or a faulty GPU is the usual cause",
        "none",
    )];
    recs.push(rec(
        "check for co-located processes on the GPU (MPS/MIG neighbours) and host CPU saturation",
        None,
        "interference slows every step without any change in vLLM's own load",
        "none",
    ));
    let mut counter = Vec::new();
    let mut score = 0.5
        + 0.2 * (1.0 - (value / baseline.max(1e-9)).clamp(0.0, 1.0))
        + 0.15 * (s.decode_drop_s / 60.0).min(1.0);
    if !ctx.condition_events(Condition::PrefillPressure).is_empty() {
        score *= 0.7;
        counter.push("prefill pressure at the same time: long prompts, not slower steps, may explain the drop".to_string());
    }
    if let Some(u) = s.gpu_util_avg_pct {
        counter.push(format!("GPU utilization averaged {u:.0}%"));
    }
    Verdict::Found {
        sustained_s: Some(s.decode_drop_s),
        score,
        summary: format!(
            "generation fell to {value:.0} tok/s from a baseline of {baseline:.0} tok/s while running stayed at {:.0}",
            drops
                .first()
                .and_then(|e| e.evidence.as_ref())
                .and_then(|v| v.get("requests_running"))
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0)
        ),
        evidence: vec![
            ev("generation_tokens_per_s", value)
                .baseline(baseline)
                .threshold(baseline * ctx.threshold("decode_drop_share"))
                .window(drops.first().map(|e| e.ts.clone())),
            ev("DECODE_THROUGHPUT_DROP events", drops.len() as f64),
            ev("seconds of sustained drop", s.decode_drop_s)
                .threshold(ctx.threshold("decode_drop_min_s")),
            ev("itl_p95_s (max)", s.itl_p95_max_s.unwrap_or(0.0))
                .baseline(s.itl_p95_median_s.unwrap_or(0.0)),
        ],
        counter_evidence: counter,
        recommendations: recs,
    }
}
