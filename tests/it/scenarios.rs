//! Golden tests: every simulator scenario, recorded offline with three seeds, analysed
//! and diagnosed; the findings must match the scenario's documented ground truth.
//!
//! Tolerances: a phase window passes when the (debounced) phase is observed at least once
//! inside it; a condition passes when it starts at least once; events by name.

use kvscope::analysis::{self, Thresholds};
use kvscope::diagnosis;
use kvscope::sim::scenario;
use kvscope::store;
use kvscope::vocab::{Hypothesis, Phase};

use crate::common::{block_on, record_scenario};

const SEEDS: [u64; 3] = [1, 2, 3];

/// Analyses a recorded session with its phase series and diagnoses it: from all its
/// events, and (as `doctor` does, streamed) from only those the rules read — the same
/// report.
fn analyze_and_diagnose(dir: &std::path::Path) -> (analysis::Analysis, diagnosis::Report) {
    let a = crate::common::analyze_with_series(dir);
    let meta = store::read_metadata(dir).unwrap();
    let report = diagnosis::diagnose(&a.summary, &a.events, meta.as_ref());
    let read: Vec<_> = a
        .events
        .iter()
        .filter(|e| diagnosis::rules_read(e))
        .cloned()
        .collect();
    assert_eq!(
        diagnosis::diagnose(&a.summary, &read, meta.as_ref()),
        report,
        "{}",
        dir.display()
    );
    (a, report)
}

fn check(name: &str, seed: u64) -> Vec<String> {
    let sc = scenario::scenario(name).unwrap();
    let truth = &sc.truth;
    let (_tmp, dir) = record_scenario(name, seed);
    let (a, report) = analyze_and_diagnose(&dir);
    let mut problems = Vec::new();
    let top = report
        .hypotheses
        .first()
        .map(|h| h.id.to_string())
        .unwrap_or_default();
    if top != truth.root_cause.as_str() {
        let ranked: Vec<String> = report
            .hypotheses
            .iter()
            .map(|h| format!("{}={}", h.id, h.score))
            .collect();
        problems.push(format!(
            "top is {top}, expected {} ({ranked:?})",
            truth.root_cause
        ));
    }
    for w in &truth.phases {
        let seen = a
            .series
            .iter()
            .any(|p| p.t_rel_sec >= w.from_s && p.t_rel_sec <= w.to_s && p.phase == Some(w.phase));
        if !seen {
            problems.push(format!(
                "phase {} not seen in [{}, {}]",
                w.phase, w.from_s, w.to_s
            ));
        }
    }
    for p in &truth.absent_phases {
        if a.series.iter().any(|x| x.phase == Some(*p)) {
            problems.push(format!("phase {p} should not occur"));
        }
    }
    for c in &truth.conditions {
        let started = a
            .events
            .iter()
            .any(|e| e.condition_name() == Some(*c) && e.state.as_deref() == Some("start"));
        if !started {
            problems.push(format!("condition {c} never started"));
        }
    }
    for e in &truth.events {
        if !a.events.iter().any(|x| x.event_name() == Some(*e)) {
            problems.push(format!("event {e} missing"));
        }
    }
    for e in &truth.absent_events {
        if a.events.iter().any(|x| x.event_name() == Some(*e)) {
            problems.push(format!("event {e} should not occur"));
        }
    }
    // The TTFT spikes of an incident inside the engine (queue, KV, prefill, slower steps)
    // are its load: TTFT_INSTABILITY is found only where the front end is the cause.
    let front_end = [Hypothesis::TtftInstability, Hypothesis::ApiServerSaturated];
    if !front_end.contains(&truth.root_cause)
        && report.hypotheses.iter().any(|h| h.id == "TTFT_INSTABILITY")
    {
        problems.push("TTFT_INSTABILITY found for an incident inside the engine".into());
    }
    if matches!(name, "healthy" | "idle") {
        for h in &report.hypotheses {
            if h.severity.is_loud() {
                problems.push(format!("{name} has a {} finding {}", h.severity, h.id));
            }
        }
    }
    problems
        .into_iter()
        .map(|p| format!("{name} seed {seed}: {p}"))
        .collect()
}

#[test]
fn every_scenario_matches_its_ground_truth() {
    let mut problems = Vec::new();
    for name in scenario::NAMES {
        for seed in SEEDS {
            problems.extend(check(name, seed));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Phases of a scenario recorded every `interval` s, and the doctor's top finding.
fn phases_at(name: &str, interval: f64) -> (Vec<(f64, Option<Phase>)>, String) {
    let (_tmp, dir) = crate::common::record_scenario_at(name, 1, interval, |_| {});
    let (a, r) = analyze_and_diagnose(&dir);
    let top = r
        .hypotheses
        .first()
        .map(|h| h.id.to_string())
        .unwrap_or_default();
    (
        a.series.iter().map(|p| (p.t_rel_sec, p.phase)).collect(),
        top,
    )
}

/// Time is in seconds, not samples: the same incident scraped every 0.5, 1, 2 or 5 s
/// gets the same phases — compared at each coarse sample, away from a phase boundary
/// of either recording by more than one coarse interval — and the same top finding.
#[test]
fn same_phases_and_findings_at_every_interval() {
    let mut problems = Vec::new();
    for name in [
        "mixed-incident",
        "queue-pressure",
        "engine-stall",
        "restart",
    ] {
        let (fine, fine_top) = phases_at(name, 0.5);
        let boundaries = |s: &[(f64, Option<Phase>)]| -> Vec<f64> {
            s.windows(2)
                .filter(|w| w[0].1 != w[1].1)
                .map(|w| w[1].0)
                .collect()
        };
        let fine_b = boundaries(&fine);
        for interval in [1.0, 2.0, 5.0] {
            let (coarse, top) = phases_at(name, interval);
            if top != fine_top {
                problems.push(format!(
                    "{name}: top {top} at {interval} s, {fine_top} at 0.5 s"
                ));
            }
            let coarse_b = boundaries(&coarse);
            let near = |t: f64| {
                fine_b
                    .iter()
                    .chain(&coarse_b)
                    .any(|b| (b - t).abs() <= interval + 1e-9)
            };
            let (mut compared, mut differ) = (0, Vec::new());
            for (t, phase) in &coarse {
                if near(*t) {
                    continue;
                }
                let Some(f) = fine.iter().find(|x| (x.0 - t).abs() < 1e-6) else {
                    continue;
                };
                compared += 1;
                if &f.1 != phase {
                    differ.push(format!("t={t}: {phase:?} vs {:?}", f.1));
                }
            }
            if compared < 5 || !differ.is_empty() {
                problems.push(format!(
                    "{name} at {interval} s: {} of {compared} samples differ from 0.5 s: {differ:?}",
                    differ.len()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn max_num_seqs_advice_follows_the_block_count() {
    let advice = |blocks: u32| -> u64 {
        let (_tmp, dir) = crate::common::record_scenario_with("kv-saturation", 1, |s| {
            s.engine.num_gpu_blocks = blocks
        });
        let a = block_on(analysis::analyze_dir(&dir, &Thresholds::default())).unwrap();
        let meta = store::read_metadata(&dir).unwrap();
        let r = diagnosis::diagnose(&a.summary, &a.events, meta.as_ref());
        let h = r
            .hypotheses
            .iter()
            .find(|h| h.id == "KV_CACHE_THRASHING")
            .expect("thrashing found");
        let rec = h
            .recommendations
            .iter()
            .find(|r| r.action == "--max-num-seqs")
            .expect("max-num-seqs advice");
        rec.value.as_deref().unwrap().parse().unwrap()
    };
    let small = advice(2048);
    let large = advice(3072);
    assert!((5..=40).contains(&small), "{small}");
    assert!(
        large > small,
        "more blocks → more sequences fit: {small} vs {large}"
    );
}

#[test]
fn no_recommendation_lowers_gpu_memory_utilization() {
    for name in scenario::NAMES {
        let (_tmp, dir) = record_scenario(name, 1);
        let a = block_on(analysis::analyze_dir(&dir, &Thresholds::default())).unwrap();
        let meta = store::read_metadata(&dir).unwrap();
        let r = diagnosis::diagnose(&a.summary, &a.events, meta.as_ref());
        let text = serde_json::to_string(&r).unwrap().to_lowercase();
        assert!(
            !text.contains("lower gpu-memory-utilization")
                && !text.contains("reduce --gpu-memory-utilization")
                && !text.contains("decrease --gpu-memory-utilization"),
            "{name}"
        );
        for h in &r.hypotheses {
            for rec in &h.recommendations {
                if rec.action == "--gpu-memory-utilization" {
                    let v: f64 = rec.value.as_deref().unwrap_or("0.95").parse().unwrap();
                    assert!(v >= 0.9, "{name}: suggests {v}");
                }
            }
        }
    }
}

/// The bottleneck of each scenario's longest episode of trouble, with the simulated
/// host's DCGM exporter and the API server's CPU recorded beside vLLM's page (the same
/// pipeline as `record --gpu-metrics`): KV-bound, compute-bound and a CPU-bound API server
/// named as such, and without GPU telemetry "not enough GPU telemetry" where the engine's
/// own signals do not decide.
#[test]
fn bottleneck_per_episode_from_dcgm_and_api_cpu() {
    use kvscope::diagnosis::BottleneckKind as K;
    let longest = |name: &str, gpu: bool| {
        let sc = scenario::scenario(name).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let run = kvscope::sim::OfflineRun {
            gpu,
            ..kvscope::sim::OfflineRun::new(sc, 1)
        };
        kvscope::sim::record_offline(&run, &dir, "t").unwrap();
        let a = block_on(analysis::analyze_dir(&dir, &Thresholds::default())).unwrap();
        let meta = store::read_metadata(&dir).unwrap();
        let r = diagnosis::diagnose(&a.summary, &a.events, meta.as_ref());
        let b = r
            .bottleneck
            .iter()
            .max_by(|a, b| a.duration_s.total_cmp(&b.duration_s))
            .cloned()
            .unwrap_or_else(|| panic!("{name}: no episode of trouble"));
        (b, r)
    };
    let (kv, _) = longest("kv-saturation", true);
    assert_eq!(kv.kind, K::KvMemory, "{kv:?}");
    assert!(kv.duration_s >= 50.0, "{kv:?}");
    let (compute, _) = longest("compute-bound", true);
    assert_eq!(compute.kind, K::Compute, "{compute:?}");
    assert!(compute.gpu_util_avg_pct.unwrap() >= 85.0, "{compute:?}");
    assert!(
        compute.gpu_sm_active_avg_pct.unwrap() >= 60.0,
        "{compute:?}"
    );
    let (api, report) = longest("api-cpu-bound", true);
    assert_eq!(api.kind, K::ApiServerCpu, "{api:?}");
    assert!(api.api_cpu_avg_pct.unwrap() >= 90.0, "{api:?}");
    assert!(api.gpu_util_avg_pct.unwrap() < 50.0, "{api:?}");
    assert_eq!(
        report.hypotheses[0].id,
        kvscope::vocab::Hypothesis::ApiServerSaturated
    );
    // The same compute-bound load without GPU telemetry: the engine's signals rule out
    // KV, and nothing tells compute from outside the GPU.
    let (blind, _) = longest("compute-bound", false);
    assert_eq!(blind.kind, K::InsufficientTelemetry, "{blind:?}");
    assert!(blind.reason.contains("--gpu-metrics"), "{}", blind.reason);
    // KV-bound needs no GPU telemetry.
    assert_eq!(longest("kv-saturation", false).0.kind, K::KvMemory);
}

/// Every `vllm serve` flag the doctor recommends, in every scenario (1, 2 and 4 engines),
/// exists in each release it claims to work with (the flag reference read from vLLM's
/// sources, `tests/fixtures/vllm-serve-flags.json`), and its value passes that release's
/// type, choices and range checks.
#[test]
fn every_recommended_flag_and_value_is_accepted_by_vllm() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vllm-serve-flags.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let versions: Vec<String> = doc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for engines in [1usize, 2, 4] {
        for name in scenario::NAMES {
            let (_tmp, dir) = record_engines(name, engines, false);
            let a = block_on(analysis::analyze_dir(&dir, &Thresholds::default())).unwrap();
            let meta = store::read_metadata(&dir).unwrap();
            let r = diagnosis::diagnose(&a.summary, &a.events, meta.as_ref());
            for h in &r.hypotheses {
                for rec in h
                    .recommendations
                    .iter()
                    .filter(|r| r.action.starts_with("--"))
                {
                    checked += 1;
                    let flag = rec.action.split_whitespace().next().unwrap();
                    let Some(spec) = kvscope::diagnosis::flags::lookup(flag) else {
                        problems.push(format!("{name}/{engines}: {flag} not in the flag table"));
                        continue;
                    };
                    if rec.accepted_by.is_none() || rec.current.is_none() {
                        problems.push(format!(
                            "{name}/{engines}: {flag} lacks current/accepted_by"
                        ));
                    }
                    for v in &versions {
                        let minor: u32 = v.split('.').nth(1).unwrap().parse().unwrap();
                        let claimed =
                            spec.accepts(kvscope::adapter::version::VllmVersion { minor });
                        let info = doc["flags"][flag].get(v);
                        if claimed != info.is_some() {
                            problems.push(format!(
                                "{name}/{engines}: {flag} in {v}: table says {claimed}"
                            ));
                        }
                        // A flag that takes a value comes with one: `vllm serve` exits
                        // on a bare `--tensor-parallel-size`.
                        if let Some(info) = info
                            && info.get("type").and_then(|t| t.as_str()) != Some("bool")
                            && rec.value.is_none()
                        {
                            problems.push(format!(
                                "{name}/{engines}: {flag} takes a value in {v}, the advice has none"
                            ));
                        }
                        let (Some(info), Some(value)) = (info, rec.value.as_deref()) else {
                            continue;
                        };
                        if let Some(choices) = info.get("choices").and_then(|c| c.as_array())
                            && !choices.iter().any(|c| c.as_str() == Some(value))
                        {
                            problems.push(format!(
                                "{name}/{engines}: {flag} {value} not a choice in {v}"
                            ));
                        }
                        let c = &info["constraints"];
                        let num = value.parse::<f64>();
                        if c.is_object() {
                            let Ok(x) = num else {
                                problems
                                    .push(format!("{name}/{engines}: {flag} {value} not a number"));
                                continue;
                            };
                            let bound = |k: &str| c.get(k).and_then(|b| b.as_f64());
                            let ok = bound("ge").is_none_or(|b| x >= b)
                                && bound("gt").is_none_or(|b| x > b)
                                && bound("le").is_none_or(|b| x <= b)
                                && bound("lt").is_none_or(|b| x < b);
                            if !ok {
                                problems.push(format!(
                                    "{name}/{engines}: {flag} {value} breaks {c} in {v}"
                                ));
                            }
                        }
                        if info.get("type").and_then(|t| t.as_str()) == Some("int")
                            && value.parse::<i64>().is_err()
                        {
                            problems
                                .push(format!("{name}/{engines}: {flag} {value} is not an int"));
                        }
                    }
                    if flag == "--gpu-memory-utilization" {
                        let cur: Option<f64> = rec.current.as_deref().and_then(|c| c.parse().ok());
                        let new: f64 = rec.value.as_deref().unwrap().parse().unwrap();
                        if cur.is_some_and(|c| new <= c) {
                            problems.push(format!(
                                "{name}/{engines}: gpu-memory-utilization {new} not above {cur:?}"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} flag recommendations checked");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

fn record_engines(
    name: &str,
    engines: usize,
    scale_rate: bool,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let mut sc = scenario::scenario(name).unwrap();
    if scale_rate {
        for s in &mut sc.segments {
            s.rate_per_s *= engines as f64;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let run = kvscope::sim::OfflineRun {
        engines,
        ..kvscope::sim::OfflineRun::new(sc, 1)
    };
    kvscope::sim::record_offline(&run, &dir, "t").unwrap();
    (tmp, dir)
}

/// vLLM's flags are per engine, and `cache_config_info` shows `num_gpu_blocks` summed over
/// data-parallel engines: with 4 engines each carrying the single-engine load, the
/// `--max-num-seqs` advice stays the single engine's (not 4×) and names one engine's cache.
#[test]
fn data_parallel_advice_is_per_engine() {
    let advice = |engines: usize| -> (f64, String) {
        let (_tmp, dir) = record_engines("kv-saturation", engines, true);
        let a = block_on(analysis::analyze_dir(&dir, &Thresholds::default())).unwrap();
        let meta = store::read_metadata(&dir).unwrap();
        let r = diagnosis::diagnose(&a.summary, &a.events, meta.as_ref());
        assert_eq!(
            r.hypotheses[0].id, "KV_CACHE_THRASHING",
            "{engines} engines"
        );
        let rec = r.hypotheses[0]
            .recommendations
            .iter()
            .find(|x| x.action == "--max-num-seqs")
            .expect("max-num-seqs advice");
        (
            rec.value.as_deref().unwrap().parse().unwrap(),
            rec.reason.clone(),
        )
    };
    let (one, _) = advice(1);
    let (four, reason) = advice(4);
    assert!(
        four >= 0.6 * one && four <= 1.6 * one,
        "per engine: 1 engine → {one}, 4 engines → {four}"
    );
    // 2,048 blocks × 16 tokens per engine.
    assert!(
        reason.contains("one engine's 32768-token KV cache"),
        "{reason}"
    );
}

/// `--max-num-queued-reqs` counts every unfinished request of the API server, running and
/// waiting, over all its engines (vLLM's `AsyncLLM.check_admission`): the bound advised
/// for a queue on 4 data-parallel engines is about 4× one engine's, and never below twice
/// what the server ran at once (a bound under that would cap the running batch itself).
#[test]
fn data_parallel_queue_bound_counts_every_engine() {
    let bound = |engines: usize| -> (f64, f64) {
        let (_tmp, dir) = record_engines("queue-pressure", engines, true);
        let a = block_on(analysis::analyze_dir(&dir, &Thresholds::default())).unwrap();
        // The simulator's pages are 0.26's, which has no queue bound: as a 0.32 server.
        let mut meta = store::read_metadata(&dir).unwrap().unwrap();
        meta.state_vllm_version("0.32.0", "stated");
        let r = diagnosis::diagnose(&a.summary, &a.events, Some(&meta));
        let f = r
            .hypotheses
            .iter()
            .find(|h| h.id == "QUEUE_SATURATION")
            .unwrap_or_else(|| panic!("{engines} engines: no QUEUE_SATURATION"));
        let rec = f
            .recommendations
            .iter()
            .find(|x| x.action == "--max-num-queued-reqs")
            .expect("queue bound advice");
        let running = a.summary.servers[0].running_max.unwrap();
        (rec.value.as_deref().unwrap().parse().unwrap(), running)
    };
    let (one, one_running) = bound(1);
    let (four, four_running) = bound(4);
    assert!(
        one >= 2.0 * one_running,
        "1 engine: {one} for {one_running} running"
    );
    assert!(
        four >= 2.0 * four_running,
        "4 engines: {four} for {four_running} running"
    );
    assert!(
        four >= 3.0 * one && four <= 5.0 * one,
        "1 engine → {one}, 4 engines → {four}"
    );
}

/// The prefill advice has its values where the prompt-length histogram is missing (an
/// import of core columns, a vLLM log): `--long-prefill-token-threshold` is then a
/// quarter of the proposed step budget, as it is a quarter of the longest prompts with it.
#[test]
fn prefill_advice_has_values_without_prompt_lengths() {
    let (_tmp, dir) = record_engines("prefill-burst", 1, false);
    let rows = store::read_samples_jsonl(&dir.join(store::SAMPLES_JSONL)).unwrap();
    let advice = |rows: Vec<kvscope::store::schema::Sample>| -> (String, String) {
        let a = block_on(analysis::analyze_rows(rows, &Thresholds::default())).unwrap();
        let r = diagnosis::diagnose(&a.summary, &a.events, None);
        let f = r
            .hypotheses
            .iter()
            .find(|h| h.id == "PREFILL_STARVATION")
            .unwrap_or_else(|| panic!("no PREFILL_STARVATION: {:?}", r.hypotheses));
        let value = |flag: &str| {
            f.recommendations
                .iter()
                .find(|x| x.action == flag)
                .and_then(|x| x.value.clone())
                .unwrap_or_else(|| panic!("no value for {flag}: {:?}", f.recommendations))
        };
        (
            value("--long-prefill-token-threshold"),
            value("--max-num-batched-tokens"),
        )
    };
    let (with, budget) = advice(rows.clone());
    let p95 = rows
        .iter()
        .filter_map(|r| r.prompt_len_p95)
        .fold(0.0, f64::max);
    assert_eq!(with, format!("{:.0}", (p95 / 4.0).max(512.0)));
    let stripped = rows
        .into_iter()
        .map(|r| kvscope::store::schema::Sample {
            prompt_len_p95: None,
            ..r
        })
        .collect();
    let (without, budget_without) = advice(stripped);
    assert_eq!(budget_without, "16384");
    assert_eq!(
        without, "4096",
        "a quarter of the {budget_without}-token budget"
    );
    assert!(budget.parse::<u64>().unwrap() >= 16384);
}

/// One frozen engine of two: the sum over engines still moves, but the server is
/// ENGINE_STALLED because each engine is judged before summing.
#[test]
fn one_frozen_engine_of_two_is_a_stall() {
    let (_tmp, dir) = record_engines("healthy", 2, true);
    let mut rows = store::read_samples_jsonl(&dir.join(store::SAMPLES_JSONL)).unwrap();
    let frozen_at = rows
        .iter()
        .find(|r| r.engine == "1" && r.t_rel_sec >= 30.0)
        .cloned()
        .unwrap();
    for r in rows
        .iter_mut()
        .filter(|r| r.engine == "1" && r.t_rel_sec > 30.0 && r.t_rel_sec <= 50.0)
    {
        // What a hung engine core publishes: its last values, no progress.
        r.requests_running = frozen_at.requests_running.max(Some(1));
        r.requests_waiting = frozen_at.requests_waiting;
        r.kv_cache_usage_pct = frozen_at.kv_cache_usage_pct;
        r.generation_tokens_per_s = Some(0.0);
        r.prompt_tokens_per_s = Some(0.0);
        r.requests_finished_per_s = Some(0.0);
        r.engine_steps_per_s = Some(0.0);
    }
    let a = block_on(analysis::analyze_rows(rows, &Thresholds::default())).unwrap();
    let s = &a.summary.servers[0];
    assert!(
        (18.0..=21.0).contains(&s.stalled_s),
        "stalled {} s",
        s.stalled_s
    );
    let r = diagnosis::diagnose(&a.summary, &a.events, None);
    assert_eq!(
        r.hypotheses[0].id,
        "STUCK_ENGINE",
        "{:?}",
        r.hypotheses.iter().map(|h| &h.id).collect::<Vec<_>>()
    );
}

/// Clients that give up on a request after 5 s without a first token and send it again:
/// the waiting queue holds steady and no gauge shows a request leave, yet every abandoned
/// request is counted (the API server's HTTP counter against the finished requests), the
/// same at any scrape interval, and the doctor finds the aborts beside the queue that
/// causes them.
#[test]
fn an_abort_storm_is_counted_at_every_interval() {
    let mut problems = Vec::new();
    for interval in [0.5, 1.0, 5.0, 15.0] {
        let (_tmp, dir) = crate::common::record_scenario_at("abort-storm", 1, interval, |_| {});
        let (a, r) = analyze_and_diagnose(&dir);
        // The simulator's own count, stepped to the same scrape times.
        let sc = scenario::scenario("abort-storm").unwrap();
        let mut sim = kvscope::sim::Simulation::new(sc, 1, 1, 1_800_000_000.0);
        let steps = (90.0 / interval) as u32;
        for k in 0..=steps {
            sim.advance_to(f64::from(k) * interval);
        }
        let truth = sim.engines[0].metrics.client_aborts as f64;
        let counted = a.summary.servers[0].requests_abandoned.unwrap_or(0.0);
        let ids: Vec<String> = r.hypotheses.iter().map(|h| h.id.to_string()).collect();
        let aborts = r.hypotheses.iter().find(|h| h.id == "CLIENT_ABORTS");
        if truth < 1000.0
            || counted != truth
            || ids.first().map(String::as_str) != Some("QUEUE_SATURATION")
            || !aborts.is_some_and(|h| h.severity.is_loud())
        {
            problems.push(format!(
                "{interval} s: {counted} abandoned counted of {truth}, findings {ids:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
