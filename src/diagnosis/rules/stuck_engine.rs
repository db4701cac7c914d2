//! STUCK_ENGINE: requests are running and waiting but nothing is generated — the engine
//! core hangs while /metrics (served by the API server) still answers.

use crate::diagnosis::{Context, Rule, Verdict, ev, rec};

/// Seconds without generation, with work present, that make an engine stuck.
pub(crate) const MIN_STALL_S: f64 = 10.0;

pub const RULE: Rule = Rule {
    id: "STUCK_ENGINE",
    title: "Engine stuck: work present, no tokens generated",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    if s.stalled_s < MIN_STALL_S {
        return Verdict::RuledOut(format!(
            "generation never stopped with work present for ≥ {MIN_STALL_S} s"
        ));
    }
    Verdict::Found {
        score: 0.92,
        summary: format!(
            "for {:.0} s requests were running and waiting (up to {:.0}) while almost no tokens were generated",
            s.stalled_s,
            s.waiting_max.unwrap_or(0.0)
        ),
        evidence: vec![
            ev(
                "seconds with running > 0, waiting > 0, generation ≈ 0",
                s.stalled_s,
            )
            .threshold(MIN_STALL_S),
            ev("requests_waiting (max)", s.waiting_max.unwrap_or(0.0)),
        ],
        counter_evidence: vec![],
        recommendations: vec![
            rec(
                "restart the engine now; collect engine-core logs and a stack dump (py-spy) first",
                None,
                "a hung engine core does not recover by itself while the API server keeps accepting requests",
                "in-flight requests are lost",
            ),
            rec(
                "make liveness checks test generation progress (rate of vllm:generation_tokens_total with running > 0), not only /health",
                None,
                "/health and /metrics kept answering during the hang",
                "none",
            ),
        ],
    }
}
