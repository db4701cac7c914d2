//! SERVER_RESTART: counters went back to zero — the vLLM process restarted. A restart
//! drops every request in flight: what the server held at its last answer before the
//! restart (the SCRAPE_GAP's evidence) is what its clients lost.
use crate::diagnosis::{Context, Rule, Verdict, ev, rec};
use crate::vocab::{EventName, Hypothesis};

pub const RULE: Rule = Rule {
    id: Hypothesis::ServerRestart,
    title: "Server restarted during the session",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let resets = ctx.events_named(EventName::CounterReset);
    if resets.is_empty() {
        return Verdict::RuledOut("no counter decreased".into());
    }
    let gaps = ctx.events_named(EventName::ScrapeGap);
    let downtime: f64 = gaps.iter().filter_map(|e| e.value).sum();
    let before = super::restart_gaps(ctx);
    let held: Vec<super::HeldBefore> = before.iter().map(|g| super::HeldBefore::of(g)).collect();
    let running: f64 = held.iter().filter_map(|h| h.running).sum();
    let waiting: f64 = held.iter().filter_map(|h| h.waiting).sum();
    let lost: f64 = held.iter().map(super::HeldBefore::requests).sum();
    let mut evidence = vec![
        ev("COUNTER_RESET events", resets.len() as f64).window(Context::window_of(&resets)),
        ev("seconds without metrics", downtime).window(Context::window_of(&gaps)),
    ];
    if !before.is_empty() {
        evidence.push(
            ev(
                "requests_running at the last answer before a restart",
                running,
            )
            .window(Context::window_of(&before)),
        );
        evidence.push(ev(
            "requests_waiting at the last answer before a restart",
            waiting,
        ));
    }
    let kv = held
        .iter()
        .filter_map(|h| h.kv_max_pct)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    if let Some(kv) = kv {
        evidence.push(ev(
            "kv_cache_usage_pct at the last answer before a restart",
            kv,
        ));
    }
    let lost_text = if lost > 0.0 {
        format!(
            "; at its last answer before it went down it held {running:.0} running and {waiting:.0} waiting requests{}: they were lost",
            kv.map(|kv| format!(" with KV at {kv:.0}%"))
                .unwrap_or_default()
        )
    } else {
        String::new()
    };
    // Restarted again and again: a crash loop (each restart reloads the weights and
    // fails whatever it held).
    let crash_loop = resets.len() >= 2;
    Verdict::Found {
        sustained_s: None,
        // A restart with requests in flight failed them: above the load findings it
        // interrupted, as a server gone for good is; a crash loop above that.
        score: match (crash_loop, lost > 0.0) {
            (true, _) => 0.93,
            (false, true) => 0.9,
            (false, false) => 0.75,
        },
        summary: format!(
            "{} restart(s){}; /metrics unavailable for {downtime:.0} s{lost_text}",
            resets.len(),
            if crash_loop { ": a crash loop" } else { "" }
        ),
        evidence,
        counter_evidence: vec![],
        recommendations: vec![rec(
            "read the server's logs around the restart (OOM killer, CUDA errors, liveness-probe kills)",
            None,
            "an unplanned restart drops every in-flight request",
            "none",
        )],
    }
}
