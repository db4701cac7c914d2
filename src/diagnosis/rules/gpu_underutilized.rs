//! GPU_UNDERUTILIZED: little traffic and an empty queue — nothing is wrong with the
//! server; the GPU is simply not used much.
use crate::diagnosis::{Context, Rule, Verdict, ev, rec};
use crate::vocab::{Hypothesis, Phase};

pub const RULE: Rule = Rule {
    id: Hypothesis::GpuUnderutilized,
    title: "GPU underused: low traffic, nothing wrong with the server",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let idle = ctx.phase_share(Phase::Idle);
    let running = s.running_avg.unwrap_or(0.0);
    if s.waiting_max.unwrap_or(0.0) > 0.0 {
        return Verdict::RuledOut("requests waited at some point".into());
    }
    if idle < 0.5 && running >= 1.0 {
        return Verdict::RuledOut(format!(
            "busy {:.0}% of the time, {running:.1} running on average",
            (1.0 - idle) * 100.0
        ));
    }
    Verdict::Found {
        sustained_s: None,
        // Spare capacity is a cost note, not an incident.
        score: 0.12,
        summary: format!(
            "idle {:.0}% of the time, {running:.1} requests running on average, nothing queued",
            idle * 100.0
        ),
        evidence: vec![
            ev("share of time IDLE", idle),
            ev("requests_running (avg)", running),
        ],
        counter_evidence: vec![],
        recommendations: vec![rec(
            "consolidate: fewer replicas or a smaller GPU for this model",
            None,
            "the server has capacity to spare",
            "less headroom for traffic bursts",
        )],
    }
}
