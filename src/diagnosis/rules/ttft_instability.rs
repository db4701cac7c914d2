//! TTFT_INSTABILITY: TTFT spikes with no change in engine load — the delay is outside
//! the scheduler (API server, tokenization, network), since queueing and prefill did not
//! change.
use crate::diagnosis::{Context, Rule, Verdict, ev, flag_rec, rec};
use crate::vocab::{Condition, EventName, Hypothesis, Phase};

pub const RULE: Rule = Rule {
    id: Hypothesis::TtftInstability,
    title: "TTFT spikes without a change in load",
    check,
    needs_latency: true,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let spikes = ctx.events_named(EventName::TtftSpike);
    if spikes.is_empty() {
        return Verdict::RuledOut("no TTFT spike against the rolling baseline".into());
    }
    let loaded = ctx.phase_share(Phase::Saturated) + ctx.phase_share(Phase::QueuePressure);
    if loaded > 0.1 {
        return Verdict::RuledOut(format!(
            "TTFT spikes come with load: {:.0}% of the time saturated or queueing",
            loaded * 100.0
        ));
    }
    let prefill = !ctx.condition_events(Condition::PrefillPressure).is_empty();
    if prefill {
        return Verdict::RuledOut(
            "TTFT spikes coincide with prefill pressure: PREFILL_STARVATION".into(),
        );
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
            "{} TTFT spike(s) up to {worst:.2} s (baseline {base:.3} s) with running, waiting and KV unchanged",
            spikes.len()
        ),
        evidence: vec![
            ev("ttft_p95_s (worst spike)", worst)
                .baseline(base)
                .window(Context::window_of(&spikes)),
            ev("TTFT_SPIKE events", spikes.len() as f64),
            ev(
                "first tokens behind the worst spike's p95",
                spikes
                    .iter()
                    .max_by(|a, b| a.value.unwrap_or(0.0).total_cmp(&b.value.unwrap_or(0.0)))
                    .and_then(|e| e.evidence.as_ref()?.get("first_tokens")?.as_f64())
                    .unwrap_or(f64::NAN),
            )
            .threshold(ctx.threshold("quantile_min_count")),
            ev("share of time saturated or queueing", loaded),
        ],
        counter_evidence: vec![],
        recommendations: recs,
    }
}
