//! The built-in vLLM simulator: a model of vLLM V1's scheduler and KV cache ([`model`])
//! driven by scenario workloads ([`scenario`]), rendered as real vLLM 0.26 `/metrics`
//! text ([`exposition`]) and served over HTTP ([`server`]), or recorded offline into a
//! session through the same pipeline `kvscope record` uses ([`record_offline`]).

pub mod exposition;
pub mod fleet;
pub mod model;
pub mod residency;
pub mod scenario;
pub mod server;

use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal};

use crate::record::{Pipeline, rfc3339};
use crate::store::{Metadata, RecorderSettings, SessionWriter, SourceInfo, StoreError};
use model::{CostModel, Engine, Faults, Request};
use scenario::{LenDist, Scenario};

/// Model name the simulator serves.
pub const MODEL_NAME: &str = "sim-llama-8b";

/// Number of distinct shared prefixes (system prompts) in a workload.
const PREFIX_GROUPS: u64 = 4;

/// A running simulation: engines, arrivals and the scenario clock (seconds since start).
pub struct Simulation {
    pub scenario: Scenario,
    pub engines: Vec<Engine>,
    rng: SmallRng,
    now: f64,
    next_arrival: f64,
    next_id: u64,
    /// Unix time of simulated t = 0.
    pub epoch_unix: f64,
    down_until: Option<f64>,
    restarted: bool,
    /// The API server's one thread (HTTP, tokenization): busy until this time.
    api_busy_until: f64,
    /// CPU seconds of work the API server has accepted (done or in its backlog).
    api_cpu_s: f64,
}

/// CPU the API server's event loop uses with no request (metrics, health checks), as a
/// share of one core.
const API_IDLE_CPU: f64 = 0.02;

impl Simulation {
    pub fn new(scenario: Scenario, seed: u64, engines: usize, epoch_unix: f64) -> Self {
        let engines = (0..engines.max(1))
            .map(|_| Engine::new(scenario.engine.clone(), CostModel::default(), 0.0))
            .map(|mut e| {
                e.created_at = epoch_unix;
                e
            })
            .collect();
        let mut sim = Self {
            scenario,
            engines,
            rng: SmallRng::seed_from_u64(seed),
            now: 0.0,
            next_arrival: 0.0,
            next_id: 0,
            epoch_unix,
            down_until: None,
            restarted: false,
            api_busy_until: 0.0,
            api_cpu_s: 0.0,
        };
        sim.next_arrival = sim.sample_next_arrival(0.0);
        sim
    }

    /// Seconds since the scenario started.
    pub fn now(&self) -> f64 {
        self.now
    }

    /// Simulated wall clock, Unix seconds.
    pub fn unix_now(&self) -> f64 {
        self.epoch_unix + self.now
    }

    /// True while the simulated process is down (restart scenario).
    pub fn is_down(&self) -> bool {
        self.down_until.is_some_and(|d| self.now < d)
    }

    fn sample_next_arrival(&mut self, from: f64) -> f64 {
        let mut t = from;
        loop {
            let rate = self.scenario.segment_at(t).rate_per_s;
            let boundary = self.scenario.next_boundary(t);
            if rate <= 0.0 {
                match boundary {
                    Some(b) => {
                        t = b;
                        continue;
                    }
                    None => return f64::INFINITY,
                }
            }
            let gap = Exp::new(rate)
                .map(|d| d.sample(&mut self.rng))
                .unwrap_or(1.0);
            match boundary {
                // Memoryless: past a rate change, draw again from the boundary.
                Some(b) if t + gap >= b => t = b,
                _ => return t + gap,
            }
        }
    }

    fn draw_len(&mut self, d: LenDist) -> u32 {
        let v = LogNormal::new(d.median.max(1.0).ln(), d.sigma.max(0.0))
            .map(|x| x.sample(&mut self.rng))
            .unwrap_or(d.median);
        (v.round() as u32).clamp(d.min.max(1), d.max.max(1))
    }

    fn faults_at(&self, t: f64) -> Faults {
        let s = self.scenario.segment_at(t);
        Faults {
            slowdown: s.slowdown,
            leak_fraction: s.leak_fraction,
            stalled: s.stalled,
        }
    }

    fn arrive(&mut self, t: f64) {
        if self.is_down() {
            return;
        }
        let seg = self.scenario.segment_at(t).clone();
        let max_len = self.scenario.engine.max_model_len;
        let prompt = self.draw_len(seg.prompt);
        let output = self
            .draw_len(seg.output)
            .min(max_len.saturating_sub(prompt).max(1));
        let prefix = if self.rng.random::<f64>() < seg.prefix_share {
            Some((self.rng.random_range(0..PREFIX_GROUPS), seg.prefix_len))
        } else {
            None
        };
        self.next_id += 1;
        let req = Request::new(self.next_id, t, prompt, output, prefix);
        self.dispatch(req, t);
    }

    /// Sends a request that reached the API server at `t` to an engine.
    fn dispatch(&mut self, req: Request, t: f64) {
        let seg = self.scenario.segment_at(t);
        let (cpu_s, frontend_delay_s) = (seg.api_cpu_per_request_s, seg.frontend_delay_s);
        // Dispatch to the least-loaded engine (data parallel).
        let idx = self
            .engines
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.running.len() + e.waiting.len())
            .map(|(i, _)| i)
            .unwrap_or(0);
        // The API server handles requests one at a time on its one Python thread: a
        // request reaches the engine after its CPU work and any backlog, never sooner
        // than the segment's front-end delay.
        let start = t.max(self.api_busy_until);
        self.api_busy_until = start + cpu_s;
        self.api_cpu_s += cpu_s;
        let delay = frontend_delay_s.max(self.api_busy_until - t);
        if let Some(e) = self.engines.get_mut(idx) {
            e.submit(req, delay);
        }
    }

    /// Clients that waited `timeout_s` for a first token disconnect (vLLM aborts their
    /// requests); with the segment's `retry_on_timeout` each sends its request again.
    fn give_up(&mut self, timeout_s: f64) {
        let gone: Vec<Request> = self
            .engines
            .iter_mut()
            .flat_map(|e| e.abort_unanswered(timeout_s))
            .collect();
        if !self.scenario.segment_at(self.now).retry_on_timeout {
            return;
        }
        let now = self.now;
        for r in gone {
            self.next_id += 1;
            let prefix = r.prefix_group.map(|g| (g, r.prefix_len));
            let again = Request::new(self.next_id, now, r.prompt_len, r.output_len, prefix);
            self.dispatch(again, now);
        }
    }

    /// CPU seconds of the API server process up to now (what it already spent on the
    /// requests it accepted, plus its idle loop).
    pub fn api_cpu_seconds(&self) -> f64 {
        let restarted_at = self.down_until.unwrap_or(0.0);
        // Work accepted but not done yet (the backlog) is not spent yet.
        let backlog = (self.api_busy_until - self.now).max(0.0);
        API_IDLE_CPU * (self.now - restarted_at).max(0.0) + (self.api_cpu_s - backlog).max(0.0)
    }

    fn restart_now(&mut self, at: f64, downtime: f64) {
        let cfg = self.scenario.engine.clone();
        for e in &mut self.engines {
            let mut fresh = Engine::new(cfg.clone(), CostModel::default(), at + downtime);
            fresh.created_at = self.epoch_unix + at + downtime;
            *e = fresh;
        }
        self.down_until = Some(at + downtime);
        self.restarted = true;
        self.api_cpu_s = 0.0;
        self.api_busy_until = at + downtime;
    }

    /// Advances the simulation to `t` seconds since start.
    pub fn advance_to(&mut self, t: f64) {
        while self.now < t {
            if let Some((at, downtime)) = self.scenario.restart
                && !self.restarted
                && self.now >= at
            {
                self.restart_now(at, downtime);
            }
            let mut target = self.next_arrival.min(t);
            if let Some((at, _)) = self.scenario.restart
                && !self.restarted
                && at > self.now
            {
                target = target.min(at);
            }
            if let Some(b) = self.scenario.next_boundary(self.now) {
                target = target.min(b);
            }
            let faults = self.faults_at(self.now);
            let timeout = self.scenario.segment_at(self.now).first_token_timeout_s;
            // The next client to give up, on time.
            if let Some(deadline) = timeout.and_then(|to| {
                let first = self
                    .engines
                    .iter()
                    .filter_map(Engine::earliest_unanswered_arrival);
                first.reduce(f64::min).map(|a| a + to)
            }) && deadline > self.now
            {
                target = target.min(deadline);
            }
            for e in &mut self.engines {
                if e.now < target {
                    e.run_until(target, &faults);
                }
            }
            self.now = target;
            if let Some(to) = timeout
                && !faults.stalled
                && !self.is_down()
            {
                self.give_up(to);
            }
            if self.next_arrival <= self.now {
                let at = self.next_arrival;
                self.arrive(at);
                self.next_arrival = self.sample_next_arrival(at);
            }
        }
    }

    /// The `/metrics` page as the simulated server would serve it now.
    pub fn render(&self) -> String {
        let mut page = exposition::render(&self.engines, MODEL_NAME);
        exposition::render_process_cpu(&mut page, self.api_cpu_seconds());
        exposition::render_http(&mut page, &self.engines);
        page
    }

    /// The page a DCGM exporter on this host would serve now: one GPU per engine.
    pub fn render_dcgm(&self) -> String {
        exposition::render_dcgm(&self.engines, self.now, self.scenario.segment_at(self.now))
    }
}

/// Options for an offline recording of a scenario.
#[derive(Debug, Clone)]
pub struct OfflineRun {
    pub scenario: Scenario,
    pub seed: u64,
    pub engines: usize,
    /// Scrape interval, simulated seconds.
    pub interval_s: f64,
    /// Simulated seconds to record (defaults to the scenario's duration).
    pub seconds: Option<f64>,
    /// Unix time of t = 0.
    pub epoch_unix: f64,
    /// Server label written into the `server` column.
    pub server: String,
    /// Also keep every page (`raw_pages.jsonl.gz`), as `record --raw` does.
    pub raw: bool,
    /// Also scrape the simulated host's DCGM exporter, as `record --gpu-metrics` does.
    pub gpu: bool,
}

impl OfflineRun {
    /// One engine scraped every simulated second from t = 0 at Unix 1.8 × 10⁹ s, as
    /// server `sim:8000`, for the scenario's duration, without raw pages or GPU metrics.
    pub fn new(scenario: Scenario, seed: u64) -> Self {
        Self {
            scenario,
            seed,
            engines: 1,
            interval_s: 1.0,
            seconds: None,
            epoch_unix: 1_800_000_000.0,
            server: "sim:8000".into(),
            raw: false,
            gpu: false,
        }
    }
}

/// Records a scenario into `dir` without HTTP or wall-clock waiting: the simulation is
/// stepped to each scrape time and its page goes through the same [`Pipeline`] as a live
/// scrape. Deterministic for a given seed.
pub fn record_offline(
    run: &OfflineRun,
    dir: &Path,
    session_id: &str,
) -> Result<PathBuf, StoreError> {
    let seconds = run.seconds.unwrap_or(run.scenario.duration_s);
    let meta = Metadata::new(
        session_id,
        &rfc3339((run.epoch_unix * 1e6) as i64),
        SourceInfo {
            kind: "simulator".into(),
            urls: vec![],
            scenario: Some(run.scenario.name.to_string()),
            seed: Some(run.seed),
            ..Default::default()
        },
        RecorderSettings {
            interval_s: run.interval_s,
            timeout_s: 0.0,
            duration_s: Some(seconds),
        },
    );
    let writer = SessionWriter::create(dir, meta)?;
    let mut pipe = Pipeline::new(writer);
    if run.raw {
        pipe.keep_raw()?;
    }
    let mut sim = Simulation::new(run.scenario.clone(), run.seed, run.engines, run.epoch_unix);
    let steps = (seconds / run.interval_s).floor() as u64;
    for k in 0..=steps {
        let t = k as f64 * run.interval_s;
        sim.advance_to(t);
        let ts = ((run.epoch_unix + t) * 1e6).round() as i64;
        if sim.is_down() {
            pipe.ingest_failure(
                &run.server,
                ts,
                None,
                "connection refused or unreachable: server restarting",
            )?;
        } else {
            if run.gpu {
                pipe.ingest_gpu_text(&run.server, &sim.render_dcgm());
            }
            pipe.ingest_text(&run.server, ts, Some(1.0), &sim.render())?;
        }
    }
    let end = ((run.epoch_unix + seconds) * 1e6) as i64;
    pipe.finish(end)
}
