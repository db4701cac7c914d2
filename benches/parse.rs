//! Parse + normalize throughput on real vLLM pages (fixtures 07 and 10), MB/s.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvscope::adapter::{self, Normalizer};
use kvscope::source::prom;

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vllm-metrics")
        .join(name);
    std::fs::read_to_string(p).unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_normalize");
    for name in [
        "07-v1-0.29-after-10-requests-prefix-hits.prom",
        "10-v1-0.26-h100-kv-saturation-preempting.prom",
    ] {
        let text = fixture(name);
        g.throughput(Throughput::Bytes(text.len() as u64));
        // Where the time goes: the parser alone, then parser + adapter.
        g.bench_function(format!("{}/parse", &name[..2]), |b| {
            b.iter(|| prom::parse(&text).families.len())
        });
        g.bench_function(format!("{}/parse_read", &name[..2]), |b| {
            b.iter(|| adapter::read(&prom::parse(&text)).engines.len())
        });
        g.bench_function(&name[..2], |b| {
            let mut n = Normalizer::new();
            let mut ts = 0i64;
            b.iter(|| {
                ts += 1_000_000;
                let exp = prom::parse(&text);
                let r = adapter::read(&exp);
                n.normalize("s", ts, 0.0, None, &r)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
