//! TTFT_INSTABILITY: TTFT spikes with no change in engine load — the delay is outside
//! the scheduler (API server, tokenization, network), since queueing and prefill did not
//! change.
use crate::diagnosis::{Context, Rule, Verdict, ev, flag_rec, rec};
use crate::store::events::Event;
use crate::vocab::{EventName, Hypothesis, Phase};

pub const RULE: Rule = Rule {
    id: Hypothesis::TtftInstability,
    title: "TTFT spikes without a change in load",
    check,
    needs_latency: true,
    runs_last: false,
};

/// What explains a TTFT spike inside the engine, if anything: TTFT is the time a request
/// waited in the scheduler's queue plus its prefill, so a spike with requests waiting (or
/// a long mean queue time in its interval, or the KV cache saturated: nothing admitted),
/// with slower engine steps, or in a prefill-pressure period is load, not instability.
/// So is a spike whose interval was prefill-dominated on a server whose prefill surges
/// did spike TTFT (PREFILL_PRESSURE held): a surge shorter than the debounce is still one
/// of them. Not on a server without such surges: after a front-end stall the held-back
/// requests all reach the engine at once, and that prefill is the stall's consequence.
fn load_at(ctx: &Context, spike: &Event, prefill: &[(f64, f64)]) -> Option<&'static str> {
    let get = |k: &str| spike.evidence.as_ref()?.get(k)?.as_f64();
    // A TTFT observed at t with value v is a wait over [t - v, t].
    let (t, waited) = (spike.t_rel_sec, spike.value.unwrap_or(0.0));
    if prefill.iter().any(|(a, b)| t >= *a && t - waited <= *b) {
        return Some("prefill pressure");
    }
    if !prefill.is_empty()
        && get("prefill_token_share").is_some_and(|s| s >= ctx.threshold("prefill_token_share"))
    {
        return Some("prefill surges (PREFILL_PRESSURE)");
    }
    if get("requests_waiting").is_some_and(|w| w >= ctx.threshold("queue_min_waiting"))
        || get("queue_time_mean_s").is_some_and(|q| q >= ctx.threshold("queue_delay_s"))
    {
        return Some("requests queued");
    }
    if get("kv_cache_usage_pct").is_some_and(|kv| kv >= ctx.threshold("kv_saturated_pct")) {
        return Some("KV cache saturated");
    }
    // Slower engine steps (throttling, a neighbour): the inter-token latency rose by the
    // factor a decode drop needs (DECODE_THROUGHPUT_DROP, 02_timeline.sql), and by about
    // as much as the TTFT (within that factor again): a prefill takes its steps, so
    // slower steps scale the TTFT by their slowdown. Not a TTFT 100x up with steps 3x
    // slower: after a front-end stall the held-back prompts reach the engine at once and
    // lengthen its steps, but they do not make their own first token 100x later.
    let drop = ctx.threshold("decode_drop_share");
    if let (Some(itl), Some(itl_base), Some(ttft), Some(ttft_base)) = (
        get("itl_p95_s"),
        get("itl_p95_baseline_s"),
        spike.value,
        spike.baseline,
    ) && itl * drop >= itl_base
        && ttft * itl_base * drop <= itl * ttft_base
    {
        return Some("slower engine steps (ITL)");
    }
    None
}

fn check(ctx: &Context) -> Verdict {
    let all = ctx.events_named(EventName::TtftSpike);
    if all.is_empty() {
        return Verdict::RuledOut("no TTFT spike against the rolling baseline".into());
    }
    // Judged spike by spike: each spike's own load in the engine. A spike without any is
    // still put down to load when the server was saturated or queueing for more than a
    // tenth of its busy time: a spike's interval can miss the load behind it (a long
    // prompt's prefill spans intervals; a surge shorter than the debounce). Of the busy
    // time, never of the recording: idle time recorded around the load changes nothing.
    let prefill = super::prefill_periods(ctx);
    let loaded = ctx.busy_share(Phase::Saturated) + ctx.busy_share(Phase::QueuePressure);
    let mut explained: Vec<String> = Vec::new();
    let spikes: Vec<&Event> = all
        .iter()
        .copied()
        .filter(|e| match load_at(ctx, e, &prefill) {
            Some(load) => {
                explained.push(load.to_string());
                false
            }
            None if loaded > 0.1 => {
                explained.push(format!(
                    "saturated or queueing {:.0}% of the busy time",
                    loaded * 100.0
                ));
                false
            }
            None => true,
        })
        .collect();
    if spikes.is_empty() {
        explained.sort_unstable();
        explained.dedup();
        return Verdict::RuledOut(format!(
            "every TTFT spike ({}) came with load in the engine: {}",
            all.len(),
            explained.join(", ")
        ));
    }
    let worst = spikes.iter().filter_map(|e| e.value).fold(0.0, f64::max);
    let base = spikes.first().and_then(|e| e.baseline).unwrap_or(0.0);
    let mut recs = vec![rec(
        "check the API server process: CPU saturation, GC pauses, tokenizer time",
        None,
        "TTFT counts from front-end arrival; the engine's queue and prefill did not change, so the delay is before the engine",
        "none",
    )];
    recs.extend(flag_rec(
        ctx,
        "--api-server-count",
        Some("2".into()),
        "more API server processes spread tokenization and detokenization",
        "Prometheus multiprocess mode: _created series and python_* metrics disappear",
    ));
    Verdict::Found {
        sustained_s: None,
        // One spike is low; repeated spikes make the instability.
        score: 0.2 + 0.17 * (spikes.len() as f64).min(3.0),
        summary: format!(
            "{} TTFT spike(s) up to {worst:.2} s (baseline {base:.3} s) with nothing queued, KV to spare and no prefill pressure",
            spikes.len()
        ),
        evidence: vec![
            ev("ttft_p95_s (worst spike)", worst)
                .baseline(base)
                .window(Context::window_of(&spikes)),
            ev("TTFT spikes with nothing queued", spikes.len() as f64),
            ev(
                "first tokens behind the worst spike's p95",
                spikes
                    .iter()
                    .max_by(|a, b| a.value.unwrap_or(0.0).total_cmp(&b.value.unwrap_or(0.0)))
                    .and_then(|e| e.evidence.as_ref()?.get("first_tokens")?.as_f64())
                    .unwrap_or(f64::NAN),
            )
            .threshold(ctx.threshold("quantile_min_count")),
            ev(
                "TTFT spikes with load in the engine",
                (all.len() - spikes.len()) as f64,
            ),
        ],
        counter_evidence: match all.len() - spikes.len() {
            0 => vec![],
            n => vec![format!(
                "{n} other TTFT spike(s) came with load in the engine (requests queued, KV saturated, prefill surges or slower steps)"
            )],
        },
        recommendations: recs,
    }
}
