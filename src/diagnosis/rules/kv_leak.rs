//! KV_LEAK: KV usage stays above zero while nothing runs. vLLM counts only blocks held by
//! live requests (evictable prefix-cache blocks count as free), so an idle engine must
//! read ~0 %. Judged per engine: each data-parallel engine has its own cache and gauge,
//! and one that leaks while another serves is never idle as a whole server.
use crate::diagnosis::{Context, Rule, Verdict, ev, rec};
use crate::vocab::Hypothesis;

pub const RULE: Rule = Rule {
    id: Hypothesis::KvLeak,
    title: "KV blocks not freed: usage does not return to zero when idle",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let limit = ctx.threshold("idle_kv_pct");
    if s.idle_samples < 2 {
        return Verdict::RuledOut("no engine was ever idle long enough to check".into());
    }
    let median = s.idle_kv_median_pct.unwrap_or(0.0);
    if median < limit {
        return Verdict::RuledOut(format!(
            "KV usage returned to {median:.1}% (median) when idle"
        ));
    }
    let idle_min = s.idle_kv_min_pct.unwrap_or(0.0);
    let idle_max = s.idle_kv_max_pct.unwrap_or(0.0);
    Verdict::Found {
        sustained_s: Some(s.idle_s),
        score: 0.65 + 0.3 * (median / 20.0).min(1.0),
        summary: format!(
            "with nothing running or waiting on the engine, its KV usage stayed at {median:.1}% (median; {idle_min:.1}–{idle_max:.1}%) over {:.0} s",
            s.idle_s
        ),
        evidence: vec![
            ev("kv_cache_usage_pct while idle (median)", median).threshold(limit),
            ev("kv_cache_usage_pct while idle (min)", idle_min),
            ev("kv_cache_usage_pct while idle (max)", idle_max),
            ev("idle seconds", s.idle_s),
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
