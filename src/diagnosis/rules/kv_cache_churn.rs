//! KV_CACHE_CHURN: with vLLM's residency metrics on (`--kv-cache-metrics`), blocks are
//! evicted within seconds of their allocation while the KV cache is exhausted (preempting
//! or saturated): the cache is too small for the working set. The prefix-reuse distance
//! (reuse gaps against block lifetime) says whether a larger cache would also turn
//! prefix-cache misses into hits.
//!
//! vLLM's caveats, stated with every finding: only `--kv-cache-metrics-sample` of blocks
//! are tracked (default 1 %), and 0.26–0.33 record every reallocated sampled block as an
//! eviction, cached or not (`block_pool.py` calls the collector before checking for a
//! hash), so short lifetimes include a request's scratch blocks.
use crate::diagnosis::{Context, Rule, Verdict, ev, flag_rec};
use crate::vocab::{Hypothesis, Phase};

pub const RULE: Rule = Rule {
    id: Hypothesis::KvCacheChurn,
    title: "KV cache churn: blocks evicted within seconds while the cache is exhausted",
    check,
    needs_latency: false,
    runs_last: false,
};

fn check(ctx: &Context) -> Verdict {
    let s = ctx.server;
    let Some(res) = &s.residency else {
        return Verdict::RuledOut(
            "no KV residency histograms (vLLM --kv-cache-metrics is off)".into(),
        );
    };
    let n = res.lifetime_s.count;
    let min_n = ctx.threshold("kv_churn_min_evictions");
    if n < min_n {
        return Verdict::RuledOut(format!(
            "only {n:.0} sampled block evictions (< {min_n:.0}): too few to judge residency"
        ));
    }
    let exhausted = s.exhausted_start.is_some();
    let life = s
        .kv_block_lifetime_p50_exhausted_s
        .or(res.lifetime_s.p50)
        .unwrap_or(f64::INFINITY);
    let churn_s = ctx.threshold("kv_churn_lifetime_s");
    if !exhausted {
        return Verdict::RuledOut(format!(
            "blocks were evicted (median lifetime {:.1} s) but the KV cache never ran out: reusing free blocks is how the prefix cache works",
            res.lifetime_s.p50.unwrap_or(0.0)
        ));
    }
    if life > churn_s {
        return Verdict::RuledOut(format!(
            "while the KV cache was exhausted, blocks lived a median {life:.1} s (> {churn_s} s)"
        ));
    }
    let short = res.short_lifetime_share.unwrap_or(0.0);
    let idle = s
        .kv_block_idle_p50_exhausted_s
        .or(res.idle_before_evict_s.p50);
    let mut score = 0.45 + 0.25 * short;
    if idle.is_some_and(|i| i <= churn_s) {
        score += 0.1;
    }
    let window = match (&s.exhausted_start, &s.exhausted_end) {
        (Some(a), Some(b)) => Some(format!("{a} … {b}")),
        _ => None,
    };
    let mut evidence = vec![
        ev("kv_block_lifetime_p50_s while exhausted", life)
            .threshold(churn_s)
            .window(window),
        ev("sampled block evictions", n),
    ];
    if let (Some(share), Some(bound)) = (res.short_lifetime_share, res.short_lifetime_bound_s) {
        evidence.push(ev(
            &format!("share of evictions with lifetime <= {bound} s"),
            share,
        ));
    }
    if let Some(p) = res.lifetime_s.p95 {
        evidence.push(ev("kv_block_lifetime_s p95 (session)", p));
    }
    if let Some(i) = idle {
        evidence.push(ev("kv_block_idle_before_evict_s p50", i));
    }
    if let Some(g) = res.reuse_gap_s.p50 {
        evidence.push(ev("kv_block_reuse_gap_s p50", g));
    }
    let rate = ctx.facts.kv_cache_metrics_sample;
    let mut caveats = vec![
        match rate {
            Some(r) => format!(
                "vLLM tracks a sample of blocks (--kv-cache-metrics-sample {r}): ~{:.0} blocks evicted for each one counted",
                1.0 / r
            ),
            None => "vLLM tracks a sample of blocks (--kv-cache-metrics-sample; the rate is not on /metrics, default 0.01): counts are of sampled blocks".into(),
        },
        "vLLM 0.26-0.33 record every reallocated sampled block as evicted, cached or not, so short lifetimes include requests' uncached blocks".into(),
    ];
    // Prefix-reuse distance: gaps observed as long as blocks live mean reuses are cut
    // off by eviction — a longer life (larger cache, or a CPU tier) turns misses into hits.
    let beyond = res.reuse_gap_beyond_lifetime_share;
    let mut recs = Vec::new();
    let reuse_text = match (beyond, res.reuse_gap_s.count) {
        (Some(b), c) if c >= min_n && b >= 0.25 => {
            evidence.push(ev("share of reuse gaps >= the median lifetime", b));
            recs.extend(flag_rec(
                ctx,
                "--kv-offloading-size",
                Some("32".into()),
                &format!(
                    "{:.0}% of prefix reuses come as late as blocks live: evicted prefix blocks kept in a CPU tier (GiB) come back as hits instead of being recomputed",
                    b * 100.0
                ),
                "host memory for the tier and PCIe transfers on a hit",
            ));
            format!(
                "; {:.0}% of reuse gaps are as long as a block's life, so a larger cache would turn prefix misses into hits",
                b * 100.0
            )
        }
        (Some(b), c) if c >= min_n => {
            evidence.push(ev("share of reuse gaps >= the median lifetime", b));
            caveats.push(format!(
                "only {:.0}% of reuse gaps reach the median lifetime: reuses come soon after allocation, so a larger cache mainly avoids preemption, not prefix misses",
                b * 100.0
            ));
            String::new()
        }
        _ => String::new(),
    };
    recs.extend(super::max_num_seqs_rec(
        ctx,
        "blocks are not taken back within seconds",
        "lower peak concurrency: more requests wait in the queue",
    ));
    recs.extend(super::kv_memory_recs(ctx));
    Verdict::Found {
        sustained_s: Some(
            s.preempting_s
                .max(s.kv_wait_s)
                .max(ctx.phase_seconds(Phase::Saturated)),
        ),
        score,
        summary: format!(
            "while the KV cache was exhausted, sampled blocks were evicted a median {life:.1} s after allocation ({:.0}% within {} s): the cache is too small for the working set{reuse_text}",
            short * 100.0,
            res.short_lifetime_bound_s.unwrap_or(churn_s)
        ),
        evidence,
        counter_evidence: caveats,
        recommendations: recs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::summary::{Quantiles, Residency, ServerSummary};
    use crate::diagnosis::ServerFacts;

    fn q(p50: f64, count: f64) -> Quantiles {
        Quantiles {
            p50: Some(p50),
            p95: Some(p50 * 3.0),
            p99: None,
            count,
            clamped_upper: false,
        }
    }

    fn verdict(beyond: f64, gaps: f64, rate: Option<f64>) -> Verdict {
        let s = ServerSummary {
            server: "s".into(),
            exhausted_start: Some("2026-11-30T10:00:00.000Z".into()),
            exhausted_end: Some("2026-11-30T10:01:00.000Z".into()),
            preempting_s: 60.0,
            kv_block_lifetime_p50_exhausted_s: Some(2.5),
            residency: Some(Residency {
                lifetime_s: q(4.0, 200.0),
                idle_before_evict_s: q(1.0, 200.0),
                reuse_gap_s: q(1.5, gaps),
                short_lifetime_share: Some(0.8),
                short_lifetime_bound_s: Some(10.0),
                reuse_gap_beyond_lifetime_share: Some(beyond),
            }),
            ..Default::default()
        };
        let thresholds = crate::diagnosis::test_context::default_thresholds();
        let facts = ServerFacts {
            kv_cache_metrics_sample: rate,
            ..Default::default()
        };
        check(&crate::diagnosis::test_context::of(&s, facts, &thresholds))
    }

    /// Reuses as late as blocks live: a larger cache (or a CPU tier) turns misses into
    /// hits, and the CPU tier is advised; reuses soon after allocation: it is not.
    #[test]
    fn reuse_distance_decides_the_cpu_tier() {
        let Verdict::Found {
            summary,
            recommendations,
            counter_evidence,
            score,
            ..
        } = verdict(0.4, 60.0, Some(0.05))
        else {
            panic!("churn not found");
        };
        assert!(summary.contains("40% of reuse gaps"), "{summary}");
        assert!(summary.contains("median 2.5 s"), "{summary}");
        assert!(
            recommendations
                .iter()
                .any(|r| r.action == "--kv-offloading-size"),
            "{recommendations:?}"
        );
        assert!(counter_evidence[0].contains("--kv-cache-metrics-sample 0.05"));
        assert!(counter_evidence[0].contains("~20 blocks"));
        // 0.45 + 0.25 × 0.8 + 0.1 (idle 1 s <= 10 s)
        assert!((score - 0.75).abs() < 1e-9, "{score}");
        let Verdict::Found {
            recommendations,
            counter_evidence,
            ..
        } = verdict(0.1, 60.0, None)
        else {
            panic!("churn not found");
        };
        assert!(
            !recommendations
                .iter()
                .any(|r| r.action == "--kv-offloading-size")
        );
        assert!(
            counter_evidence
                .iter()
                .any(|c| c.contains("mainly avoids preemption")),
            "{counter_evidence:?}"
        );
        assert!(counter_evidence[0].contains("not on /metrics"));
    }
}
