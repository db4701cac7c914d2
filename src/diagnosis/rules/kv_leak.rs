//! KV_LEAK: KV usage stays above zero while nothing runs. vLLM counts only blocks held by
//! live requests (evictable prefix-cache blocks count as free), so an idle server must
//! read ~0 %.

use crate::diagnosis::{Context, Rule, Verdict, ev, rec};

/// KV usage (%) an idle server may show without suspicion.
const IDLE_KV_PCT: f64 = 2.0;

pub const RULE: Rule = Rule {
    id: "KV_LEAK",
    title: "KV blocks not freed: usage does not return to zero when idle",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    if s.idle_samples < 3 {
        return Verdict::RuledOut("the server was never idle long enough to check".into());
    }
    let idle_max = s.idle_kv_max_pct.unwrap_or(0.0);
    if idle_max < IDLE_KV_PCT {
        return Verdict::RuledOut(format!("KV usage returned to {idle_max:.1}% when idle"));
    }
    let idle_min = s.idle_kv_min_pct.unwrap_or(0.0);
    Verdict::Found {
        sustained_s: Some(ctx.phase_seconds("IDLE")),
        score: 0.65 + 0.3 * (idle_max / 20.0).min(1.0),
        summary: format!(
            "with nothing running, KV usage stayed between {idle_min:.1}% and {idle_max:.1}% ({} idle samples)",
            s.idle_samples
        ),
        evidence: vec![
            ev("kv_cache_usage_pct while IDLE (max)", idle_max).threshold(IDLE_KV_PCT),
            ev("kv_cache_usage_pct while IDLE (min)", idle_min),
            ev("idle samples", s.idle_samples as f64),
        ],
        counter_evidence: vec![],
        recommendations: vec![
            rec(
                "restart the engine during low traffic to reclaim the blocks, then upgrade vLLM",
                None,
                "leaked blocks shrink the usable cache until the server saturates and preempts",
                "a short outage",
            ),
            rec(
                "check KV connectors / offloading (LMCache, NIXL) and aborted-request handling",
                None,
                "blocks of aborted or transferred requests are the usual leak",
                "none",
            ),
        ],
    }
}
