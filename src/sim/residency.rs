//! KV block residency as vLLM's `--kv-cache-metrics` measures it
//! (`vllm/v1/core/kv_cache_metrics.py`, `block_pool.py`), kept beside the engine's block
//! count: which block a request holds, the free queue's order, and the sampled blocks'
//! birth, last access and last four accesses.
//!
//! vLLM's rules, followed here:
//! - A block is sampled when it is *allocated* (probability `sample_rate`); its birth and
//!   last access are the allocation time.
//! - A prefix-cache hit *touches* the cached block (`on_block_accessed`): last access and
//!   the access ring (4 deep) are updated, and a free block leaves the free queue.
//! - Freed blocks go to the tail of the free queue (a request's blocks in reverse order, so
//!   its last block is evicted first); allocation takes from the head (LRU).
//! - Taking a block from the head *evicts* it (`_maybe_evict_cached_block`): a sampled
//!   block then yields lifetime (now − birth), idle (now − last access) and its reuse gaps
//!   (between consecutive recorded accesses). vLLM 0.26–0.33 records this for every
//!   reallocated sampled block, cached or not — the caveat KVScope states.

use std::collections::{HashMap, VecDeque};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::model::Hist;

pub use crate::adapter::RESIDENCY_BUCKETS;

/// Access ring depth (`deque(maxlen=4)`).
const HISTORY: usize = 4;

#[derive(Debug, Clone)]
struct Sampled {
    birth: f64,
    last_access: f64,
    accesses: VecDeque<f64>,
}

/// The block pool's identities and the three residency histograms.
#[derive(Debug, Clone)]
pub struct Residency {
    pub sample_rate: f64,
    rng: SmallRng,
    free: VecDeque<u32>,
    /// Allocation generation per block id (a prefix's blocks are still cached while the
    /// generation recorded with them is current).
    generation: Vec<u64>,
    sampled: Vec<Option<Sampled>>,
    held: HashMap<u64, Vec<u32>>,
    /// Per prefix group: the cached prefix blocks and their generations.
    prefixes: HashMap<u64, Vec<(u32, u64)>>,
    pub lifetime: Hist,
    pub idle: Hist,
    pub reuse_gap: Hist,
}

impl Residency {
    /// A pool of `num_gpu_blocks` (block 0 is vLLM's null block, never handed out).
    pub fn new(num_gpu_blocks: u32, sample_rate: f64) -> Self {
        let n = num_gpu_blocks.max(2) as usize;
        Self {
            sample_rate: sample_rate.clamp(f64::MIN_POSITIVE, 1.0),
            rng: SmallRng::seed_from_u64(u64::from(num_gpu_blocks)),
            free: (1..n as u32).collect(),
            generation: vec![0; n],
            sampled: vec![None; n],
            held: HashMap::new(),
            prefixes: HashMap::new(),
            lifetime: Hist::new(RESIDENCY_BUCKETS),
            idle: Hist::new(RESIDENCY_BUCKETS),
            reuse_gap: Hist::new(RESIDENCY_BUCKETS),
        }
    }

    /// Blocks in the free queue (equals the engine's free count).
    pub fn free_len(&self) -> usize {
        self.free.len()
    }

    fn evict(&mut self, block: u32, now: f64) {
        let Some(s) = self.sampled.get_mut(block as usize).and_then(Option::take) else {
            return;
        };
        self.lifetime.observe((now - s.birth).max(0.0));
        self.idle.observe((now - s.last_access).max(0.0));
        let gaps: Vec<f64> = s
            .accesses
            .iter()
            .zip(s.accesses.iter().skip(1))
            .map(|(a, b)| b - a)
            .collect();
        for g in gaps {
            self.reuse_gap.observe(g.max(0.0));
        }
    }

    fn touch(&mut self, block: u32, now: f64) {
        if let Some(Some(s)) = self.sampled.get_mut(block as usize) {
            s.last_access = now;
            if s.accesses.len() == HISTORY {
                s.accesses.pop_front();
            }
            s.accesses.push_back(now);
        }
    }

    /// Hands `n` blocks to request `req`: first the still-cached blocks of its prefix
    /// group (`cached_blocks` of them, touched), then new blocks from the head of the free
    /// queue (evicting what they held).
    pub fn allocate(&mut self, req: u64, n: u32, prefix: Option<(u64, u32)>, now: f64) {
        let mut got: Vec<u32> = Vec::with_capacity(n as usize);
        if let Some((group, cached_blocks)) = prefix
            && cached_blocks > 0
            && let Some(blocks) = self.prefixes.get(&group).cloned()
        {
            let alive = blocks
                .iter()
                .all(|(b, g)| self.generation.get(*b as usize) == Some(g));
            if alive {
                for (b, _) in blocks.into_iter().take(cached_blocks as usize) {
                    self.touch(b, now);
                    // A free cached block leaves the free queue for this request; one
                    // still held by another request is shared (vLLM's ref count), and
                    // the engine's count still takes a fresh block for it.
                    if let Some(pos) = self.free.iter().position(|x| *x == b)
                        && got.len() < n as usize
                    {
                        self.free.remove(pos);
                        got.push(b);
                    }
                }
            }
        }
        while got.len() < n as usize {
            let Some(b) = self.free.pop_front() else {
                break;
            };
            self.evict(b, now);
            if let Some(g) = self.generation.get_mut(b as usize) {
                *g += 1;
            }
            if self.rng.random::<f64>() < self.sample_rate
                && let Some(slot) = self.sampled.get_mut(b as usize)
            {
                *slot = Some(Sampled {
                    birth: now,
                    last_access: now,
                    accesses: VecDeque::from([now]),
                });
            }
            got.push(b);
        }
        self.held.entry(req).or_default().extend(got);
    }

    /// Records `blocks` leading blocks of request `req` as the cached prefix of `group`
    /// (when the group has no live cached prefix).
    pub fn remember_prefix(&mut self, req: u64, group: u64, blocks: u32) {
        if blocks == 0 {
            return;
        }
        let alive = self.prefixes.get(&group).is_some_and(|bl| {
            bl.iter()
                .all(|(b, g)| self.generation.get(*b as usize) == Some(g))
        });
        if alive {
            return;
        }
        let Some(held) = self.held.get(&req) else {
            return;
        };
        if held.len() < blocks as usize {
            return;
        }
        let entry: Vec<(u32, u64)> = held
            .iter()
            .take(blocks as usize)
            .map(|b| (*b, self.generation.get(*b as usize).copied().unwrap_or(0)))
            .collect();
        self.prefixes.insert(group, entry);
    }

    /// Request `req` frees its blocks (finish or preemption); `leaked` of them never
    /// return to the pool.
    pub fn release(&mut self, req: u64, leaked: u32) {
        let Some(mut blocks) = self.held.remove(&req) else {
            return;
        };
        for _ in 0..leaked {
            blocks.pop();
        }
        // vLLM frees in reverse so the tail block is evicted first.
        self.free.extend(blocks.into_iter().rev());
    }
}
