//! Fuzzes the Prometheus exposition parser: any bytes must parse without panicking.
//!
//! The parser module has no dependencies, so it is compiled in directly; this keeps the
//! fuzz build to seconds instead of building DataFusion under a sanitizer. The adapter
//! is covered by the proptest run in the normal test suite.
#![no_main]

#[path = "../../src/source/prom.rs"]
#[allow(dead_code)]
mod prom;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let exp = prom::parse(&text);
    for f in &exp.families {
        for s in &f.samples {
            let _ = s.label("le").and_then(prom::parse_le);
        }
    }
});
