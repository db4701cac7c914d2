//! Analyzer throughput (rows/s) on synthetic fleet sessions of 10⁴ and 10⁶ samples
//! (the 10⁷ figure in the README is measured end to end with the release binary), and
//! the window kernels the timeline calls per sample.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvscope::analysis::{self, Thresholds};
use kvscope::sim::fleet;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let mut g = c.benchmark_group("analyze");
    g.sample_size(10);
    for (servers, seconds) in [(1usize, 10_000usize), (100, 10_000)] {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let rows =
            fleet::generate(tmp.path(), servers, seconds, 1).unwrap_or_else(|e| panic!("{e}"));
        g.throughput(Throughput::Elements(rows));
        g.bench_function(format!("{rows}_rows"), |b| {
            b.iter(|| {
                rt.block_on(analysis::analyze_dir(tmp.path(), &Thresholds::default()))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        });
    }
    g.finish();
}

/// `rolling_median` over 10⁶ rows at 1 Hz with the timeline's 60 s baseline window: a
/// gauge that moves in steps and often repeats (running requests), and one that moves
/// every sample (a latency quantile).
fn kernels(c: &mut Criterion) {
    use datafusion::arrow::array::Float64Array;
    let n = 1_000_000usize;
    let t = Float64Array::from((0..n).map(|i| i as f64).collect::<Vec<_>>());
    // Deterministic pseudo-random walk (xorshift), no extra dependency.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut level = 32.0f64;
    let stepped: Vec<f64> = (0..n)
        .map(|_| {
            level = (level + (next() % 3) as f64 - 1.0).clamp(0.0, 64.0);
            level
        })
        .collect();
    let moving: Vec<f64> = (0..n)
        .map(|_| 0.5 + (next() % 10_000) as f64 / 10_000.0)
        .collect();
    let mut g = c.benchmark_group("kernels");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    for (name, v) in [("stepped", stepped), ("moving", moving)] {
        let v = Float64Array::from(v);
        g.bench_function(format!("rolling_median_60s_{name}"), |b| {
            b.iter(|| analysis::udf::rolling_median(&v, &t, 60.0, n))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, kernels);
criterion_main!(benches);
