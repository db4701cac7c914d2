//! `kvscope export` throughput (rows/s, MB/s written): a 10⁶-row fleet session (100
//! servers × 10,000 s) written as a Hive dataset partitioned by server and date.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvscope::sim::fleet;
use kvscope::store::export::{ExportReport, PartitionKey, export_session};
use kvscope::store::location::Location;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let session = tmp.path().join("fleet");
    let rows = fleet::generate(&session, 100, 10_000, 1).unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("export");
    g.sample_size(10);
    g.throughput(Throughput::Elements(rows));
    g.bench_function(format!("{rows}_rows_server_date"), |b| {
        b.iter(|| {
            let out = Location::Local(tmp.path().join("lake"));
            let mut report = ExportReport::default();
            rt.block_on(export_session(
                &Location::Local(session.clone()),
                &out,
                &[PartitionKey::Server, PartitionKey::Date],
                &mut report,
            ))
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(report.rows, rows);
            report
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
