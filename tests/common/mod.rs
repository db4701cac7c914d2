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

/// Records the 30-server busy fleet (900 s, seed 11) of the fleet snapshot and report
/// tests into `dir`.
pub fn record_busy_fleet(dir: &Path) {
    record_fleet(dir, 30, 900);
}

/// Records a busy fleet of `servers` × `seconds` (seed 11) into `dir`.
pub fn record_fleet(dir: &Path, servers: usize, seconds: usize) {
    let dir = dir.to_str().expect("utf-8 temp path");
    let (servers, seconds) = (servers.to_string(), seconds.to_string());
    let o = kvscope([
        "simulate",
        "--fleet",
        &servers,
        "--seconds",
        &seconds,
        "--profile",
        "busy",
        "--seed",
        "11",
        "--record-to",
        dir,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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
    record_scenario_at(name, seed, 1.0, adjust)
}

/// Like [`record_scenario_with`], scraped every `interval_s` simulated seconds.
pub fn record_scenario_at(
    name: &str,
    seed: u64,
    interval_s: f64,
    adjust: impl FnOnce(&mut scenario::Scenario),
) -> (tempfile::TempDir, PathBuf) {
    let mut sc = scenario::scenario(name).expect("known scenario");
    adjust(&mut sc);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("session");
    let run = sim::OfflineRun {
        interval_s,
        ..sim::OfflineRun::new(sc, seed)
    };
    sim::record_offline(&run, &dir, "test-session").expect("offline recording");
    (tmp, dir)
}

/// Analyses a session directory with the per-sample phase series, default thresholds.
pub fn analyze_with_series(dir: &Path) -> kvscope::analysis::Analysis {
    block_on(kvscope::analysis::analyze_dir_with(
        dir,
        &kvscope::analysis::Thresholds::default(),
        kvscope::analysis::AnalyzeOptions {
            series: true,
            ..Default::default()
        },
    ))
    .expect("analysis")
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

/// Test credentials of [`S3Server`].
pub const S3_KEY: &str = "kvscope-test";
pub const S3_SECRET: &str = "kvscope-test-secret-key";

/// A real S3-compatible server on 127.0.0.1 (s3s-fs: buckets are directories under a temp
/// dir, objects are files), running on its own runtime until dropped.
pub struct S3Server {
    pub endpoint: String,
    pub root: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl S3Server {
    /// Starts the server with the given (empty) buckets.
    pub fn start(buckets: &[&str]) -> Self {
        use s3s::auth::SimpleAuth;
        use s3s::service::S3ServiceBuilder;
        let root = tempfile::tempdir().expect("tempdir");
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).expect("bucket dir");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs root");
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(S3_KEY, S3_SECRET));
        let service = b.build();
        rt.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let svc = service.clone();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), svc)
                        .await;
                });
            }
        });
        Self {
            endpoint: format!("http://{addr}"),
            root,
            _rt: rt,
        }
    }

    /// The standard AWS environment pointing at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", S3_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Sets the AWS environment in this process (for library calls).
    pub fn set_env(&self) {
        for (k, v) in self.env() {
            // SAFETY: tests that call this use the same values for the whole process.
            unsafe { std::env::set_var(k, v) };
        }
    }

    /// Runs `kvscope ARGS…` with the AWS environment of this server.
    pub fn kvscope<I, S>(&self, args: I) -> std::process::Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        std::process::Command::new(bin())
            .args(args)
            .envs(self.env())
            .env("NO_COLOR", "1")
            .output()
            .expect("run kvscope")
    }

    /// Path of an object on the server's disk.
    pub fn object_path(&self, bucket_and_key: &str) -> PathBuf {
        self.root.path().join(bucket_and_key)
    }
}
