//! STUCK_ENGINE: an engine had running or waiting requests and moved none of its progress
//! counters (ENGINE_STALLED). vLLM V1's API server keeps answering `/metrics` while the
//! engine core hangs, with every engine series frozen at its last value — running and
//! waiting then read whatever they read at the hang, so the rule does not look at them.
use crate::diagnosis::{Context, Rule, Verdict, ev, rec};
use crate::vocab::{Condition, EventName, Hypothesis};

pub const RULE: Rule = Rule {
    id: Hypothesis::StuckEngine,
    title: "Engine stuck: work present, no progress",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let min = ctx.threshold("stall_min_s");
    let episodes = ctx.episodes(Condition::EngineStalled);
    if s.stalled_s < min || episodes.is_empty() {
        return Verdict::RuledOut(format!(
            "progress counters never stood still for ≥ {min} s with work present"
        ));
    }
    let longest = episodes
        .iter()
        .filter_map(|e| e.duration_sec)
        .fold(0.0, f64::max);
    // Hung (every gauge frozen too: the engine core publishes nothing) or alive but
    // scheduling nothing (waiting or KV still move: e.g. every block held by a leak).
    let kv = s.stall_kv_max_pct.unwrap_or(0.0);
    // Nothing running yet the cache (near) full: KV counts only live requests' blocks, so
    // the blocks are held by something else (a leak) and nothing can be admitted — the
    // engine is blocked, not hung, even if the gauges stand still.
    let held_without_requests =
        s.stall_running_max.unwrap_or(0.0) == 0.0 && kv >= ctx.threshold("kv_rising_pct");
    let hung = s.hung_s >= min && !held_without_requests;
    let high_from = ctx.threshold("stall_high_s");
    // A hung engine serves nobody: from `stall_high_s` it outranks every load finding
    // (0.96, up to 0.99 after a minute); shorter stalls are medium at most. An engine
    // that is alive but blocked is medium: its cause (a full cache) ranks above it.
    let score = if !hung {
        0.6
    } else if s.stalled_s >= high_from {
        0.96 + 0.03 * ((s.stalled_s - high_from) / 50.0).min(1.0)
    } else {
        0.45 + 0.2 * (s.stalled_s / high_from)
    };
    let running = s.stall_running_max.unwrap_or(0.0);
    let waiting = s.stall_waiting_max.unwrap_or(0.0);
    let window = Context::window_of(&episodes);
    let mut evidence = vec![
        ev(
            "seconds with work present and no progress (ENGINE_STALLED)",
            s.stalled_s,
        )
        .threshold(min)
        .window(window.clone()),
        ev("longest stall (s)", longest),
        ev("ENGINE_STALLED episodes", episodes.len() as f64),
        ev("requests_running frozen at", running).window(window.clone()),
        ev("requests_waiting frozen at", waiting).window(window),
    ];
    if let Some(kv) = s.stall_kv_max_pct {
        evidence.push(ev("kv_cache_usage_pct frozen at", kv));
    }
    let mut counter = Vec::new();
    if !hung {
        counter.push(format!(
            "the engine is alive (its queue and KV gauges kept changing) but scheduled nothing, with KV at up to {kv:.0}%: something other than running requests holds the cache (see KV_LEAK / KV_CACHE_THRASHING)"
        ));
    }
    evidence.push(ev("seconds with every gauge frozen as well (hung)", s.hung_s).threshold(min));
    if !ctx.events_named(EventName::CounterReset).is_empty() {
        counter.push("the server restarted during the session (SERVER_RESTART)".to_string());
    }
    Verdict::Found {
        sustained_s: Some(s.stalled_s),
        score,
        summary: format!(
            "for {:.0} s the engine had work ({running:.0} running, {waiting:.0} waiting, as frozen) and moved no counter: prompt and generation tokens, finished requests and engine steps all stood still",
            s.stalled_s
        ),
        evidence,
        counter_evidence: counter,
        recommendations: vec![
            rec(
                "restart the engine now; collect engine-core logs and a stack dump (py-spy dump --pid <EngineCore pid>) first",
                None,
                "a hung engine core does not recover by itself while the API server keeps accepting requests",
                "in-flight requests are lost",
            ),
            rec(
                "make liveness checks test generation progress (rate of vllm:generation_tokens_total with running > 0), not only /health",
                None,
                "/metrics kept answering with frozen values during the hang",
                "none",
            ),
        ],
    }
}
