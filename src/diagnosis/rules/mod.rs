//! One file per doctor hypothesis; [`RULES`] lists them once. A test fails when a file
//! here is not registered.

mod decode_throughput_collapse;
mod gpu_underutilized;
mod healthy;
mod kv_cache_thrashing;
mod kv_capacity_undersized;
mod kv_leak;
mod prefill_starvation;
mod prefix_cache_ineffective;
mod queue_saturation;
mod server_restart;
mod stuck_engine;
mod telemetry_gaps;
mod ttft_instability;

use super::Rule;

/// Every hypothesis, in documentation order (ranking is by score).
pub const RULES: &[Rule] = &[
    kv_cache_thrashing::RULE,
    kv_capacity_undersized::RULE,
    queue_saturation::RULE,
    prefill_starvation::RULE,
    decode_throughput_collapse::RULE,
    ttft_instability::RULE,
    prefix_cache_ineffective::RULE,
    kv_leak::RULE,
    stuck_engine::RULE,
    gpu_underutilized::RULE,
    server_restart::RULE,
    telemetry_gaps::RULE,
    healthy::RULE,
];

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

/// Safe `--max-num-seqs` for the observed tokens held per running sequence: 90 % of the
/// KV capacity divided by the median tokens a running request held.
pub(crate) fn safe_max_num_seqs(ctx: &super::Context) -> Option<(u64, f64)> {
    let capacity = ctx.facts.kv_capacity_tokens()?;
    let pct_per_seq = ctx.server.kv_pct_per_running_median?;
    if pct_per_seq <= 0.0 {
        return None;
    }
    let tokens_per_seq = pct_per_seq / 100.0 * capacity;
    Some((
        ((0.9 * capacity) / tokens_per_seq).floor().max(1.0) as u64,
        tokens_per_seq,
    ))
}

#[cfg(test)]
mod tests {
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
                super::RULES.iter().any(|r| r.id == id),
                "{f} is not registered in RULES"
            );
        }
    }
}
