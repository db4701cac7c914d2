//! Recorder CPU per scrape: one real vLLM 0.26 page (fixture 10, under load) through the
//! recording pipeline — parse, adapt, normalize (rates, interval quantiles) and append
//! to the session files — as `kvscope record` does every interval.

use criterion::{Criterion, criterion_group, criterion_main};
use kvscope::record::Pipeline;
use kvscope::store::{Metadata, RecorderSettings, SessionWriter, SourceInfo};

fn bench(c: &mut Criterion) {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/vllm-metrics/10-v1-0.26-h100-kv-saturation-preempting.prom"),
    )
    .unwrap_or_default();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let meta = Metadata::new(
        "bench",
        "2027-01-15T08:00:00Z",
        SourceInfo::default(),
        RecorderSettings::default(),
    );
    let writer =
        SessionWriter::create(&tmp.path().join("s"), meta).unwrap_or_else(|e| panic!("{e}"));
    let mut p = Pipeline::new(writer);
    let mut ts = 1_800_000_000_000_000i64;
    c.bench_function("record_one_scrape", |b| {
        b.iter(|| {
            ts += 1_000_000;
            p.ingest_text("bench:8000", ts, Some(1.0), &page)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
