//! Golden tests: every simulator scenario, recorded offline with three seeds, analysed
//! and diagnosed; the findings must match the scenario's documented ground truth.
//!
//! Tolerances: a phase window passes when the (debounced) phase is observed at least once
//! inside it; a condition passes when it starts at least once; events by name.

use kvscope::analysis::{self, AnalyzeOptions, Thresholds};
use kvscope::diagnosis;
use kvscope::sim::scenario;
use kvscope::store;

use crate::common::{block_on, record_scenario};

const SEEDS: [u64; 3] = [1, 2, 3];

fn check(name: &str, seed: u64) -> Vec<String> {
    let sc = scenario::scenario(name).unwrap();
    let truth = &sc.truth;
    let (_tmp, dir) = record_scenario(name, seed);
    let a = block_on(analysis::analyze_dir_with(
        &dir,
        &Thresholds::default(),
        AnalyzeOptions {
            series: true,
            ..Default::default()
        },
    ))
    .unwrap();
    let meta = store::read_metadata(&dir).unwrap();
    let report = diagnosis::diagnose(&a.summary, &a.events, meta.as_ref());
    let mut problems = Vec::new();
    let top = report
        .hypotheses
        .first()
        .map(|h| h.id.clone())
        .unwrap_or_default();
    if top != truth.root_cause {
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
        let seen = a.series.iter().any(|p| {
            p.t_rel_sec >= w.from_s && p.t_rel_sec <= w.to_s && p.phase.as_deref() == Some(w.phase)
        });
        if !seen {
            problems.push(format!(
                "phase {} not seen in [{}, {}]",
                w.phase, w.from_s, w.to_s
            ));
        }
    }
    for p in &truth.absent_phases {
        if a.series.iter().any(|x| x.phase.as_deref() == Some(*p)) {
            problems.push(format!("phase {p} should not occur"));
        }
    }
    for c in &truth.conditions {
        let started = a
            .events
            .iter()
            .any(|e| e.condition.as_deref() == Some(*c) && e.state.as_deref() == Some("start"));
        if !started {
            problems.push(format!("condition {c} never started"));
        }
    }
    for e in &truth.events {
        if !a.events.iter().any(|x| x.event.as_deref() == Some(*e)) {
            problems.push(format!("event {e} missing"));
        }
    }
    for e in &truth.absent_events {
        if a.events.iter().any(|x| x.event.as_deref() == Some(*e)) {
            problems.push(format!("event {e} should not occur"));
        }
    }
    if matches!(name, "healthy" | "idle") {
        for h in &report.hypotheses {
            if h.severity == "high" || h.severity == "medium" {
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

#[test]
fn gpu_telemetry_splits_kv_compute_and_outside_gpu() {
    let kind = |name: &str, gpu: f64| -> Option<String> {
        let (_tmp, dir) = record_scenario(name, 1);
        let mut rows = store::read_samples_jsonl(&dir.join(store::SAMPLES_JSONL)).unwrap();
        for r in &mut rows {
            r.gpu_util_pct = Some(gpu);
        }
        let a = block_on(analysis::analyze_rows(rows, &Thresholds::default())).unwrap();
        let r = diagnosis::diagnose(&a.summary, &a.events, None);
        r.bottleneck.first().map(|b| b.kind.clone())
    };
    assert_eq!(kind("kv-saturation", 70.0).as_deref(), Some("kv_memory"));
    assert_eq!(kind("prefill-burst", 97.0).as_deref(), Some("compute"));
    assert_eq!(kind("ttft-spike", 30.0).as_deref(), Some("outside_gpu"));
    assert_eq!(kind("healthy", 40.0), None);
}
