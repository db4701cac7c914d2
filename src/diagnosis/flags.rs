//! The `vllm serve` flags the doctor may recommend, with the vLLM releases that accept
//! them. Read from vLLM 0.26.0–0.33.0's argument parsers (shared/reference/
//! vllm-serve-flags.{md,json}; a test checks every recommendation of every simulator
//! scenario against that table). A flag a release does not know makes `vllm serve` exit
//! with `unrecognized arguments`, so a recommendation names the releases that take it and
//! is dropped when the server's release is known not to.

use crate::adapter::version::VllmVersion;

/// Oldest and newest release the table was checked against.
pub const OLDEST: u32 = 26;
pub const NEWEST: u32 = 33;

/// A flag and the release lines (`0.MINOR`) that accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    pub name: &'static str,
    /// First release line with the flag (0.26 = present in every checked release).
    pub first: u32,
    /// Last release line with the flag, when it was removed.
    pub last: Option<u32>,
}

const fn every(name: &'static str) -> Flag {
    Flag {
        name,
        first: OLDEST,
        last: None,
    }
}

/// Every flag a rule may recommend. Deliberately absent: `--max-num-partial-prefills`
/// (0.26 refuses any value but 1 at start-up; gone from 0.27), `--swap-space` and
/// `--preemption-mode` (in no checked release; V1 preempts by recompute only).
pub const FLAGS: &[Flag] = &[
    every("--max-num-seqs"),
    every("--max-num-batched-tokens"),
    every("--gpu-memory-utilization"),
    every("--kv-cache-dtype"),
    every("--tensor-parallel-size"),
    every("--long-prefill-token-threshold"),
    every("--enable-prefix-caching"),
    every("--api-server-count"),
    every("--kv-offloading-size"),
    Flag {
        name: "--max-num-queued-reqs",
        first: 29,
        last: None,
    },
];

/// The table row of `name`.
pub fn lookup(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}

impl Flag {
    /// Whether release `v` accepts the flag (releases newer than the table are assumed to
    /// keep it).
    pub fn accepts(&self, v: VllmVersion) -> bool {
        v.minor >= self.first && self.last.is_none_or(|l| v.minor <= l)
    }

    /// "vLLM 0.26–0.33", "vLLM ≥ 0.29 (checked to 0.33)".
    pub fn accepted_by(&self) -> String {
        match (self.first, self.last) {
            (OLDEST, None) => format!("vLLM 0.{OLDEST}–0.{NEWEST} (every release checked)"),
            (f, None) => format!("vLLM ≥ 0.{f} (checked to 0.{NEWEST}; older releases reject it)"),
            (f, Some(l)) => format!("vLLM 0.{f}–0.{l} only"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_is_in_the_reference_for_the_releases_it_claims() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/vllm-serve-flags.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for f in FLAGS {
            for minor in OLDEST..=NEWEST {
                let key = if minor == 27 {
                    "0.27.1".to_string()
                } else {
                    format!("0.{minor}.0")
                };
                let present = doc["flags"][f.name].get(&key).is_some();
                let claimed = f.accepts(VllmVersion { minor });
                assert_eq!(present, claimed, "{} in {key}", f.name);
            }
        }
    }
}
