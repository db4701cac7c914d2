//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kvscope::sim::{self, scenario};

/// Path of a fixture page.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vllm-metrics")
        .join(name)
}

/// Reads a fixture page.
pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).expect("fixture exists")
}

/// The kvscope binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kvscope"))
}

/// Records `scenario` offline into a fresh temp dir and returns (tempdir, session dir).
pub fn record_scenario(name: &str, seed: u64) -> (tempfile::TempDir, PathBuf) {
    record_scenario_with(name, seed, |_| {})
}

/// Like [`record_scenario`] with a hook to adjust the scenario.
pub fn record_scenario_with(
    name: &str,
    seed: u64,
    adjust: impl FnOnce(&mut scenario::Scenario),
) -> (tempfile::TempDir, PathBuf) {
    let mut sc = scenario::scenario(name).expect("known scenario");
    adjust(&mut sc);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("session");
    let run = sim::OfflineRun {
        scenario: sc,
        seed,
        engines: 1,
        interval_s: 1.0,
        seconds: None,
        epoch_unix: 1_800_000_000.0,
        server: "sim:8000".into(),
    };
    sim::record_offline(&run, &dir, "test-session").expect("offline recording");
    (tmp, dir)
}

/// Runs a future on a fresh runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Runs `kvscope ARGS…` to completion (colour off).
pub fn kvscope<I, S>(args: I) -> std::process::Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    std::process::Command::new(bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run kvscope")
}

/// Starts `kvscope simulate` on a free loopback port; returns the child and its base URL.
pub fn spawn_simulator(scenario: &str, speed: f64) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = std::process::Command::new(bin())
        .args([
            "simulate",
            "--scenario",
            scenario,
            "--speed",
            &speed.to_string(),
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn simulator");
    (child, format!("http://127.0.0.1:{port}"))
}

/// Starts a 60 s `kvscope record` of `url` into `out` (output captured) and lets it run
/// for 1.5 s, so tests can then signal it.
pub fn spawn_long_record(url: &str, out: &Path, interval: &str) -> std::process::Child {
    let child = std::process::Command::new(bin())
        .args([
            "record",
            "--server",
            url,
            "--duration",
            "60s",
            "--interval",
            interval,
            "--out",
        ])
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn record");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child
}
