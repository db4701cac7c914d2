//! Import: Prometheus history and vLLM server logs become sessions.
//!
//! The Prometheus test runs a real Prometheus (Debian's package; `scripts/test.sh`
//! installs it) on 127.0.0.1 scraping `kvscope simulate` every second into a temporary
//! TSDB, while `kvscope record` records the same simulator directly; the imported window
//! must read like the direct recording.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kvscope::analysis::{Analysis, PhasePoint};
use kvscope::store;

use crate::common::{ROUTER_PAGE, analyze_with_series, bin, kvscope, serve_pages, spawn_simulator};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn prometheus_binary() -> String {
    for p in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("Prometheus is not installed (scripts/test.sh installs Debian's `prometheus`)");
}

/// Starts Prometheus on a free loopback port scraping `targets` every second.
/// Prometheus scraping each (target, interval in s), all with `job="vllm"` (one scrape
/// job per interval, the job label set on its targets).
fn spawn_prometheus(dir: &std::path::Path, targets: &[(&str, u32)]) -> (Killed, String) {
    spawn_prometheus_on(dir, targets, free_port())
}

/// [`spawn_prometheus`] on `port`, its TSDB in `dir` (a restart keeps its history).
fn spawn_prometheus_on(
    dir: &std::path::Path,
    targets: &[(&str, u32)],
    port: u16,
) -> (Killed, String) {
    let mut yml = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for (target, every) in targets {
        yml.push_str(&format!(
            "  - job_name: 'vllm-{every}s-{target}'\n    scrape_interval: {every}s\n    static_configs:\n      - targets: ['{target}']\n        labels: {{job: vllm}}\n"
        ));
    }
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, yml).unwrap();
    let child = Command::new(prometheus_binary())
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    (Killed(child), format!("http://127.0.0.1:{port}"))
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs `kvscope ARGS…`, which must succeed; returns its stderr.
fn ok(args: &[&str]) -> String {
    let o = kvscope(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?}: {err}");
    err
}

/// Runs `kvscope ARGS…`, which must fail with a message containing each of `needles`.
fn fails(args: &[&str], needles: &[&str]) {
    let o = kvscope(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    for n in needles {
        assert!(err.contains(n), "{args:?}: no `{n}` in: {err}");
    }
}

/// `doctor --prometheus URL --since SINCE --json` of one scrape target, importing the
/// window into `import_to`: its doctor.json.
fn doctor_prometheus(
    url: &str,
    since: &str,
    instance: &str,
    import_to: &std::path::Path,
) -> serde_json::Value {
    let o = kvscope([
        "doctor",
        "--prometheus",
        url,
        "--since",
        since,
        "--match",
        &format!("{{instance=\"{instance}\"}}"),
        "--json",
        "--import-to",
        import_to.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn phase_at(series: &[PhasePoint], ts: i64, tol_us: i64) -> Option<&PhasePoint> {
    series
        .iter()
        .filter(|p| (p.ts - ts).abs() <= tol_us)
        .min_by_key(|p| (p.ts - ts).abs())
}

fn boundaries(a: &Analysis) -> Vec<i64> {
    a.series
        .windows(2)
        .filter(|w| w[0].phase != w[1].phase)
        .map(|w| w[1].ts)
        .collect()
}

#[test]
fn prometheus_history_reads_like_a_direct_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let (sim, url) = spawn_simulator("kv-saturation", 1.0);
    let _sim = Killed(sim);
    std::thread::sleep(Duration::from_millis(500));
    let target = url.trim_start_matches("http://").to_string();
    // A second target: the real vLLM 0.26 capture replayed live.
    let replay_port = free_port();
    let replay = Command::new(bin())
        .args([
            "replay",
            "tests/fixtures/captures/vllm-0.26-h100-scenarios",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{replay_port}"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _replay = Killed(replay);
    let replay_target = format!("127.0.0.1:{replay_port}");
    // A third: a production-stack router's /metrics, its `vllm:` gauges per backend. It
    // is no engine: skipped, and said so, not imported as a server summing its backends.
    let (router_url, _router) = serve_pages(vec![ROUTER_PAGE.to_string()]);
    let router_target = router_url.trim_start_matches("http://").to_string();
    // The capture every 2 s, the simulator every 1 s: each server is imported at its own
    // scrape interval.
    let (_prom, prom_url) = spawn_prometheus(
        tmp.path(),
        &[(&target, 1), (&replay_target, 2), (&router_target, 1)],
    );
    let direct = tmp.path().join("direct");
    let rec = Command::new(bin())
        .args([
            "record",
            "--server",
            &url,
            "--interval",
            "1s",
            "--duration",
            "55s",
            "--out",
        ])
        .arg(&direct)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let o = rec.wait_with_output().unwrap();
    assert!(o.status.success());
    let recorded = analyze_with_series(&direct);
    let first = recorded.series.first().unwrap().ts as f64 / 1e6;
    let last = recorded.series.last().unwrap().ts as f64 / 1e6;
    // The window both saw, a little inside the recording.
    let (start, end) = (first + 3.0, last - 1.0);
    // `import prometheus` of the window, selecting `matcher`, into tmp/`out`.
    let (start_s, end_s) = (format!("{start:.3}"), format!("{end:.3}"));
    let import_args = |matcher: &str, extra: &[&str], out: &str| -> Vec<String> {
        let mut args = vec!["import", "prometheus", "--url", &prom_url];
        args.extend(["--start", &start_s, "--end", &end_s, "--match", matcher]);
        args.extend(extra);
        let out = tmp.path().join(out);
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        args.extend(["--out".to_string(), out.to_str().unwrap().to_string()]);
        args
    };
    let imported_dir = tmp.path().join("imported");
    let err = ok(&strs(&import_args(r#"{job="vllm"}"#, &[], "imported")));
    assert!(
        err.contains("of 1–2 s (each server at its own scrape interval)"),
        "steps detected from the 1 s and 2 s scrapes: {err}"
    );
    assert!(
        err.contains(&format!(
            "skipped {router_target}: a router's /metrics, not a vLLM engine's (its gauges re-exported per backend: http://10.0.0.1:8000, http://10.0.0.2:8000)"
        )),
        "{err}"
    );
    // The router alone: nothing to import, and why.
    let router_only = format!("{{instance=\"{router_target}\"}}");
    fails(
        &strs(&import_args(&router_only, &[], "router-only")),
        &[
            "are a router's, not an engine's",
            &format!("`instance` {router_target} re-exports gauges per backend"),
        ],
    );
    // Grouped by too coarse a label, the two servers share a page: not read as one
    // server with two engines, and the import says why.
    let coarse = ok(&strs(&import_args(
        r#"{job="vllm"}"#,
        &["--server-label", "job"],
        "coarse",
    )));
    assert!(
        coarse.contains(" step(s) not read (NO_DATA): 2 series of vllm:num_requests_running for 2 models (`dummy-llama`, `sim-llama-8b`), differing in `instance`, `model_name`: several servers on one page"),
        "{coarse}"
    );
    let meta = store::read_metadata(&imported_dir).unwrap().unwrap();
    assert_eq!(meta.source.kind, "prometheus-import");
    assert_eq!(meta.source.urls, std::slice::from_ref(&prom_url));
    assert_eq!(meta.recorder.interval_s, 1.0);
    // Both servers, kept apart; the replayed capture's release read from its
    // cache_config_info as stored by Prometheus.
    let names: Vec<&str> = meta.servers.iter().map(|s| s.server.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let real = meta
        .servers
        .iter()
        .find(|s| s.server == replay_target)
        .unwrap();
    assert_eq!(real.vllm_version.as_deref(), Some("0.26"));
    let mut imported = analyze_with_series(&imported_dir);
    // The capture at its 2 s (a 1 s step would repeat each of its scrapes).
    let replayed: Vec<i64> = imported
        .series
        .iter()
        .filter(|p| p.server == replay_target)
        .map(|p| p.ts)
        .collect();
    assert!(replayed.len() >= 20, "{} replayed steps", replayed.len());
    assert!(
        replayed.windows(2).all(|w| w[1] - w[0] == 2_000_000),
        "{replayed:?}"
    );
    imported.series.retain(|p| p.server == target);
    // Same phases, except within one step of a phase boundary of either.
    let (b_rec, b_imp) = (boundaries(&recorded), boundaries(&imported));
    let near = |ts: i64| {
        b_rec
            .iter()
            .chain(&b_imp)
            .any(|b| (b - ts).abs() <= 1_600_000)
    };
    let (mut compared, mut differ) = (0, Vec::new());
    for p in &imported.series {
        // The first seconds of the import lack a previous step for rates.
        if p.ts as f64 / 1e6 < start + 3.0 || near(p.ts) {
            continue;
        }
        let Some(r) = phase_at(&recorded.series, p.ts, 600_000) else {
            continue;
        };
        compared += 1;
        if r.phase != p.phase {
            differ.push(format!("t={}: {:?} vs {:?}", p.t_rel_sec, p.phase, r.phase));
        }
    }
    assert!(compared >= 25, "only {compared} samples compared");
    // Prometheus and the recorder scrape the simulator at different instants (up to a
    // second apart), so a KV value right at a threshold can land on either side once in
    // a while; that is sampling, not the import. More than 5 % would be the import.
    assert!(
        differ.len() * 20 <= compared,
        "{} of {compared} differ: {differ:?}",
        differ.len()
    );
    // Same top finding.
    let top = |dir: &std::path::Path| {
        let o = kvscope(["doctor", dir.to_str().unwrap(), "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["hypotheses"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (t_rec, t_imp) = (top(&direct), top(&imported_dir));
    assert_eq!(t_imp, t_rec);
    assert_eq!(t_imp, "KV_CACHE_THRASHING");
    // Counter totals within one step's increase at the import's last step.
    let rows = store::read_samples_jsonl(&imported_dir.join(store::SAMPLES_JSONL)).unwrap();
    let rec_rows = store::read_samples_jsonl(&direct.join(store::SAMPLES_JSONL)).unwrap();
    let last_imp = rows
        .iter()
        .rev()
        .find(|r| r.scrape_ok && r.server == target)
        .unwrap();
    let near_rec = rec_rows
        .iter()
        .filter(|r| r.scrape_ok)
        .min_by_key(|r| (r.ts - last_imp.ts).abs())
        .unwrap();
    let max_step = rec_rows
        .windows(2)
        .filter_map(|w| Some(w[1].generation_tokens_total? - w[0].generation_tokens_total?))
        .max()
        .unwrap();
    let diff = (last_imp.generation_tokens_total.unwrap()
        - near_rec.generation_tokens_total.unwrap())
    .abs();
    assert!(
        diff <= max_step,
        "generation tokens differ by {diff} (one step: ≤ {max_step})"
    );
    // The API server's process metrics come along (CPU, memory).
    assert!(
        last_imp.api_cpu_util_pct.is_some_and(|c| c >= 0.0),
        "{last_imp:?}"
    );
    assert!(
        last_imp.api_rss_mib.is_some_and(|m| m > 1000.0),
        "{last_imp:?}"
    );

    // doctor --prometheus: the same top finding straight from Prometheus.
    let v = doctor_prometheus(&prom_url, "40s", &target, &tmp.path().join("doctor-import"));
    assert_eq!(v["hypotheses"][0]["id"], "KV_CACHE_THRASHING", "{v}");
    assert_eq!(v["hypotheses"][0]["server"], target.as_str());

    // Clear errors: an empty selection, a rejected query, nothing listening.
    let import = |url: &str, matchers: &str, needles: &[&str]| {
        let out = tmp.path().join("failed");
        let out = out.to_str().unwrap();
        let args = ["import", "prometheus", "--url", url, "--start", "1h"];
        fails(
            &[&args[..], &["--match", matchers, "--out", out]].concat(),
            needles,
        );
    };
    import(
        &prom_url,
        r#"{job="nope"}"#,
        &[r#"no vLLM series for {job="nope"} between"#],
    );
    import(&prom_url, "{job=}", &["rejected the query", "bad_data"]);
    let nobody = format!("http://127.0.0.1:{}", free_port());
    import(&nobody, "", &["cannot reach Prometheus"]);

    // The replayed vLLM server goes away: Prometheus marks its series stale and holds no
    // sample after, so history reviewed since then reads SERVER_DOWN, in Prometheus'
    // words.
    drop(_replay);
    let killed = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(16));
    let v = doctor_prometheus(
        &prom_url,
        "45s",
        &replay_target,
        &tmp.path().join("doctor-down"),
    );
    let down = v["hypotheses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == "SERVER_DOWN")
        .unwrap_or_else(|| panic!("{v}"));
    let summary = down["summary"].as_str().unwrap();
    assert!(summary.contains("Prometheus holds no sample"), "{summary}");
    let seconds = down["evidence"][0]["observed"].as_f64().unwrap();
    // From the last sample Prometheus holds (up to one 2 s scrape before the kill, or
    // the stale marker of the next) to the window's end, taken when doctor started.
    let since_kill = killed.elapsed().as_secs_f64();
    assert!(
        (since_kill - 8.0..=since_kill + 2.0).contains(&seconds) && seconds >= 12.0,
        "down {seconds} s, {since_kill:.1} s after the kill: {summary}"
    );
}

/// Prometheus itself down for ~25 s (killed, so no staleness marker) while the server
/// keeps running: a query fills those steps with the last sample before the kill (its
/// 5-minute lookback), a page whose every counter stands still. Imported, they are
/// steps without data, not an engine that stopped moving with 10 requests running
/// (which read as STUCK_ENGINE, "restart the engine now", before).
#[test]
fn a_prometheus_outage_is_missing_data_not_a_stuck_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let (sim, url) = spawn_simulator("kv-saturation", 1.0);
    let _sim = Killed(sim);
    let target = url.trim_start_matches("http://").to_string();
    let port = free_port();
    let (prom, prom_url) = spawn_prometheus_on(tmp.path(), &[(&target, 1)], port);
    std::thread::sleep(Duration::from_secs(20));
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let killed = now();
    drop(prom);
    std::thread::sleep(Duration::from_secs(25));
    let restarted = now();
    let (_prom, _) = spawn_prometheus_on(tmp.path(), &[(&target, 1)], port);
    std::thread::sleep(Duration::from_secs(10));
    let out = tmp.path().join("imported");
    let err = ok(&[
        "import",
        "prometheus",
        "--url",
        &prom_url,
        "--start",
        &format!("{:.3}", killed - 15.0),
        "--end",
        &format!("{:.3}", restarted + 8.0),
        "--out",
        out.to_str().unwrap(),
    ]);
    // ~48 steps of 1 s, of which the ~25 s outage (and Prometheus' start) has no data.
    let without: u64 = err
        .split(" without data)")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        (22..=40).contains(&without),
        "{without} steps without data: {err}"
    );
    let o = kvscope(["doctor", out.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<&str> = v["hypotheses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["id"].as_str())
        .collect();
    assert!(!ids.contains(&"STUCK_ENGINE"), "{ids:?}");
    assert!(ids.contains(&"TELEMETRY_GAPS"), "{ids:?}");
    assert!(ids.contains(&"KV_CACHE_THRASHING"), "{ids:?}");
    // The gap says why: no fresh sample, not a server that refused.
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    assert!(
        events.lines().any(|l| l.contains("SCRAPE_GAP")
            && l.contains("no fresh sample in Prometheus at this step")),
        "{events}"
    );
    assert!(!events.contains("ENGINE_STALLED"), "{events}");
}

const CAPTURE_LOG: &str = "tests/fixtures/captures/vllm-0.26-h100-scenarios/vllm_server.log.gz";

/// The real vLLM 0.26 log of the capture: a coarse session whose peak matches the log's
/// own numbers, and a doctor that knows quantiles are absent.
#[test]
fn a_real_vllm_log_becomes_a_coarse_session() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("log");
    let err = ok(&[
        "import",
        "vllm-log",
        CAPTURE_LOG,
        "--year",
        "2026",
        "--server",
        "h100",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("imported 29 stats line(s) of 1 engine(s) at a 10 s interval"),
        "{err}"
    );
    let meta = store::read_metadata(&out).unwrap().unwrap();
    assert_eq!(meta.source.kind, "vllm-log");
    assert!(
        meta.source
            .notes
            .iter()
            .any(|n| n.contains("latency quantiles"))
    );
    assert_eq!(meta.servers[0].vllm_version.as_deref(), Some("0.26"));
    assert_eq!(
        meta.servers[0]
            .model_names
            .iter()
            .next()
            .map(String::as_str),
        Some("/tmp/model")
    );
    let a = analyze_with_series(&out);
    let s = &a.summary.servers[0];
    // From the log: "Running: 64 reqs, Waiting: 192 reqs, GPU KV cache usage: 31.3%" at 13:08:52.
    assert_eq!(s.waiting_max, Some(192.0));
    assert!(s.kv_max_pct.unwrap() >= 31.3);
    assert!(
        a.summary
            .data_quality
            .missing_histograms
            .contains(&"ttft_s".to_string())
    );
    let first = a.series.first().unwrap();
    assert_eq!(
        kvscope::record::rfc3339(first.ts),
        "2026-11-23T13:08:12.000Z"
    );
    let o = kvscope(["doctor", out.to_str().unwrap()]);
    assert!(
        o.status.success() || o.status.code() == Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Older and newer wordings, written from vLLM's format strings: V0 (`Pending`, swap
/// space), and a data-parallel V1 server naming its device, whose silent stretch after a
/// zero-throughput line is idle (vLLM logs idle intervals at DEBUG).
#[test]
fn v0_and_data_parallel_logs_import() {
    let tmp = tempfile::tempdir().unwrap();
    let v0 = tmp.path().join("v0.log");
    let mut text = String::new();
    for i in 0..12 {
        let s = i * 5;
        text.push_str(&format!(
            "INFO 05-14 10:00:{s:02} metrics.py:341] Avg prompt throughput: {}.0 tokens/s, Avg generation throughput: 45.3 tokens/s, Running: {} reqs, Swapped: 0 reqs, Pending: {} reqs, GPU KV cache usage: {}.5%, CPU KV cache usage: 0.0%.\n",
            100 + i, 8 + i, i, 50 + 4 * i
        ));
    }
    std::fs::write(&v0, text).unwrap();
    let out = tmp.path().join("v0");
    let o = kvscope([
        "import",
        "vllm-log",
        v0.to_str().unwrap(),
        "--year",
        "2025",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = store::read_samples_jsonl(&out.join(store::SAMPLES_JSONL)).unwrap();
    assert_eq!(rows.len(), 12);
    assert_eq!(rows[11].requests_waiting, Some(11));
    assert_eq!(rows[11].kv_cache_usage_pct, Some(94.5));
    assert_eq!(rows[1].interval_s, Some(5.0));

    let dp = tmp.path().join("dp.log");
    let mut text = String::new();
    for (t, busy) in [(0, true), (10, true), (20, false), (80, true)] {
        for e in 0..2 {
            let (tp, run) = if busy { (500.0, 4) } else { (0.0, 0) };
            text.push_str(&format!(
                "(APIServer pid=1) INFO 02-01 08:{:02}:{:02} [loggers.py:123] Engine {e:03}: Avg prompt throughput: {tp:.1} tokens/s, Avg generation throughput: {tp:.1} tokens/s, Running: {run} reqs, Waiting: 0 reqs, XPU KV cache usage: {}.0%, Prefix cache hit rate: 10.0%\n",
                t / 60, t % 60, if busy { 40 } else { 0 }
            ));
        }
    }
    std::fs::write(&dp, text).unwrap();
    let out = tmp.path().join("dp");
    let err = ok(&[
        "import",
        "vllm-log",
        dp.to_str().unwrap(),
        "--year",
        "2025",
        "--utc-offset",
        "-5",
        "--out",
        out.to_str().unwrap(),
    ]);
    // 20 s → 80 s silent after a zero line: 5 idle rows per engine filled at 10 s.
    assert!(
        err.contains("of 2 engine(s) at a 10 s interval (10 idle row(s) filled)"),
        "{err}"
    );
    let rows = store::read_samples_jsonl(&out.join(store::SAMPLES_JSONL)).unwrap();
    assert_eq!(rows.len(), 18);
    assert_eq!(
        kvscope::record::rfc3339(rows[0].ts),
        "2025-02-01T13:00:00.000Z"
    );
    let filled = rows
        .iter()
        .find(|r| r.t_rel_sec == 50.0 && r.engine == "1")
        .unwrap();
    assert_eq!(
        (filled.requests_running, filled.generation_tokens_per_s),
        (Some(0), Some(0.0))
    );
    let a = analyze_with_series(&out);
    assert!(
        a.summary.servers[0]
            .phases
            .contains_key(&kvscope::vocab::Phase::Idle)
    );
}
