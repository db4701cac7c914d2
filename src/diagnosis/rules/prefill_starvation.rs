//! PREFILL_STARVATION: long-prompt surges fill the step's token budget with prefill
//! chunks; new requests wait behind them, so TTFT jumps while decode (ITL) keeps going.
//! Only with KV to spare: vLLM's scheduler admits a waiting request only when its KV
//! blocks can be allocated, so surges that come with the cache near full queue for
//! memory (the KV findings), and neither a per-prompt chunk cap nor a larger step
//! budget admits one more of them.
use crate::diagnosis::{Context, Rule, Verdict, ev, flag_rec};
use crate::vocab::{Condition, EventName, Hypothesis, Phase};

pub const RULE: Rule = Rule {
    id: Hypothesis::PrefillStarvation,
    title: "Prefill starvation: long prompts delay first tokens",
    check,
    needs_latency: true,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let periods = super::prefill_periods(ctx);
    if periods.is_empty() {
        return Verdict::RuledOut(
            "prefill never dominated the engine's tokens while TTFT spiked".into(),
        );
    }
    // Of the busy time, not of the recording: idle time around the load changes nothing.
    let saturated = ctx.busy_share(Phase::Saturated);
    if saturated > 0.2 {
        return Verdict::RuledOut(format!(
            "KV saturation, not prefill, dominates the load: SATURATED {:.0}% of the busy time",
            saturated * 100.0
        ));
    }
    let rising = ctx.threshold("kv_rising_pct");
    if let Some(kv) = s.prefill_kv_avg_pct.filter(|kv| *kv >= rising) {
        return Verdict::RuledOut(format!(
            "during the prefill surges KV usage averaged {kv:.0}% (>= {rising:.0}%): waiting requests could not get KV blocks, so the cache, not the step's token budget, held them back"
        ));
    }
    // The TTFT spikes of requests that waited during the surges, not those of other
    // incidents in the session. A TTFT observed at t with value v is a wait over
    // [t - v, t]: requests that queued in a surge may get their first token after it.
    let spikes: Vec<_> = ctx
        .events_named(EventName::TtftSpike)
        .into_iter()
        .filter(|e| {
            let (t, waited) = (e.t_rel_sec, e.value.unwrap_or(0.0));
            periods.iter().any(|(a, b)| t >= *a && t - waited <= *b)
        })
        .collect();
    let episodes = ctx.episodes(Condition::PrefillPressure);
    let score =
        0.5 + 0.1 * (periods.len() as f64).min(3.0) + 0.1 * (spikes.len() as f64 / 3.0).min(1.0);
    let itl = s.itl_p95_median_s.unwrap_or(0.0);
    let mut recs = Vec::new();
    // The current budget is not on /metrics; vLLM's serve default is 8192 on ≥ 70 GiB
    // GPUs (16384 on ≥ 160 GiB from 0.28) and 2048 below, so the proposal is at least
    // 16384 — a raise wherever the default is in force — and fits the longest prompts.
    let budget = s
        .prompt_len_p95_max
        .unwrap_or(0.0)
        .clamp(16384.0, 65536.0)
        .log2()
        .ceil()
        .exp2();
    recs.extend(flag_rec(
        ctx,
        "--long-prefill-token-threshold",
        // A quarter of the longest prompts (p95), at least 512; without the prompt-length
        // histogram a quarter of the proposed step budget: one long prompt then takes at
        // most a quarter of a step either way.
        Some(format!(
            "{:.0}",
            s.prompt_len_p95_max
                .map_or(budget / 4.0, |p| (p / 4.0).max(512.0))
        )),
        "caps how many tokens one long prompt may prefill per step, so short requests are scheduled alongside it",
        "the long prompt's own TTFT grows",
    ));
    // Not `--max-num-partial-prefills`: vLLM 0.26 refuses to start with any value but 1
    // and 0.27+ no longer has the flag (flag reference, shared/reference).
    recs.extend(flag_rec(
        ctx,
        "--max-num-batched-tokens",
        Some(format!("{budget:.0}")),
        "a larger step budget clears prefill surges faster (lower TTFT); the serve default is 2048 (A100, < 70 GiB), 8192 (≥ 70 GiB) or 16384 (≥ 160 GiB, 0.28+)",
        "each step takes longer, so inter-token latency rises for running requests",
    ));
    Verdict::Found {
        sustained_s: Some(s.prefill_pressure_s),
        score,
        summary: format!(
            "{} prefill-pressure period(s), {} TTFT spike(s) of requests that waited in them, while median ITL p95 stayed {itl:.3} s",
            periods.len(),
            spikes.len()
        ),
        evidence: vec![
            ev("PREFILL_PRESSURE starts", periods.len() as f64)
                .window(Context::window_of(&episodes)),
            ev(
                "ttft_p95_s (max during prefill pressure)",
                s.prefill_ttft_p95_max_s.unwrap_or(0.0),
            )
            .baseline(s.ttft_p95_median_s.unwrap_or(0.0)),
            ev("itl_p95_s (median)", itl),
            ev(
                "uncached prompt tokens/s (max during prefill pressure)",
                s.prefill_prompt_tps_max.unwrap_or(0.0),
            )
            .baseline(s.prompt_tokens_per_s_avg.unwrap_or(0.0)),
            ev(
                "kv_cache_usage_pct (average during prefill pressure)",
                s.prefill_kv_avg_pct.unwrap_or(0.0),
            )
            .threshold(rising),
        ],
        counter_evidence: vec![],
        recommendations: recs,
    }
}
