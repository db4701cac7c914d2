//! Simulator invariants and format fidelity.

use kvscope::adapter::{self, Hist};
use kvscope::sim::{Simulation, scenario};
use kvscope::source::prom::{self, MetricType};

use crate::common::fixture_text;

fn run(name: &str, seed: u64, step: f64, mut check: impl FnMut(f64, &Simulation)) {
    let sc = scenario::scenario(name).unwrap();
    let dur = sc.duration_s;
    let mut sim = Simulation::new(sc, seed, 1, 1_800_000_000.0);
    let mut t = 0.0;
    while t <= dur {
        sim.advance_to(t);
        check(t, &sim);
        t += step;
    }
}

#[test]
fn kv_bounded_and_counters_monotone() {
    for name in scenario::NAMES {
        let mut last = (0u64, 0u64, 0u64);
        run(name, 7, 0.5, |t, sim| {
            for e in &sim.engines {
                let kv = e.kv_usage_fraction();
                assert!((0.0..=1.0).contains(&kv), "{name} t={t}: kv {kv}");
                assert!(
                    e.running.len() as u32 <= e.cfg.max_num_seqs,
                    "{name}: running above max-num-seqs"
                );
                let m = &e.metrics;
                let now = (m.generation_tokens, m.preemptions, m.prompt_tokens);
                if *name != "restart" {
                    assert!(
                        now.0 >= last.0 && now.1 >= last.1 && now.2 >= last.2,
                        "{name} t={t}: counter went down"
                    );
                }
                last = now;
            }
        });
    }
}

#[test]
fn preemption_only_when_blocks_run_out() {
    // Plenty of blocks: the same long-context load never preempts.
    let mut sc = scenario::scenario("kv-saturation").unwrap();
    sc.engine.num_gpu_blocks = 200_000;
    let mut sim = Simulation::new(sc, 3, 1, 0.0);
    sim.advance_to(90.0);
    assert_eq!(sim.engines[0].metrics.preemptions, 0);
    // The stock cache does.
    let sc = scenario::scenario("kv-saturation").unwrap();
    let mut sim = Simulation::new(sc, 3, 1, 0.0);
    sim.advance_to(90.0);
    assert!(
        sim.engines[0].metrics.preemptions > 10,
        "{}",
        sim.engines[0].metrics.preemptions
    );
}

#[test]
fn littles_law_in_healthy() {
    // L = λ·W: mean running ≈ arrival rate × mean time in system.
    let sc = scenario::scenario("healthy").unwrap();
    let rate = sc.segments[0].rate_per_s;
    let mut sim = Simulation::new(sc, 11, 1, 0.0);
    let mut samples = Vec::new();
    let mut t = 10.0;
    sim.advance_to(t);
    let (c0, s0) = (
        sim.engines[0].metrics.e2e.count(),
        sim.engines[0].metrics.e2e.sum,
    );
    while t < 90.0 {
        t += 0.25;
        sim.advance_to(t);
        let e = &sim.engines[0];
        samples.push((e.running.len() + e.waiting.len()) as f64);
    }
    let m = &sim.engines[0].metrics;
    let w = (m.e2e.sum - s0) / (m.e2e.count() - c0) as f64;
    let l = samples.iter().sum::<f64>() / samples.len() as f64;
    let predicted = rate * w;
    assert!(
        (l - predicted).abs() / predicted < 0.2,
        "L={l:.2} λW={predicted:.2}"
    );
}

#[test]
fn deterministic_by_seed() {
    let a = {
        let mut s = Simulation::new(scenario::scenario("mixed-incident").unwrap(), 5, 1, 0.0);
        s.advance_to(60.0);
        s.render()
    };
    let b = {
        let mut s = Simulation::new(scenario::scenario("mixed-incident").unwrap(), 5, 1, 0.0);
        s.advance_to(60.0);
        s.render()
    };
    let c = {
        let mut s = Simulation::new(scenario::scenario("mixed-incident").unwrap(), 6, 1, 0.0);
        s.advance_to(60.0);
        s.render()
    };
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn generation_counter_matches_tokens_produced() {
    let mut sim = Simulation::new(scenario::scenario("healthy").unwrap(), 2, 1, 0.0);
    sim.advance_to(45.0);
    let e = &sim.engines[0];
    let finished = e.metrics.generation_len.sum;
    let in_flight: u64 = e
        .running
        .iter()
        .map(|r| r.generated_tokens() as u64)
        .sum::<u64>()
        + e.waiting
            .iter()
            .map(|r| r.generated_tokens() as u64)
            .sum::<u64>();
    assert_eq!(e.metrics.generation_tokens, finished as u64 + in_flight);
}

#[test]
fn every_fixture_family_present_with_vllm_types_and_labels() {
    let real_text = fixture_text("10-v1-0.26-h100-kv-saturation-preempting.prom");
    let real = prom::parse(&real_text);
    let mut sim = Simulation::new(
        scenario::scenario("healthy").unwrap(),
        1,
        2,
        1_800_000_000.0,
    );
    sim.advance_to(20.0);
    let ours_text = sim.render();
    let ours = prom::parse(&ours_text);
    assert!(ours.skipped.is_empty());
    for f in real.families.iter().filter(|f| f.name.starts_with("vllm:")) {
        let o = ours
            .family(f.name)
            .unwrap_or_else(|| panic!("simulator lacks {}", f.name));
        assert_eq!(o.kind, f.kind, "{} type", f.name);
        let label_keys = |s: &prom::PromSample| {
            let mut k: Vec<String> = s.labels.iter().map(|l| l.0.to_string()).collect();
            k.sort();
            k
        };
        if f.name != "vllm:cache_config_info" {
            assert_eq!(
                label_keys(&o.samples[0]),
                label_keys(&f.samples[0]),
                "{} labels",
                f.name
            );
        }
        if f.kind == MetricType::Histogram && f.name != "vllm:request_prompt_tokens" {
            let bounds = |fam: &prom::Family| -> Vec<String> {
                fam.samples
                    .iter()
                    .filter(|s| s.name.ends_with("_bucket") && s.label("engine") == Some("0"))
                    .filter_map(|s| s.label("le").map(str::to_string))
                    .collect()
            };
            let real_b = bounds(f);
            if !real_b.is_empty()
                && !f.name.contains("generation_tokens")
                && !f.name.contains("max_tokens")
                && !f.name.contains("kv_computed")
                && !f.name.contains("max_num_generation")
            {
                assert_eq!(bounds(o), real_b, "{} buckets", f.name);
            }
        }
    }
    // Two engines behind one endpoint.
    let r = adapter::read(&ours);
    assert_eq!(r.engines.len(), 2);
    assert!(r.engines[0].histogram(Hist::Ttft).is_some());
}
