//! Analyzer throughput (rows/s) on synthetic fleet sessions of 10⁴ and 10⁶ samples
//! (the 10⁷ figure in the README is measured end to end with the release binary).

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

criterion_group!(benches, bench);
criterion_main!(benches);
