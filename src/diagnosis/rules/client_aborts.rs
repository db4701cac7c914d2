//! CLIENT_ABORTS: clients gave up. A client that disconnects makes vLLM abort its request,
//! and vLLM 0.26 counts such requests in no engine metric (`request_success_total{
//! finished_reason="abort"}` stays 0) — they simply vanish from running and waiting. The
//! API server's HTTP counter still answered them (2xx), and requests leave the engine
//! only by finishing or by being aborted: the adapter's books (`requests_abandoned_per_s`,
//! `adapter::LeftBooks`) count them. What the on-call engineer needs is how many, when,
//! and what first tokens and the queue looked like then.
use crate::diagnosis::{Context, Rule, Verdict, ev, flag_rec, rec};
use crate::vocab::{EventName, Hypothesis};

pub const RULE: Rule = Rule {
    id: Hypothesis::ClientAborts,
    title: "Clients gave up: requests aborted before they finished",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let window = ctx.threshold("abort_window_s");
    // A dying engine fails every request in flight: their streams end (2xx) and they
    // leave without finishing in the server's last seconds before it went away for good
    // or restarted. Those are SERVER_DOWN's and SERVER_RESTART's loss, not clients'.
    let reach = window + s.interval_median_s.unwrap_or(0.0);
    let gone_at: Vec<f64> = super::restart_gaps(ctx)
        .into_iter()
        .chain(super::server_down(ctx).and_then(|d| d.gap))
        .map(|g| g.t_rel_sec)
        .collect();
    let (lost, surges): (Vec<_>, Vec<_>) = ctx
        .events_named(EventName::ClientAbortSurge)
        .into_iter()
        .partition(|e| {
            gone_at
                .iter()
                .any(|g| (0.0..=reach).contains(&(g - e.t_rel_sec)))
        });
    let total = s.requests_abandoned.unwrap_or(0.0);
    let min = ctx.threshold("abort_surge_count");
    if surges.is_empty() {
        return Verdict::RuledOut(if lost.is_empty() {
            format!(
                "no surge of requests leaving without finishing ({total:.0} in all, never ≥ {min:.0} within {window:.0} s)"
            )
        } else {
            format!(
                "the requests that left without finishing did so in the last {reach:.0} s before the server went away: lost with it (SERVER_DOWN / SERVER_RESTART), not abandoned by clients"
            )
        });
    }
    let peak = s.abandoned_window_max.unwrap_or(0.0);
    let at = |e: &crate::store::events::Event, k: &str| {
        e.evidence
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(serde_json::Value::as_f64)
    };
    // What clients saw at the worst surge.
    let worst = surges
        .iter()
        .copied()
        .max_by(|a, b| a.value.unwrap_or(0.0).total_cmp(&b.value.unwrap_or(0.0)));
    let (ttft, queue_wait, waiting) = worst
        .map(|e| {
            (
                at(e, "ttft_p95_s"),
                at(e, "queue_time_mean_s"),
                at(e, "requests_waiting"),
            )
        })
        .unwrap_or_default();
    let finished = s.requests_finished.unwrap_or(0.0);
    let share = total / (total + finished).max(1.0);
    let score = 0.4 + 0.3 * (share / 0.3).min(1.0) + 0.1 * (surges.len() as f64 / 3.0).min(1.0);
    let mut evidence = vec![
        ev("requests that left without finishing", total),
        ev("share of requests that left without finishing", share),
        ev("most within one window", peak)
            .threshold(min)
            .window(Context::window_of(&surges)),
        ev("CLIENT_ABORT_SURGE events", surges.len() as f64),
    ];
    let when = worst.map(|e| e.ts.clone());
    if let Some(w) = waiting {
        evidence.push(ev("requests_waiting at the worst surge", w).window(when.clone()));
    }
    if let Some(t) = ttft {
        evidence.push(ev("ttft_p95_s at the worst surge", t).window(when.clone()));
    }
    if let Some(q) = queue_wait {
        evidence.push(ev("queue_time_mean_s at the worst surge", q).window(when));
    }
    let seen = match (ttft, waiting) {
        (Some(t), Some(w)) => format!(" while TTFT p95 was {t:.2} s with {w:.0} waiting"),
        (None, Some(w)) => format!(" with {w:.0} waiting"),
        _ => String::new(),
    };
    let mut recs = vec![rec(
        "check client and gateway timeouts against the TTFT and queue time at the surge",
        None,
        "clients that time out before their first token waste the prefill done for them and retry into the same queue",
        "none",
    )];
    // A fast rejection instead of a long wait: vLLM's own queue bound where the server's
    // release has it (flag table), else upstream.
    let why = "a rejected request costs the engine nothing; an abandoned one cost it prefill and KV blocks";
    let cost = "rejected requests under overload";
    // (Not where a bound is in force already: it rejected requests.)
    recs.extend((!super::queue_bound_in_force(ctx)).then(|| {
        let bound = super::queue_bound(ctx).map(|n| n.to_string());
        let sized = format!("{why} ({})", super::QUEUE_BOUND_SIZE);
        flag_rec(ctx, "--max-num-queued-reqs", bound, &sized, cost).unwrap_or_else(|| {
            rec(
                "shed load upstream (a gateway queue or rate limit): this vLLM release has no queue bound",
                None,
                why,
                cost,
            )
        })
    }));
    Verdict::Found {
        sustained_s: None,
        score,
        summary: format!(
            "{total:.0} requests ({:.0}% of those that left) were abandoned before finishing, up to {peak:.0} within {:.0} s{seen}: clients disconnected and vLLM aborted them",
            share * 100.0,
            window
        ),
        evidence,
        counter_evidence: std::iter::once(
            "a load generator or batch job stopping also cancels its in-flight requests".into(),
        )
        .chain((!lost.is_empty()).then(|| {
            format!(
                "{} surge(s) in the last seconds before the server went away are its loss, not counted here (the total includes them)",
                lost.len()
            )
        }))
        .collect(),
        recommendations: recs,
    }
}
