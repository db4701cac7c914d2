//! ADMISSION_REJECTIONS: the API server turned requests away. From vLLM 0.32,
//! `--max-num-queued-reqs` / `--max-num-queued-tokens` bound the queue in the API server
//! (`AsyncLLM.check_admission`): a request over the bound gets HTTP 503 at once and never
//! reaches the engine, so nothing else on `/metrics` shows it — only
//! `vllm:admission_rejections_total`. Waiting then stays at the bound however far
//! arrivals exceed what the engine finishes, and a small bound keeps the queue too short
//! to read as saturation: the rejections are the overload.
use crate::diagnosis::{Context, Rule, Verdict, ev, rec};
use crate::vocab::Hypothesis;

pub const RULE: Rule = Rule {
    id: Hypothesis::AdmissionRejections,
    title: "Requests turned away: the queue limit rejected them (HTTP 503)",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let rejected = s.requests_rejected.unwrap_or(0.0);
    if !super::queue_bound_in_force(ctx) {
        // (vLLM creates the counter's series at the first rejection: a server that
        // rejected none and one older than 0.32 both show none.)
        return Verdict::RuledOut(
            "no request was rejected at admission (vllm:admission_rejections_total absent or flat)"
                .into(),
        );
    }
    let finished = s.requests_finished.unwrap_or(0.0);
    let share = rejected / (rejected + finished).max(1.0);
    // Every rejected client got an error: medium from the first few, high from ~1 in 8.
    let score = 0.45 + 0.4 * (share / 0.125).min(1.0);
    let window = match (&s.rejected_start, &s.rejected_end) {
        (Some(a), Some(b)) if a != b => Some(format!("{a} … {b}")),
        (Some(a), _) => Some(a.clone()),
        _ => None,
    };
    let waiting = s.waiting_max.unwrap_or(0.0);
    let running = s.running_max.unwrap_or(0.0);
    Verdict::Found {
        // Counted, not sampled: 100 clients turned away in 2 s is no flicker.
        sustained_s: None,
        score,
        summary: format!(
            "{rejected:.0} requests ({:.0}% of those that came) were rejected with HTTP 503 at the API server's queue limit, with up to {waiting:.0} waiting and {running:.0} running: arrivals exceeded what the engine finishes",
            share * 100.0
        ),
        evidence: vec![
            ev("requests rejected at admission (HTTP 503)", rejected).window(window),
            ev("share of requests rejected", share),
            ev("requests_waiting (max)", waiting),
            ev("requests_finished", finished),
        ],
        counter_evidence: vec![],
        recommendations: vec![
            rec(
                "scale out (more replicas / data-parallel engines) or route the excess elsewhere",
                None,
                "the queue limit only turns the overload into errors; capacity removes it",
                "more GPUs",
            ),
            rec(
                "make clients retry a 503 with backoff, on another replica where there is one",
                None,
                "a rejection costs the engine nothing; the request can still be served elsewhere",
                "none",
            ),
            rec(
                "raise --max-num-queued-reqs (or --max-num-queued-tokens) only if clients can wait longer for a first token",
                None,
                "a longer queue rejects fewer requests and makes each wait longer (TTFT)",
                "higher TTFT under overload",
            ),
        ],
    }
}
