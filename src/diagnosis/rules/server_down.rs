//! SERVER_DOWN: the server stopped answering and had not come back when the recording
//! ended. vLLM's API server answers `/metrics` in milliseconds even under load, so
//! seconds without an answer mean the process exited (a dead engine core takes the API
//! server down with it: `EngineDeadError`), was killed, or is restarting — or, when
//! scrapes time out rather than being refused, that its event loop is blocked. What the
//! server held at its last answer is what was lost.
use crate::diagnosis::{Context, Evidence, Rule, Verdict, ev, rec};
use crate::source::scrape::FailureKind;
use crate::vocab::Hypothesis;

pub const RULE: Rule = Rule {
    id: Hypothesis::ServerDown,
    title: "Server down: stopped answering and did not come back",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let min = ctx.threshold("server_down_min_s");
    let Some(super::Down {
        outage: down,
        kind,
        gap,
    }) = super::server_down(ctx)
    else {
        return Verdict::RuledOut(match &ctx.server.down_at_end {
            Some(d) if d.seconds >= min => {
                "only its last scrape failed, and not refused: one slow answer is no outage".into()
            }
            _ => format!(
                "answered its scrapes until the end of the recording (or came back within {min} s)"
            ),
        });
    };
    let reason = gap.and_then(|e| e.reason.clone());
    let held_then = gap.map(super::HeldBefore::of);
    let running = held_then.as_ref().and_then(|h| h.running).unwrap_or(0.0);
    let waiting = held_then.as_ref().and_then(|h| h.waiting).unwrap_or(0.0);
    let kv_then = held_then.as_ref().and_then(|h| h.kv_max_pct);
    let held_work = held_then.as_ref().is_some_and(|h| h.requests() > 0.0);
    // Gone with requests in flight: they failed, and whoever sends more gets errors until
    // it is back — above every load finding, a little more the longer it has been down.
    // Gone while idle may be a planned shutdown: medium.
    let score = if held_work {
        0.9 + 0.08 * (down.seconds / 60.0).min(1.0)
    } else {
        0.55
    };
    let how = match kind {
        FailureKind::Refused => {
            "its port refused connections: the process exited (a crash, an OOM kill, a shutdown) or is restarting"
        }
        FailureKind::Timeout => {
            "its scrapes timed out: the process took connections but did not answer (its API server's event loop blocked, or the host overloaded)"
        }
        FailureKind::HttpStatus => "it answered with HTTP errors instead of metrics",
        FailureKind::NoSample => {
            "Prometheus holds no sample for it: its target was down or its series went stale"
        }
        FailureKind::NoFreshSample => {
            "Prometheus holds no fresh sample for it: its scrapes stopped without a staleness marker (the server gone, or Prometheus itself down, or a remote-write source)"
        }
        FailureKind::Other => "its scrapes failed",
    };
    let held = if held_work {
        format!(
            "at its last answer it held {running:.0} running and {waiting:.0} waiting requests{}: they were lost",
            kv_then
                .map(|kv| format!(" with KV at {kv:.0}%"))
                .unwrap_or_default()
        )
    } else {
        "it was idle at its last answer (a planned shutdown, or a crash while idle)".to_string()
    };
    let mut evidence = vec![
        ev(
            "seconds without an answer at the end of the recording",
            down.seconds,
        )
        .threshold(min)
        .window(Some(format!("{} … {}", down.last_seen, ctx.server.end))),
        ev("requests_running at its last answer", running),
        ev("requests_waiting at its last answer", waiting),
    ];
    if let Some(kv) = kv_then {
        evidence.push(ev("kv_cache_usage_pct at its last answer", kv));
    }
    if let Some(r) = &reason {
        evidence.push(Evidence {
            observed: serde_json::json!(r),
            ..ev("first failed scrape", 0.0)
        });
    }
    let look = match kind {
        FailureKind::Timeout => rec(
            "see what the API server process is doing (py-spy dump --pid <API server pid>) and restart it if it does not recover",
            None,
            "a blocked event loop answers neither /metrics nor requests",
            "in-flight requests are lost on restart",
        ),
        _ => rec(
            &format!(
                "read the server's log up to {} (EngineDeadError, CUDA errors, an OOM kill in `dmesg`, a liveness-probe kill) and bring it back",
                down.last_seen
            ),
            None,
            "the cause of a crash is in the last lines the process wrote",
            "none",
        ),
    };
    let mut recommendations = vec![look];
    if held_work {
        recommendations.push(rec(
            "run vLLM under a supervisor that restarts it (Kubernetes, systemd Restart=on-failure) and route around a replica that stops answering",
            None,
            "requests sent while it is down fail",
            "a crash loop restarts again and again: alert on restarts",
        ));
    }
    Verdict::Found {
        sustained_s: Some(down.seconds),
        score,
        summary: format!(
            "stopped answering after {} and was still down {:.0} s later, when the recording ended: {how}; {held}",
            down.last_seen, down.seconds
        ),
        evidence,
        counter_evidence: vec![],
        recommendations,
    }
}
