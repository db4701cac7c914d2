//! QUEUE_SATURATION: requests arrive faster than the engine finishes them and the waiting
//! queue grows. The finding says why, because the fixes differ:
//! - sequence limit: running pinned at its peak (`--max-num-seqs`) while the KV cache has
//!   room — the only case where raising `--max-num-seqs` helps;
//! - KV capacity: the cache ran out (sustained preemption: KV_CACHE_THRASHING) or sits
//!   near full — more sequences would only preempt;
//! - prefill / token budget: the queue builds during prefill surges;
//! - otherwise the replica is simply too small for the arrival rate.
use crate::diagnosis::{Context, Rule, Verdict, ev, flag_rec, rec};
use crate::vocab::{Condition, EventName, Hypothesis, Phase};

pub const RULE: Rule = Rule {
    id: Hypothesis::QueueSaturation,
    title: "Arrivals above service rate: the scheduler queue grows",
    check,
    needs_latency: false,
    runs_last: false,
};

/// Smallest token budget of any `vllm serve` default (A100 / < 70 GiB GPUs: 2048): a
/// `--max-num-seqs` above it needs `--max-num-batched-tokens` raised too, or vLLM refuses
/// to start (`max_num_batched_tokens must be ≥ max_num_seqs`).
const SMALLEST_DEFAULT_TOKEN_BUDGET: f64 = 2048.0;

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let share = ctx.phase_share(Phase::QueuePressure);
    let waiting = s.waiting_max.unwrap_or(0.0);
    let kv_max = s.kv_max_pct.unwrap_or(0.0);
    if share < 0.1 || waiting < 5.0 {
        return Verdict::RuledOut(format!(
            "queue pressure {:.0}% of the time, at most {waiting:.0} waiting",
            share * 100.0
        ));
    }
    if s.stalled_s >= ctx.threshold("stall_min_s") {
        return Verdict::RuledOut(
            "the engine stopped making progress: STUCK_ENGINE explains the queue".into(),
        );
    }
    if super::kv_exhausted(ctx) {
        return Verdict::RuledOut(
            "the queue follows sustained preemption: the KV cache ran out (KV_CACHE_THRASHING)"
                .into(),
        );
    }
    let mut score = 0.45 + 0.35 * (share / 0.5).min(1.0) + 0.1 * (waiting / 100.0).min(1.0);
    let mut counter = Vec::new();
    if !ctx.events_named(EventName::DecodeThroughputDrop).is_empty() {
        score *= 0.6;
        counter.push("decode throughput dropped first: the queue may be a consequence".to_string());
    }
    let prefill = ctx
        .events
        .iter()
        .any(|e| e.condition_name() == Some(Condition::PrefillPressure));
    if prefill {
        score *= 0.6;
        counter.push(
            "the queue builds during prefill surges: PREFILL_STARVATION may explain it".to_string(),
        );
    }
    let running = s.queue_running_max.or(s.running_max).unwrap_or(0.0);
    let pinned = s.queue_running_at_peak_share.unwrap_or(0.0);
    let pinned_share = ctx.threshold("queue_pinned_share");
    let queue_kv = s.queue_kv_max_pct.unwrap_or(kv_max);
    let rising = ctx.threshold("kv_rising_pct");
    let window = match (&s.queue_start, &s.queue_end) {
        (Some(a), Some(b)) => Some(format!("{a} … {b}")),
        _ => None,
    };
    let cause = if queue_kv >= rising {
        "KV capacity: the cache was near full while requests waited"
    } else if pinned >= pinned_share && running > 0.0 {
        "sequence limit: running stayed pinned at its peak while the KV cache had room"
    } else if prefill {
        "prefill: the queue grew during prefill surges (token budget)"
    } else {
        "arrival rate above what the replica finishes"
    };
    let mut recs = Vec::new();
    if cause.starts_with("sequence limit") {
        // Per engine: running is summed over data-parallel engines, KV averaged.
        let engines = s.engines.max(1) as f64;
        let per_engine = running / engines;
        let kv_per_seq = s.queue_kv_p95_pct.unwrap_or(queue_kv).max(1.0) / per_engine.max(1.0);
        let fill = (90.0 / kv_per_seq).floor();
        // At most double in one step: more sequences also mean longer steps.
        let seqs = fill.min(2.0 * per_engine).max(per_engine + 1.0);
        let sizing = if seqs < fill {
            format!(
                "{fill:.0} would fill about 90% of the cache; {seqs:.0} doubles the limit in one step"
            )
        } else {
            format!("{seqs:.0} sequences fill about 90% of the cache")
        };
        recs.extend(flag_rec(
            ctx,
            "--max-num-seqs",
            Some(format!("{seqs:.0}")),
            &format!(
                "running stayed at {per_engine:.0} per engine for {:.0}% of the queueing time while KV was at most {queue_kv:.0}% ({:.2}% per sequence): the sequence limit, not memory, binds; {sizing}",
                pinned * 100.0,
                kv_per_seq
            ),
            "more concurrent sequences raise per-token latency (ITL) a little",
        ));
        if seqs > SMALLEST_DEFAULT_TOKEN_BUDGET {
            recs.extend(flag_rec(
                ctx,
                "--max-num-batched-tokens",
                Some(format!("{seqs:.0}")),
                "vLLM refuses to start when max_num_batched_tokens < max_num_seqs",
                "larger steps",
            ));
        }
    }
    recs.push(rec(
        "scale out (more replicas / data-parallel engines)",
        s.requests_finished
            .zip(Some(s.duration_s))
            .filter(|(_, d)| *d > 0.0)
            .map(|(f, d)| format!("service rate was {:.1} req/s", f / d)),
        "arrivals exceed what one replica finishes; the backlog only grows",
        "more GPUs",
    ));
    recs.extend(flag_rec(
        ctx,
        "--max-num-queued-reqs",
        Some(format!("{:.0}", (running * 2.0).max(8.0))),
        "bound the queue so clients get a fast rejection (HTTP 503) to retry elsewhere instead of an ever-growing TTFT",
        "rejected requests under overload",
    ));
    Verdict::Found {
        sustained_s: Some(ctx.phase_seconds(Phase::QueuePressure)),
        score,
        summary: format!(
            "queue pressure {:.0}% of the time, up to {waiting:.0} requests waiting with running at {running:.0} and KV at most {queue_kv:.0}%; cause: {cause}",
            share * 100.0
        ),
        evidence: vec![
            ev(
                "time QUEUE_PRESSURE (s)",
                ctx.phase_seconds(Phase::QueuePressure),
            )
            .window(window.clone()),
            ev("requests_waiting (max)", waiting).threshold(ctx.threshold("queue_min_waiting")),
            ev("requests_running while queueing (max)", running).window(window.clone()),
            ev(
                "share of queueing time with running within 10% of its peak",
                pinned,
            )
            .threshold(pinned_share),
            ev("kv_cache_usage_pct while queueing (max)", queue_kv)
                .threshold(rising)
                .window(window),
        ],
        counter_evidence: counter,
        recommendations: recs,
    }
}
