//! Scenarios: workload and fault schedules for the simulator, each with the ground truth
//! it produces (expected phases, conditions, events and root cause), machine-readable via
//! `kvscope simulate --scenario X --describe --json`.

use serde::Serialize;

use super::model::EngineConfig;
use crate::vocab::{Condition, EventName, Hypothesis, Phase};

/// A log-normal length distribution (tokens), clamped to `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LenDist {
    pub median: f64,
    pub sigma: f64,
    pub min: u32,
    pub max: u32,
}

const fn len(median: f64, sigma: f64, min: u32, max: u32) -> LenDist {
    LenDist {
        median,
        sigma,
        min,
        max,
    }
}

/// The workload and faults from `start_s` until the next segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub start_s: f64,
    /// Poisson arrival rate, requests per second.
    pub rate_per_s: f64,
    pub prompt: LenDist,
    pub output: LenDist,
    /// Share of requests that reuse one of a few shared prefixes (system prompts).
    pub prefix_share: f64,
    /// Length of the shared prefix, tokens.
    pub prefix_len: u32,
    /// Front-end delay before a request reaches the engine (tokenization, API server).
    pub frontend_delay_s: f64,
    /// CPU seconds the API server's one thread spends per request (HTTP, tokenization):
    /// past one core's worth, requests queue in the front end.
    pub api_cpu_per_request_s: f64,
    /// Step-time multiplier.
    pub slowdown: f64,
    /// Share of a finished request's KV blocks never freed.
    pub leak_fraction: f64,
    /// Engine hung: nothing scheduled.
    pub stalled: bool,
    /// Clients disconnect after waiting this long for a first token (a streaming
    /// client's or gateway's timeout); vLLM aborts their requests.
    pub first_token_timeout_s: Option<f64>,
    /// ...and send the same request again at once.
    pub retry_on_timeout: bool,
}

impl Segment {
    fn at(start_s: f64, rate_per_s: f64, prompt: LenDist, output: LenDist) -> Self {
        Self {
            start_s,
            rate_per_s,
            prompt,
            output,
            prefix_share: 0.5,
            prefix_len: 128,
            frontend_delay_s: 0.01,
            api_cpu_per_request_s: 0.001,
            slowdown: 1.0,
            leak_fraction: 0.0,
            stalled: false,
            first_token_timeout_s: None,
            retry_on_timeout: false,
        }
    }
}

/// A window in which a phase is expected to be observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseWindow {
    pub phase: Phase,
    pub from_s: f64,
    pub to_s: f64,
}

/// What analysis and doctor should find in a recording of the scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroundTruth {
    /// The hypothesis id doctor must rank first.
    pub root_cause: Hypothesis,
    /// Phases that must be observed (after debounce) inside each window.
    pub phases: Vec<PhaseWindow>,
    /// Phases that must never be observed.
    pub absent_phases: Vec<Phase>,
    /// Conditions that must form at least one episode.
    pub conditions: Vec<Condition>,
    /// Transient / data-quality events that must occur at least once.
    pub events: Vec<EventName>,
    /// Events that must not occur.
    pub absent_events: Vec<EventName>,
}

/// A named workload story.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    pub description: &'static str,
    pub duration_s: f64,
    pub engine: EngineConfig,
    pub segments: Vec<Segment>,
    /// `(at_s, downtime_s)`: the process restarts (counters reset, endpoint down).
    pub restart: Option<(f64, f64)>,
    pub truth: GroundTruth,
}

impl Scenario {
    /// The segment in force at `t`.
    pub fn segment_at(&self, t: f64) -> &Segment {
        let mut cur = &self.segments[0];
        for s in &self.segments {
            if s.start_s <= t {
                cur = s;
            }
        }
        cur
    }

    /// Start of the segment after `t`, if any.
    pub fn next_boundary(&self, t: f64) -> Option<f64> {
        self.segments.iter().map(|s| s.start_s).find(|s| *s > t)
    }
}

/// Names of every scenario, in documentation order.
pub const NAMES: &[&str] = &[
    "idle",
    "healthy",
    "queue-pressure",
    "kv-saturation",
    "prefill-burst",
    "ttft-spike",
    "decode-collapse",
    "prefix-cache-miss",
    "kv-leak",
    "stuck-engine",
    "engine-stall",
    "restart",
    "mixed-incident",
    "compute-bound",
    "api-cpu-bound",
    "abort-storm",
];

const CHAT_PROMPT: LenDist = len(300.0, 0.5, 16, 2000);
const CHAT_OUTPUT: LenDist = len(150.0, 0.4, 8, 600);

fn truth(root: Hypothesis) -> GroundTruth {
    GroundTruth {
        root_cause: root,
        phases: vec![],
        absent_phases: vec![],
        conditions: vec![],
        events: vec![],
        absent_events: vec![],
    }
}

fn w(phase: Phase, from_s: f64, to_s: f64) -> PhaseWindow {
    PhaseWindow {
        phase,
        from_s,
        to_s,
    }
}

/// Looks a scenario up by name.
pub fn scenario(name: &str) -> Option<Scenario> {
    let base = EngineConfig::default();
    let healthy_seg = |t: f64| Segment::at(t, 6.0, CHAT_PROMPT, CHAT_OUTPUT);
    let s = match name {
        "idle" => Scenario {
            name: "idle",
            description: "A loaded model with no traffic: nothing running, nothing waiting, no tokens.",
            duration_s: 90.0,
            engine: base,
            segments: vec![Segment::at(0.0, 0.0, CHAT_PROMPT, CHAT_OUTPUT)],
            restart: None,
            truth: GroundTruth {
                phases: vec![w(Phase::Idle, 0.0, 90.0)],
                absent_phases: vec![
                    Phase::Saturated,
                    Phase::QueuePressure,
                    Phase::KvPressureRising,
                    Phase::Healthy,
                ],
                absent_events: vec![
                    EventName::KvSaturation,
                    EventName::PreemptionBurst,
                    EventName::TtftSpike,
                ],
                ..truth(Hypothesis::GpuUnderutilized)
            },
        },
        "healthy" => Scenario {
            name: "healthy",
            description: "Steady chat traffic (6 req/s, ~300-token prompts, ~150-token outputs) well inside capacity.",
            duration_s: 90.0,
            engine: base,
            segments: vec![healthy_seg(0.0)],
            restart: None,
            truth: GroundTruth {
                phases: vec![w(Phase::Healthy, 5.0, 90.0)],
                absent_phases: vec![Phase::Saturated, Phase::KvPressureRising],
                absent_events: vec![
                    EventName::KvSaturation,
                    EventName::PreemptionBurst,
                    EventName::ScrapeGap,
                    EventName::CounterReset,
                ],
                ..truth(Hypothesis::Healthy)
            },
        },
        "queue-pressure" => Scenario {
            name: "queue-pressure",
            description: "Short requests arrive faster than max-num-seqs lets the engine serve them (as in the real 0.26 capture, fixture 09): running pinned at max-num-seqs, waiting grows, KV stays moderate.",
            duration_s: 90.0,
            engine: EngineConfig {
                max_num_seqs: 32,
                ..base
            },
            segments: vec![
                Segment::at(0.0, 20.0, len(64.0, 0.2, 16, 256), len(96.0, 0.3, 8, 256)),
                Segment::at(20.0, 60.0, len(64.0, 0.2, 16, 256), len(96.0, 0.3, 8, 256)),
                Segment::at(70.0, 20.0, len(64.0, 0.2, 16, 256), len(96.0, 0.3, 8, 256)),
            ],
            restart: None,
            truth: GroundTruth {
                phases: vec![w(Phase::QueuePressure, 25.0, 70.0)],
                absent_phases: vec![Phase::Saturated],
                conditions: vec![Condition::QueueDelay],
                absent_events: vec![EventName::PreemptionBurst, EventName::KvSaturation],
                ..truth(Hypothesis::QueueSaturation)
            },
        },
        "kv-saturation" => Scenario {
            name: "kv-saturation",
            description: "Long contexts (1500-token prompts, 1500-token outputs) overflow the 2048-block KV cache: usage pins near 100 %, the newest requests are preempted again and again (as in fixture 10).",
            duration_s: 90.0,
            engine: base,
            segments: vec![
                healthy_seg(0.0),
                Segment {
                    prefix_share: 0.0,
                    ..Segment::at(
                        15.0,
                        2.0,
                        len(1500.0, 0.15, 800, 3000),
                        len(1500.0, 0.15, 800, 3000),
                    )
                },
            ],
            restart: None,
            truth: GroundTruth {
                phases: vec![w(Phase::Saturated, 30.0, 90.0)],
                events: vec![EventName::KvSaturation, EventName::PreemptionBurst],
                ..truth(Hypothesis::KvCacheThrashing)
            },
        },
        "prefill-burst" => Scenario {
            name: "prefill-burst",
            description: "Waves of very long prompts (4 s at 6 req/s of ~4000-token prompts with short answers) every 20 s on top of chat traffic: prefill chunks fill the token budget, new requests wait behind them and TTFT jumps while decode keeps going.",
            duration_s: 90.0,
            engine: EngineConfig {
                num_gpu_blocks: 8192,
                ..base
            },
            segments: {
                let mut v = vec![healthy_seg(0.0)];
                for k in 0..4 {
                    let t = 15.0 + 20.0 * k as f64;
                    v.push(Segment {
                        prefix_share: 0.0,
                        ..Segment::at(t, 6.0, len(4000.0, 0.1, 3000, 5000), len(24.0, 0.2, 4, 64))
                    });
                    v.push(healthy_seg(t + 4.0));
                }
                v
            },
            restart: None,
            truth: GroundTruth {
                conditions: vec![Condition::PrefillPressure],
                events: vec![EventName::TtftSpike],
                absent_phases: vec![Phase::Saturated],
                ..truth(Hypothesis::PrefillStarvation)
            },
        },
        "ttft-spike" => Scenario {
            name: "ttft-spike",
            description: "Steady traffic; three times the API server stalls for ~2 s (tokenizer/GC), so first tokens arrive late with no change in engine load.",
            duration_s: 90.0,
            engine: base,
            segments: {
                let mut v = vec![healthy_seg(0.0)];
                for t in [30.0, 55.0, 75.0] {
                    v.push(Segment {
                        frontend_delay_s: 2.5,
                        ..healthy_seg(t)
                    });
                    v.push(healthy_seg(t + 2.0));
                }
                v
            },
            restart: None,
            truth: GroundTruth {
                events: vec![EventName::TtftSpike],
                absent_phases: vec![Phase::Saturated],
                absent_events: vec![EventName::PreemptionBurst, EventName::KvSaturation],
                ..truth(Hypothesis::TtftInstability)
            },
        },
        "decode-collapse" => Scenario {
            name: "decode-collapse",
            description: "At 40 s every engine step becomes 5× slower (GPU throttling or a noisy neighbour): generation tokens/s collapses while the running batch stays full.",
            duration_s: 90.0,
            engine: base,
            segments: vec![
                Segment::at(0.0, 10.0, CHAT_PROMPT, CHAT_OUTPUT),
                Segment {
                    slowdown: 5.0,
                    ..Segment::at(40.0, 10.0, CHAT_PROMPT, CHAT_OUTPUT)
                },
            ],
            restart: None,
            truth: GroundTruth {
                events: vec![EventName::DecodeThroughputDrop],
                ..truth(Hypothesis::DecodeThroughputCollapse)
            },
        },
        "prefix-cache-miss" => Scenario {
            name: "prefix-cache-miss",
            description: "Prefix caching is on and prompts are long (~1500 tokens) but every prompt is unique (a timestamp at the top of the system prompt): thousands of tokens looked up per second, almost none hit.",
            duration_s: 90.0,
            engine: base,
            segments: vec![Segment {
                prefix_share: 0.0,
                ..Segment::at(
                    0.0,
                    1.5,
                    len(1500.0, 0.2, 800, 3000),
                    len(60.0, 0.3, 8, 200),
                )
            }],
            restart: None,
            truth: GroundTruth {
                absent_phases: vec![Phase::Saturated],
                absent_events: vec![EventName::PreemptionBurst],
                ..truth(Hypothesis::PrefixCacheIneffective)
            },
        },
        "kv-leak" => Scenario {
            name: "kv-leak",
            description: "Bursty traffic with idle pauses; a quarter of every finished request's KV blocks is never returned, so usage between bursts never comes back to zero and creeps up.",
            duration_s: 90.0,
            engine: base,
            segments: {
                let mut v = Vec::new();
                for k in 0..6 {
                    let t = 15.0 * k as f64;
                    v.push(Segment {
                        leak_fraction: 0.25,
                        ..Segment::at(t, 8.0, CHAT_PROMPT, CHAT_OUTPUT)
                    });
                    v.push(Segment {
                        leak_fraction: 0.25,
                        ..Segment::at(t + 9.0, 0.0, CHAT_PROMPT, CHAT_OUTPUT)
                    });
                }
                v
            },
            restart: None,
            truth: GroundTruth {
                phases: vec![w(Phase::Idle, 10.0, 90.0)],
                ..truth(Hypothesis::KvLeak)
            },
        },
        "stuck-engine" => Scenario {
            name: "stuck-engine",
            description: "At 30 s the engine core hangs for good: /metrics still answers, but every engine gauge and counter stays frozen at its value at the hang (vLLM V1), while clients keep sending.",
            duration_s: 90.0,
            engine: base,
            segments: vec![
                healthy_seg(0.0),
                Segment {
                    stalled: true,
                    ..Segment::at(30.0, 3.0, CHAT_PROMPT, CHAT_OUTPUT)
                },
            ],
            restart: None,
            truth: GroundTruth {
                conditions: vec![Condition::EngineStalled],
                absent_events: vec![EventName::DecodeThroughputDrop],
                ..truth(Hypothesis::StuckEngine)
            },
        },
        "engine-stall" => Scenario {
            name: "engine-stall",
            description: "Steady chat traffic; at 30 s the engine core hangs for 20 s with requests running (every engine series frozen, /metrics still answering), then resumes and drains the backlog.",
            duration_s: 90.0,
            engine: base,
            segments: vec![
                healthy_seg(0.0),
                Segment {
                    stalled: true,
                    ..healthy_seg(30.0)
                },
                healthy_seg(50.0),
            ],
            restart: None,
            truth: GroundTruth {
                phases: vec![w(Phase::Healthy, 0.0, 29.0)],
                conditions: vec![Condition::EngineStalled],
                absent_events: vec![EventName::DecodeThroughputDrop],
                ..truth(Hypothesis::StuckEngine)
            },
        },
        "restart" => Scenario {
            name: "restart",
            description: "Steady traffic; at 45 s the server process restarts: /metrics is down for 8 s, then every counter starts again from zero.",
            duration_s: 90.0,
            engine: base,
            segments: vec![healthy_seg(0.0)],
            restart: Some((45.0, 8.0)),
            truth: GroundTruth {
                events: vec![EventName::ScrapeGap, EventName::CounterReset],
                ..truth(Hypothesis::ServerRestart)
            },
        },
        "mixed-incident" => Scenario {
            name: "mixed-incident",
            description: "A 90 s incident: healthy chat traffic → at 20 s a surge of long-context requests → KV saturates and the engine preempts → requests queue up → at 50 s the surge stops and the server drains and recovers.",
            duration_s: 90.0,
            engine: base,
            segments: vec![
                healthy_seg(0.0),
                Segment {
                    prefix_share: 0.2,
                    ..Segment::at(
                        20.0,
                        2.5,
                        len(1800.0, 0.2, 800, 4000),
                        len(900.0, 0.3, 200, 2000),
                    )
                },
                Segment::at(50.0, 3.0, CHAT_PROMPT, CHAT_OUTPUT),
            ],
            restart: None,
            truth: GroundTruth {
                phases: vec![
                    w(Phase::Healthy, 0.0, 20.0),
                    w(Phase::Saturated, 25.0, 70.0),
                ],
                events: vec![EventName::KvSaturation, EventName::PreemptionBurst],
                ..truth(Hypothesis::KvCacheThrashing)
            },
        },
        "compute-bound" => Scenario {
            name: "compute-bound",
            description: "Long prompts (~2000 tokens, short answers) arrive at 18 req/s from 20 s, more than the GPU can prefill (~14 req/s at a full 4096-token budget per step): every step is full, the GPU is busy, requests wait; the 16384-block KV cache stays well below saturation.",
            duration_s: 90.0,
            engine: EngineConfig {
                num_gpu_blocks: 16384,
                max_num_seqs: 256,
                ..base
            },
            segments: vec![
                Segment {
                    prefix_share: 0.0,
                    ..Segment::at(
                        0.0,
                        4.0,
                        len(2000.0, 0.1, 1500, 2600),
                        len(24.0, 0.3, 8, 64),
                    )
                },
                Segment {
                    prefix_share: 0.0,
                    ..Segment::at(
                        20.0,
                        18.0,
                        len(2000.0, 0.1, 1500, 2600),
                        len(24.0, 0.3, 8, 64),
                    )
                },
            ],
            restart: None,
            truth: GroundTruth {
                phases: vec![w(Phase::QueuePressure, 40.0, 90.0)],
                absent_phases: vec![Phase::Saturated],
                absent_events: vec![EventName::PreemptionBurst, EventName::KvSaturation],
                // The queue is the consequence of prefill compute: long prompts fill
                // every step's token budget.
                ..truth(Hypothesis::PrefillStarvation)
            },
        },
        "api-cpu-bound" => Scenario {
            name: "api-cpu-bound",
            description: "From 20 s, 20 req/s of short classification-style requests (~200-token prompts, 1-8 output tokens) whose HTTP handling and tokenization take 60 ms of the API server's one thread: it saturates at ~17 req/s, requests queue in front of the engine (invisible to vLLM's waiting gauge) and TTFT climbs while the GPU is mostly idle.",
            duration_s: 90.0,
            engine: base,
            segments: vec![
                Segment {
                    api_cpu_per_request_s: 0.06,
                    ..Segment::at(0.0, 6.0, len(200.0, 0.3, 16, 800), len(3.0, 0.4, 1, 8))
                },
                Segment {
                    api_cpu_per_request_s: 0.06,
                    ..Segment::at(20.0, 20.0, len(200.0, 0.3, 16, 800), len(3.0, 0.4, 1, 8))
                },
            ],
            restart: None,
            truth: GroundTruth {
                conditions: vec![Condition::TtftElevated],
                absent_phases: vec![Phase::Saturated, Phase::QueuePressure],
                absent_events: vec![EventName::PreemptionBurst, EventName::KvSaturation],
                ..truth(Hypothesis::ApiServerSaturated)
            },
        },
        "abort-storm" => {
            // Short requests, as in queue-pressure, from clients behind a gateway that
            // gives up on a request without a first token after 5 s and sends it again.
            let storm = |t: f64, rate: f64| Segment {
                first_token_timeout_s: Some(5.0),
                retry_on_timeout: true,
                ..Segment::at(t, rate, len(64.0, 0.2, 16, 256), len(96.0, 0.3, 8, 256))
            };
            Scenario {
                name: "abort-storm",
                description: "Clients behind a gateway give up on a request without a first token after 5 s and retry it at once. Arrivals above what max-num-seqs serves (20 s-70 s) fill the queue past 5 s of waiting: the oldest requests are abandoned and come back at its end, so running stays pinned, waiting holds steady and the gauges never show a request leave; only the API server's HTTP counter does.",
                duration_s: 90.0,
                engine: EngineConfig {
                    max_num_seqs: 32,
                    ..base
                },
                segments: vec![storm(0.0, 20.0), storm(20.0, 60.0), storm(70.0, 20.0)],
                restart: None,
                truth: GroundTruth {
                    phases: vec![w(Phase::QueuePressure, 30.0, 70.0)],
                    absent_phases: vec![Phase::Saturated],
                    conditions: vec![Condition::QueueDelay],
                    events: vec![EventName::ClientAbortSurge],
                    absent_events: vec![EventName::PreemptionBurst, EventName::KvSaturation],
                    ..truth(Hypothesis::QueueSaturation)
                },
            }
        }
        _ => return None,
    };
    Some(s)
}
