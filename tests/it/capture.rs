//! Golden tests on real vLLM telemetry: `tests/fixtures/captures/vllm-0.26-h100-scenarios/`
//! (623 raw `/metrics` pages at 0.5 s from vLLM 0.26.0 on an H100, eight labelled load
//! scenarios; see its README). The real binary replays the capture ×10 (`kvscope
//! replay`) and records it (`kvscope record`) at 0.5, 1, 2 and 5 s, concurrently; each
//! recording must read the same at every interval.
//!
//! Phases are scored on samples at least 2 s (and one interval) after a scenario boundary
//! (the first scrapes of a scenario still show the previous one's load, capture README)
//! and not in the recording's last two intervals; a scenario is diagnosed on its own by
//! analysing the samples of its window. Without a replay's timing, the pages are also
//! taken every 2, 5, 10 and 15 s from every offset and recorded through the recorder's
//! pipeline: each phase of each interval against the load must read the same.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kvscope::analysis::{self, Thresholds};
use kvscope::diagnosis::{self, Report};
use kvscope::source::raw::{self, RawPage, RawWriter};
use kvscope::store;
use kvscope::vocab::Phase;

use crate::common::Bounded;
use crate::common::{bin, block_on, kvscope};

/// Capture seconds per wall second for the replay.
const SPEED: f64 = 10.0;
const SETTLE_S: f64 = 2.0;

fn capture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/captures/vllm-0.26-h100-scenarios")
}

/// (scenario, start, end) in Unix seconds, from the capture's manifest.
fn scenarios() -> Vec<(String, f64, f64)> {
    let text = std::fs::read_to_string(capture_dir().join("manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    m["scenarios"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["start_ts"].as_f64().unwrap(),
                p["end_ts"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// `kvscope replay PAGES --speed SPEED` on a free port, ready to answer.
fn spawn_replay(pages: &Path) -> (Child, String) {
    let port = free_port();
    let child = Command::new(bin())
        .arg("replay")
        .arg(pages)
        .args(["--speed", &SPEED.to_string()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    // Loading and decompressing the capture takes a moment in a debug build.
    for _ in 0..1000 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, url)
}

/// Starts `kvscope record` of `url` at `interval_s` capture seconds for `span_s`.
fn spawn_record(url: &str, interval_s: f64, span_s: f64, out: &Path) -> Child {
    Command::new(bin())
        .args(["record", "--server", url])
        .args([
            "--interval",
            &format!("{}ms", (interval_s / SPEED * 1000.0).round()),
        ])
        .args([
            "--duration",
            &format!("{}ms", (span_s / SPEED * 1000.0).round()),
        ])
        .arg("--out")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Real-time recordings (shared: they may overlap one another) against this file's
/// CPU-heavy offline analyses (exclusive), whose load would make a recorder's ticks late.
static RECORDING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Replays `pages` once and records it at each interval; returns the session dirs.
fn replay_and_record(pages: &Path, intervals: &[f64], tmp: &Path) -> Vec<PathBuf> {
    let _recording = RECORDING.read().unwrap_or_else(|e| e.into_inner());
    let all = raw::read_pages(pages).unwrap();
    let span = all.last().unwrap().ts - all.first().unwrap().ts;
    let (mut replay, url) = spawn_replay(pages);
    let children: Vec<(Child, PathBuf)> = intervals
        .iter()
        .map(|i| {
            let out = tmp.join(format!("rec-{i}"));
            // Stop a little before the capture ends (past it the replay answers 503).
            (spawn_record(&url, *i, span - 1.0, &out), out)
        })
        .collect();
    let dirs = children
        .into_iter()
        .map(|(c, out)| {
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "record failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            out
        })
        .collect();
    let _ = replay.kill();
    let _ = replay.wait();
    dirs
}

/// Analyses the samples of `[from, to]` (Unix s) on their own and diagnoses them.
fn diagnose_window(dir: &Path, from: f64, to: f64) -> Report {
    diagnose_window_with(dir, from, to, |_| {})
}

/// [`diagnose_window`] with the rows edited first.
fn diagnose_window_with(
    dir: &Path,
    from: f64,
    to: f64,
    edit: impl Fn(&mut kvscope::store::schema::Sample),
) -> Report {
    let mut rows: Vec<_> = store::read_samples_jsonl(&dir.join(store::SAMPLES_JSONL))
        .unwrap()
        .into_iter()
        .filter(|r| {
            let t = r.ts as f64 / 1e6;
            t >= from && t <= to
        })
        .collect();
    rows.iter_mut().for_each(edit);
    let a = block_on(analysis::analyze_rows(rows, &Thresholds::default())).unwrap();
    let meta = store::read_metadata(dir).unwrap();
    diagnosis::diagnose(&a.summary, &a.events, meta.as_ref())
}

fn recommended(r: &Report, id: &str, flag: &str) -> Option<f64> {
    r.hypotheses
        .iter()
        .find(|h| h.id == id)?
        .recommendations
        .iter()
        .find(|x| x.action == flag)?
        .value
        .as_deref()?
        .parse()
        .ok()
}

/// `kvscope doctor DIR --json`, through the binary.
fn doctor(dir: &Path) -> Report {
    let o = kvscope(["doctor", dir.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn ids_and_severities(r: &Report) -> Vec<(&str, &str)> {
    r.hypotheses
        .iter()
        .map(|h| (h.id.as_str(), h.severity.as_str()))
        .collect()
}

/// The finding `id` of a report; panics naming what was found instead.
fn finding<'a>(r: &'a Report, id: &str) -> &'a diagnosis::Finding {
    r.hypotheses
        .iter()
        .find(|h| h.id == id)
        .unwrap_or_else(|| panic!("no {id} in {:?}", ids_and_severities(r)))
}

/// `None` when `id` is the report's top finding, else what the report found instead.
fn top_other_than(r: &Report, id: &str) -> Option<String> {
    let top = r.hypotheses.first().map(|h| h.id.as_str());
    (top != Some(id)).then(|| format!("top {top:?}, {:?}", medium_or_high(r)))
}

fn medium_or_high(r: &Report) -> Vec<String> {
    r.hypotheses
        .iter()
        .filter(|h| h.severity == "high" || h.severity == "medium")
        .map(|h| format!("{}={}", h.id, h.score))
        .collect()
}

#[test]
fn real_capture_reads_the_same_at_every_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let pages = capture_dir().join("metrics_scrapes.jsonl.gz");
    // Scenario by scenario at 0.5–5 s; the whole session also at 10 and 15 s (recorded
    // alongside: a 15 s scrape sees queue_pressure's 50 s three or four times).
    let all = [0.5, 1.0, 2.0, 5.0, 10.0, 15.0];
    let all_dirs = replay_and_record(&pages, &all, tmp.path());
    let (intervals, dirs) = (&all[..4], &all_dirs[..4]);
    // The capture's nvidia-smi log joined in: its server was CPU-launch-bound, GPU
    // utilization stayed low under load (12 % on average over the session).
    let o = crate::common::kvscope([
        "import",
        "nvidia-smi",
        capture_dir().join("nvidia_smi.csv.gz").to_str().unwrap(),
        "--session",
        dirs[1].to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("joined 812 GPU poll(s)"), "{err}");
    let o = crate::common::kvscope(["doctor", dirs[1].to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Per episode of trouble: queue_pressure (running pinned at max-num-seqs, KV to
    // spare) waited with the GPU mostly idle — outside the GPU, as the capture's notes
    // say; kv_saturation was KV-bound.
    let kinds_in = |scenario: &str| -> Vec<(String, f64)> {
        let (_, start, end) = scenarios().into_iter().find(|s| s.0 == scenario).unwrap();
        let t = |v: &serde_json::Value| {
            chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
                .unwrap()
                .timestamp() as f64
        };
        v["bottleneck"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| t(&b["start"]) < end && t(&b["end"]) > start)
            .map(|b| {
                (
                    b["kind"].as_str().unwrap().to_string(),
                    b["gpu_util_avg_pct"].as_f64().unwrap_or(-1.0),
                )
            })
            .collect()
    };
    let qp = kinds_in("queue_pressure");
    assert!(
        qp.iter()
            .any(|(k, g)| k == "outside_gpu" && (5.0..30.0).contains(g)),
        "{qp:?} in {}",
        v["bottleneck"]
    );
    let kv = kinds_in("kv_saturation");
    assert!(kv.iter().any(|(k, _)| k == "kv_memory"), "{kv:?}");
    // The report of the real capture renders, with its diagnosis and release.
    crate::report::check_session_report(&dirs[1], &["KV_CACHE_THRASHING", "vLLM 0.26"]);
    let mut problems = Vec::new();
    let mut tops: Vec<(String, Vec<String>)> = Vec::new();
    let (_, kv_start, kv_end) = scenarios()
        .into_iter()
        .find(|s| s.0 == "kv_saturation")
        .unwrap();
    for (interval, dir) in all.iter().zip(&all_dirs) {
        // kv_saturation's clients waited 32 s for a first token at the median (capture
        // README): TTFT_ELEVATED holds through it at every interval, though at 0.5 s
        // most intervals see no first token at all.
        let o = crate::common::kvscope(["timeline", dir.to_str().unwrap(), "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let t = |v: &serde_json::Value| {
            chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
                .map_or(f64::NAN, |t| t.timestamp_micros() as f64 / 1e6)
        };
        // From 15 s in (its first requests were admitted at once) to its last interval.
        let (from, to) = (kv_start + 15.0, kv_end - interval);
        let covered: f64 = v["episodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["condition"] == "TTFT_ELEVATED")
            .map(|e| (t(&e["end_time"]).min(to) - t(&e["start_time"]).max(from)).max(0.0))
            .sum();
        if covered < 0.9 * (to - from) {
            problems.push(format!(
                "{interval} s: TTFT_ELEVATED covers {covered:.0} s of kv_saturation's {:.0} s",
                to - from
            ));
        }
        // Its 22 preemptions came in one stretch: one PREEMPTION_BURST at every interval
        // (at 15 s the burst spans consecutive samples with no quiet seen between them;
        // at 10 s an interval of the stretch with fewer preemptions re-armed it, in one
        // test run in a few). Its KV usage saws between ~85 and 100 % as the engine
        // preempts every few seconds: one KV_SATURATION at every interval, though reads
        // 5-15 s apart land in the troughs several times in a row (were 3, 3, 2 at 5, 10,
        // 15 s).
        for name in ["PREEMPTION_BURST", "KV_SATURATION"] {
            let n = v["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["event"] == name)
                .count();
            if n != 1 {
                problems.push(format!("{interval} s: {n} {name} events"));
            }
        }
        // Its TTFT rose from 2.4 s to 78 s in one stretch while 192 requests waited: one
        // TTFT_SPIKE, and a second only over a baseline that caught up (78 s over a 20 s
        // median, seen at 5 s). The intervals without a first token between its
        // observations are no quiet (they made 3 at 0.5 s: 19.5, 39 and 78 s over the
        // same 2.4 s baseline).
        let spikes: Vec<&serde_json::Value> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "TTFT_SPIKE")
            .filter(|e| (kv_start..=kv_end).contains(&t(&e["ts"])))
            .collect();
        let baseline = |k: usize| spikes[k]["baseline"].as_f64().unwrap_or(f64::NAN);
        let caught_up = spikes.len() == 2 && baseline(1) >= 3.0 * baseline(0);
        if spikes.len() != 1 && !caught_up {
            let spikes: Vec<String> = spikes
                .iter()
                .map(|e| {
                    format!(
                        "{} s: {} over {}",
                        e["t_rel_sec"], e["value"], e["baseline"]
                    )
                })
                .collect();
            problems.push(format!(
                "{interval} s: TTFT_SPIKEs in kv_saturation: {spikes:?}"
            ));
        }
        // No step of the capture got slower for the same batch: no DECODE_THROUGHPUT_DROP
        // anywhere, at any interval. queue_pressure's 64 requests joined a batch of 2 at
        // once and each step of the 64 then delivered as before (at 10 s the interval of
        // the join, its generation averaged mostly over the 2, was divided by the 64 read
        // at its end). prefix_unique's 6-7 running requests each generated as much as
        // prefix_reuse's 16 had or more (64-127 against 52-66 tokens/s per request at
        // 5 s), but prefix_reuse's
        // 16 started and finished in lockstep, so 5 s snapshots read 0 or 16 running
        // while generation went on: the ratio of the two medians (587 tokens/s over 2
        // running) made 466 tokens/s from 7 look like a drop.
        for e in v["events"].as_array().unwrap() {
            if e["event"] == "DECODE_THROUGHPUT_DROP" {
                problems.push(format!("{interval} s: a decode drop: {e}"));
            }
        }
        // A spike is a multiple of its baseline: none without one (at 10 and 15 s the
        // first E2E p95 after idle fired against no baseline at all).
        for e in v["events"].as_array().unwrap() {
            if e["event"].as_str().is_some_and(|n| n.ends_with("_SPIKE"))
                && !e["baseline"].is_number()
            {
                problems.push(format!("{interval} s: a spike without a baseline: {e}"));
            }
        }
        // The whole session: the KV exhaustion first, and queue_pressure's queue (running
        // pinned at --max-num-seqs 64 with KV below 40 %) found apart from it, without
        // advice on --max-num-seqs that would contradict the exhaustion's (fewer).
        let o = crate::common::kvscope(["doctor", dir.to_str().unwrap(), "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let hyps = v["hypotheses"].as_array().cloned().unwrap_or_default();
        let queue = hyps.iter().find(|h| h["id"] == "QUEUE_SATURATION");
        let waited = queue.and_then(|q| {
            q["evidence"]
                .as_array()?
                .iter()
                .find(|e| e["metric"] == "requests_waiting (max)")?["observed"]
                .as_f64()
        });
        let seqs_advice = queue
            .and_then(|q| q["recommendations"].as_array())
            .is_some_and(|r| r.iter().any(|r| r["action"] == "--max-num-seqs"));
        // Its cause is the sequence limit at every interval (pinned for the 50 s of
        // queue_pressure, whatever queueing around it dilutes the share).
        let cause = queue
            .and_then(|q| q["summary"].as_str())
            .and_then(|s| s.split("cause: ").nth(1))
            .unwrap_or_default();
        // Its weight reads the same at every interval: a decode drop or prefill surges
        // elsewhere in the session (seen at some intervals only: prefix_unique's 1–2 s
        // bursts) weigh only for the queueing they came with (scores were 0.41–0.72).
        let score = queue.and_then(|q| q["score"].as_f64()).unwrap_or(0.0);
        if !(0.6..=0.8).contains(&score) {
            problems.push(format!("{interval} s: QUEUE_SATURATION score {score}"));
        }
        // The prefill surges of prefill_burst and prefix_unique queued for KV (below):
        // no PREFILL_STARVATION for the whole session either, at any interval.
        if hyps.iter().any(|h| h["id"] == "PREFILL_STARVATION") {
            problems.push(format!(
                "{interval} s, whole session: PREFILL_STARVATION found"
            ));
        }
        if hyps.first().map(|h| &h["id"]) != Some(&"KV_CACHE_THRASHING".into())
            || waited != Some(192.0)
            || seqs_advice
            || !cause.starts_with("sequence limit")
        {
            problems.push(format!(
            "{interval} s, whole session: {:?}, QUEUE_SATURATION waiting {waited:?}, cause {cause:?}, --max-num-seqs advice {seqs_advice}",
            hyps.iter().map(|h| h["id"].to_string()).collect::<Vec<_>>()
        ));
        }
    }
    for (interval, dir) in intervals.iter().zip(dirs) {
        // The capture came from vLLM 0.26.0 (manifest): its cache_config_info label set
        // must identify that release.
        let meta = store::read_metadata(dir).unwrap().unwrap();
        let version = meta.servers[0].vllm_version.as_deref();
        if version != Some("0.26") {
            problems.push(format!(
                "{interval} s: vllm_version {version:?}, expected 0.26"
            ));
        }
        let a = crate::common::analyze_with_series(dir);
        // A loaded test machine may take a late tick late (the recorder never bunches
        // ticks); the analysis is in seconds, so fewer samples are fine.
        let samples = a.series.len();
        assert!(
            samples as f64 >= 0.6 * 300.0 / interval,
            "{interval} s: only {samples} samples recorded"
        );
        // Client aborts: the driver cancels queue_pressure's 64 running and 192 waiting
        // requests when the scenario ends (capture README); vLLM 0.26 counts none of them
        // in request_success_total, yet they must show as a surge right after the end.
        let (_, _, qp_end) = scenarios()
            .into_iter()
            .find(|s| s.0 == "queue_pressure")
            .unwrap();
        let surge = a.events.iter().find(|e| {
            e.event.as_deref() == Some("CLIENT_ABORT_SURGE")
                && chrono::DateTime::parse_from_rfc3339(&e.ts).is_ok_and(|t| {
                    let t = t.timestamp_micros() as f64 / 1e6;
                    t >= qp_end && t <= qp_end + interval + 3.0
                })
        });
        // The event fires where the surge starts; the window maximum measures it. The
        // engines' books see the 64 running ones (they had first tokens) but the queued
        // ones only where nothing else moved in the interval; the API server's HTTP
        // counter (2xx answers of /v1/completions, finished or abandoned, against
        // request_success_total) sees every one at any interval. The client's own
        // records (requests.jsonl.gz of the capture) say 253 were cancelled there and
        // 334 in the whole capture.
        let most = a.summary.servers[0].abandoned_window_max.unwrap_or(0.0);
        let total = a.summary.servers[0].requests_abandoned;
        if surge.is_none() || !(250.0..=253.0).contains(&most) || total != Some(334.0) {
            problems.push(format!(
                "{interval} s: CLIENT_ABORT_SURGE after queue_pressure {surge:?}, at most {most} within 10 s, {total:?} in all (334 cancelled by the client)"
            ));
        }
        for (name, start, end) in scenarios() {
            // Expected phases per scenario (capture README); bursty ones are not scored.
            let expected: &[&str] = match name.as_str() {
                "idle" | "cooldown" => &["IDLE"],
                "healthy" | "prefix_reuse" => &["HEALTHY"],
                "queue_pressure" => &["QUEUE_PRESSURE"],
                "kv_saturation" => &["SATURATED", "QUEUE_PRESSURE", "KV_PRESSURE_RISING"],
                _ => &[],
            };
            // Within one interval of a boundary the reading may differ (the issue's
            // tolerance): at least SETTLE_S and one interval after a scenario starts,
            // and not in the last two intervals of the recording, whose phase run is
            // still open when the data ends.
            let settle = SETTLE_S.max(*interval);
            let last = a.series.iter().map(|p| p.ts).max().unwrap_or(0) as f64 / 1e6;
            let scored: Vec<_> = a
                .series
                .iter()
                .filter(|p| {
                    let t = p.ts as f64 / 1e6;
                    t >= start + settle && t <= end && t <= last - 2.0 * interval
                })
                .collect();
            if !expected.is_empty() && !scored.is_empty() {
                let right = scored
                    .iter()
                    .filter(|p| p.phase.is_some_and(|x| expected.contains(&x.as_str())))
                    .count();
                let share = right as f64 / scored.len() as f64;
                if share < 0.98 {
                    let seen: Vec<_> = scored.iter().map(|p| p.phase).collect();
                    problems.push(format!(
                        "{interval} s, {name}: {:.1}% of {} samples in {expected:?}: {seen:?}",
                        share * 100.0,
                        scored.len()
                    ));
                }
            }
            // Each sample stands for the interval before it: the window's first sample
            // must not reach back into the previous scenario (its cancellations).
            let from = start + SETTLE_S + interval;
            let r = diagnose_window(dir, from, end);
            let top = r
                .hypotheses
                .first()
                .map(|h| h.id.to_string())
                .unwrap_or_default();
            let loud = medium_or_high(&r);
            match name.as_str() {
                "kv_saturation" => {
                    if !matches!(
                        top.as_str(),
                        "KV_CACHE_THRASHING" | "KV_CAPACITY_UNDERSIZED"
                    ) {
                        problems.push(format!("{interval} s, {name}: top {top}, {loud:?}"));
                    }
                    // 1,024 blocks × 16 = 16,384 tokens; each request holds its 1,500
                    // prompt tokens plus up to 1,500 generated: 1,500–3,000 tokens, i.e.
                    // 94–188 blocks. 90 % of the cache (921 blocks) holds 921/188 = 4.9 to
                    // 921/94 = 9.8 of them: a --max-num-seqs that stops preemption is 4–9.
                    // vLLM V1 samples KV after a victim's blocks are freed, so a
                    // thrashing server often reads 88–92 %: with every sample clamped to
                    // 92 % the recurring preemption still names the exhaustion.
                    let clamped = diagnose_window_with(dir, from, end, |r| {
                        r.kv_cache_usage_pct = r.kv_cache_usage_pct.map(|k| k.min(92.0));
                    });
                    let ctop = clamped.hypotheses.first().map(|h| h.id.as_str());
                    if ctop != Some("KV_CACHE_THRASHING") {
                        problems.push(format!("{interval} s, {name} with KV ≤ 92 %: top {ctop:?}"));
                    }
                    match recommended(&r, "KV_CACHE_THRASHING", "--max-num-seqs") {
                        Some(v) if (4.0..=9.0).contains(&v) => {}
                        other => problems.push(format!(
                            "{interval} s, {name}: --max-num-seqs {other:?} outside 4–9"
                        )),
                    }
                }
                "queue_pressure" => {
                    if top != "QUEUE_SATURATION" {
                        problems.push(format!("{interval} s, {name}: top {top}, {loud:?}"));
                    }
                    // Running is pinned at --max-num-seqs 64 while KV stays < 40 %: each
                    // request holds ≤ 64 + 32 tokens = 6 blocks, so 90 % of 1,024 blocks
                    // holds 921 / 6 = 153 sequences; the advice raises the limit above 64
                    // and no further than 153 (and ≤ --max-num-batched-tokens 4096).
                    match recommended(&r, "QUEUE_SATURATION", "--max-num-seqs") {
                        Some(v) if v > 64.0 && v <= 153.0 => {}
                        other => problems.push(format!(
                            "{interval} s, {name}: --max-num-seqs {other:?} outside 65–153"
                        )),
                    }
                }
                "prefill_burst" | "prefix_unique" => {
                    // Prompts of 3,500 and 2,080 tokens, of which the 16,384-token cache
                    // holds 4 and 7: requests wait with KV at 77–90 %. vLLM admits a
                    // waiting request only when its KV blocks can be allocated, so they
                    // queue for memory; a per-prompt chunk cap or a larger step budget
                    // admits none more. No PREFILL_STARVATION at any interval (it was
                    // found at 0.5–2 s only, where the TTFT baseline caught no burst).
                    if r.hypotheses.iter().any(|h| h.id == "PREFILL_STARVATION") {
                        problems.push(format!("{interval} s, {name}: {loud:?}"));
                    }
                    // prefix_unique's queue is named for what bound it at every interval.
                    let cause = r
                        .hypotheses
                        .first()
                        .filter(|h| h.id == "QUEUE_SATURATION")
                        .and_then(|h| h.summary.split("cause: ").nth(1));
                    if name == "prefix_unique"
                        && !cause.is_some_and(|c| c.starts_with("KV capacity"))
                    {
                        problems.push(format!(
                            "{interval} s, {name}: {:?}, queue cause {cause:?}",
                            ids_and_severities(&r)
                        ));
                    }
                }
                "idle" | "healthy" | "prefix_reuse" | "cooldown" => {
                    if !loud.is_empty() {
                        problems.push(format!("{interval} s, {name}: {loud:?}"));
                    }
                    // 43 s of light load is healthy; the 13 s and 18 s windows are too
                    // short to say (min_observed_s 30 s). prefix_reuse's 28 s sits at the
                    // threshold and may read either way.
                    let want = match name.as_str() {
                        "healthy" => "healthy",
                        "idle" | "cooldown" => "indeterminate",
                        _ => r.status.as_str(),
                    };
                    if r.status != want {
                        problems.push(format!(
                            "{interval} s, {name}: status {} ({}), expected {want}",
                            r.status, r.verdict
                        ));
                    }
                }
                _ => {}
            }
            tops.push((format!("{name} @ {interval}s"), vec![top]));
        }
    }
    // The same top finding for each scenario at every interval.
    for (name, _, _) in scenarios() {
        let per: Vec<&String> = tops
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name} @")))
            .map(|(_, v)| &v[0])
            .collect();
        if per.windows(2).any(|w| w[0] != w[1])
            && matches!(name.as_str(), "kv_saturation" | "queue_pressure")
        {
            problems.push(format!("{name}: top finding differs by interval: {per:?}"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The capture's pages with `edit` applied, written as a raw-pages file in `dir`.
fn spliced(dir: &Path, edit: impl Fn(&mut Vec<RawPage>)) -> PathBuf {
    let mut pages = capture_pages();
    edit(&mut pages);
    let mut w = RawWriter::create(dir).unwrap();
    for p in &pages {
        w.append(p).unwrap();
    }
    dir.join(raw::RAW_PAGES)
}

/// The capture's 623 pages.
fn capture_pages() -> Vec<RawPage> {
    raw::read_pages(&capture_dir().join("metrics_scrapes.jsonl.gz")).unwrap()
}

/// The text of the first page taken at or after `t`.
fn text_at(pages: &[RawPage], t: f64) -> String {
    pages
        .iter()
        .find(|p| p.ts >= t)
        .and_then(|p| p.text.clone())
        .unwrap()
}

/// A session analysed and diagnosed in process (the offline every-phase tests).
fn analyse_and_diagnose(dir: &Path) -> (analysis::Analysis, Report) {
    let a = block_on(analysis::analyze_dir(dir, &Thresholds::default())).unwrap();
    let meta = store::read_metadata(dir).unwrap();
    let r = diagnosis::diagnose(&a.summary, &a.events, meta.as_ref());
    (a, r)
}

fn window_of(name: &str) -> (f64, f64) {
    scenarios()
        .into_iter()
        .find(|s| s.0 == name)
        .map(|s| (s.1, s.2))
        .unwrap()
}

#[test]
fn frozen_engine_in_a_real_capture_is_stuck_engine() {
    // vLLM V1 keeps answering /metrics when the engine core hangs, with every engine
    // series frozen: 30 s of kv_saturation (8 running) replaced by copies of its first
    // page, only the scrape time moving. (30 s, not 20: scraped every 5 s in real time
    // by a debug recorder beside the whole suite on 2 cores, a 20 s freeze was once seen
    // by two frozen intervals only — 10 s, short of `finding_min_s`.)
    let tmp = tempfile::tempdir().unwrap();
    let (start, _) = window_of("kv_saturation");
    let (from, to) = (start + 20.0, start + 50.0);
    let pages = spliced(tmp.path(), |pages| {
        let frozen = pages.iter().find(|p| p.ts >= from).unwrap().text.clone();
        for p in pages.iter_mut().filter(|p| p.ts >= from && p.ts < to) {
            p.text = frozen.clone();
        }
    });
    for (interval, dir) in [1.0, 5.0]
        .iter()
        .zip(replay_and_record(&pages, &[1.0, 5.0], tmp.path()))
    {
        let r = doctor(&dir);
        let ids = ids_and_severities(&r);
        assert_eq!(
            ids.first().copied(),
            Some(("STUCK_ENGINE", "high")),
            "{interval} s: {ids:?}"
        );
        assert!(
            !ids.iter().any(|x| x.0 == "DECODE_THROUGHPUT_COLLAPSE"),
            "{interval} s: {ids:?}"
        );
        let stuck = &r.hypotheses[0];
        // 30 s to within one interval (the scrapes around the freeze's start see part
        // of it) and the scheduling jitter of a loaded test machine (up to two more
        // intervals lost: see above).
        let frozen_s = stuck.evidence[0].observed.as_f64().unwrap();
        assert!(
            (30.0 - 3.0 * interval - 1.5..=35.0).contains(&frozen_s),
            "{interval} s: stalled {frozen_s} s"
        );
        let events = store::events::read_events(&dir.join(store::EVENTS_JSONL)).unwrap();
        let episode = events
            .iter()
            .find(|e| {
                e.condition.as_deref() == Some("ENGINE_STALLED") && e.kind == "condition_episode"
            })
            .expect("ENGINE_STALLED episode");
        assert!(episode.duration_sec.unwrap() >= 15.0, "{episode:?}");
    }
}

#[test]
fn outage_in_a_real_capture_is_no_data_then_restart() {
    // 30 s of refused scrapes inside queue_pressure, after which the server's process
    // start time is new (it was restarted).
    let tmp = tempfile::tempdir().unwrap();
    let (start, _) = window_of("queue_pressure");
    let (from, to) = (start + 10.0, start + 40.0);
    let pages = spliced(tmp.path(), |pages| {
        for p in pages.iter_mut() {
            if p.ts >= from && p.ts < to {
                p.status = None;
                p.text = None;
                p.error = Some("connection refused".into());
            } else if p.ts >= to {
                let t = p.text.take().unwrap_or_default();
                p.text = Some(t.replace(
                    "process_start_time_seconds 1.7954391699e+09",
                    "process_start_time_seconds 1.7954393700e+09",
                ));
            }
        }
    });
    let dir = replay_and_record(&pages, &[1.0], tmp.path()).remove(0);
    let o = kvscope(["timeline", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    let line = text
        .lines()
        .find(|l| l.contains("→ NO_DATA"))
        .unwrap_or_else(|| panic!("no NO_DATA segment:\n{text}"));
    assert!(
        line.contains("connection refused") || line.contains("HTTP status 503"),
        "{line}"
    );
    assert!(text.lines().any(|l| l.contains("NO_DATA →")), "{text}");
    // `timeline` reads; it writes nothing into the session.
    assert!(!dir.join(store::SUMMARY_JSON).exists());
    assert!(!dir.join(store::EVENTS_JSONL).exists());
    let o = kvscope(["analyze", dir.to_str().unwrap()]);
    assert!(o.status.success());
    let summary: kvscope::analysis::Summary =
        serde_json::from_slice(&std::fs::read(dir.join(store::SUMMARY_JSON)).unwrap()).unwrap();
    let s = &summary.servers[0];
    assert!(
        (25.0..=35.0).contains(&s.no_data_s),
        "no_data_s {}",
        s.no_data_s
    );
    assert!(!s.phases.contains_key(&Phase::NoData));
    let o = kvscope(["doctor", dir.to_str().unwrap(), "--json"]);
    let r: Report = serde_json::from_slice(&o.stdout).unwrap();
    let restart = finding(&r, "SERVER_RESTART");
    // It went down 10 s into queue_pressure, with 64 running and the queue growing:
    // those requests were lost, and the restart is high.
    assert_eq!(restart.severity, "high", "{}", restart.summary);
    assert!(
        restart.summary.contains("they were lost"),
        "{}",
        restart.summary
    );
    let running = restart.evidence[2].observed.as_f64().unwrap();
    let waiting = restart.evidence[3].observed.as_f64().unwrap();
    assert!(
        running >= 32.0 && waiting >= 1.0,
        "{running} running, {waiting} waiting"
    );
}

#[test]
fn record_raw_keeps_every_page_and_replays() {
    // Record the replay with --raw: the session's raw pages are the capture's pages.
    let tmp = tempfile::tempdir().unwrap();
    let pages = spliced(tmp.path(), |pages| pages.truncate(60));
    let (mut replay, url) = spawn_replay(&pages);
    let out = tmp.path().join("raw-session");
    let o = Command::new(bin())
        .args([
            "record",
            "--server",
            &url,
            "--raw",
            "--interval",
            "100ms",
            "--duration",
            "2500ms",
        ])
        .arg("--out")
        .arg(&out)
        .bounded_output()
        .unwrap();
    let _ = replay.kill();
    let _ = replay.wait();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kept = raw::read_pages(&out.join(raw::RAW_PAGES)).unwrap();
    let source = raw::read_pages(&pages).unwrap();
    assert!(kept.len() >= 10, "{} pages kept", kept.len());
    for k in kept.iter().filter(|k| k.ok()) {
        let s = source
            .iter()
            .find(|s| (s.ts - k.ts).abs() < 1e-3)
            .unwrap_or_else(|| panic!("page at {} not in the capture", k.ts));
        assert_eq!(s.text, k.text);
    }
    // The session itself replays.
    let (mut again, url) = spawn_replay(&out);
    let body = block_on(async {
        reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let _ = again.kill();
    let _ = again.wait();
    assert!(body.contains("vllm:num_requests_running"), "{body}");
}

/// A data-parallel page as vLLM's API server writes it: `page`'s engine series as engine
/// 0 and the same series of `other` as engine 1, each family's series together (as
/// prometheus_client groups them). Both engines' `cache_config_info` lines carry the sum
/// of their blocks (`num_gpu_blocks` is summed over engines, flag reference §3).
fn two_engines(page: &str, other: &str) -> String {
    fn key_value(line: &str) -> Option<(&str, &str)> {
        line.rsplit_once(' ')
    }
    let values: std::collections::HashMap<&str, &str> = other
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(key_value)
        .collect();
    let summed_blocks = |line: &str| -> String {
        let Some((head, rest)) = line.split_once("num_gpu_blocks=\"") else {
            return line.to_string();
        };
        let (n, tail) = rest.split_once('"').unwrap();
        let n: u64 = n.parse().unwrap();
        format!("{head}num_gpu_blocks=\"{}\"{tail}", 2 * n)
    };
    let mut out = String::new();
    for line in page.lines() {
        out.push_str(&summed_blocks(line));
        out.push('\n');
        if line.starts_with('#') || !line.contains("engine=\"0\"") {
            continue;
        }
        let Some((key, _)) = key_value(line) else {
            continue;
        };
        if let Some(v) = values.get(key) {
            let other = format!("{} {v}", key.replace("engine=\"0\"", "engine=\"1\""));
            out.push_str(&summed_blocks(&other));
            out.push('\n');
        }
    }
    out
}

/// A data-parallel server built from the real capture's pages: each engine is judged
/// before summing. One engine saturated while the other sits idle (a router that
/// keeps sending to one engine) averages to half the KV cache; one engine hung while
/// the other works still moves every sum. vLLM's flags are per engine, so the advice is
/// the single engine's.
#[test]
fn data_parallel_real_pages_judge_each_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let (kv_start, kv_end) = window_of("kv_saturation");
    let (idle_start, _) = window_of("idle");
    let window = |pages: &mut Vec<RawPage>| {
        pages.retain(|p| p.ts >= kv_start - 20.0 && p.ts <= kv_end + 5.0);
    };
    // Engine 1 idle throughout: the capture's page 10 s into its idle scenario.
    let saturated_dir = tmp.path().join("saturated");
    std::fs::create_dir(&saturated_dir).unwrap();
    let saturated = spliced(&saturated_dir, |pages| {
        let idle = pages
            .iter()
            .find(|p| p.ts >= idle_start + 10.0)
            .and_then(|p| p.text.clone())
            .unwrap();
        window(pages);
        for p in pages.iter_mut() {
            p.text = p.text.as_deref().map(|t| two_engines(t, &idle));
        }
    });
    // Both engines under kv_saturation's load; engine 1's series frozen for 20 s.
    let frozen_dir = tmp.path().join("frozen");
    std::fs::create_dir(&frozen_dir).unwrap();
    let (from, to) = (kv_start + 20.0, kv_start + 40.0);
    let frozen = spliced(&frozen_dir, |pages| {
        window(pages);
        let at_freeze = pages
            .iter()
            .find(|p| p.ts >= from)
            .and_then(|p| p.text.clone())
            .unwrap();
        for p in pages.iter_mut() {
            let other = if p.ts >= from && p.ts < to {
                at_freeze.clone()
            } else {
                p.text.clone().unwrap_or_default()
            };
            p.text = p.text.as_deref().map(|t| two_engines(t, &other));
        }
    });
    // What engine 1 shows as it freezes: kv_saturation's running requests on its pages
    // around the freeze (a scrape that lands twice on one replayed page sees an interval
    // without progress too, so the stall may start a scrape early).
    let engine1_running: Vec<f64> = raw::read_pages(&frozen)
        .unwrap()
        .iter()
        .filter(|p| p.ts >= from - 2.0 && p.ts <= from + 1.0)
        .filter_map(|p| p.text.as_deref())
        .filter_map(|t| {
            t.lines()
                .find(|l| l.starts_with("vllm:num_requests_running{") && l.contains("engine=\"1\""))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    let lo = engine1_running
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let hi = engine1_running.iter().copied().fold(0.0, f64::max);
    assert!(lo >= 4.0 && hi <= 16.0, "{engine1_running:?}");
    let mut problems = Vec::new();
    for (interval, dir) in
        [1.0, 5.0]
            .iter()
            .zip(replay_and_record(&saturated, &[1.0, 5.0], &saturated_dir))
    {
        let rows = store::read_samples_jsonl(&dir.join(store::SAMPLES_JSONL)).unwrap();
        let engines: std::collections::BTreeSet<_> =
            rows.iter().map(|r| r.engine.clone()).collect();
        assert_eq!(engines.into_iter().collect::<Vec<_>>(), ["0", "1"]);
        let r = diagnose_window(&dir, kv_start + SETTLE_S + interval, kv_end);
        if let Some(wrong) = top_other_than(&r, "KV_CACHE_THRASHING") {
            problems.push(format!("{interval} s saturated: {wrong}"));
            continue;
        }
        // The single engine's advice (4–9, see the single-engine test), on one engine's
        // 1,024 blocks × 16 tokens though cache_config_info shows 2,048 blocks.
        match recommended(&r, "KV_CACHE_THRASHING", "--max-num-seqs") {
            Some(v) if (4.0..=9.0).contains(&v) => {}
            other => problems.push(format!(
                "{interval} s saturated: --max-num-seqs {other:?} outside 4–9"
            )),
        }
        let reasons: Vec<&str> = r.hypotheses[0]
            .recommendations
            .iter()
            .map(|x| x.reason.as_str())
            .collect();
        if !reasons
            .iter()
            .any(|x| x.contains("one engine's 16384-token KV cache"))
        {
            problems.push(format!("{interval} s saturated: {reasons:?}"));
        }
    }
    for (interval, dir) in
        [1.0, 5.0]
            .iter()
            .zip(replay_and_record(&frozen, &[1.0, 5.0], &frozen_dir))
    {
        let r = doctor(&dir);
        let ids = ids_and_severities(&r);
        if ids.first().copied() != Some(("STUCK_ENGINE", "high")) {
            problems.push(format!("{interval} s frozen engine 1: {ids:?}"));
            continue;
        }
        let evidence = |what: &str| {
            r.hypotheses[0]
                .evidence
                .iter()
                .find(|e| e.metric == what)
                .and_then(|e| e.observed.as_f64())
        };
        let frozen_s = r.hypotheses[0].evidence[0].observed.as_f64().unwrap();
        // 20 s to within one interval plus a loaded machine's jitter (as for one engine;
        // the offline every-phase test pins it exactly).
        if !(20.0 - interval - 1.5..=25.0).contains(&frozen_s) {
            problems.push(format!(
                "{interval} s frozen engine 1: stalled {frozen_s} s"
            ));
        }
        // The frozen engine's own gauges, not the sum with the engine still working
        // (engine 0 ran about as many: the sum is about twice).
        let running = evidence("requests_running frozen at");
        if !running.is_some_and(|r| (lo..=hi).contains(&r)) {
            problems.push(format!(
                "{interval} s frozen engine 1: running frozen at {running:?}, engine 1 had {engine1_running:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// A data-parallel server whose engines are unevenly loaded (an external router sending
/// most requests to one): engine 0 runs queue_pressure, pinned at its `--max-num-seqs`
/// 64, while engine 1 serves the capture's light healthy load (0–2 running). The
/// sequence limit binds on engine 0; the advice is engine 0's, as for one engine.
#[test]
fn data_parallel_real_pages_queue_is_judged_on_the_pinned_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let (qp_start, qp_end) = window_of("queue_pressure");
    let (healthy_start, healthy_end) = window_of("healthy");
    // Engine 1 at t shows the healthy page at t - shift; the recording ends before
    // engine 1 would reach the end of the healthy scenario.
    let shift = qp_start - healthy_start;
    let end = (healthy_end + shift - 2.0).min(qp_end);
    let pages = spliced(tmp.path(), |pages| {
        let light: Vec<(f64, String)> = pages
            .iter()
            .filter_map(|p| Some((p.ts, p.text.clone()?)))
            .collect();
        pages.retain(|p| p.ts >= qp_start - 5.0 && p.ts <= end);
        for p in pages.iter_mut() {
            let other = light
                .iter()
                .rev()
                .find(|(ts, _)| *ts <= p.ts - shift)
                .map(|(_, t)| t.clone())
                .unwrap();
            p.text = p.text.as_deref().map(|t| two_engines(t, &other));
        }
    });
    let mut problems = Vec::new();
    for (interval, dir) in [1.0, 5.0]
        .iter()
        .zip(replay_and_record(&pages, &[1.0, 5.0], tmp.path()))
    {
        let r = diagnose_window(&dir, qp_start + SETTLE_S + interval, end);
        if let Some(wrong) = top_other_than(&r, "QUEUE_SATURATION") {
            problems.push(format!("{interval} s: {wrong}"));
            continue;
        }
        // As for the single engine: above 64, at most 153 (see the single-engine test),
        // said of engine 0's 64 running (the sum, 64–66, over 2 engines is 32–33).
        let reason = r.hypotheses[0]
            .recommendations
            .iter()
            .find(|x| x.action == "--max-num-seqs")
            .map(|x| x.reason.clone())
            .unwrap_or_default();
        if !reason.contains("running stayed at 64 per engine") {
            problems.push(format!("{interval} s: {reason}"));
        }
        match recommended(&r, "QUEUE_SATURATION", "--max-num-seqs") {
            Some(v) if v > 64.0 && v <= 153.0 => {}
            other => problems.push(format!(
                "{interval} s: --max-num-seqs {other:?} outside 65–153: {:?}",
                r.hypotheses[0]
                    .recommendations
                    .iter()
                    .map(|x| &x.reason)
                    .collect::<Vec<_>>()
            )),
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The capture's pages taken every `step`-th from `offset` (a `step` × 0.5 s scrape
/// interval, started `offset` pages in), recorded through the recorder's pipeline into
/// `dir`: what `kvscope record` at that interval would have written, without a replay's
/// timing (every phase of the interval against the load, deterministically).
fn record_every(pages: &[RawPage], step: usize, offset: usize, dir: &Path) -> PathBuf {
    record_every_as(pages, step, offset, dir, None)
}

/// [`record_every`] with the server's vLLM release stated (`record --vllm-version`).
fn record_every_as(
    pages: &[RawPage],
    step: usize,
    offset: usize,
    dir: &Path,
    version: Option<&str>,
) -> PathBuf {
    let taken: Vec<&RawPage> = pages.iter().skip(offset).step_by(step).collect();
    record_pages(&taken, step as f64 * 0.5, dir, version)
}

/// `pages` through the recorder's pipeline, as a recorder set to `interval_s` took them.
fn record_pages(pages: &[&RawPage], interval_s: f64, dir: &Path, version: Option<&str>) -> PathBuf {
    use kvscope::record::{Pipeline, rfc3339};
    use kvscope::store::{Metadata, RecorderSettings, SessionWriter, SourceInfo};
    let first = (pages[0].ts * 1e6) as i64;
    let meta = Metadata::new(
        "capture",
        &rfc3339(first),
        SourceInfo {
            kind: "scrape".into(),
            ..Default::default()
        },
        RecorderSettings {
            interval_s,
            timeout_s: 5.0,
            duration_s: None,
        },
    );
    let mut pipe = Pipeline::new(SessionWriter::create(dir, meta).unwrap());
    if let Some(v) = version {
        pipe.state_vllm_version(kvscope::adapter::version::VllmVersion::parse(v).unwrap());
    }
    let mut last = first;
    for p in pages {
        let ts = (p.ts * 1e6) as i64;
        match (&p.text, p.ok()) {
            (Some(text), true) => {
                pipe.ingest_text("capture", ts, Some(5.0), text).unwrap();
            }
            _ => {
                let reason = p.error.as_deref().unwrap_or("scrape failed");
                pipe.ingest_failure("capture", ts, None, reason).unwrap();
            }
        }
        last = ts;
    }
    pipe.finish(last).unwrap()
}

/// Every phase of a 2, 5, 10 and 15 s scrape against the load (each offset of the
/// 0.5 s pages), recorded through the recorder's pipeline, analysed and diagnosed:
/// the same findings each time. A replay's timing picks one phase per run; these are
/// all of them, deterministically.
#[test]
fn real_capture_reads_the_same_at_every_interval_and_phase() {
    let pages = capture_pages();
    let tmp = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    let mut runs = 0;
    let _heavy = RECORDING.write().unwrap_or_else(|e| e.into_inner());
    let (_, _, qp_end) = scenarios()
        .into_iter()
        .find(|s| s.0 == "queue_pressure")
        .unwrap();
    for step in [4usize, 10, 20, 30] {
        for offset in 0..step {
            let at = format!("{} s +{offset}", step as f64 * 0.5);
            let dir = record_every(&pages, step, offset, &tmp.path().join(&at));
            let t0 = pages[offset].ts;
            // In process: one analysis, no binary started twice per run.
            let (a, r) = analyse_and_diagnose(&dir);
            runs += 1;
            let found = ids_and_severities(&r);
            // kv_saturation's thrashing first; queue_pressure's queue at --max-num-seqs
            // 64 found beside it.
            let queue = r.hypotheses.iter().find(|h| h.id == "QUEUE_SATURATION");
            let cause = queue.and_then(|h| h.summary.split("cause: ").nth(1));
            if found.first() != Some(&("KV_CACHE_THRASHING", "high"))
                || !cause.is_some_and(|c| c.starts_with("sequence limit"))
            {
                problems.push(format!("{at}: {found:?}, queue cause {cause:?}"));
            }
            // The thrashing advice sized on the exhaustion window (4-9, as in the other
            // test's kv_saturation window).
            match recommended(&r, "KV_CACHE_THRASHING", "--max-num-seqs") {
                Some(v) if (4.0..=9.0).contains(&v) => {}
                other => problems.push(format!("{at}: --max-num-seqs {other:?} outside 4-9")),
            }
            // prefill_burst's and prefix_unique's long prompts queued for KV (the cache
            // holds 4 and 7 of them). Before it was judged on the samples with requests
            // running, a 10-15 s sample read after prefix_unique's requests had left (KV
            // 0, the condition still held) pulled the surge's KV average to 55-60 %.
            if found.iter().any(|(id, _)| *id == "PREFILL_STARVATION") {
                problems.push(format!("{at}: PREFILL_STARVATION in {found:?}"));
            }
            // No step got slower for the same batch anywhere (the other runs' test
            // says why a 5 s run saw one in prefix_unique). At 15 s, prefill_burst's
            // 1-2 s bursts every 8 s left the engine idle between them: generation
            // averaged over the idle time, running read mid-burst at both ends (45
            // tokens/s from 4 running against a baseline of 35 each), while the time
            // between tokens stayed at 24 ms.
            // queue_pressure's 64 running and 192 waiting requests cancelled at its end:
            // an abort surge right after it (as in the other test).
            let interval = step as f64 * 0.5;
            let surge = a.events.iter().any(|e| {
                e.event.as_deref() == Some("CLIENT_ABORT_SURGE")
                    && (qp_end..=qp_end + interval + 3.0).contains(&(t0 + e.t_rel_sec))
            });
            // Every cancelled request is counted, at every interval and phase (the other
            // test says how).
            let most = a.summary.servers[0].abandoned_window_max.unwrap_or(0.0);
            let total = a.summary.servers[0].requests_abandoned;
            if !surge || !(250.0..=253.0).contains(&most) || total != Some(334.0) {
                problems.push(format!(
                    "{at}: abort surge after queue_pressure {surge}, at most {most}, {total:?} in all"
                ));
            }
            for e in &a.events {
                if e.event.as_deref() == Some("DECODE_THROUGHPUT_DROP") {
                    problems.push(format!("{at}: a decode drop: {e:?}"));
                }
            }
        }
    }
    assert_eq!(runs, 64);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// A data-parallel server whose engine 1 leaked a quarter of its KV cache while engine 0
/// serves the capture's healthy load: the server is never idle as a whole, so a leak
/// judged on the sum (or on the whole server being idle) is never seen. vLLM counts only
/// live requests' blocks, each engine on its own gauge: engine 1, idle, must read ~0 %.
#[test]
fn data_parallel_real_pages_find_a_leak_on_one_engine() {
    let pages = capture_pages();
    let (healthy_start, healthy_end) = window_of("healthy");
    let (idle_start, _) = window_of("idle");
    let idle = text_at(&pages, idle_start + 10.0);
    let with_kv = |kv: &str| -> String {
        idle.lines()
            .map(|l| match l.starts_with("vllm:kv_cache_usage_perc{") {
                true => format!("{} {kv}", l.rsplit_once(' ').unwrap().0),
                false => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    for (kv, leak) in [("0.25", true), ("0.0", false)] {
        let other = with_kv(kv);
        let served: Vec<RawPage> = pages
            .iter()
            .filter(|p| p.ts >= healthy_start + SETTLE_S && p.ts <= healthy_end)
            .map(|p| RawPage {
                text: p.text.as_deref().map(|t| two_engines(t, &other)),
                ..p.clone()
            })
            .collect();
        for step in [2usize, 10] {
            let at = format!("engine 1 at KV {kv}, {} s", step as f64 * 0.5);
            let dir = record_every(&served, step, 0, &tmp.path().join(&at));
            let r = doctor(&dir);
            let found = r.hypotheses.iter().find(|h| h.id == "KV_LEAK");
            let median = found.and_then(|h| h.evidence[0].observed.as_f64());
            match (leak, median) {
                (true, Some(m)) if (24.5..=25.5).contains(&m) => {}
                (false, None) => {}
                _ => problems.push(format!(
                    "{at}: {:?}, idle KV {median:?}",
                    ids_and_severities(&r)
                )),
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The two-engine server of `data_parallel_real_pages_judge_each_engine` at every phase
/// of a 2, 5, 10 and 15 s scrape (recorded offline, as in
/// `real_capture_reads_the_same_at_every_interval_and_phase`): engine 0 saturated beside
/// an idle engine 1 is KV_CACHE_THRASHING with the single engine's 4-9 sequences at every
/// one; engine 1 frozen for 20 s beside a working engine 0 is STUCK_ENGINE high and first
/// with engine 1's own 7 running, at 2, 5 and 10 s (at 15 s a 20 s freeze can show as
/// one frozen interval, under `stall_min_s`). A freeze is proven from the first frozen
/// page to the last: 20 s less up to one interval.
#[test]
fn data_parallel_real_pages_read_the_same_at_every_interval_and_phase() {
    let pages = capture_pages();
    let (kv_start, kv_end) = window_of("kv_saturation");
    let (idle_start, _) = window_of("idle");
    let (from, to) = (kv_start + 20.0, kv_start + 40.0);
    let (idle, at_freeze) = (text_at(&pages, idle_start + 10.0), text_at(&pages, from));
    let served = |other: &dyn Fn(&RawPage) -> String| -> Vec<RawPage> {
        pages
            .iter()
            .filter(|p| p.ts >= kv_start - 20.0 && p.ts <= kv_end + 5.0)
            .map(|p| RawPage {
                text: p.text.as_deref().map(|t| two_engines(t, &other(p))),
                ..p.clone()
            })
            .collect()
    };
    let saturated = served(&|_| idle.clone());
    let frozen = served(&|p| match p.ts >= from && p.ts < to {
        true => at_freeze.clone(),
        false => p.text.clone().unwrap_or_default(),
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    let _heavy = RECORDING.write().unwrap_or_else(|e| e.into_inner());
    for step in [4usize, 10, 20, 30] {
        let interval = step as f64 * 0.5;
        for offset in 0..step {
            let at = format!("{interval} s +{offset}");
            let dir = record_every(&saturated, step, offset, &tmp.path().join(&at));
            let r = diagnose_window(&dir, kv_start + SETTLE_S + interval, kv_end);
            let seqs = recommended(&r, "KV_CACHE_THRASHING", "--max-num-seqs");
            if top_other_than(&r, "KV_CACHE_THRASHING").is_some()
                || !seqs.is_some_and(|v| (4.0..=9.0).contains(&v))
            {
                problems.push(format!(
                    "{at} saturated: {:?}, --max-num-seqs {seqs:?}",
                    ids_and_severities(&r)
                ));
            }
            if step == 30 {
                continue;
            }
            let dir = record_every(&frozen, step, offset, &tmp.path().join(format!("{at} f")));
            let (_, r) = analyse_and_diagnose(&dir);
            let ids = ids_and_severities(&r);
            let evidence = |what: &str| {
                r.hypotheses[0]
                    .evidence
                    .iter()
                    .find(|e| e.metric == what)
                    .and_then(|e| e.observed.as_f64())
            };
            let stalled = r.hypotheses[0].evidence[0].observed.as_f64();
            let running = evidence("requests_running frozen at");
            if ids.first() != Some(&("STUCK_ENGINE", "high"))
                || !stalled.is_some_and(|s| (20.0 - interval - 0.5..=20.0 + interval).contains(&s))
                || running != Some(7.0)
            {
                problems.push(format!(
                    "{at} frozen: {ids:?}, stalled {stalled:?} s, running frozen at {running:?}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The capture's pages from `from` to `cut` (Unix s), then `down_s` of scrapes failing
/// with `reason` every 0.5 s: a server that went away and had not come back when the
/// recording ended.
fn went_down(from: f64, cut: f64, down_s: f64, reason: &str) -> Vec<RawPage> {
    let mut pages: Vec<RawPage> = capture_pages()
        .into_iter()
        .filter(|p| p.ts >= from && p.ts < cut)
        .collect();
    let n = (down_s / 0.5) as usize;
    pages.extend((0..n).map(|k| RawPage {
        ts: cut + 0.5 * k as f64,
        error: Some(reason.to_string()),
        ..Default::default()
    }));
    pages
}

/// From 20 s before kv_saturation to 30 s into it (8 running, 24 waiting, KV near full),
/// then 30 s of refused connections: `(from, cut, kv_saturation's end, pages)`.
fn refused_mid_kv_saturation() -> (f64, f64, f64, Vec<RawPage>) {
    let (start, end) = window_of("kv_saturation");
    let (from, cut) = (start - 20.0, start + 30.0);
    (from, cut, end, went_down(from, cut, 30.0, &refused()))
}

/// What the recorder says of a scrape whose connection was refused.
fn refused() -> String {
    kvscope::source::scrape::ScrapeError::Connect("tcp connect error: Connection refused".into())
        .to_string()
}

/// A dying engine fails its requests in flight: their streams end (the API server's
/// HTTP counter counts 32 more answers on its last page) and they never finish. They
/// left without finishing — a CLIENT_ABORT_SURGE in the data — but the doctor puts them
/// on the server going away, not on clients: SERVER_DOWN first, CLIENT_ABORTS ruled out.
/// The same last page without the outage after it is a client surge.
#[test]
fn requests_failed_by_a_dying_server_are_not_client_aborts() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, cut, _, mut pages) = refused_mid_kv_saturation();
    // After queue_pressure's cancellations (a genuine client surge at kv_saturation's
    // start).
    let (start, _) = window_of("kv_saturation");
    pages.retain(|p| p.ts >= start + 5.0);
    let last = pages.iter().rposition(|p| p.ts < cut && p.ok()).unwrap();
    let key = "http_requests_total{handler=\"/v1/completions\",method=\"POST\",status=\"2xx\"} ";
    let text = pages[last].text.clone().unwrap();
    let at = text.find(key).unwrap() + key.len();
    let end = at + text[at..].find('\n').unwrap();
    let answered: f64 = text[at..end].parse().unwrap();
    pages[last].text = Some(format!(
        "{}{:.1}{}",
        &text[..at],
        answered + 32.0,
        &text[end..]
    ));
    for (name, pages) in [("down", &pages[..]), ("up", &pages[..=last])] {
        let refs: Vec<&RawPage> = pages.iter().collect();
        let dir = record_pages(&refs, 0.5, &tmp.path().join(name), None);
        let (a, r) = analyse_and_diagnose(&dir);
        let surge = a
            .events
            .iter()
            .filter(|e| e.event.as_deref() == Some("CLIENT_ABORT_SURGE"))
            .filter_map(|e| e.value)
            .reduce(f64::max);
        assert!(surge >= Some(32.0), "{name}: surge {surge:?}");
        let found = ids_and_severities(&r);
        let aborts = r
            .ruled_out
            .iter()
            .find(|x| x.id.as_str() == "CLIENT_ABORTS");
        if name == "down" {
            assert_eq!(found.first(), Some(&("SERVER_DOWN", "high")), "{found:?}");
            assert!(
                !found.iter().any(|(id, _)| *id == "CLIENT_ABORTS"),
                "{found:?}"
            );
            assert!(
                aborts.is_some_and(|x| x.reason.contains("lost with it")),
                "{aborts:?}"
            );
        } else {
            assert!(
                found.iter().any(|(id, _)| *id == "CLIENT_ABORTS"),
                "{found:?}"
            );
        }
    }
}

/// A vLLM server gone in the middle of kv_saturation (8 running, 24 waiting, KV near
/// full), its port refusing connections for the last 30 s: SERVER_DOWN, high and first,
/// with the work it held, at 1, 5 and 15 s from every offset. Timed-out scrapes read as
/// a server that took connections and did not answer; a server gone while idle is
/// medium; the same pages without the failures have no SERVER_DOWN.
#[test]
fn server_gone_at_the_end_is_server_down_at_every_interval_and_phase() {
    use kvscope::source::scrape::ScrapeError;
    let tmp = tempfile::tempdir().unwrap();
    let (from, cut, _, pages) = refused_mid_kv_saturation();
    let mut problems = Vec::new();
    let _heavy = RECORDING.write().unwrap_or_else(|e| e.into_inner());
    for step in [2usize, 10, 30] {
        let interval = step as f64 * 0.5;
        for offset in 0..step {
            let at = format!("{interval} s +{offset}");
            let dir = record_every(&pages, step, offset, &tmp.path().join(&at));
            let (_, r) = analyse_and_diagnose(&dir);
            let found = ids_and_severities(&r);
            let Some(down) = r.hypotheses.first().filter(|h| h.id == "SERVER_DOWN") else {
                problems.push(format!("{at}: {found:?}"));
                continue;
            };
            let seconds = down.evidence[0].observed.as_f64().unwrap();
            let running = down.evidence[1].observed.as_f64().unwrap();
            if down.severity != "high"
                || !(30.0 - interval - 0.5..=30.0 + interval + 0.5).contains(&seconds)
                || running < 1.0
                || !down.summary.contains("refused connections")
                || !down.summary.contains("they were lost")
            {
                problems.push(format!(
                    "{at}: {:?} {seconds} s, {running} running: {}",
                    down.severity, down.summary
                ));
            }
            // The trailing failures are SERVER_DOWN's evidence, not thin telemetry.
            if found
                .iter()
                .any(|(id, sev)| *id == "TELEMETRY_GAPS" && matches!(*sev, "medium" | "high"))
            {
                problems.push(format!("{at}: telemetry gaps loud: {found:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));

    // Scrapes timing out: the process is there but does not answer.
    let timeout = ScrapeError::Timeout(Duration::from_secs(2)).to_string();
    let dir = record_every(
        &went_down(from, cut, 30.0, &timeout),
        10,
        0,
        &tmp.path().join("timeout"),
    );
    let (_, r) = analyse_and_diagnose(&dir);
    let down = &r.hypotheses[0];
    assert_eq!(down.id, "SERVER_DOWN");
    assert!(down.summary.contains("timed out"), "{}", down.summary);
    assert!(
        down.recommendations[0].action.contains("py-spy"),
        "{:?}",
        down.recommendations
    );

    // Only the last scrape of a 15 s recording failed: refused, nothing listens (down);
    // timed out, one slow answer (not down).
    let last_fails = |reason: &str, name: &str| {
        // Every 15 s (every 30th page), then one failure 15 s after the last.
        let mut one: Vec<RawPage> = went_down(from, cut, 0.0, "")
            .into_iter()
            .step_by(30)
            .collect();
        let last = one.last().unwrap().ts;
        one.push(RawPage {
            ts: last + 15.0,
            error: Some(reason.to_string()),
            ..Default::default()
        });
        let dir = record_every(&one, 1, 0, &tmp.path().join(name));
        analyse_and_diagnose(&dir).1
    };
    let r = last_fails(&refused(), "one-refused");
    assert_eq!(
        r.hypotheses[0].id,
        "SERVER_DOWN",
        "{:?}",
        ids_and_severities(&r)
    );
    let r = last_fails(&timeout, "one-timeout");
    assert!(
        r.hypotheses.iter().all(|h| h.id != "SERVER_DOWN"),
        "{:?}",
        ids_and_severities(&r)
    );
    let ruled_out = r.ruled_out.iter().find(|h| h.id == "SERVER_DOWN").unwrap();
    assert!(
        ruled_out.reason.contains("one slow answer"),
        "{}",
        ruled_out.reason
    );

    // Gone after the load drained (the capture's idle cooldown at its end): medium, as
    // a planned shutdown may be.
    let (_, end) = window_of("cooldown");
    let dir = record_every(
        &went_down(from, end, 30.0, &refused()),
        10,
        0,
        &tmp.path().join("idle"),
    );
    let (a, r) = analyse_and_diagnose(&dir);
    let down = r.hypotheses.iter().find(|h| h.id == "SERVER_DOWN").unwrap();
    assert_eq!(down.severity.as_str(), "medium", "{}", down.summary);
    assert!(
        down.summary.contains("idle at its last answer"),
        "{}",
        down.summary
    );
    assert_eq!(down.evidence[1].observed.as_f64(), Some(0.0), "{down:?}");
    // Down from the cooldown's last page to the recording's end.
    assert!(a.summary.servers[0].down_at_end.as_ref().unwrap().seconds >= 25.0);

    // The same pages, the recording ending with the server still answering.
    let dir = record_every(
        &went_down(from, cut, 0.0, ""),
        10,
        0,
        &tmp.path().join("up"),
    );
    let (a, r) = analyse_and_diagnose(&dir);
    assert!(a.summary.servers[0].down_at_end.is_none());
    let ruled_out = r
        .ruled_out
        .iter()
        .find(|h| h.id == "SERVER_DOWN")
        .expect("SERVER_DOWN considered");
    assert!(
        ruled_out.reason.contains("answered"),
        "{}",
        ruled_out.reason
    );
}

/// The real binary recording a replay that is killed mid-load: the recorder's own
/// refused connections, and `doctor` says the server went down with work in flight.
#[test]
fn replay_killed_mid_load_is_server_down() {
    // Alone: the ×10 replays' 50 ms scrapes are the ones a busy machine makes late.
    let _recording = RECORDING.write().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let (start, _) = window_of("kv_saturation");
    let pages = spliced(tmp.path(), |pages| {
        pages.retain(|p| p.ts >= start + 10.0 && p.ts < start + 40.0)
    });
    // In real time (the failures' timestamps run at wall speed): 11 s up, then 14 s of
    // refused connections.
    let port = free_port();
    let mut replay = Command::new(bin())
        .arg("replay")
        .arg(&pages)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..1000 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = tmp.path().join("rec");
    let record = Command::new(bin())
        .args(["record", "--server", &format!("http://127.0.0.1:{port}")])
        .args(["--interval", "1s", "--duration", "25s", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(11));
    replay.kill().unwrap();
    let _ = replay.wait();
    let o = record.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = kvscope(["doctor", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success());
    let r: Report = serde_json::from_slice(&o.stdout).unwrap();
    let down = &r.hypotheses[0];
    assert_eq!(
        (down.id.as_str(), down.severity.as_str()),
        ("SERVER_DOWN", "high"),
        "{:?}",
        ids_and_severities(&r)
    );
    assert!(
        down.summary.contains("refused connections"),
        "{}",
        down.summary
    );
    let seconds = down.evidence[0].observed.as_f64().unwrap();
    assert!((11.0..=16.0).contains(&seconds), "down {seconds} s");
    assert!(
        down.evidence[1].observed.as_f64().unwrap() >= 1.0,
        "{down:?}"
    );
}

/// vLLM 0.32+'s queue bound turning requests away: queue_pressure's pages (64 running,
/// 192 waiting) with `vllm:admission_rejections_total` added as 0.32 exposes it, its
/// `reason` series appearing at the first rejection (absent before), 3 per 0.5 s page
/// from 10 s into the scenario. Every rejection is counted at 1, 5 and 15 s from every
/// offset (the lazily created series included), ADMISSION_REJECTIONS is found, and no
/// finding advises the bound that is already in force.
#[test]
fn admission_rejections_of_vllm_0_32_are_counted_and_judged() {
    let tmp = tempfile::tempdir().unwrap();
    let (start, end) = window_of("queue_pressure");
    let from = start + 10.0;
    let pages: Vec<RawPage> = capture_pages()
        .into_iter()
        .filter(|p| p.ts >= start - 20.0 && p.ts < end)
        .map(|mut p| {
            let k = ((p.ts - from) / 0.5).floor();
            if k >= 0.0 {
                let text = p.text.take().unwrap_or_default();
                p.text = Some(format!(
                    "{text}# HELP vllm:admission_rejections_total Requests rejected at admission.\n# TYPE vllm:admission_rejections_total counter\nvllm:admission_rejections_total{{model_name=\"dummy-llama\",reason=\"max_num_queued_reqs\"}} {}\n",
                    3.0 * (k + 1.0)
                ));
            }
            p
        })
        .collect();
    let total = |p: &RawPage| {
        p.text
            .as_deref()
            .and_then(|t| t.split("reason=\"max_num_queued_reqs\"} ").nth(1))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let _heavy = RECORDING.write().unwrap_or_else(|e| e.into_inner());
    let mut problems = Vec::new();
    for step in [2usize, 10, 30] {
        for offset in 0..step {
            let at = format!("{} s +{offset}", step as f64 * 0.5);
            let dir = record_every_as(&pages, step, offset, &tmp.path().join(&at), Some("0.32.0"));
            let (a, r) = analyse_and_diagnose(&dir);
            // What the recorder saw: the last sampled page's count, every rejection
            // since the series appeared (absent on the page before: 0 there).
            let expected = pages
                .iter()
                .skip(offset)
                .step_by(step)
                .next_back()
                .map_or(0.0, total);
            let counted = a.summary.servers[0].requests_rejected.unwrap_or(0.0);
            if (counted - expected).abs() > 1e-6 {
                problems.push(format!("{at}: counted {counted}, expected {expected}"));
            }
            let Some(h) = r.hypotheses.iter().find(|h| h.id == "ADMISSION_REJECTIONS") else {
                problems.push(format!(
                    "{at}: no ADMISSION_REJECTIONS in {:?}",
                    ids_and_severities(&r)
                ));
                continue;
            };
            if !matches!(h.severity.as_str(), "medium" | "high") {
                problems.push(format!("{at}: {} {}", h.severity, h.summary));
            }
            for f in &r.hypotheses {
                if f.recommendations
                    .iter()
                    .any(|x| x.action == "--max-num-queued-reqs")
                {
                    problems.push(format!("{at}: {} advises --max-num-queued-reqs", f.id));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));

    // The same pages without the counter, as 0.32: the queue finding advises the bound,
    // and the server's absence of the counter is no finding.
    let plain: Vec<RawPage> = capture_pages()
        .into_iter()
        .filter(|p| p.ts >= start - 20.0 && p.ts < end)
        .collect();
    let dir = record_every_as(&plain, 10, 0, &tmp.path().join("plain"), Some("0.32.0"));
    let (a, r) = analyse_and_diagnose(&dir);
    assert_eq!(a.summary.servers[0].requests_rejected, None);
    assert!(r.hypotheses.iter().all(|h| h.id != "ADMISSION_REJECTIONS"));
    let queue = finding(&r, "QUEUE_SATURATION");
    assert!(
        queue
            .recommendations
            .iter()
            .any(|x| x.action == "--max-num-queued-reqs"),
        "{:?}",
        queue.recommendations
    );
}

/// The same kv_saturation cut as in `server_gone_at_the_end…`, down 30 s and back as a
/// new process (its start time changed): SERVER_RESTART, high, with the work it held at
/// its last answer, at 1, 5 and 15 s from every offset; not SERVER_DOWN.
#[test]
fn restart_mid_load_loses_the_work_in_flight_at_every_interval_and_phase() {
    use kvscope::source::scrape::ScrapeError;
    let tmp = tempfile::tempdir().unwrap();
    let (from, cut, end, mut pages) = refused_mid_kv_saturation();
    pages.extend(
        capture_pages()
            .into_iter()
            // Back for kv_saturation's last 10 s and 30 s of prefill_burst (a 15 s
            // scrape sees it more than once).
            .filter(|p| p.ts >= cut + 30.0 && p.ts < end + 30.0)
            .map(|mut p| {
                let t = p.text.take().unwrap_or_default();
                p.text = Some(t.replace(
                    "process_start_time_seconds 1.7954391699e+09",
                    "process_start_time_seconds 1.7954394400e+09",
                ));
                p
            }),
    );
    let _heavy = RECORDING.write().unwrap_or_else(|e| e.into_inner());
    let mut problems = Vec::new();
    for step in [2usize, 10, 30] {
        for offset in 0..step {
            let at = format!("{} s +{offset}", step as f64 * 0.5);
            let dir = record_every(&pages, step, offset, &tmp.path().join(&at));
            let (_, r) = analyse_and_diagnose(&dir);
            let found = ids_and_severities(&r);
            let restart = r.hypotheses.iter().find(|h| h.id == "SERVER_RESTART");
            let ok = restart.is_some_and(|h| {
                h.severity == "high"
                    && h.summary.contains("they were lost")
                    && h.evidence[2].observed.as_f64().unwrap_or(0.0) >= 1.0
            });
            if !ok || found.iter().any(|(id, _)| *id == "SERVER_DOWN") {
                problems.push(format!("{at}: {found:?} {:?}", restart.map(|h| &h.summary)));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));

    // Down and back twice, each time as a new process: a crash loop.
    // (The pages after the first restart carry its start time.)
    let start_time = |t: &str, new: &str| {
        t.replace(
            "process_start_time_seconds 1.7954394400e+09",
            &format!("process_start_time_seconds {new}"),
        )
    };
    let twice: Vec<RawPage> = pages
        .iter()
        .cloned()
        .map(|mut p| {
            if p.ts >= cut + 50.0 && p.ts < cut + 60.0 {
                p.text = None;
                p.error = Some(refused());
            } else if p.ts >= cut + 60.0 {
                p.text = p.text.map(|t| start_time(&t, "1.7954394999e+09"));
            }
            p
        })
        .collect();
    let dir = record_every(&twice, 2, 0, &tmp.path().join("twice"));
    let (_, r) = analyse_and_diagnose(&dir);
    let restart = finding(&r, "SERVER_RESTART");
    assert!(
        restart.summary.starts_with("2 restart(s): a crash loop"),
        "{}",
        restart.summary
    );
    assert_eq!(restart.severity, "high");

    // Scrapes timing out for 6 s under load, the same process answering after: the
    // telemetry gap is the API server's busy event loop, and the advice says so first.
    let timeout = ScrapeError::Timeout(Duration::from_secs(2)).to_string();
    let slow: Vec<RawPage> = capture_pages()
        .into_iter()
        .filter(|p| p.ts >= from && p.ts < end)
        .map(|mut p| {
            if p.ts >= cut && p.ts < cut + 6.0 {
                p.text = None;
                p.error = Some(timeout.clone());
            }
            p
        })
        .collect();
    let dir = record_every(&slow, 2, 0, &tmp.path().join("slow"));
    let (_, r) = analyse_and_diagnose(&dir);
    let gaps = finding(&r, "TELEMETRY_GAPS");
    assert!(
        gaps.recommendations[0].action.contains("event loop"),
        "{:?}",
        gaps.recommendations
    );
    assert!(
        r.hypotheses
            .iter()
            .all(|h| h.id != "SERVER_RESTART" && h.id != "SERVER_DOWN")
    );
}

/// The capture followed by `idle_s` more seconds of its cooldown (its last page, taken
/// again every 0.5 s: counters still, nothing running), and preceded by as much of its
/// first idle page.
fn inside_idle(idle_s: f64) -> Vec<RawPage> {
    let pages = capture_pages();
    let (first, last) = (pages[0].clone(), pages[pages.len() - 1].clone());
    let n = (idle_s / 0.5) as usize;
    let before = (0..n).rev().map(|k| RawPage {
        ts: first.ts - 0.5 * (k + 1) as f64,
        ..first.clone()
    });
    let after = (0..n).map(|k| RawPage {
        ts: last.ts + 0.5 * (k + 1) as f64,
        ..last.clone()
    });
    before.chain(pages).chain(after).collect()
}

/// The same incidents in a recording half an hour longer on each side (the server idle
/// then, as in its first and last pages): the same findings with the same severities and
/// scores, at 1, 5 and 15 s. Before rules judged seconds, the queue of queue_pressure (50 s
/// of 192 waiting at --max-num-seqs 64) fell under 10 % of the recording and was ruled
/// out, and its TTFT spikes, under a load share of 10 %, read as TTFT_INSTABILITY (high at
/// 15 s).
#[test]
fn incidents_read_the_same_in_a_longer_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    for step in [2usize, 10, 30] {
        let mut reads = Vec::new();
        for idle in [0.0, 1800.0] {
            let dir = record_every(
                &inside_idle(idle),
                step,
                0,
                &tmp.path().join(format!("{idle}-{step}")),
            );
            let (a, r) = analyse_and_diagnose(&dir);
            let found: Vec<String> = r
                .hypotheses
                .iter()
                .map(|h| format!("{}={}/{}", h.id, h.severity, h.score))
                .collect();
            let queue = r.hypotheses.iter().find(|h| h.id == "QUEUE_SATURATION");
            if !queue.is_some_and(|q| {
                q.severity == "high" && q.summary.contains("cause: sequence limit")
            }) {
                problems.push(format!("{step}/{idle}: queue {queue:?}"));
            }
            let unstable = r.ruled_out.iter().find(|o| o.id == "TTFT_INSTABILITY");
            if !unstable.is_some_and(|o| o.reason.starts_with("every TTFT spike")) {
                problems.push(format!("{step}/{idle}: TTFT_INSTABILITY {unstable:?}"));
            }
            let observed: f64 = a.summary.servers[0]
                .phases
                .values()
                .map(|p| p.seconds)
                .sum();
            reads.push((found, observed));
        }
        // The longer recording is longer, and reads the same.
        assert!(reads[1].1 > reads[0].1 + 3000.0, "{reads:?}");
        if reads[0].0 != reads[1].0 {
            problems.push(format!("{step}: {:?} against {:?}", reads[0].0, reads[1].0));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The capture's pages taken at irregular intervals, as a loaded recorder or a Prometheus
/// with jitter takes them: steps of 0.5-1.5 s, 2.5-7.5 s and 7.5-22.5 s around a mean of
/// 1, 5 and 15 s, from a fixed pseudo-random sequence, 4 sequences each. Time is in
/// seconds, not samples: KV_CACHE_THRASHING high and first, and queue_pressure's queue
/// found at --max-num-seqs (the sequence limit), in every one; no telemetry finding.
#[test]
fn irregular_intervals_read_the_same() {
    let pages = capture_pages();
    let tmp = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    for mean in [2usize, 10, 30] {
        for seed in 1..=4u64 {
            let mut x = seed;
            let mut picked = Vec::new();
            let mut i = 0;
            while i < pages.len() {
                picked.push(&pages[i]);
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                i += mean / 2 + (x >> 33) as usize % (mean + 1);
            }
            let dir = tmp.path().join(format!("{mean}-{seed}"));
            let dir = record_pages(&picked, mean as f64 * 0.5, &dir, None);
            let (_, r) = analyse_and_diagnose(&dir);
            let found = ids_and_severities(&r);
            let queue = r.hypotheses.iter().find(|h| h.id == "QUEUE_SATURATION");
            let telemetry = found.iter().any(|(id, sev)| {
                matches!(*id, "TELEMETRY_GAPS" | "SERVER_DOWN" | "SERVER_RESTART")
                    && matches!(*sev, "medium" | "high")
            });
            if found.first() != Some(&("KV_CACHE_THRASHING", "high"))
                || !queue.is_some_and(|q| {
                    q.severity != "low" && q.summary.contains("cause: sequence limit")
                })
                || telemetry
            {
                problems.push(format!("mean {mean} seed {seed}: {found:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
