//! QUEUE_SATURATION: requests arrive faster than the engine finishes them and the waiting
//! queue grows. The finding says why, because the fixes differ:
//! - sequence limit: running pinned at its peak (`--max-num-seqs`) while the KV cache has
//!   room — the only case where raising `--max-num-seqs` helps;
//! - KV capacity: the cache ran out (sustained preemption: KV_CACHE_THRASHING) or sits
//!   near full — more sequences would only preempt;
//! - prefill / token budget: the queue builds during prefill surges;
//! - otherwise the replica is simply too small for the arrival rate.
use crate::analysis::summary::QueueWindow;
use crate::diagnosis::{Context, Rule, Verdict, ev, flag_rec, rec};
use crate::vocab::{Hypothesis, Phase};

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
    // With the KV cache exhausted (KV_CACHE_THRASHING) a queue with the cache near full
    // is its consequence; what is left to judge is the queueing with KV to spare, which
    // is another incident (often under another workload).
    let thrashing = super::kv_exhausted(ctx);
    let whole = QueueWindow {
        start: s.queue_start.clone(),
        end: s.queue_end.clone(),
        seconds: ctx.phase_seconds(Phase::QueuePressure),
        waiting_max: s.waiting_max,
        running_max: s.queue_running_max.or(s.running_max),
        running_at_peak_share: s.queue_running_at_peak_share,
        running_at_peak_s: s.queue_running_at_peak_s,
        kv_p95_pct: s.queue_kv_p95_pct,
        kv_max_pct: s.queue_kv_max_pct.or(s.kv_max_pct),
        prefill_s: s.queue_prefill_s,
        decode_drop_s: s.queue_decode_drop_s,
    };
    let q = match (thrashing, &s.queue_kv_to_spare) {
        (false, _) => whole,
        (true, Some(q)) => q.clone(),
        (true, None) => QueueWindow::default(),
    };
    let observed: f64 = s.phases.values().map(|p| p.seconds).sum();
    let share = match thrashing {
        false => ctx.phase_share(Phase::QueuePressure),
        true if observed > 0.0 => q.seconds / observed,
        true => 0.0,
    };
    let waiting = q.waiting_max.unwrap_or(0.0);
    // Judged on the queue's own seconds, never on its share of the recording: the same
    // minute of queueing is the same incident in a 5-minute and in a 1-hour recording.
    let min_s = ctx.threshold("finding_min_s");
    if q.seconds < min_s || waiting < 5.0 {
        return Verdict::RuledOut(if thrashing {
            format!(
                "the queue came with the KV cache near full or exhausted: KV_CACHE_THRASHING explains it (queueing with KV to spare for {:.0} s, at most {waiting:.0} waiting)",
                q.seconds
            )
        } else {
            format!(
                "queue pressure for {:.0} s (a finding needs {min_s:.0} s), at most {waiting:.0} waiting",
                q.seconds
            )
        });
    }
    if s.stalled_s >= ctx.threshold("stall_min_s") {
        return Verdict::RuledOut(
            "the engine stopped making progress: STUCK_ENGINE explains the queue".into(),
        );
    }
    // Grows with the queue's duration up to queue_sustained_s, and with its depth.
    let sustained = ctx.threshold("queue_sustained_s");
    let mut score = 0.3 + 0.4 * (q.seconds / sustained).min(1.0) + 0.1 * (waiting / 100.0).min(1.0);
    let mut counter = Vec::new();
    // A decode-throughput drop or prefill surges explain the part of the queueing they
    // came with, not a queue at another time of the session: the score gives up to 40 %
    // for each one's share of the queueing; prefill is the cause when it is most of it.
    let share_of_queue = |s: f64| match q.seconds > 0.0 {
        true => (s / q.seconds).clamp(0.0, 1.0),
        false => 0.0,
    };
    let explained = [
        (
            q.decode_drop_s,
            "decode throughput dropped: that part may be its consequence",
        ),
        (
            q.prefill_s,
            "prefill surges: PREFILL_STARVATION may explain that part",
        ),
    ];
    for (seconds, what) in explained {
        let share = share_of_queue(seconds);
        if share > 0.0 {
            score *= 1.0 - 0.4 * share;
            counter.push(format!(
                "{:.0}% of the queueing ({seconds:.0} s) came with {what}",
                share * 100.0
            ));
        }
    }
    let prefill = share_of_queue(q.prefill_s) >= 0.5;
    let running = q.running_max.unwrap_or(0.0);
    let pinned = q.running_at_peak_share.unwrap_or(0.0);
    let pinned_share = ctx.threshold("queue_pinned_share");
    // Pinned for most of the queueing, or for a sustained time of it: queueing from
    // other causes around it (prefill surges, another workload) dilutes the share but
    // does not undo the limit that bound then.
    let pinned_s = q.running_at_peak_s;
    let queue_kv = q.kv_max_pct.unwrap_or(0.0);
    let rising = ctx.threshold("kv_rising_pct");
    let window = match (&q.start, &q.end) {
        (Some(a), Some(b)) => Some(format!("{a} … {b}")),
        _ => None,
    };
    let cause = if queue_kv >= rising {
        "KV capacity: the cache was near full while requests waited"
    } else if (pinned >= pinned_share || pinned_s >= min_s) && running > 0.0 {
        "sequence limit: running stayed pinned at its peak while the KV cache had room"
    } else if prefill {
        "prefill: the queue grew during prefill surges (token budget)"
    } else {
        "arrival rate above what the replica finishes"
    };
    let mut recs = Vec::new();
    if cause.starts_with("sequence limit") && thrashing {
        // The advice for the exhaustion is fewer sequences; one --max-num-seqs cannot
        // serve both.
        recs.push(rec(
            "serve the two workloads from separate replicas, each with its own --max-num-seqs",
            None,
            &format!(
                "this queue ran out of sequence slots ({running:.0} running) with KV at most {queue_kv:.0}%, while at other times the KV cache ran out (KV_CACHE_THRASHING) and needs fewer sequences: one --max-num-seqs cannot fit both"
            ),
            "more replicas, and a router that tells the workloads apart",
        ));
    } else if cause.starts_with("sequence limit") {
        // Per engine: the queue window's running and KV are the busiest engine's.
        let per_engine = running;
        let kv_per_seq = q.kv_p95_pct.unwrap_or(queue_kv).max(1.0) / per_engine.max(1.0);
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
                "running stayed at {per_engine:.0} per engine for {:.0}% of the queueing time ({pinned_s:.0} s) while KV was at most {queue_kv:.0}% ({:.2}% per sequence): the sequence limit, not memory, binds; {sizing}",
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
            .zip(Some(ctx.busy_seconds()))
            .filter(|(_, d)| *d > 0.0)
            .map(|(f, d)| format!("service rate was {:.1} req/s while busy", f / d)),
        "arrivals exceed what one replica finishes; the backlog only grows",
        "more GPUs",
    ));
    // A bound already in force rejected requests (ADMISSION_REJECTIONS): not advice.
    if super::queue_bound_in_force(ctx) {
        counter.push(format!(
            "the queue limit in force turned {:.0} requests away with HTTP 503 (ADMISSION_REJECTIONS)",
            s.requests_rejected.unwrap_or(0.0)
        ));
    } else {
        recs.extend(flag_rec(
            ctx,
            "--max-num-queued-reqs",
            super::queue_bound(ctx).map(|n| n.to_string()),
            &format!(
                "bound the queue so clients get a fast rejection (HTTP 503) to retry elsewhere instead of an ever-growing TTFT ({})",
                super::QUEUE_BOUND_SIZE
            ),
            "rejected requests under overload",
        ));
    }
    let apart = if thrashing {
        " with KV to spare (apart from the KV exhaustion)"
    } else {
        ""
    };
    Verdict::Found {
        sustained_s: Some(q.seconds),
        score,
        summary: format!(
            "queue pressure for {:.0} s ({:.0}% of the time){apart}, up to {waiting:.0} requests waiting with running at {running:.0} and KV at most {queue_kv:.0}%; cause: {cause}",
            q.seconds,
            share * 100.0
        ),
        evidence: vec![
            ev(
                if thrashing {
                    "time QUEUE_PRESSURE with KV to spare (s)"
                } else {
                    "time QUEUE_PRESSURE (s)"
                },
                q.seconds,
            )
            .threshold(sustained)
            .window(window.clone()),
            ev("requests_waiting (max)", waiting).threshold(ctx.threshold("queue_min_waiting")),
            ev("requests_running while queueing (max)", running).window(window.clone()),
            ev(
                "share of queueing time with running within 10% of its peak",
                pinned,
            )
            .threshold(pinned_share),
            ev(
                "time queueing with running within 10% of its peak (s)",
                pinned_s,
            )
            .threshold(min_s),
            ev("kv_cache_usage_pct while queueing (max)", queue_kv)
                .threshold(rising)
                .window(window),
        ],
        counter_evidence: counter,
        recommendations: recs,
    }
}
