//! QUEUE_SATURATION: requests arrive faster than the engine finishes them; the waiting
//! queue grows while the KV cache still has room (the batch limit, not memory, binds).

use crate::diagnosis::{Context, Rule, Verdict, ev, rec};

pub const RULE: Rule = Rule {
    id: "QUEUE_SATURATION",
    title: "Arrivals above service rate: the scheduler queue grows",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let share = ctx.phase_share("QUEUE_PRESSURE");
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
    if !ctx.events_named("DECODE_THROUGHPUT_DROP").is_empty() {
        score *= 0.6;
        counter.push("decode throughput dropped first: the queue may be a consequence".to_string());
    }
    if ctx
        .events
        .iter()
        .any(|e| e.condition.as_deref() == Some("PREFILL_PRESSURE"))
    {
        score *= 0.6;
        counter.push(
            "the queue builds during prefill surges: PREFILL_STARVATION may explain it".to_string(),
        );
    }
    let episodes = ctx.episodes("QUEUE_DELAY");
    let running_max = s.running_max.unwrap_or(0.0);
    let kv_p95 = s.kv_p95_pct.unwrap_or(0.0).max(1.0);
    let mut recs = Vec::new();
    if kv_p95 < 70.0 && running_max > 0.0 {
        let seqs = (running_max * (0.85 * 100.0 / kv_p95).min(2.0)).floor();
        recs.push(rec(
            "--max-num-seqs",
            Some(format!("{seqs:.0}")),
            &format!("running plateaued at {running_max:.0} while KV p95 was only {kv_p95:.0}%: the sequence limit, not memory, is the bottleneck"),
            "more concurrent sequences raise per-token latency (ITL) a little",
        ));
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
    recs.push(rec(
        "--max-num-queued-reqs (vLLM ≥ 0.32)",
        Some(format!("{:.0}", (running_max * 2.0).max(8.0))),
        "bound the queue so clients get a fast rejection to retry elsewhere instead of an ever-growing TTFT",
        "rejected requests under overload",
    ));
    Verdict::Found {
        sustained_s: Some(ctx.phase_seconds("QUEUE_PRESSURE")),
        score,
        summary: format!(
            "queue pressure {:.0}% of the time, up to {waiting:.0} requests waiting with running at {running_max:.0} and KV at most {kv_max:.0}%",
            share * 100.0
        ),
        evidence: vec![
            ev(
                "time QUEUE_PRESSURE (s)",
                ctx.phase_seconds("QUEUE_PRESSURE"),
            )
            .window(Context::window_of(&episodes)),
            ev("requests_waiting (max)", waiting).threshold(ctx.threshold("queue_min_waiting")),
            ev("requests_running (max)", running_max),
            ev("kv_cache_usage_pct (max)", kv_max),
        ],
        counter_evidence: counter,
        recommendations: recs,
    }
}
