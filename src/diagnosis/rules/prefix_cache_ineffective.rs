//! PREFIX_CACHE_INEFFECTIVE: prefix caching is on and many prompt tokens are looked up,
//! yet almost none hit — prompts differ at the start.

use crate::diagnosis::{Context, Rule, Verdict, ev, rec};

/// Prompt tokens/s from which lookups are "high" (a small chat load is ~1000 tok/s).
const MIN_PROMPT_TPS: f64 = 500.0;
/// Hit rate (%) below which the cache is ineffective.
const MAX_HIT_RATE_PCT: f64 = 10.0;

pub const RULE: Rule = Rule {
    id: "PREFIX_CACHE_INEFFECTIVE",
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
    let tps = s.prompt_tokens_per_s_avg.unwrap_or(0.0);
    if tps < MIN_PROMPT_TPS {
        return Verdict::RuledOut(format!("only {tps:.0} prompt tokens/s looked up"));
    }
    if hit >= MAX_HIT_RATE_PCT {
        return Verdict::RuledOut(format!("hit rate {hit:.1}%"));
    }
    Verdict::Found {
        sustained_s: None,
        score: 0.4 + 0.2 * (1.0 - hit / MAX_HIT_RATE_PCT),
        summary: format!("{tps:.0} prompt tokens/s looked up in the prefix cache, {hit:.1}% hit"),
        evidence: vec![
            ev("prefix_cache_hit_rate_pct", hit).threshold(MAX_HIT_RATE_PCT),
            ev("prompt_tokens_per_s (avg)", tps).threshold(MIN_PROMPT_TPS),
        ],
        counter_evidence: vec![],
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
