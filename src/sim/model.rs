//! A discrete-time model of one vLLM V1 engine core: its scheduler, KV block pool and
//! step cost, and the metrics vLLM derives from them.
//!
//! Scheduler (after `vllm/v1/core/sched/scheduler.py`): each step has a token budget of
//! `max_num_batched_tokens`. Running requests are served first, in admission order:
//! a request still prefilling gets a chunk of its prompt (chunked prefill), a decoding one
//! gets one token. When a running request needs a KV block and none is free, the *newest*
//! running request is preempted by recompute (blocks freed, pushed to the front of the
//! waiting queue, `num_preemptions` + 1) until the allocation fits. Waiting requests are
//! admitted only in steps without preemption, while `running < max_num_seqs`, budget
//! remains and their first chunk's blocks fit.
//!
//! Step cost (a documented approximation of a dense model on one GPU):
//! `t = base + prefill_tokens·c_prefill + decode_seqs·c_decode + context_tokens·c_ctx`,
//! multiplied by `slowdown` (used to model interference or throttling).
//!
//! Metrics are observed when vLLM observes them: TTFT at the first token (from front-end
//! arrival, so it includes tokenization delay, queueing and prefill), ITL per decode
//! step, e2e/queue/prefill/decode/inference times and lengths when a request finishes,
//! iteration tokens every step.

use std::collections::VecDeque;

/// vLLM 0.26 bucket edges (`vllm/v1/metrics/loggers.py`, `buckets.py`).
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
pub const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
pub const REQUEST_LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
pub const ITERATION_TOKEN_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];
pub const PARAMS_N_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0];

/// vLLM's 1-2-5 "request_tokens" buckets up to `max_model_len`.
pub fn request_token_buckets(max_model_len: u32) -> Vec<f64> {
    let mut out = Vec::new();
    let mut mag = 1.0;
    'outer: loop {
        for m in [1.0, 2.0, 5.0] {
            let v: f64 = m * mag;
            if v > max_model_len as f64 {
                break 'outer;
            }
            out.push(v);
        }
        mag *= 10.0;
    }
    out
}

/// A cumulative histogram with fixed bounds, as prometheus_client keeps one.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    pub bounds: Vec<f64>,
    /// Non-cumulative counts per bound, plus one for `+Inf`.
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Hist {
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }
    pub fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += v;
    }
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
    /// `(le, cumulative)` pairs ending with `+Inf`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            out.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), acc));
        }
        out
    }
}

/// Engine configuration (vLLM flags).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EngineConfig {
    pub num_gpu_blocks: u32,
    pub block_size: u32,
    pub max_num_seqs: u32,
    pub max_num_batched_tokens: u32,
    pub max_model_len: u32,
    pub enable_prefix_caching: bool,
    pub gpu_memory_utilization: f64,
    /// `--kv-cache-metrics` on, with `--kv-cache-metrics-sample` (None: off, vLLM's
    /// default): the engine then exposes the three residency histograms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_cache_metrics_sample: Option<f64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            num_gpu_blocks: 2048,
            block_size: 16,
            max_num_seqs: 64,
            max_num_batched_tokens: 4096,
            max_model_len: 16384,
            enable_prefix_caching: true,
            gpu_memory_utilization: 0.9,
            kv_cache_metrics_sample: None,
        }
    }
}

/// Step-time cost model, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CostModel {
    pub base_ms: f64,
    pub per_prefill_token_ms: f64,
    pub per_decode_seq_ms: f64,
    pub per_context_token_ms: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        Self {
            base_ms: 6.0,
            per_prefill_token_ms: 0.035,
            per_decode_seq_ms: 0.15,
            per_context_token_ms: 0.00004,
        }
    }
}

/// A request as the engine sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: u64,
    /// Front-end arrival (TTFT and e2e are measured from here).
    pub arrival: f64,
    /// When it entered the engine's waiting queue (most recent).
    pub queued: f64,
    pub prompt_len: u32,
    pub output_len: u32,
    /// Prefix-cache group; `None` = no shared prefix.
    pub prefix_group: Option<u64>,
    pub prefix_len: u32,
    // Progress.
    prefill_target: u32,
    computed: u32,
    kv_tokens: u32,
    blocks: u32,
    generated: u32,
    scheduled_at: Option<f64>,
    first_token_at: Option<f64>,
    last_token_at: f64,
    prompt_counted: bool,
    cached: u32,
}

impl Request {
    /// Output tokens produced so far.
    pub fn generated_tokens(&self) -> u32 {
        self.generated
    }

    pub fn new(
        id: u64,
        arrival: f64,
        prompt_len: u32,
        output_len: u32,
        prefix: Option<(u64, u32)>,
    ) -> Self {
        let prompt_len = prompt_len.max(1);
        Self {
            id,
            arrival,
            queued: arrival,
            prompt_len,
            output_len: output_len.max(1),
            prefix_group: prefix.map(|p| p.0),
            prefix_len: prefix
                .map(|p| p.1.min(prompt_len.saturating_sub(1)))
                .unwrap_or(0),
            prefill_target: prompt_len,
            computed: 0,
            kv_tokens: 0,
            blocks: 0,
            generated: 0,
            scheduled_at: None,
            first_token_at: None,
            last_token_at: arrival,
            prompt_counted: false,
            cached: 0,
        }
    }
}

/// Counters and histograms an engine exposes.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    pub preemptions: u64,
    pub prompt_tokens: u64,
    pub prompt_tokens_computed: u64,
    pub prompt_tokens_cached: u64,
    pub generation_tokens: u64,
    pub success_length: u64,
    pub success_stop: u64,
    /// Requests whose client disconnected: vLLM 0.26 aborts them and counts them in no
    /// engine metric; the API server answered them (`http_requests_total`, 2xx).
    pub client_aborts: u64,
    pub prefix_queries: u64,
    pub prefix_hits: u64,
    pub ttft: Hist,
    pub itl: Hist,
    pub tpot: Hist,
    pub e2e: Hist,
    pub queue: Hist,
    pub inference: Hist,
    pub prefill: Hist,
    pub decode: Hist,
    pub iteration_tokens: Hist,
    pub prompt_len: Hist,
    pub generation_len: Hist,
    pub max_generation_len: Hist,
    pub params_n: Hist,
    pub params_max_tokens: Hist,
    pub prefill_kv_computed: Hist,
}

impl EngineMetrics {
    pub fn new(max_model_len: u32) -> Self {
        let tok = request_token_buckets(max_model_len);
        Self {
            preemptions: 0,
            prompt_tokens: 0,
            prompt_tokens_computed: 0,
            prompt_tokens_cached: 0,
            generation_tokens: 0,
            success_length: 0,
            success_stop: 0,
            client_aborts: 0,
            prefix_queries: 0,
            prefix_hits: 0,
            ttft: Hist::new(TTFT_BUCKETS),
            itl: Hist::new(ITL_BUCKETS),
            tpot: Hist::new(ITL_BUCKETS),
            e2e: Hist::new(REQUEST_LATENCY_BUCKETS),
            queue: Hist::new(REQUEST_LATENCY_BUCKETS),
            inference: Hist::new(REQUEST_LATENCY_BUCKETS),
            prefill: Hist::new(REQUEST_LATENCY_BUCKETS),
            decode: Hist::new(REQUEST_LATENCY_BUCKETS),
            iteration_tokens: Hist::new(ITERATION_TOKEN_BUCKETS),
            prompt_len: Hist::new(&tok),
            generation_len: Hist::new(&tok),
            max_generation_len: Hist::new(&tok),
            params_n: Hist::new(PARAMS_N_BUCKETS),
            params_max_tokens: Hist::new(&tok),
            prefill_kv_computed: Hist::new(&tok),
        }
    }
}

/// Faults a scenario can switch on.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Step time multiplier (≥ 1): interference, throttling.
    pub slowdown: f64,
    /// Share of a finished request's blocks never returned to the pool.
    pub leak_fraction: f64,
    /// The engine core hangs: nothing is scheduled or admitted, and every metric it
    /// publishes stays frozen (vLLM V1: `/metrics` still answers from the API server).
    pub stalled: bool,
}

/// One engine core.
#[derive(Debug, Clone)]
pub struct Engine {
    pub cfg: EngineConfig,
    pub cost: CostModel,
    pub now: f64,
    pub waiting: VecDeque<Request>,
    pub running: Vec<Request>,
    pub free_blocks: u32,
    pub leaked_blocks: u32,
    pub metrics: EngineMetrics,
    /// Prefix groups whose blocks are cached (warm).
    warm_prefixes: std::collections::HashSet<u64>,
    /// Requests that passed the front end but not yet reached the engine (tokenization).
    pending: Vec<Request>,
    pub created_at: f64,
    /// Block identities and residency histograms (`--kv-cache-metrics`).
    pub residency: Option<super::residency::Residency>,
    /// What the GPU did (for the simulator's DCGM endpoint).
    pub activity: Activity,
}

/// Time constant of the GPU activity averages, seconds (NVML samples utilization over
/// a window of about a second).
const ACTIVITY_TAU_S: f64 = 1.0;

/// GPU activity of one engine's GPU: exponential averages (time constant
/// [`ACTIVITY_TAU_S`]) of "a kernel is running" (what `DCGM_FI_DEV_GPU_UTIL` and
/// nvidia-smi report) and of the share of SMs busy (`DCGM_FI_PROF_SM_ACTIVE`), plus the
/// cumulative busy time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Activity {
    t: f64,
    util: f64,
    sm: f64,
    pub busy_s: f64,
}

impl Activity {
    fn advance(&mut self, to: f64, busy: f64, fill: f64) {
        let dt = (to - self.t).max(0.0);
        let k = (-dt / ACTIVITY_TAU_S).exp();
        self.util = self.util * k + (1.0 - k) * busy;
        self.sm = self.sm * k + (1.0 - k) * busy * fill;
        self.t = self.t.max(to);
        self.busy_s += dt * busy;
    }

    /// `(utilization, SM active)` as fractions at `now` (idle since the last step).
    pub fn at(&self, now: f64) -> (f64, f64) {
        let k = (-(now - self.t).max(0.0) / ACTIVITY_TAU_S).exp();
        (self.util * k, self.sm * k)
    }
}

/// Share of the SMs a step keeps busy: a large step (a prefill chunk, a big batch) fills
/// the GPU; a few decode sequences leave most SMs idle while the kernels still run (the
/// reason utilization reads ~100 % on a memory-bound decode while SM activity does not).
fn sm_fill(tokens: u32) -> f64 {
    0.3 + 0.7 * (f64::from(tokens) / 1024.0).min(1.0)
}

impl Engine {
    pub fn new(cfg: EngineConfig, cost: CostModel, now: f64) -> Self {
        let metrics = EngineMetrics::new(cfg.max_model_len);
        let residency = cfg
            .kv_cache_metrics_sample
            .map(|rate| super::residency::Residency::new(cfg.num_gpu_blocks, rate));
        Self {
            residency,
            activity: Activity {
                t: now,
                ..Activity::default()
            },
            free_blocks: cfg.num_gpu_blocks.saturating_sub(1),
            cfg,
            cost,
            now,
            waiting: VecDeque::new(),
            running: Vec::new(),
            leaked_blocks: 0,
            metrics,
            warm_prefixes: Default::default(),
            pending: Vec::new(),
            created_at: now,
        }
    }

    /// Usable blocks (vLLM excludes the null block).
    pub fn usable_blocks(&self) -> u32 {
        self.cfg.num_gpu_blocks.saturating_sub(1).max(1)
    }

    /// `kv_cache_usage_perc` as vLLM computes it: `1 - free / (num_gpu_blocks - 1)`.
    pub fn kv_usage_fraction(&self) -> f64 {
        1.0 - self.free_blocks as f64 / self.usable_blocks() as f64
    }

    /// A request arrives at the front end; it reaches the engine after `frontend_delay`.
    pub fn submit(&mut self, mut req: Request, frontend_delay: f64) {
        req.queued = req.arrival + frontend_delay.max(0.0);
        self.pending.push(req);
    }

    fn blocks_for(&self, tokens: u32) -> u32 {
        tokens.div_ceil(self.cfg.block_size.max(1))
    }

    fn release(&mut self, req: &Request, leak_fraction: f64) {
        let leaked = (req.blocks as f64 * leak_fraction.clamp(0.0, 1.0)).round() as u32;
        self.leaked_blocks += leaked;
        if let Some(res) = &mut self.residency {
            res.release(req.id, leaked);
        }
        self.free_blocks = (self.free_blocks + req.blocks - leaked).min(self.usable_blocks());
    }

    fn enqueue_arrived(&mut self) {
        let now = self.now;
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending.get(i).is_some_and(|r| r.queued <= now) {
                let r = self.pending.swap_remove(i);
                self.waiting.push_back(r);
            } else {
                i += 1;
            }
        }
    }

    /// Time of the next pending arrival at the engine, if any.
    pub fn next_pending(&self) -> Option<f64> {
        self.pending.iter().map(|r| r.queued).reduce(f64::min)
    }

    /// True when the engine has nothing to do.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Runs one scheduler step and advances `now` by its duration. Returns the step time;
    /// 0 when there was nothing to schedule.
    pub fn step(&mut self, faults: &Faults) -> f64 {
        // A hung engine core (vLLM V1) takes nothing in and publishes nothing: requests
        // pile up in the front end, every gauge and counter stays as it was.
        if faults.stalled {
            return 0.0;
        }
        self.enqueue_arrived();
        if self.is_idle() {
            return 0.0;
        }
        let mut budget = self.cfg.max_num_batched_tokens;
        // (index into running, tokens scheduled)
        let mut sched: Vec<(u64, u32)> = Vec::new();
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let (id, need_tokens, num_new) = {
                let Some(r) = self.running.get(i) else { break };
                let num_new = if r.computed < r.prefill_target {
                    (r.prefill_target - r.computed).min(budget)
                } else {
                    1
                };
                (r.id, r.kv_tokens + num_new, num_new)
            };
            let need_blocks = self
                .blocks_for(need_tokens)
                .saturating_sub(self.running.get(i).map_or(0, |r| r.blocks));
            let mut self_preempted = false;
            while need_blocks > self.free_blocks {
                let Some(victim) = self.running.pop() else {
                    break;
                };
                preempted = true;
                self.metrics.preemptions += 1;
                self.release(&victim, 0.0);
                let is_self = victim.id == id;
                let mut v = victim;
                v.prefill_target = v.prompt_len + v.generated;
                v.computed = 0;
                v.kv_tokens = 0;
                v.blocks = 0;
                v.queued = self.now;
                sched.retain(|(sid, _)| *sid != v.id);
                self.waiting.push_front(v);
                if is_self {
                    self_preempted = true;
                    break;
                }
            }
            if self_preempted || need_blocks > self.free_blocks {
                break;
            }
            self.free_blocks -= need_blocks;
            if let Some(res) = &mut self.residency
                && need_blocks > 0
            {
                res.allocate(id, need_blocks, None, self.now);
            }
            if let Some(r) = self.running.get_mut(i) {
                r.blocks += need_blocks;
                r.kv_tokens += num_new;
                if let (Some(res), Some(g)) = (&mut self.residency, r.prefix_group) {
                    res.remember_prefix(r.id, g, r.prefix_len / self.cfg.block_size.max(1));
                }
            }
            budget -= num_new;
            sched.push((id, num_new));
            i += 1;
        }
        if !preempted {
            while budget > 0 && (self.running.len() as u32) < self.cfg.max_num_seqs {
                let Some(front) = self.waiting.front() else {
                    break;
                };
                let cached = if self.cfg.enable_prefix_caching
                    && front.computed == 0
                    && front
                        .prefix_group
                        .is_some_and(|g| self.warm_prefixes.contains(&g))
                {
                    (front.prefix_len / self.cfg.block_size) * self.cfg.block_size
                } else {
                    0
                };
                let remaining = front.prefill_target.saturating_sub(cached);
                let num_new = remaining.min(budget);
                let need_blocks = self.blocks_for(cached + num_new);
                if need_blocks > self.free_blocks {
                    break;
                }
                let Some(mut r) = self.waiting.pop_front() else {
                    break;
                };
                self.free_blocks -= need_blocks;
                if let Some(res) = &mut self.residency {
                    let hit = r
                        .prefix_group
                        .filter(|_| cached > 0)
                        .map(|g| (g, cached / self.cfg.block_size.max(1)));
                    res.allocate(r.id, need_blocks, hit, self.now);
                    if let Some(g) = r.prefix_group {
                        res.remember_prefix(r.id, g, r.prefix_len / self.cfg.block_size.max(1));
                    }
                }
                r.blocks = need_blocks;
                r.computed = cached;
                r.kv_tokens = cached + num_new;
                if self.cfg.enable_prefix_caching && !r.prompt_counted {
                    self.metrics.prefix_queries += r.prompt_len as u64;
                    self.metrics.prefix_hits += cached as u64;
                    r.cached = cached;
                }
                if let Some(g) = r.prefix_group {
                    self.warm_prefixes.insert(g);
                }
                // Queue time: QUEUED → most recent SCHEDULED.
                r.scheduled_at = Some(self.now);
                let rid = r.id;
                budget -= num_new;
                sched.push((rid, num_new));
                self.running.push(r);
            }
        }
        if sched.is_empty() {
            return 0.0;
        }
        // Cost.
        let mut prefill_tokens = 0u32;
        let mut decode_seqs = 0u32;
        let mut context = 0u64;
        for (id, n) in &sched {
            if let Some(r) = self.running.iter().find(|r| r.id == *id) {
                if r.computed < r.prefill_target {
                    prefill_tokens += n;
                } else {
                    decode_seqs += 1;
                }
                context += r.kv_tokens as u64;
            }
        }
        let c = &self.cost;
        let ms = (c.base_ms
            + prefill_tokens as f64 * c.per_prefill_token_ms
            + decode_seqs as f64 * c.per_decode_seq_ms
            + context as f64 * c.per_context_token_ms)
            * faults.slowdown.max(1.0);
        let dt = ms / 1000.0;
        let tokens: u32 = sched.iter().map(|(_, n)| *n).sum();
        self.activity.advance(self.now, 0.0, 0.0);
        self.activity.advance(self.now + dt, 1.0, sm_fill(tokens));
        self.now += dt;
        let now = self.now;
        self.metrics
            .iteration_tokens
            .observe(sched.iter().map(|(_, n)| *n as f64).sum());

        // Apply progress, emit tokens, finish requests.
        let mut finished: Vec<usize> = Vec::new();
        for (id, n) in &sched {
            let Some(idx) = self.running.iter().position(|r| r.id == *id) else {
                continue;
            };
            let Some(r) = self.running.get_mut(idx) else {
                continue;
            };
            let m = &mut self.metrics;
            let mut emits = false;
            if r.computed < r.prefill_target {
                r.computed += n;
                if r.computed >= r.prefill_target {
                    emits = true;
                    if !r.prompt_counted {
                        r.prompt_counted = true;
                        m.prompt_tokens += r.prompt_len as u64;
                        m.prompt_tokens_cached += r.cached as u64;
                        m.prompt_tokens_computed += (r.prompt_len - r.cached) as u64;
                    }
                }
            } else {
                emits = true;
            }
            if !emits {
                continue;
            }
            r.generated += 1;
            m.generation_tokens += 1;
            if r.first_token_at.is_none() {
                r.first_token_at = Some(now);
                m.ttft.observe(now - r.arrival);
            } else {
                m.itl.observe(now - r.last_token_at);
            }
            r.last_token_at = now;
            if r.generated >= r.output_len {
                finished.push(idx);
            }
        }
        finished.sort_unstable();
        for idx in finished.into_iter().rev() {
            let r = self.running.remove(idx);
            self.finish(&r, faults.leak_fraction);
        }
        dt
    }

    fn finish(&mut self, r: &Request, leak_fraction: f64) {
        self.release(r, leak_fraction);
        let now = self.now;
        let m = &mut self.metrics;
        let first = r.first_token_at.unwrap_or(now);
        let scheduled = r.scheduled_at.unwrap_or(r.queued);
        m.success_length += 1;
        m.e2e.observe(now - r.arrival);
        m.queue.observe((scheduled - r.queued).max(0.0));
        m.prefill.observe((first - scheduled).max(0.0));
        m.decode.observe(now - first);
        m.inference.observe(now - scheduled);
        m.prompt_len.observe(r.prompt_len as f64);
        m.generation_len.observe(r.generated as f64);
        m.max_generation_len.observe(r.output_len as f64);
        m.params_n.observe(1.0);
        m.params_max_tokens.observe(r.output_len as f64);
        m.prefill_kv_computed
            .observe(r.prompt_len.saturating_sub(r.cached) as f64);
        let tpot = if r.generated > 1 {
            (now - first) / (r.generated - 1) as f64
        } else {
            0.0
        };
        m.tpot.observe(tpot);
    }

    /// Advances to `until`, stepping while there is work.
    pub fn run_until(&mut self, until: f64, faults: &Faults) {
        let mut guard = 0u64;
        while self.now < until {
            let dt = self.step(faults);
            if dt == 0.0 {
                // Nothing scheduled: jump to the next engine arrival or to `until`.
                let next = self
                    .next_pending()
                    .filter(|t| *t > self.now)
                    .unwrap_or(until);
                self.now = next.min(until).max(self.now);
                if next >= until || faults.stalled {
                    self.now = until;
                }
            }
            guard += 1;
            if guard > 50_000_000 {
                self.now = until;
            }
        }
    }

    /// When the earliest request still without a first token arrived, if any.
    pub fn earliest_unanswered_arrival(&self) -> Option<f64> {
        let waiting = self.waiting.iter().chain(&self.pending);
        waiting
            .chain(self.running.iter().filter(|r| r.first_token_at.is_none()))
            .map(|r| r.arrival)
            .reduce(f64::min)
    }

    /// Clients that waited `timeout_s` for a first token disconnect: vLLM aborts their
    /// requests wherever they are (the front end, the waiting queue, prefill), frees
    /// their blocks, and counts them in no engine metric. Returns them (to be retried).
    pub fn abort_unanswered(&mut self, timeout_s: f64) -> Vec<Request> {
        let now = self.now;
        let expired = |r: &Request| r.first_token_at.is_none() && now - r.arrival >= timeout_s;
        let mut gone: Vec<Request> = self.pending.extract_if(.., |r| expired(r)).collect();
        let (late, queued): (VecDeque<_>, VecDeque<_>) =
            self.waiting.drain(..).partition(|r| expired(r));
        self.waiting = queued;
        gone.extend(late);
        let in_prefill: Vec<Request> = self.running.extract_if(.., |r| expired(r)).collect();
        for r in &in_prefill {
            self.release(r, 0.0);
        }
        gone.extend(in_prefill);
        self.metrics.client_aborts += gone.len() as u64;
        gone
    }

    pub fn tokens_in_kv(&self) -> u64 {
        self.running.iter().map(|r| r.kv_tokens as u64).sum()
    }
}
