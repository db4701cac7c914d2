//! One file per doctor hypothesis; [`RULES`] lists them once. A test fails when a file
//! here is not registered.

mod admission_rejections;
mod api_server_saturated;
mod client_aborts;
mod decode_throughput_collapse;
mod gpu_underutilized;
mod healthy;
mod kv_cache_churn;
mod kv_cache_thrashing;
mod kv_capacity_undersized;
mod kv_leak;
mod prefill_starvation;
mod prefix_cache_ineffective;
mod queue_saturation;
mod server_down;
mod server_restart;
mod stuck_engine;
mod telemetry_gaps;
mod ttft_instability;

use super::Rule;
use crate::source::scrape::FailureKind;

/// Every hypothesis, in documentation order (ranking is by score).
pub const RULES: &[Rule] = &[
    kv_cache_thrashing::RULE,
    kv_cache_churn::RULE,
    kv_capacity_undersized::RULE,
    queue_saturation::RULE,
    prefill_starvation::RULE,
    decode_throughput_collapse::RULE,
    ttft_instability::RULE,
    prefix_cache_ineffective::RULE,
    kv_leak::RULE,
    client_aborts::RULE,
    admission_rejections::RULE,
    stuck_engine::RULE,
    gpu_underutilized::RULE,
    api_server_saturated::RULE,
    server_down::RULE,
    server_restart::RULE,
    telemetry_gaps::RULE,
    healthy::RULE,
];

/// A server gone at the end of the recording (SERVER_DOWN).
pub(crate) struct Down<'a> {
    pub outage: &'a crate::analysis::summary::Outage,
    /// How it first failed to answer, and the SCRAPE_GAP that starts the outage (its
    /// reason; its evidence is what the server held at its last answer).
    pub kind: FailureKind,
    pub gap: Option<&'a crate::store::events::Event>,
}

/// The server gone at the end of the recording for at least `server_down_min_s`
/// (SERVER_DOWN), for every rule that reads it. A refused connection (nothing listens)
/// or Prometheus without a sample (its target down) proves it from one scrape; a scrape
/// that timed out or failed otherwise can be a slow answer, so those need two in a row
/// (down for 1.5 intervals).
pub(crate) fn server_down<'a>(ctx: &super::Context<'a>) -> Option<Down<'a>> {
    server_down_of(ctx.server, &ctx.events, ctx.thresholds)
}

/// [`server_down`] from a server's summary and events (the data-quality factor reads it
/// before the rules run).
pub(crate) fn server_down_of<'a>(
    server: &'a crate::analysis::summary::ServerSummary,
    events: &[&'a crate::store::events::Event],
    thresholds: &std::collections::BTreeMap<String, f64>,
) -> Option<Down<'a>> {
    let outage = server
        .down_at_end
        .as_ref()
        .filter(|d| d.seconds >= super::threshold_in(thresholds, "server_down_min_s"))?;
    let gap = events
        .iter()
        .copied()
        .rfind(|e| e.event_name() == Some(crate::vocab::EventName::ScrapeGap));
    let kind = gap
        .and_then(|e| e.reason.as_deref())
        .map_or(FailureKind::Other, FailureKind::of_reason);
    let proven = matches!(kind, FailureKind::Refused | FailureKind::NoSample)
        || outage.seconds >= 1.5 * server.interval_median_s.unwrap_or(0.0);
    proven.then_some(Down { outage, kind, gap })
}

/// The SCRAPE_GAP of each restart (COUNTER_RESET): the last gap that began before it.
pub(crate) fn restart_gaps<'c>(ctx: &'c super::Context) -> Vec<&'c crate::store::events::Event> {
    let gaps = ctx.events_named(crate::vocab::EventName::ScrapeGap);
    ctx.events_named(crate::vocab::EventName::CounterReset)
        .iter()
        .filter_map(|r| {
            gaps.iter()
                .copied()
                .filter(|g| g.t_rel_sec <= r.t_rel_sec)
                .max_by(|a, b| a.t_rel_sec.total_cmp(&b.t_rel_sec))
        })
        .collect()
}

/// What a server held at its last good sample before a SCRAPE_GAP (the event's evidence,
/// 14_data_quality_events.sql): running and waiting requests and KV usage.
pub(crate) struct HeldBefore {
    pub running: Option<f64>,
    pub waiting: Option<f64>,
    pub kv_max_pct: Option<f64>,
}

impl HeldBefore {
    pub(crate) fn of(gap: &crate::store::events::Event) -> Self {
        let get = |k: &str| {
            gap.evidence
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(serde_json::Value::as_f64)
        };
        Self {
            running: get("requests_running"),
            waiting: get("requests_waiting"),
            kv_max_pct: get("kv_cache_usage_pct"),
        }
    }
    /// Requests in flight: running or waiting.
    pub(crate) fn requests(&self) -> f64 {
        self.running.unwrap_or(0.0) + self.waiting.unwrap_or(0.0)
    }
}

/// The PREFILL_PRESSURE periods, in seconds since the session start: from a start to its
/// end, or to the end of the data.
pub(crate) fn prefill_periods(ctx: &super::Context) -> Vec<(f64, f64)> {
    let mut periods: Vec<(f64, f64)> = Vec::new();
    for e in ctx.condition_events(crate::vocab::Condition::PrefillPressure) {
        match e.state.as_deref() {
            Some("start") => periods.push((e.t_rel_sec, f64::INFINITY)),
            Some("end") => {
                if let Some(open) = periods.last_mut().filter(|p| p.1.is_infinite()) {
                    open.1 = e.t_rel_sec;
                }
            }
            _ => {}
        }
    }
    periods
}

/// Whether a queue bound (`--max-num-queued-reqs` / `--max-num-queued-tokens`) was in
/// force: the API server rejected requests at admission (ADMISSION_REJECTIONS).
pub(crate) fn queue_bound_in_force(ctx: &super::Context) -> bool {
    ctx.server.requests_rejected.is_some_and(|r| r >= 1.0)
}

/// What [`queue_bound`]'s value is, said with each recommendation of it.
pub(crate) const QUEUE_BOUND_SIZE: &str = "the bound counts running and waiting requests of all engines together: twice what the server ran at once";

/// A `--max-num-queued-reqs` value for this server. vLLM counts every unfinished request
/// of the API server against the bound, running and waiting alike, over all its engines
/// (`AsyncLLM.check_admission`, 0.29+: `get_num_unfinished_requests() + n >
/// max_num_queued_reqs`), so a bound of twice the busiest engine's batch on a 4-engine
/// server would cap the running requests at half what the engines take. The bound is the
/// requests the whole server ran at once — the larger of its observed peak and its
/// engine count times the busiest engine's peak while requests waited — plus as many
/// waiting: an admitted request then waits about one batch turnover; at least 8. `None`
/// when nothing is known to have run.
pub(crate) fn queue_bound(ctx: &super::Context) -> Option<u64> {
    let s = ctx.server;
    let per_engine = s.queue_running_max.or(s.running_max).unwrap_or(0.0);
    let engines = s.engines.max(1) as f64;
    let running = s.running_max.unwrap_or(0.0).max(engines * per_engine);
    (running >= 1.0).then(|| (2.0 * running).max(8.0).round() as u64)
}

/// Whether the KV cache ran out in a sustained way. vLLM V1 preempts only when a running
/// request cannot get a block, so recurring preemptions (at least
/// `preemption_burst_count`, with preemption in the trailing window for at least
/// `finding_min_s`) mean exhaustion whatever the sampled KV % reads: V1 measures usage
/// after the victim's blocks are freed, so a thrashing server often reads 85–92 %.
pub(crate) fn kv_exhausted(ctx: &super::Context) -> bool {
    let s = ctx.server;
    s.preemptions.unwrap_or(0.0) >= ctx.threshold("preemption_burst_count")
        && s.preempting_s >= ctx.threshold("finding_min_s")
}

/// Advice for a KV cache too small for the load: more memory for blocks
/// (`--gpu-memory-utilization`, never lower), fp8 blocks, more tensor parallelism — each
/// only where it can act on this server.
pub(crate) fn kv_memory_recs(ctx: &super::Context) -> Vec<super::Recommendation> {
    use super::{flag_rec, rec};
    let mut recs = Vec::new();
    match (&ctx.facts.kv_size_fixed_by, ctx.facts.gpu_memory_utilization) {
        // The block count does not follow --gpu-memory-utilization on this server.
        (Some(fixed), _) => recs.push(rec(
            &format!("raise {fixed} (it sets the KV size; --gpu-memory-utilization does not apply)"),
            None,
            "more KV blocks let long contexts fit without preemption",
            "more GPU memory for the cache; check it fits at start-up",
        )),
        // Only raising helps, and 0.95 leaves little for activations.
        (None, Some(g)) if g >= 0.95 => {}
        (None, g) => recs.extend(flag_rec(
            ctx,
            "--gpu-memory-utilization",
            Some(format!("{:.2}", (g.unwrap_or(0.92) + 0.05).min(0.95))),
            "a larger share of GPU memory for the KV cache means more blocks, so long contexts fit without preemption",
            "less headroom for activations and other processes on the GPU; raise in small steps and watch for OOM at start-up",
        )),
    }
    // fp8 only where the cache is still 16-bit (or unknown).
    if ctx
        .facts
        .cache_dtype
        .as_deref()
        .is_none_or(|d| matches!(d, "auto" | "bfloat16" | "float16"))
    {
        recs.extend(flag_rec(
            ctx,
            "--kv-cache-dtype",
            Some("fp8".into()),
            "an fp8 KV cache holds about twice the tokens in the same memory",
            "small accuracy cost on some models; check your evals",
        ));
    }
    // The server's tensor parallelism is in none of its metrics: 2 from vLLM's default 1,
    // said so, since a flag without its value makes `vllm serve` exit.
    recs.extend(flag_rec(
        ctx,
        "--tensor-parallel-size",
        Some("2".into()),
        "sharding the model over more GPUs frees memory per GPU for KV blocks (2 from vLLM's default 1; a server that shards already: twice its size, which the model's attention heads must divide by)",
        "more GPUs per replica and inter-GPU communication per step",
    ));
    recs
}

/// The `--max-num-seqs` advice for a KV cache that ran out ([`safe_max_num_seqs`]);
/// `effect` says what fewer sequences achieve.
pub(crate) fn max_num_seqs_rec(
    ctx: &super::Context,
    effect: &str,
    tradeoff: &str,
) -> Option<super::Recommendation> {
    let (seqs, tokens, window) = safe_max_num_seqs(ctx)?;
    super::flag_rec(
        ctx,
        "--max-num-seqs",
        Some(seqs.to_string()),
        &format!(
            "~{tokens:.0} tokens held per running request (median) {window}; {seqs} of them fill 90% of one engine's {:.0}-token KV cache, so {effect}",
            ctx.facts.kv_capacity_tokens().unwrap_or(0.0)
        ),
        tradeoff,
    )
}

/// Safe `--max-num-seqs` (per engine: the flag is per engine) for the tokens a running
/// request held where the KV cache ran out: 90 % of one engine's KV capacity over the
/// median tokens per running request in the exhaustion window (the whole session when
/// there is none). Returns (value, tokens per request, window text).
pub(crate) fn safe_max_num_seqs(ctx: &super::Context) -> Option<(u64, f64, String)> {
    let s = ctx.server;
    let capacity = ctx.facts.kv_capacity_tokens()?;
    let (pct_per_seq, window) = match (
        s.exhausted_kv_pct_per_running_median,
        &s.exhausted_start,
        &s.exhausted_end,
    ) {
        (Some(p), Some(a), Some(b)) => (p, format!("during {a} … {b}")),
        _ => (s.kv_pct_per_running_median?, "over the session".to_string()),
    };
    if pct_per_seq <= 0.0 {
        return None;
    }
    // KV % is the engines' average and running their sum: per engine, a request holds
    // engines × (KV % / running) of its engine's cache.
    let engines = s.engines.max(1) as f64;
    let tokens_per_seq = pct_per_seq * engines / 100.0 * capacity;
    Some((
        ((0.9 * capacity) / tokens_per_seq).floor().max(1.0) as u64,
        tokens_per_seq,
        window,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_threshold_a_rule_reads_exists() {
        let names: Vec<&str> = crate::analysis::Thresholds::default()
            .entries()
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/diagnosis");
        let mut files = vec![root.join("mod.rs")];
        for e in std::fs::read_dir(root.join("rules")).unwrap().flatten() {
            files.push(e.path());
        }
        let mut seen = 0;
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for part in text.split("threshold(\"").skip(1) {
                let name = part.split('"').next().unwrap();
                assert!(
                    names.contains(&name),
                    "{}: unknown threshold {name}",
                    f.display()
                );
                seen += 1;
            }
            // The bottleneck split's local `t("…")` helper.
            for part in text.split(" t(\"").skip(1) {
                let name = part.split('"').next().unwrap();
                assert!(
                    names.contains(&name),
                    "{}: unknown threshold {name}",
                    f.display()
                );
            }
        }
        assert!(seen > 20, "only {seen} threshold reads found");
    }

    /// A streamed `doctor` holds only the events [`super::super::rules_read`] selects:
    /// rules read events through the accessors that check that list, never directly.
    #[test]
    fn rules_read_events_through_the_checked_accessors() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/diagnosis/rules");
        let mut rules = 0;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_name() == "mod.rs" {
                continue; // (this test)
            }
            rules += 1;
            let text = std::fs::read_to_string(e.path()).unwrap();
            for part in text.split(".events").skip(1) {
                assert!(
                    part.starts_with("_named("),
                    "{}: reads ctx.events directly",
                    e.path().display()
                );
            }
        }
        assert_eq!(rules, super::RULES.len());
    }

    #[test]
    fn a_diagnosis_keeps_the_events_its_rules_read() {
        use crate::store::events::Event;
        let ev = |json: &str| -> Event { serde_json::from_str(json).unwrap() };
        let head = r#""ts":"2027-01-15T08:00:00.000Z","t_rel_sec":1.0,"server":"s""#;
        let read = |json: &str| super::super::rules_read(&ev(&format!("{{{head},{json}}}")));
        assert!(read(r#""type":"transient","event":"TTFT_SPIKE""#));
        assert!(read(r#""type":"data_quality","event":"SCRAPE_GAP""#));
        assert!(!read(r#""type":"transient","event":"KV_SATURATION""#));
        // Prefill pressure: every event; stalls and TTFT: episodes only.
        assert!(read(
            r#""type":"condition_change","condition":"PREFILL_PRESSURE","state":"start""#
        ));
        assert!(read(
            r#""type":"condition_episode","condition":"TTFT_ELEVATED""#
        ));
        assert!(!read(
            r#""type":"condition_change","condition":"TTFT_ELEVATED","state":"start""#
        ));
        assert!(read(
            r#""type":"condition_episode","condition":"ENGINE_STALLED""#
        ));
        assert!(!read(
            r#""type":"condition_episode","condition":"QUEUE_DELAY""#
        ));
        assert!(!read(
            r#""type":"phase_transition","from":"HEALTHY","to":"SATURATED""#
        ));
    }

    #[test]
    fn every_rule_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/diagnosis/rules");
        let files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".rs") && n != "mod.rs")
            .collect();
        assert_eq!(files.len(), super::RULES.len());
        for f in files {
            let id = f.trim_end_matches(".rs").to_uppercase();
            assert!(
                super::RULES.iter().any(|r| r.id.as_str() == id),
                "{f} is not registered in RULES"
            );
        }
    }
}
