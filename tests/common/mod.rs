//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

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
        .bounded_output()
        .expect("run kvscope")
}

/// The longest any one program run by the tests may take (the slowest `kvscope` run takes
/// ~1 min): one that hangs fails its test, naming the command, instead of stalling the
/// suite until CI's limit.
pub const RUN_LIMIT: Duration = Duration::from_secs(600);

/// `Command::output` within [`RUN_LIMIT`].
pub trait Bounded {
    /// Runs the command to completion like `output()` (stdin closed, stdout and stderr
    /// captured), killing it and failing the test if it runs longer than [`RUN_LIMIT`].
    fn bounded_output(&mut self) -> std::io::Result<std::process::Output>;
}

impl Bounded for std::process::Command {
    fn bounded_output(&mut self) -> std::io::Result<std::process::Output> {
        // A poll on `try_wait`: std has no wait with a timeout, and these dozen lines are
        // all the `wait-timeout` crate would save.
        use std::io::Read;
        use std::process::Stdio;
        let mut child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > RUN_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{self:?} still running after {RUN_LIMIT:?}: killed (hung?)");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(std::process::Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        })
    }
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
            .bounded_output()
            .expect("run kvscope")
    }

    /// Path of an object on the server's disk.
    pub fn object_path(&self, bucket_and_key: &str) -> PathBuf {
        self.root.path().join(bucket_and_key)
    }
}

/// A vLLM production-stack router's `/metrics` for two backends, as prometheus_client
/// writes the gauges and counter its `vllm_router/services/metrics_service` defines
/// (`vllm:`-named, labelled `server` per backend, no `model_name` or `engine`): what
/// KVScope sees when pointed at the router instead of the engines.
pub const ROUTER_PAGE: &str = r#"# HELP vllm:num_requests_running Number of running requests
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{server="http://10.0.0.1:8000"} 12.0
vllm:num_requests_running{server="http://10.0.0.2:8000"} 3.0
# HELP vllm:num_requests_waiting Number of waiting requests
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{server="http://10.0.0.1:8000"} 40.0
vllm:num_requests_waiting{server="http://10.0.0.2:8000"} 0.0
# HELP vllm:gpu_prefix_cache_hit_rate GPU Prefix Cache Hit Rate
# TYPE vllm:gpu_prefix_cache_hit_rate gauge
vllm:gpu_prefix_cache_hit_rate{server="http://10.0.0.1:8000"} 0.5
vllm:gpu_prefix_cache_hit_rate{server="http://10.0.0.2:8000"} 0.1
# HELP vllm:gpu_prefix_cache_hits_total Total GPU Prefix Cache Hits
# TYPE vllm:gpu_prefix_cache_hits_total gauge
vllm:gpu_prefix_cache_hits_total{server="http://10.0.0.1:8000"} 1000.0
vllm:gpu_prefix_cache_hits_total{server="http://10.0.0.2:8000"} 10.0
# HELP vllm:gpu_prefix_cache_queries_total Total GPU Prefix Cache Queries
# TYPE vllm:gpu_prefix_cache_queries_total gauge
vllm:gpu_prefix_cache_queries_total{server="http://10.0.0.1:8000"} 2000.0
vllm:gpu_prefix_cache_queries_total{server="http://10.0.0.2:8000"} 100.0
# HELP vllm:current_qps Current Queries Per Second
# TYPE vllm:current_qps gauge
vllm:current_qps{server="http://10.0.0.1:8000"} 5.0
vllm:current_qps{server="http://10.0.0.2:8000"} 1.0
# HELP vllm:num_requests_swapped Number of swapped requests
# TYPE vllm:num_requests_swapped gauge
vllm:num_requests_swapped{server="http://10.0.0.1:8000"} 0.0
vllm:num_requests_swapped{server="http://10.0.0.2:8000"} 0.0
# HELP vllm:healthy_pods_total Number of healthy vLLM pods
# TYPE vllm:healthy_pods_total gauge
vllm:healthy_pods_total{server="http://10.0.0.1:8000"} 1.0
vllm:healthy_pods_total{server="http://10.0.0.2:8000"} 1.0
# HELP vllm:num_incoming_requests_total Total valid incoming requests to router (including when no backends available).
# TYPE vllm:num_incoming_requests_total counter
vllm:num_incoming_requests_total{model="meta-llama/Llama-3.1-8B-Instruct"} 500.0
# HELP vllm:num_incoming_requests_created Total valid incoming requests to router (including when no backends available).
# TYPE vllm:num_incoming_requests_created gauge
vllm:num_incoming_requests_created{model="meta-llama/Llama-3.1-8B-Instruct"} 1.7648e+09
"#;

/// Serves `pages` in order (the last one repeats) on 127.0.0.1:0; returns the base URL. It
/// serves for two minutes.
pub fn serve_pages(pages: Vec<String>) -> (String, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let pages = std::sync::Arc::new(pages);
            let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let pages = pages.clone();
                    let next = next.clone();
                    async move {
                        let i = next
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                            .min(pages.len() - 1);
                        pages[i].clone()
                    }
                }),
            );
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(120),
                axum::serve(listener, app),
            )
            .await;
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}"), handle)
}
