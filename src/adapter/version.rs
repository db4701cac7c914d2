//! Which vLLM release served a page. `/metrics` carries no version string, but the label
//! set of `vllm:cache_config_info` (every `CacheConfig` field, `str()`-ed, plus `engine`)
//! changes in almost every release. The sets below were read from the 0.26.0–0.33.0
//! sources (shared/reference/vllm-serve-flags.json, `cache_config_info_labels`; 0.27.1
//! stands in for 0.27.x); a test compares them with that file. A set that matches none
//! exactly is reported as unknown rather than guessed.

use std::collections::BTreeSet;

/// A vLLM release line, `0.MINOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VllmVersion {
    pub minor: u32,
}

impl VllmVersion {
    /// Parses `0.29`, `0.29.0`, `v0.29.1` (the minor line is what flags depend on).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().trim_start_matches('v');
        let mut parts = s.split('.');
        let major: u32 = parts.next()?.parse().ok()?;
        let minor: u32 = parts.next()?.parse().ok()?;
        if let Some(patch) = parts.next() {
            // Allow `0.29.0`, `0.29.1rc1`, `0.29.0+cu130`.
            if !patch.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
        }
        (major == 0).then_some(Self { minor })
    }
}

impl std::fmt::Display for VllmVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0.{}", self.minor)
    }
}

/// `cache_config_info` labels of vLLM 0.26.
const LABELS_0_26: &[&str] = &[
    "_block_size_resolved",
    "block_size",
    "cache_dtype",
    "calculate_kv_scales",
    "enable_prefix_caching",
    "engine",
    "gpu_memory_utilization",
    "is_attention_free",
    "kv_cache_dtype_skip_layers",
    "kv_cache_max_concurrency",
    "kv_cache_memory_bytes",
    "kv_cache_size_tokens",
    "kv_offloading_backend",
    "kv_offloading_size",
    "kv_sharing_fast_prefill",
    "mamba_block_size",
    "mamba_cache_dtype",
    "mamba_cache_mode",
    "mamba_page_size_padded",
    "mamba_ssm_cache_dtype",
    "num_cpu_blocks",
    "num_gpu_blocks",
    "num_gpu_blocks_override",
    "prefix_caching_hash_algo",
    "prefix_match_unit",
    "skip_page_size_padded",
    "sliding_window",
    "user_specified_block_size",
    "user_specified_mamba_block_size",
];

/// Labels added and removed by each release after 0.26.
const CHANGES: &[(u32, &[&str], &[&str])] = &[
    (27, &["replayssm_buffer_len", "use_replayssm"], &[]),
    (28, &[], &["calculate_kv_scales"]),
    (
        29,
        &[
            "kv_cache_layout",
            "prefix_cache_retention_interval",
            "use_kda_recoverssm",
        ],
        &[],
    ),
    (30, &["enable_mamba_fine_grained_prefix_cache"], &[]),
    (
        31,
        &[
            "effective_attention_block_size",
            "enable_mamba_shared_prefix_checkpoint",
            "swa_bounded_replay",
        ],
        &["enable_mamba_fine_grained_prefix_cache"],
    ),
    (
        32,
        &["cache_hit_alignment_tokens", "hash_block_size"],
        &["user_specified_mamba_block_size"],
    ),
    (33, &["simple_cpu_offload_num_blocks"], &[]),
];

/// The label set of each release 0.26–0.33 (built once: the recorder asks per scrape).
pub fn label_sets() -> &'static [(VllmVersion, BTreeSet<&'static str>)] {
    static SETS: std::sync::OnceLock<Vec<(VllmVersion, BTreeSet<&'static str>)>> =
        std::sync::OnceLock::new();
    SETS.get_or_init(|| {
        let mut cur: BTreeSet<&'static str> = LABELS_0_26.iter().copied().collect();
        let mut out = vec![(VllmVersion { minor: 26 }, cur.clone())];
        for (minor, added, removed) in CHANGES {
            cur.extend(added.iter().copied());
            for r in *removed {
                cur.remove(r);
            }
            out.push((VllmVersion { minor: *minor }, cur.clone()));
        }
        out
    })
}

/// The release whose `cache_config_info` has exactly these labels, if one does.
pub fn from_cache_config_labels<'a>(
    labels: impl IntoIterator<Item = &'a str>,
) -> Option<VllmVersion> {
    let seen: BTreeSet<&str> = labels.into_iter().collect();
    label_sets()
        .iter()
        .find(|(_, set)| set.len() == seen.len() && set.iter().all(|l| seen.contains(l)))
        .map(|(v, _)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            VllmVersion::parse("0.29.0"),
            Some(VllmVersion { minor: 29 })
        );
        assert_eq!(VllmVersion::parse("v0.26"), Some(VllmVersion { minor: 26 }));
        assert_eq!(
            VllmVersion::parse("0.29.1rc1"),
            Some(VllmVersion { minor: 29 })
        );
        assert_eq!(VllmVersion::parse("latest"), None);
        assert_eq!(VllmVersion::parse("1.2"), None);
    }

    #[test]
    fn label_sets_match_the_flag_reference() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/vllm-serve-flags.json");
        let text = std::fs::read_to_string(path).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let sets = label_sets();
        for (v, set) in sets {
            let key = match v.minor {
                27 => "0.27.1".to_string(),
                m => format!("0.{m}.0"),
            };
            let want: BTreeSet<&str> = doc["cache_config_info_labels"][&key]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            assert_eq!(set, &want, "{key}");
            assert_eq!(from_cache_config_labels(want.iter().copied()), Some(*v));
        }
        let mut other = sets[0].1.clone();
        other.insert("something_new");
        assert_eq!(from_cache_config_labels(other.iter().copied()), None);
    }
}
