//! KVScope: observability and diagnostics for LLM inference servers, vLLM first.
//!
//! # Pipeline
//!
//! ```text
//! cli ──► any stage   (the only place with clap, anyhow, runtime wiring, printing errors)
//!
//! source ─► adapter ─► store ─► analysis ─► diagnosis ─► present
//!   │          │          │         │            │           │
//!   │          │          │         │            │           └ text, JSON, TUI
//!   │          │          │         │            └ doctor rules over analysis results
//!   │          │          │         └ DataFusion SQL catalog in queries/ (+ Rust UDFs)
//!   │          │          └ session files: Parquet, CSV, JSONL, metadata.json
//!   │          └ vLLM names → normalized samples (the only module that knows vLLM names)
//!   └ bytes in: the exposition parser and the HTTP scraper (vLLM-agnostic)
//! ```
//!
//! [`record`] wires source → adapter → store for live recording; [`sim`] is a model of
//! vLLM's scheduler that serves realistic `/metrics` pages.
//!
//! # Invariants
//! - The adapter is the only module that knows vLLM metric names; KV usage becomes a 0–100
//!   percentage there and nowhere else.
//! - Every phase, condition and event is defined once, as SQL in `queries/`.
//! - Bad input never panics: the parser is total, readers name the file and line.

pub mod adapter;
pub mod analysis;
pub mod cli;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod diagnosis;
pub mod import;
pub mod present;
pub mod record;
pub mod sim;
pub mod source;
pub mod store;
pub mod vocab;

/// An error and its sources as `anyhow`'s `{:#}` prints them (`a: b: c`), except that a
/// source its parent's message already ends with (`…: source`) is said once: the
/// stages' errors name their file and show their cause inline (`{path}: {source}`) and
/// keep it as the `source` too, where `{:#}` printed "…: no such session or directory:
/// no such session or directory". What the CLI prints, and what a cluster worker sends
/// back for a failed session, so both read the same.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !(out == text || out.ends_with(&format!(": {text}"))) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
