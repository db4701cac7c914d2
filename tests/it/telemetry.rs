//! The field's other data in one session: vLLM's KV residency histograms
//! (`--kv-cache-metrics`), a DCGM exporter scraped beside the server
//! (`record --gpu-metrics`), and what the doctor makes of them.

use std::path::Path;
use std::time::Duration;

use kvscope::source::raw;
use kvscope::store;

use crate::common::{kvscope, spawn_simulator};

/// `(le, cumulative)` buckets, `_count` and `_sum` of one vLLM histogram on a page, read
/// by hand (line by line), not through KVScope's parser.
fn hand_histogram(text: &str, family: &str) -> (Vec<(f64, f64)>, f64) {
    let mut buckets = Vec::new();
    let mut count = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&format!("vllm:{family}_")) else {
            continue;
        };
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        if rest.starts_with("bucket{") {
            let le = rest
                .split("le=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            buckets.push((le, value));
        } else if rest.starts_with("count{") {
            count = value;
        }
    }
    (buckets, count)
}

/// Prometheus `histogram_quantile` by hand: linear inside the bucket holding the rank.
fn hand_quantile(deltas: &[(f64, f64)], q: f64) -> f64 {
    let total = deltas.last().unwrap().1;
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in deltas {
        if c >= rank {
            return prev.0 + (le - prev.0) * (rank - prev.1) / (c - prev.1);
        }
        prev = (le, c);
    }
    unreachable!()
}

/// The simulator's pages with `--kv-cache-metrics` (20 % of blocks sampled) are a real
/// exposition of vLLM's three residency histograms; what KVScope computes from them
/// equals what the page text gives by hand, and the values follow the block model.
#[test]
fn residency_from_real_pages_matches_hand_computation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kv");
    let o = kvscope([
        "simulate",
        "--scenario",
        "kv-saturation",
        "--seed",
        "3",
        "--kv-cache-metrics-sample",
        "0.2",
        "--raw",
        "--record-to",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pages = raw::read_pages(&dir.join("raw_pages.jsonl.gz")).unwrap();
    let rows = store::read_samples_jsonl(&dir.join(store::SAMPLES_JSONL)).unwrap();
    assert_eq!(pages.len(), rows.len());
    // The interval with the most sampled evictions, by hand from consecutive pages.
    let mut best = (0usize, 0.0);
    for i in 1..pages.len() {
        let (_, c0) = hand_histogram(
            pages[i - 1].text.as_deref().unwrap(),
            "kv_block_lifetime_seconds",
        );
        let (_, c1) = hand_histogram(
            pages[i].text.as_deref().unwrap(),
            "kv_block_lifetime_seconds",
        );
        if c1 - c0 > best.1 {
            best = (i, c1 - c0);
        }
    }
    let (i, evicted) = best;
    assert!(
        evicted >= 20.0,
        "at most {evicted} sampled evictions in one interval"
    );
    let (b0, _) = hand_histogram(
        pages[i - 1].text.as_deref().unwrap(),
        "kv_block_lifetime_seconds",
    );
    let (b1, _) = hand_histogram(
        pages[i].text.as_deref().unwrap(),
        "kv_block_lifetime_seconds",
    );
    let deltas: Vec<(f64, f64)> = b1
        .iter()
        .zip(&b0)
        .map(|(a, b)| (a.0, a.1 - b.1))
        .filter(|(le, _)| le.is_finite())
        .collect();
    let row = &rows[i];
    let dt = pages[i].ts - pages[i - 1].ts;
    assert_eq!(row.kv_evictions_sampled, Some(evicted as i64));
    let per_s = row.kv_evictions_sampled_per_s.unwrap();
    assert!(
        (per_s - evicted / dt).abs() < 1e-9,
        "{per_s} vs {}",
        evicted / dt
    );
    let p50 = row.kv_block_lifetime_p50_s.unwrap();
    let hand = hand_quantile(&deltas, 0.5);
    assert!((p50 - hand).abs() < 1e-9, "p50 {p50} vs hand {hand}");
    // vLLM's block model: a block is idle at most as long as it lived, and each sampled
    // eviction carries at most three reuse gaps (an access ring of four).
    let last = pages.last().unwrap().text.as_deref().unwrap();
    let (_, lifetimes) = hand_histogram(last, "kv_block_lifetime_seconds");
    let (_, idles) = hand_histogram(last, "kv_block_idle_before_evict_seconds");
    let (_, gaps) = hand_histogram(last, "kv_block_reuse_gap_seconds");
    assert_eq!(lifetimes, idles);
    assert!(gaps <= 3.0 * lifetimes);

    // Session block and the doctor, through the binary.
    let o = kvscope(["doctor", dir.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let res = &summary["servers"][0]["residency"];
    assert_eq!(
        res["lifetime_s"]["count"].as_f64(),
        Some(lifetimes),
        "{res}"
    );
    assert!(res["idle_before_evict_s"]["p50"].as_f64() <= res["lifetime_s"]["p50"].as_f64());
    let churn = v["hypotheses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == "KV_CACHE_CHURN")
        .unwrap_or_else(|| panic!("no KV_CACHE_CHURN in {}", v["hypotheses"]));
    let text = churn.to_string();
    // vLLM's caveats travel with the finding.
    assert!(text.contains("--kv-cache-metrics-sample"), "{text}");
    assert!(
        text.contains("never") || text.contains("cached or not"),
        "{text}"
    );
    assert!(
        churn["evidence"][0]["observed"].as_f64().unwrap() <= 10.0,
        "{}",
        churn["evidence"]
    );
    // Timeline evidence: where blocks started to die young while the cache was exhausted.
    let o = kvscope(["timeline", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("KV_BLOCK_CHURN"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("kv_block_lifetime_p50_s=") && line.contains("(threshold 10)"),
        "{line}"
    );
}

/// Without the histograms (vLLM's default) the churn rule says why it cannot judge.
#[test]
fn residency_absent_is_said_not_guessed() {
    let (_tmp, dir) = crate::common::record_scenario("kv-saturation", 1);
    let o = kvscope(["doctor", dir.to_str().unwrap(), "--json", "--verbose"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ruled = v["ruled_out"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "KV_CACHE_CHURN")
        .unwrap();
    assert!(
        ruled["reason"]
            .as_str()
            .unwrap()
            .contains("--kv-cache-metrics"),
        "{ruled}"
    );
}

fn wait_for(url: &str) {
    for _ in 0..500 {
        if let Some(hostport) = url.strip_prefix("http://")
            && std::net::TcpStream::connect(hostport).is_ok()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{url} never answered");
}

/// `record --gpu-metrics` scrapes the simulator's DCGM exporter beside its vLLM page:
/// the GPU columns are filled in KVScope's units, the exporter is named in the metadata,
/// and the doctor's bottleneck call uses them. Wrong exporters are refused up front.
#[test]
fn record_with_a_dcgm_exporter_fills_the_gpu_columns() {
    let (mut sim, url) = spawn_simulator("compute-bound", 20.0);
    wait_for(&url);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rec");
    let o = kvscope([
        "record",
        "--server",
        &url,
        "--gpu-metrics",
        &format!("{url}/dcgm/metrics"),
        "--interval",
        "100ms",
        "--duration",
        "4s",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = store::read_samples_jsonl(&out.join(store::SAMPLES_JSONL)).unwrap();
    let with_gpu: Vec<_> = rows.iter().filter(|r| r.gpu_util_pct.is_some()).collect();
    assert!(
        with_gpu.len() + 2 >= rows.len() && rows.len() >= 10,
        "{} of {} rows with GPU",
        with_gpu.len(),
        rows.len()
    );
    for r in &with_gpu {
        // vLLM reserves gpu_memory_utilization (0.9) of the framebuffer at start.
        let mem = r.gpu_mem_used_pct.unwrap();
        assert!((mem - 90.0).abs() < 0.01, "{mem}");
        assert_eq!(r.gpu_sm_clock_mhz, Some(1980.0));
        let util = r.gpu_util_pct.unwrap();
        let sm = r.gpu_sm_active_pct.unwrap();
        assert!((0.0..=100.0).contains(&util) && (0.0..=100.0).contains(&sm));
        // SM activity (a 0-1 ratio on the page) is percent here, never above utilization.
        assert!(sm <= util + 1.0, "sm {sm} util {util}");
        assert!(r.gpu_power_w.unwrap() > 0.0);
    }
    // Under the compute-bound load (from 20 simulated s on) the GPU is busy.
    let late: Vec<f64> = with_gpu
        .iter()
        .filter(|r| r.t_rel_sec >= 30.0)
        .filter_map(|r| r.gpu_util_pct)
        .collect();
    assert!(
        !late.is_empty() && late.iter().sum::<f64>() / late.len() as f64 >= 85.0,
        "{late:?}"
    );
    let meta = store::read_metadata(&out).unwrap().unwrap();
    assert!(
        meta.source
            .notes
            .iter()
            .any(|n| n.contains("/dcgm/metrics")),
        "{:?}",
        meta.source.notes
    );
    assert_eq!(meta.source.urls.len(), 1);

    // A vLLM page is not a GPU exporter; an unknown server in --gpu-for is named.
    let bad = kvscope([
        "record",
        "--server",
        &url,
        "--gpu-metrics",
        &format!("{url}/metrics"),
        "--duration",
        "1s",
        "--out",
        tmp.path().join("bad").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("does not look like a GPU exporter") && err.contains("/metrics"),
        "{err}"
    );
    let bad = kvscope([
        "record",
        "--server",
        &url,
        "--gpu-for",
        "other:9=http://127.0.0.1:1/dcgm",
        "--duration",
        "1s",
        "--out",
        tmp.path().join("bad2").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("`other:9` is not one of the recorded servers"),
        "{err}"
    );
    assert!(
        !Path::new(&tmp.path().join("bad2"))
            .join("samples.jsonl")
            .exists()
    );
    let _ = sim.kill();
    let _ = sim.wait();
}

fn profilemate_fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/profilemate/session_20261123_130743")
}

/// The fixture (built from profilemate's published format: 30 s, KV 40 % then 97 % for
/// 10 s with 4 evictions a second, an idle gap, six CUDA graphs) imported through the
/// binary, with every asserted value worked out by hand from the files.
#[test]
fn profilemate_session_imports_with_hand_checked_values() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pm");
    let o = kvscope([
        "import",
        "profilemate",
        profilemate_fixture().to_str().unwrap(),
        "--server",
        "gpu-node-3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("imported 81 KV usage row(s) and 40 eviction(s) into 30 sample(s)"),
        "{err}"
    );
    assert!(
        err.contains("6 CUDA graph(s), 10000 replay(s), uniform workload"),
        "{err}"
    );
    let rows = store::read_samples_jsonl(&out.join(store::SAMPLES_JSONL)).unwrap();
    assert_eq!(rows.len(), 30);
    // session_id 20261123_130743 at UTC+0; the first bin ends 1 s in.
    assert_eq!(
        kvscope::record::rfc3339(rows[0].ts),
        "2026-11-23T13:07:44.000Z"
    );
    let at = |t: f64| rows.iter().find(|r| r.t_rel_sec == t).unwrap();
    // Last reading of each bin: 39 and 40 in (9, 10], the 0.75 s row wins.
    assert_eq!(at(8.0).kv_cache_usage_pct, Some(40.0));
    assert_eq!(at(10.0).kv_cache_usage_pct, Some(97.0));
    assert_eq!(at(10.0).kv_evictions_sampled, Some(4));
    // Lifetimes 1.5, 2.5, 3.5, 40 → median 3.0; idle 0.2, 0.4, 1.0, 30 → 0.7.
    assert_eq!(at(10.0).kv_block_lifetime_p50_s, Some(3.0));
    assert_eq!(at(10.0).kv_block_idle_p50_s, Some(0.7));
    assert_eq!(at(10.0).kv_evictions_sampled_per_s, Some(4.0));
    // 25-28 s: no readings (vLLM did not step), the last value holds.
    assert_eq!(at(26.0).kv_cache_usage_pct, Some(30.0));
    assert_eq!(at(26.0).kv_evictions_sampled, Some(0));
    assert!(rows.iter().all(|r| r.requests_running.is_none()));

    let o = kvscope(["doctor", out.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let s = &summary["servers"][0];
    // Phases: idle while KV is 0 (2 s), saturated at 97 % (10 s).
    assert_eq!(s["phases"]["IDLE"]["seconds"].as_f64(), Some(2.0));
    assert_eq!(s["phases"]["SATURATED"]["seconds"].as_f64(), Some(10.0));
    // Residency on vLLM's buckets: 10 each of 1.5 (1-2], 2.5 and 3.5 (2-5], 40 (30-60];
    // rank 20 of 40 lies 10/20 into (2, 5] → 3.5; 30 of 40 within 10 s.
    let res = &s["residency"];
    assert_eq!(res["lifetime_s"]["p50"].as_f64(), Some(3.5), "{res}");
    assert_eq!(res["lifetime_s"]["count"].as_f64(), Some(40.0));
    assert_eq!(res["short_lifetime_share"].as_f64(), Some(0.75));
    // CUDA graphs: 5000 + 3000 of 10000 replays in two graphs; top five 9800; uniform
    // (decode) 9500; one graph captured late, at 18.4 s.
    let g = &s["cuda_graphs"];
    assert_eq!(g["unique_graphs"].as_u64(), Some(6));
    assert_eq!(g["hot_graphs"].as_u64(), Some(2));
    assert_eq!(g["top5_replay_share"].as_f64(), Some(0.98));
    assert_eq!(g["uniform_replay_share"].as_f64(), Some(0.95));
    assert_eq!(g["replays_by_mode"]["PIECEWISE"].as_u64(), Some(500));
    assert_eq!(g["last_capture_s"].as_f64(), Some(18.406));
    assert_eq!(g["workload"], "uniform");
    assert_eq!(
        v["hypotheses"][0]["id"], "KV_CACHE_CHURN",
        "{}",
        v["hypotheses"]
    );
    assert!(
        v["context"][0]["note"]
            .as_str()
            .unwrap()
            .contains("uniform workload")
    );
    let meta = store::read_metadata(&out).unwrap().unwrap();
    assert_eq!(meta.source.kind, "profilemate");
    assert_eq!(meta.servers[0].cache_config[0]["num_gpu_blocks"], "1024");
}

/// Missing and malformed profilemate files: a clear error naming the file (and line),
/// a non-zero exit, no session left behind.
#[test]
fn profilemate_bad_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        let d = tmp.path().join(name).join("session_20261123_130743");
        std::fs::create_dir_all(&d).unwrap();
        for f in std::fs::read_dir(profilemate_fixture()).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, d.join(f.file_name().unwrap())).unwrap();
        }
        d
    };
    let run = |dir: &Path| {
        let out = dir.parent().unwrap().join("out");
        let o = kvscope([
            "import",
            "profilemate",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        assert!(!out.join("samples.parquet").exists());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let d = copy("missing");
    std::fs::remove_file(d.join("kv_cache_usage.csv")).unwrap();
    let err = run(&d);
    assert!(err.contains("no kv_cache_usage.csv"), "{err}");
    // (case, file replaced, its content, what the error must say)
    let usage_head = "timestamp_sec,usage_pct,num_blocks,total_blocks\n";
    let cases = [
        (
            "bad-value",
            "kv_cache_usage.csv",
            format!("{usage_head}0.25,0,0,1024\n0.5,0,0,1024\n0.75,0,0,1024\n1.250,abc,0,1024\n"),
            "kv_cache_usage.csv:5: `usage_pct` is `abc`, not a number",
        ),
        (
            "fraction",
            "kv_cache_usage.csv",
            format!("{usage_head}0.5,0.4,400,1024\n1.5,140,400,1024\n"),
            "kv_cache_usage.csv:3: usage_pct 140 is outside 0-100",
        ),
        (
            "header",
            "kv_cache_evictions.csv",
            "timestamp_sec,lifetime\n1.0,2.0\n".to_string(),
            "kv_cache_evictions.csv:1: no `lifetime_sec` column",
        ),
        (
            "graphs",
            "cuda_graph_usage.csv",
            "runtime_mode,num_tokens,num_reqs,uniform,has_lora,replay_count\nFULL,8,8,True,False,-3\n"
                .to_string(),
            "cuda_graph_usage.csv:2: replay_count `-3` is not a count",
        ),
    ];
    for (name, file, content, expected) in cases {
        let d = copy(name);
        std::fs::write(d.join(file), content).unwrap();
        let err = run(&d);
        assert!(err.contains(expected), "{name}: {err}");
    }
}

/// A million KV usage rows (about an hour of per-step readings) import into one sample
/// per second with the right values (its speed is in benches/, not asserted here).
#[test]
fn profilemate_million_rows() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("session_20261123_000000");
    std::fs::create_dir_all(&dir).unwrap();
    let mut w =
        std::io::BufWriter::new(std::fs::File::create(dir.join("kv_cache_usage.csv")).unwrap());
    writeln!(w, "timestamp_sec,usage_pct,num_blocks,total_blocks").unwrap();
    // 1,000,000 readings, 4 ms apart (4000 s); usage is the second number mod 100.
    for i in 0..1_000_000u64 {
        let t = i as f64 * 0.004;
        let u = (t.floor() as u64 % 100) as f64;
        writeln!(w, "{t:.3},{u:.2},{},{}", (u * 10.24).round(), 1024).unwrap();
    }
    w.flush().unwrap();
    let out = tmp.path().join("out");
    let o = kvscope([
        "import",
        "profilemate",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = store::read_samples_jsonl(&out.join(store::SAMPLES_JSONL)).unwrap();
    assert_eq!(rows.len(), 4000);
    // The bin (1233, 1234] s: its last reading is the one at exactly 1234.000 s (usage
    // 34), the 249 before it read 33.
    let r = rows.iter().find(|r| r.t_rel_sec == 1233.0).unwrap();
    assert_eq!(r.kv_cache_usage_pct, Some(34.0));
    let r = rows.iter().find(|r| r.t_rel_sec == 3998.0).unwrap();
    assert_eq!(r.kv_cache_usage_pct, Some(99.0));
}
