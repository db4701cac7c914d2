//! The real binary, end to end, against local servers on 127.0.0.1.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kvscope::store;

use crate::common::Bounded;
use crate::common::{bin, fixture_text, kvscope, record_scenario, serve_pages};

fn count_lines(p: &std::path::Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

fn parquet_rows(p: &std::path::Path) -> i64 {
    use parquet::file::reader::FileReader;
    let f = std::fs::File::open(p).unwrap();
    parquet::file::reader::SerializedFileReader::new(f)
        .unwrap()
        .metadata()
        .file_metadata()
        .num_rows()
}

#[test]
fn record_fixture_pages_end_to_end() {
    let p09 = fixture_text("09-v1-0.26-h100-queue-pressure.prom");
    let p10 = fixture_text("10-v1-0.26-h100-kv-saturation-preempting.prom");
    let (url, _h) = serve_pages(vec![p09.clone(), p09.clone(), p10.clone(), p10]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    // The server as vLLM prints its address (host:port): http:// and /metrics assumed.
    let host_port = url.trim_start_matches("http://");
    let o = Command::new(bin())
        .args([
            "record",
            "--server",
            host_port,
            "--duration",
            "2.6s",
            "--interval",
            "500ms",
            "--out",
        ])
        .arg(&out)
        .bounded_output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        out.display().to_string()
    );
    let meta = store::read_metadata(&out).unwrap().unwrap();
    assert!(meta.complete);
    let n = meta.row_counts.samples as usize;
    assert!((4..=7).contains(&n), "{n} rows");
    assert_eq!(count_lines(&out.join(store::SAMPLES_JSONL)), n);
    assert_eq!(count_lines(&out.join(store::SAMPLES_CSV)), n + 1);
    assert_eq!(parquet_rows(&out.join(store::SAMPLES_PARQUET)) as usize, n);
    assert!(parquet_rows(&out.join(store::HISTOGRAMS_PARQUET)) > 100);
    let rows = store::read_samples_jsonl(&out.join(store::SAMPLES_JSONL)).unwrap();
    assert!((rows[0].kv_cache_usage_pct.unwrap() - 37.5366568914956).abs() < 1e-9);
    assert!((rows.last().unwrap().kv_cache_usage_pct.unwrap() - 90.71358748778103).abs() < 1e-9);
    // The 09 → 10 step: 17 preemptions and new TTFT observations within one interval.
    let step = rows
        .iter()
        .find(|r| r.preemptions_total == Some(17) && r.preemptions_per_s.is_some_and(|p| p > 0.0))
        .expect("transition row");
    let dt = step.interval_s.unwrap();
    assert!((step.preemptions_per_s.unwrap() - 17.0 / dt).abs() < 1e-6);
    assert!(step.ttft_p95_s.is_some() && step.ttft_count.is_some());
    // Cache config and server facts in metadata.
    let server = &meta.servers[0];
    assert_eq!(server.server, host_port);
    assert_eq!(server.cache_config[0]["num_gpu_blocks"], "1024");
    assert_eq!(server.kv_capacity_tokens, Some(16384.0));
}

#[test]
fn sigterm_leaves_every_file_valid() {
    let p07 = fixture_text("07-v1-0.29-after-10-requests-prefix-hits.prom");
    let (url, _h) = serve_pages(vec![p07]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    let child = crate::common::spawn_long_record(&url, &out, "200ms");
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta = store::read_metadata(&out).unwrap().unwrap();
    assert!(meta.complete);
    let n = meta.row_counts.samples as i64;
    assert!(n >= 3);
    assert_eq!(parquet_rows(&out.join(store::SAMPLES_PARQUET)), n);
    assert_eq!(count_lines(&out.join(store::SAMPLES_JSONL)) as i64, n);
    assert!(store::parquet_is_valid(
        &out.join(store::HISTOGRAMS_PARQUET)
    ));
}

#[test]
fn unreachable_server_is_a_clear_error() {
    // Bind then drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(bin())
        .args([
            "record",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--duration",
            "2s",
            "--out",
        ])
        .arg(tmp.path().join("s"))
        .bounded_output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nothing reachable"), "{err}");
}

#[test]
fn not_vllm_endpoint_names_missing_metrics() {
    let (url, _h) = serve_pages(vec!["<html><body>hello</body></html>".into()]);
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(bin())
        .args(["record", "--server", &url, "--duration", "2s", "--out"])
        .arg(tmp.path().join("s"))
        .bounded_output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("vllm:num_requests_running") && err.contains("vllm:kv_cache_usage_perc"),
        "{err}"
    );
}

#[test]
fn invalid_url_is_rejected() {
    let o = Command::new(bin())
        .args(["record", "--server", "ftp://x", "--duration", "1s"])
        .bounded_output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid server URL"));
}

#[test]
fn bad_session_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join(store::SAMPLES_JSONL),
        "{\"ts\":1,\"server\":\"a\"}\nnot json\n{\"ts\":3}\n",
    )
    .unwrap();
    let o = kvscope([std::ffi::OsStr::new("analyze"), tmp.path().as_os_str()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("samples.jsonl:2"), "{err}");
    let o = Command::new(bin())
        .arg("analyze")
        .arg(tmp.path().join("nope"))
        .bounded_output()
        .unwrap();
    assert!(!o.status.success());
}

fn doctor_output(scenario: &str, args: &[&str]) -> String {
    let (_tmp, dir) = record_scenario(scenario, 1);
    let o = Command::new(bin())
        .arg("doctor")
        .arg(&dir)
        .args(args)
        .env("NO_COLOR", "1")
        .bounded_output()
        .unwrap();
    assert!(
        o.status.success() || o.status.code() == Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn doctor_snapshots() {
    insta::assert_snapshot!(
        "doctor_verbose_kv_saturation",
        doctor_output("kv-saturation", &["--verbose"])
    );
    insta::assert_snapshot!(
        "doctor_verbose_stuck_engine",
        doctor_output("stuck-engine", &["--verbose"])
    );
    insta::assert_snapshot!(
        "doctor_json_kv_saturation",
        doctor_output("kv-saturation", &["--json"])
    );
    insta::assert_snapshot!(
        "doctor_json_queue_pressure",
        doctor_output("queue-pressure", &["--json"])
    );
}

#[test]
fn timeline_snapshot() {
    let (_tmp, dir) = record_scenario("mixed-incident", 1);
    let o = Command::new(bin())
        .arg("timeline")
        .arg(&dir)
        .env("NO_COLOR", "1")
        .bounded_output()
        .unwrap();
    assert!(o.status.success());
    insta::assert_snapshot!(
        "timeline_mixed_incident",
        String::from_utf8(o.stdout).unwrap()
    );
}

#[test]
fn doctor_fail_on_and_fleet() {
    let (_a, healthy) = record_scenario("healthy", 1);
    let (_b, bad) = record_scenario("kv-saturation", 1);
    let st = Command::new(bin())
        .arg("doctor")
        .arg(&healthy)
        .args(["--fail-on", "medium"])
        .bounded_output()
        .unwrap();
    assert_eq!(st.status.code(), Some(0));
    let st = Command::new(bin())
        .arg("doctor")
        .arg(&bad)
        .args(["--fail-on", "high"])
        .bounded_output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    let fleet = tempfile::tempdir().unwrap();
    for (name, d) in [("a", &healthy), ("b", &bad)] {
        let to = fleet.path().join(name);
        std::fs::create_dir(&to).unwrap();
        for f in std::fs::read_dir(d).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
    let o = Command::new(bin())
        .arg("doctor")
        .arg(fleet.path())
        .env("NO_COLOR", "1")
        .bounded_output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    let first_row = text.lines().nth(1).unwrap();
    assert!(first_row.contains("KV_CACHE_THRASHING"), "{text}");
    assert!(fleet.path().join("a").join(store::DOCTOR_JSON).exists());
    let o = Command::new(bin())
        .arg("doctor")
        .arg(fleet.path())
        .arg("--json")
        .bounded_output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["fleet"][0]["top"], "KV_CACHE_THRASHING");
    assert_eq!(v["fleet"][1]["top"], "HEALTHY");
}

#[test]
fn simulate_describe_json() {
    let o = Command::new(bin())
        .args([
            "simulate",
            "--scenario",
            "stuck-engine",
            "--describe",
            "--json",
        ])
        .bounded_output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["truth"]["root_cause"], "STUCK_ENGINE");
    assert_eq!(v["engine"]["num_gpu_blocks"], 2048);
    let o = Command::new(bin())
        .args(["simulate", "--scenario", "nope", "--describe"])
        .bounded_output()
        .unwrap();
    assert!(!o.status.success());
}

/// Records every scenario over HTTP with `kvscope record` against `kvscope simulate` at
/// high speed and checks the recorded signature.
#[test]
fn record_every_scenario_over_http() {
    let names = kvscope::sim::scenario::NAMES;
    let handles: Vec<_> = names
        .chunks(4)
        .map(|chunk| {
            let chunk: Vec<&'static str> = chunk.to_vec();
            std::thread::spawn(move || {
                chunk
                    .into_iter()
                    .map(|n| (n, record_over_http(n)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        for (name, rows) in h.join().unwrap() {
            let kv_max = rows
                .iter()
                .filter_map(|r| r.kv_cache_usage_pct)
                .fold(0.0, f64::max);
            let waiting_max = rows
                .iter()
                .filter_map(|r| r.requests_waiting)
                .max()
                .unwrap_or(0);
            let preempt = rows
                .iter()
                .filter_map(|r| r.preemptions_total)
                .max()
                .unwrap_or(0);
            let gen_total = rows
                .iter()
                .filter_map(|r| r.generation_tokens_total)
                .max()
                .unwrap_or(0);
            let ok = match name {
                "idle" => gen_total == 0 && kv_max == 0.0,
                "healthy" => preempt == 0 && waiting_max == 0 && gen_total > 1000,
                "queue-pressure" => waiting_max > 100 && kv_max < 95.0,
                "kv-saturation" | "mixed-incident" => kv_max >= 95.0 && preempt > 5,
                // vLLM V1: a hung engine core freezes every engine series.
                "stuck-engine" => {
                    let tail: Vec<_> = rows.iter().rev().take(20).collect();
                    gen_total > 0
                        && tail.windows(2).all(|w| {
                            w[0].generation_tokens_total == w[1].generation_tokens_total
                                && w[0].requests_running == w[1].requests_running
                        })
                        && tail.iter().any(|r| r.requests_running.unwrap_or(0) > 0)
                }
                "restart" => {
                    rows.iter().any(|r| !r.scrape_ok) && rows.iter().any(|r| r.counter_reset)
                }
                "kv-leak" => rows.iter().any(|r| {
                    r.requests_running == Some(0) && r.kv_cache_usage_pct.unwrap_or(0.0) > 2.0
                }),
                _ => !rows.is_empty() && gen_total > 0,
            };
            if !ok {
                failures.push(format!("{name}: kv_max {kv_max} waiting_max {waiting_max} preempt {preempt} gen {gen_total} rows {}", rows.len()));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn record_over_http(name: &str) -> Vec<kvscope::store::schema::Sample> {
    let (mut sim, url) = crate::common::spawn_simulator(name, 30.0);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    let o = Command::new(bin())
        .args([
            "record",
            "--wait",
            "--server",
            &url,
            "--duration",
            "3s",
            "--interval",
            "33ms",
            "--out",
        ])
        .arg(&out)
        .bounded_output()
        .unwrap();
    let _ = sim.kill();
    let _ = sim.wait();
    assert!(
        o.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows = store::read_samples_jsonl(&out.join(store::SAMPLES_JSONL)).unwrap();
    // Samples carry simulated time: ~90 simulated seconds in ~3 wall seconds.
    let span = rows.last().unwrap().t_rel_sec - rows[0].t_rel_sec;
    assert!(span > 45.0, "{name}: simulated span {span}");
    rows
}

#[test]
fn record_wait_starts_while_the_server_is_down() {
    // The recording starts while nothing listens; the server comes up 1.5 s later. The
    // outage is recorded (NO_DATA), then the server's samples.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    let url = format!("http://127.0.0.1:{port}");
    let rec = std::process::Command::new(crate::common::bin())
        .args(["record", "--server", &url, "--wait", "--interval", "200ms"])
        .args(["--duration", "4s", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut sim = std::process::Command::new(crate::common::bin())
        .args(["simulate", "--scenario", "healthy", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let o = rec.wait_with_output().unwrap();
    let _ = sim.kill();
    let _ = sim.wait();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = kvscope::store::read_samples_jsonl(&out.join("samples.jsonl")).unwrap();
    let first_ok = rows
        .iter()
        .position(|r| r.scrape_ok)
        .expect("server came up");
    assert!(
        first_ok >= 3,
        "{first_ok} failed scrapes before the server answered"
    );
    assert!(rows[..first_ok].iter().all(|r| !r.scrape_ok));
    assert!(
        rows.windows(2).all(|w| w[0].ts < w[1].ts),
        "timestamps go forward"
    );
    let t = kvscope(["timeline", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&t.stdout);
    assert!(text.contains("NO_DATA →"), "{text}");
}

/// Nonsense on the command line is a clear error naming the value, a non-zero exit and
/// never a panic; output into a closed pipe ends quietly with exit 0.
#[test]
fn bad_flag_values_are_clear_errors_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let out = out.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "record",
                "--server",
                "http://127.0.0.1:9",
                "--duration",
                "1e20s",
            ],
            "1e20s",
        ),
        (
            &["record", "--server", "http://127.0.0.1:9", "--duration=-5s"],
            "-5s",
        ),
        (
            &[
                "record",
                "--server",
                "http://127.0.0.1:9",
                "--interval",
                "0",
            ],
            "0",
        ),
        (
            &[
                "record",
                "--server",
                "http://127.0.0.1:9",
                "--interval",
                "NaN",
            ],
            "NaN",
        ),
        (
            &[
                "record",
                "--server",
                "http://127.0.0.1:9",
                "--timeout",
                "inf",
            ],
            "inf",
        ),
        (
            &[
                "record",
                "--server",
                "http://127.0.0.1:9",
                "--vllm-version",
                "latest",
            ],
            "latest",
        ),
        (&["demo", "--seconds=-1"], "-1"),
        (&["demo", "--speed", "0"], "0"),
        (&["simulate", "--record-to", out, "--interval", "0"], "0"),
        (
            &["simulate", "--record-to", out, "--seconds", "1e300"],
            "1e300",
        ),
        (&["simulate", "--engines", "0"], "0"),
        (&["simulate", "--engines", "100000"], "100000"),
        (&["simulate", "--speed=-2"], "-2"),
        (&["simulate", "--num-gpu-blocks", "0"], "0"),
        (
            &[
                "replay",
                "tests/fixtures/captures/vllm-0.26-h100-scenarios",
                "--speed",
                "0",
            ],
            "0",
        ),
        (&["replay", "/nonexistent/capture"], "/nonexistent/capture"),
        (
            &["dashboard", "--server", "http://127.0.0.1:9", "--window=-3"],
            "-3",
        ),
        (&["doctor", "/nonexistent", "--jobs", "0"], "0"),
        (
            &[
                "dashboard",
                "--server",
                "http://127.0.0.1:9",
                "--interval",
                "2 fortnights",
            ],
            "2 fortnights",
        ),
        (
            &[
                "record",
                "--server",
                "http://127.0.0.1:9",
                "--duration",
                "400days",
            ],
            "400days",
        ),
        (&["verify", "s3://bucket/session"], "object storage"),
        (&["repair", "s3://bucket/session"], "object storage"),
        (&["doctor", "/nonexistent", "--vllm-version", "x.y"], "x.y"),
        (
            &[
                "analyze",
                "tests/fixtures/captures",
                "--config",
                "tests/fixtures/bad-config.toml",
            ],
            "threshold",
        ),
    ];
    let mut problems = Vec::new();
    for (args, named) in cases {
        let o = std::process::Command::new(crate::common::bin())
            .args(*args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .bounded_output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() || err.contains("panicked") || !err.contains(named) {
            problems.push(format!("{args:?}: {:?} {err}", o.status.code()));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    // A closed pipe: `kvscope simulate --describe --json | head -c 1` in effect.
    let mut child = std::process::Command::new(crate::common::bin())
        .args([
            "simulate",
            "--scenario",
            "mixed-incident",
            "--describe",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
}

/// `export` reports a broken session and still exports the others (exit 2), like
/// `doctor`.
#[test]
fn export_continues_past_a_bad_session() {
    let (_tmp, good) = record_scenario("healthy", 1);
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("metadata.json"), b"{ not json").unwrap();
    std::fs::write(broken.join("samples.jsonl"), b"{ nor this\n").unwrap();
    let lake = tmp.path().join("lake");
    let o = kvscope([
        "export",
        good.to_str().unwrap(),
        broken.to_str().unwrap(),
        "--out",
        lake.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("broken"), "{err}");
    let files: Vec<_> = walk(&lake)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `analyze` on a fleet prints servers ranked by time in trouble (a snapshot), `--server`
/// narrows by glob, `--all` prints every server, a bad glob is refused; `events.parquet`
/// holds the same records as `events.jsonl`.
#[test]
fn fleet_analyze_prints_a_ranked_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    crate::common::record_busy_fleet(&dir);
    let o = kvscope(["analyze", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).replace(dir.to_str().unwrap(), "DIR");
    insta::assert_snapshot!("fleet_analyze_busy", text);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("30 servers"), "{text}");
    // Ranked: time in trouble never increases down the table.
    let trouble: Vec<f64> = lines[2..22]
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    assert!(trouble.windows(2).all(|w| w[0] >= w[1]), "{trouble:?}");
    assert!(text.contains("… 10 more server(s)"), "{text}");

    let o = kvscope([
        "analyze",
        dir.to_str().unwrap(),
        "--server",
        "srv-000[0-2]:*",
        "--server",
        "srv-0029:8000",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    let blocks: Vec<&str> = text.lines().filter(|l| l.starts_with("srv-")).collect();
    assert_eq!(blocks.len(), 4, "{text}");
    assert!(blocks[3].starts_with("srv-0029:8000"), "{text}");
    let o = kvscope(["analyze", dir.to_str().unwrap(), "--all"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().filter(|l| l.starts_with("srv-")).count(), 30);
    let o = kvscope(["analyze", dir.to_str().unwrap(), "--server", "srv-[0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--server `srv-[0`"));
    // The timeline of a fleet is the same ranking; of one server, its events.
    let o = kvscope(["timeline", dir.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("30 servers"));
    let o = kvscope([
        "timeline",
        dir.to_str().unwrap(),
        "--server",
        "srv-0003:8000",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("Phases") && text.contains("srv-0003:8000"),
        "{text}"
    );
    assert!(!text.contains("srv-0004:8000"));
    // A few servers are analysed alone: their events are their part of the whole
    // session's (events.jsonl, written by `analyze` above).
    let pattern = "srv-000[3-4]:*";
    let o = kvscope([
        "timeline",
        dir.to_str().unwrap(),
        "--server",
        pattern,
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let whole = kvscope::store::events::read_events(&dir.join("events.jsonl")).unwrap();
    let opts = kvscope::present::timeline::TimelineOptions {
        servers: kvscope::present::fleet::ServerFilter::parse(&[pattern.to_string()]).unwrap(),
        ..Default::default()
    };
    let want = serde_json::to_value(kvscope::present::timeline::doc(&whole, &opts)).unwrap();
    assert!(
        got["events"].as_array().is_some_and(|e| e.len() > 10),
        "{got}"
    );
    assert_eq!(got, want);
    // A pattern that selects no server is a mistyped flag: an error naming it, before
    // any analysis.
    for cmd in ["timeline", "analyze"] {
        let o = kvscope([cmd, dir.to_str().unwrap(), "--server", "srv-9*"]);
        assert_eq!(o.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--server `srv-9*`: no server of the session matches (it has 30: srv-0000:8000, srv-0001:8000, srv-0002:8000, …)"),
            "{cmd}: {err}"
        );
    }

    // events.parquet: the same records, typed.
    let jsonl = kvscope::store::events::read_events(&dir.join("events.jsonl")).unwrap();
    let file = std::fs::File::open(dir.join("events.parquet")).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = reader.schema().clone();
    let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, jsonl.len());
    assert_eq!(
        schema.field_with_name("ts").unwrap().data_type(),
        &kvscope::store::schema::ColumnType::TimestampUs.arrow()
    );
    assert_eq!(
        schema.field_with_name("duration_sec").unwrap().data_type(),
        &datafusion::arrow::datatypes::DataType::Float64
    );
}

/// `analyze` streams a fleet's events (chunk runs merged into events.jsonl and
/// events.parquet); `doctor` writes the same files from events held in memory. Cut into
/// 2,000-sample chunks (9 runs), the streamed files are byte-identical to the in-memory
/// ones of a whole-session analysis, and no run file is left behind.
#[test]
fn streamed_analyze_writes_what_the_in_memory_path_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    let o = kvscope([
        "simulate",
        "--fleet",
        "20",
        "--seconds",
        "900",
        "--profile",
        "busy",
        "--seed",
        "5",
        "--record-to",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let o = kvscope(["analyze", dir.to_str().unwrap(), "--chunk-rows", "2000"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events: usize = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let o = kvscope(["doctor", copy.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for name in ["events.jsonl", "events.parquet", "summary.json"] {
        let a = std::fs::read(dir.join(name)).unwrap();
        let b = std::fs::read(copy.join(name)).unwrap();
        assert!(a == b, "{name} differs ({} vs {} bytes)", a.len(), b.len());
    }
    let lines = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), events);
    assert!(events > 800, "{events} events");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A chunk size of 0 is refused, naming the flag.
    let o = kvscope(["analyze", dir.to_str().unwrap(), "--chunk-rows", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--chunk-rows"));
}

/// Trace logs into a pipe the reader has closed (`2>&1 | head`): the lines that cannot be
/// written are dropped and the analysis finishes, exit 0, files written. The subscriber
/// used to report each lost line with `eprintln!`, which panics on a closed stderr inside
/// a DataFusion task, and the analysis then waited for that task forever.
#[test]
fn analyze_finishes_when_its_log_pipe_is_closed() {
    use std::io::Read;
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    let o = kvscope([
        "simulate",
        "--fleet",
        "3",
        "--seconds",
        "600",
        "--record-to",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut child = Command::new(bin())
        .args(["analyze", dir.to_str().unwrap()])
        .env("KVSCOPE_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut first = [0u8; 100];
    stderr.read_exact(&mut first).unwrap();
    drop(stderr);
    // Bounded wait: a hang fails the test instead of stalling the suite.
    let mut status = None;
    for _ in 0..1200 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("analyze did not finish within 120 s after its stderr closed");
    };
    assert!(status.success(), "{status:?}");
    assert!(dir.join("summary.json").exists());
    assert!(dir.join("events.jsonl").exists());
}

#[test]
fn record_refuses_a_router_and_names_its_backends() {
    let (url, _h) = serve_pages(vec![crate::common::ROUTER_PAGE.to_string()]);
    let tmp = tempfile::tempdir().unwrap();
    let record = |out: &Path, wait: bool| {
        let mut cmd = Command::new(bin());
        cmd.args([
            "record",
            "--server",
            &url,
            "--duration",
            "1.6s",
            "--interval",
            "500ms",
            "--out",
        ])
        .arg(out);
        if wait {
            cmd.arg("--wait");
        }
        cmd.bounded_output().unwrap()
    };
    let out = tmp.path().join("refused");
    let o = record(&out, false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is a router's /metrics, not a vLLM engine's"),
        "{err}"
    );
    assert!(
        err.contains("(http://10.0.0.1:8000, http://10.0.0.2:8000)"),
        "{err}"
    );
    assert!(!out.join(store::SAMPLES_PARQUET).exists());
    // With --wait the recording goes on: every scrape a failure that says why, not the
    // backends summed into one engine.
    let out = tmp.path().join("waited");
    let o = record(&out, true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = store::read_samples_jsonl(&out.join(store::SAMPLES_JSONL)).unwrap();
    assert!(rows.len() >= 2, "{} rows", rows.len());
    for r in &rows {
        assert!(!r.scrape_ok);
        assert_eq!(r.requests_running, None);
        assert_eq!(
            r.scrape_error.as_deref(),
            Some(
                "a router's /metrics, not a vLLM engine's (backends: http://10.0.0.1:8000, http://10.0.0.2:8000)"
            )
        );
    }
}

#[test]
fn record_refuses_a_page_of_several_servers() {
    // A federation endpoint: two pods' series for one model and engine.
    let page = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine=\"0\",model_name=\"m\",pod=\"vllm-0\"} 3.0\nvllm:num_requests_running{engine=\"0\",model_name=\"m\",pod=\"vllm-1\"} 5.0\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{engine=\"0\",model_name=\"m\",pod=\"vllm-0\"} 0.0\nvllm:num_requests_waiting{engine=\"0\",model_name=\"m\",pod=\"vllm-1\"} 7.0\n# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\",pod=\"vllm-0\"} 0.6\nvllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\",pod=\"vllm-1\"} 0.9\n";
    let (url, _h) = serve_pages(vec![page.to_string()]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    let o = Command::new(bin())
        .args(["record", "--server", &url, "--duration", "1s", "--out"])
        .arg(&out)
        .bounded_output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/metrics is not one vLLM server's /metrics: 2 series of vllm:num_requests_running for model_name `m`, engine 0, differing in `pod`: several servers on one page (a federation or aggregating endpoint); record each server with its own --server"),
        "{err}"
    );
    assert!(!out.join(store::SAMPLES_PARQUET).exists());
}
