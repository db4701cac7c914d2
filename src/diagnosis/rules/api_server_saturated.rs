//! API_SERVER_SATURATED: the API server process (HTTP, tokenization, detokenization:
//! one Python thread in vLLM's front end) uses a whole core for a sustained time. Requests
//! then queue *in front of* the engine — invisible to `num_requests_waiting` — and first
//! tokens are late while the engine has capacity to spare.
use crate::diagnosis::{Context, Rule, Verdict, ev, flag_rec, rec};
use crate::vocab::{Condition, Hypothesis, Phase};

pub const RULE: Rule = Rule {
    id: Hypothesis::ApiServerSaturated,
    title: "API server saturated: requests queue before the engine",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let Some(max) = s.api_cpu_util_max_pct else {
        return Verdict::RuledOut(
            "no API server CPU on the pages (process_cpu_seconds_total)".into(),
        );
    };
    let sat = ctx.threshold("api_cpu_saturated_pct");
    let min_s = ctx.threshold("finding_min_s");
    if s.api_cpu_saturated_s < min_s {
        return Verdict::RuledOut(format!(
            "the API server used >= {sat:.0}% of a core for {:.0} s (< {min_s} s; peak {max:.0}%)",
            s.api_cpu_saturated_s
        ));
    }
    let ttft = ctx.episodes(Condition::TtftElevated);
    let engine_queue =
        ctx.phase_seconds(Phase::QueuePressure) + ctx.phase_seconds(Phase::Saturated);
    let mut score = 0.45 + 0.2 * (s.api_cpu_saturated_s / 60.0).min(1.0);
    if !ttft.is_empty() {
        score += 0.2;
    }
    let mut counter = Vec::new();
    if engine_queue > s.api_cpu_saturated_s {
        score -= 0.2;
        counter.push(format!(
            "the engine itself queued or saturated for {engine_queue:.0} s: the API server may be busy because the engine is, not the other way round"
        ));
    }
    let mut evidence = vec![
        ev(
            &format!("seconds with the API server >= {sat:.0}% of a core"),
            s.api_cpu_saturated_s,
        )
        .threshold(min_s),
        ev("api_cpu_util_pct (max)", max).threshold(sat),
    ];
    if let Some(avg) = s.api_cpu_util_avg_pct {
        evidence.push(ev("api_cpu_util_pct (avg)", avg));
    }
    if let Some(t) = s.ttft_p95_max_s {
        evidence.push(
            ev("ttft_p95_s (max)", t)
                .threshold(ctx.threshold("ttft_elevated_s"))
                .window(Context::window_of(&ttft)),
        );
    }
    evidence.push(ev(
        "requests_waiting in the engine (max)",
        s.waiting_max.unwrap_or(0.0),
    ));
    if let Some(g) = s.gpu_util_avg_pct {
        evidence.push(ev("gpu_util_pct (avg)", g));
    }
    let mut recs = Vec::new();
    let servers = (ctx.facts.engines.max(1) * 2).to_string();
    recs.extend(flag_rec(
        ctx,
        "--api-server-count",
        Some(servers),
        "each API server process has one Python thread for HTTP, tokenization and detokenization; more processes spread that work over more cores (vLLM's default is one per data-parallel engine)",
        "one more process and core each; Prometheus switches to multiprocess mode above one",
    ));
    recs.push(rec(
        "check the container's CPU limit (e.g. Kubernetes resources.limits.cpu) and give the API server whole cores",
        None,
        "a CPU-throttled container reads below 100 % of a core while requests starve",
        "CPU reserved for the server",
    ));
    Verdict::Found {
        sustained_s: Some(s.api_cpu_saturated_s),
        score,
        summary: format!(
            "the API server process used >= {sat:.0}% of a core for {:.0} s (peak {max:.0}%) with at most {:.0} request(s) waiting in the engine: requests queue in the front end (HTTP, tokenization) before vLLM's scheduler sees them",
            s.api_cpu_saturated_s,
            s.waiting_max.unwrap_or(0.0)
        ),
        evidence,
        counter_evidence: counter,
        recommendations: recs,
    }
}
