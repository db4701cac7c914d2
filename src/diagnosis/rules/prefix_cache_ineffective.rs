//! PREFIX_CACHE_INEFFECTIVE: prefix caching is on and many prompt tokens are looked up,
//! yet almost none hit — prompts differ at the start. Unique prompts are normal for many
//! workloads, so this is information only unless prefill held first tokens back
//! (PREFILL_PRESSURE sustained for `finding_min_s`): hits relieve prefill, not queueing.
use crate::diagnosis::{Context, Rule, Verdict, ev, rec};
use crate::vocab::Hypothesis;

pub const RULE: Rule = Rule {
    id: Hypothesis::PrefixCacheIneffective,
    title: "Prefix cache on, but prompts do not share prefixes",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    if ctx.facts.prefix_caching == Some(false) {
        return Verdict::RuledOut("prefix caching is disabled".into());
    }
    let Some(hit) = s.prefix_cache_hit_rate_pct else {
        return Verdict::RuledOut("no prefix-cache counters".into());
    };
    let min_tps = ctx.threshold("prefix_min_prompt_tokens_per_s");
    let max_hit = ctx.threshold("prefix_hit_rate_low_pct");
    // Averaged over the busy time: idle minutes recorded around the load change nothing.
    let busy = ctx.busy_seconds();
    let tps = match (s.prompt_tokens, busy > 0.0) {
        (Some(tokens), true) => tokens / busy,
        _ => s.prompt_tokens_per_s_avg.unwrap_or(0.0),
    };
    if tps < min_tps {
        return Verdict::RuledOut(format!(
            "only {tps:.0} prompt tokens/s looked up (while busy)"
        ));
    }
    if hit >= max_hit {
        return Verdict::RuledOut(format!("hit rate {hit:.1}%"));
    }
    // Cache hits only relieve prefill: the finding matters when prefill was the
    // bottleneck for a while (PREFILL_PRESSURE), not when TTFT grew from queueing.
    let suffers = s.prefill_pressure_s >= ctx.threshold("finding_min_s");
    let mut counter = Vec::new();
    if !suffers {
        counter.push(format!(
            "prefill was never the bottleneck for long (PREFILL_PRESSURE {:.0} s): information only",
            s.prefill_pressure_s
        ));
    }
    Verdict::Found {
        sustained_s: None,
        score: if suffers {
            0.4 + 0.2 * (1.0 - hit / max_hit)
        } else {
            0.15
        },
        summary: format!(
            "{tps:.0} prompt tokens/s looked up in the prefix cache while busy, {hit:.1}% hit"
        ),
        evidence: vec![
            ev("prefix_cache_hit_rate_pct", hit).threshold(max_hit),
            ev("prompt_tokens_per_s (avg while busy)", tps).threshold(min_tps),
        ],
        counter_evidence: counter,
        recommendations: vec![
            rec(
                "put shared content first in prompts (system prompt, tools, documents) and anything per-request (timestamps, user ids) after it",
                None,
                "the cache matches whole blocks from the start of the prompt; one differing token early makes every later block miss",
                "none",
            ),
            rec(
                "route requests with the same prefix to the same replica (prefix-aware routing)",
                None,
                "each replica caches only what it has seen",
                "less even load balancing",
            ),
        ],
    }
}
