//! Integration tests, one binary. What goes where:
//! - `capture`: a real vLLM 0.26 capture replayed by the real binary (`kvscope replay`)
//!   and recorded at 0.5, 1, 2 and 5 s: phases, top findings and advice per labelled
//!   scenario, the same at every interval; a frozen engine and an outage spliced in.
//! - `fixtures`: every real `/metrics` page in `tests/fixtures/vllm-metrics/` parsed and
//!   normalized, with values read by hand from each file.
//! - `sim_model`: simulator invariants (KV bounds, monotone counters, preemption only
//!   when blocks run out, Little's law, determinism, vLLM format fidelity).
//! - `scenarios`: every scenario recorded offline and analysed; phases, events and the
//!   doctor's top hypothesis checked against the scenario's ground truth (3 seeds).
//! - `analysis`: legacy sessions, core-only sessions, episode properties, thresholds.
//! - `reliability`: fuzz-style property tests of the parser, a fault-injecting server
//!   against the recorder, SIGKILL and repair, corrupted sessions.
//! - `dashboard`: TestBackend render snapshots, `--once` against the simulator, phases
//!   equal to analyze's.
//! - `objstore`: sessions on a real S3-compatible server (s3s-fs on 127.0.0.1): record
//!   upload, analyze/doctor/timeline from the store, batch doctor, multipart, export.
//! - `import`: a real Prometheus (Debian's package) scraping the simulator, imported and
//!   compared with a direct recording; real and synthetic vLLM logs.
//! - `report`: HTML reports rendered by headless Chromium with networking off.
//! - `telemetry`: vLLM's KV residency histograms checked by hand against real pages, a
//!   DCGM exporter scraped beside the server, profilemate sessions imported.
//! - `cluster` (feature `cluster`): a real local cluster — two `kvscope worker`
//!   processes and sessions on the S3 test server; `analyze|doctor --cluster` files
//!   byte-identical to local runs, a worker dying mid-run.
//! - `cli`: the real binary end to end — record against a local server serving fixture
//!   pages, SIGTERM, bad input, doctor snapshots, demo.

mod common;

#[path = "it/analysis.rs"]
mod analysis;
#[path = "it/capture.rs"]
mod capture;
#[path = "it/cli.rs"]
mod cli;
#[cfg(feature = "cluster")]
#[path = "it/cluster.rs"]
mod cluster;
#[path = "it/dashboard.rs"]
mod dashboard;
#[path = "it/fixtures.rs"]
mod fixtures;
#[path = "it/import.rs"]
mod import;
#[path = "it/objstore.rs"]
mod objstore;
#[path = "it/reliability.rs"]
mod reliability;
#[path = "it/report.rs"]
mod report;
#[path = "it/scenarios.rs"]
mod scenarios;
#[path = "it/sim_model.rs"]
mod sim_model;
#[path = "it/telemetry.rs"]
mod telemetry;
