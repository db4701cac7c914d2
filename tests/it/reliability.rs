//! Faults and bad input: nothing panics, nothing recorded is lost.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvscope::adapter::{self, Normalizer};
use kvscope::sim::{Simulation, scenario};
use kvscope::source::prom;
use kvscope::store;
use proptest::prelude::*;

use crate::common::Bounded;
use crate::common::{bin, fixture_text, kvscope, record_scenario};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn parser_and_adapter_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let exp = prom::parse(&text);
        let r = adapter::read(&exp);
        let _ = Normalizer::new().normalize("s", 0, 0.0, None, &r);
    }

    #[test]
    fn mutated_real_pages_never_panic(seed in 0usize..10_000, cut in 0usize..60_000, flips in proptest::collection::vec((0usize..60_000, any::<u8>()), 0..40)) {
        let names = ["05-v1-0.10-nvidia-25.09-after-6-requests.prom", "07-v1-0.29-after-10-requests-prefix-hits.prom", "10-v1-0.26-h100-kv-saturation-preempting.prom"];
        let mut bytes = fixture_text(names[seed % 3]).into_bytes();
        for (pos, b) in flips {
            if let Some(x) = bytes.get_mut(pos) { *x = b; }
        }
        bytes.truncate(cut.min(bytes.len()));
        let text = String::from_utf8_lossy(&bytes);
        let mut n = Normalizer::new();
        let r = adapter::read(&prom::parse(&text));
        let _ = n.normalize("s", 0, 0.0, None, &r);
        let _ = n.normalize("s", 1_000_000, 1.0, None, &r);
    }
}

#[test]
fn pathological_pages_parse() {
    // 10⁵ series.
    let mut text = String::from("# TYPE vllm:num_requests_running gauge\n");
    for i in 0..100_000 {
        text.push_str(&format!(
            "vllm:num_requests_running{{engine=\"{i}\",model_name=\"m\"}} 1\n"
        ));
    }
    let exp = prom::parse(&text);
    assert_eq!(exp.sample_count(), 100_000);
    assert_eq!(adapter::read(&exp).engines.len(), 100_000);
    // 10⁴ labels on one line, and a 1 MB label value.
    let labels: Vec<String> = (0..10_000).map(|i| format!("l{i}=\"v\"")).collect();
    let line = format!(
        "x{{{}}} 1\ny{{a=\"{}\"}} 2\n",
        labels.join(","),
        "z".repeat(1 << 20)
    );
    let exp = prom::parse(&line);
    assert_eq!(exp.family("x").unwrap().samples[0].labels.len(), 10_000);
    assert_eq!(
        exp.family("y").unwrap().samples[0].labels[0].1.len(),
        1 << 20
    );
}

/// What the fault server answers, by request number.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Ok,
    Status(u16),
    Garbage,
    Html,
    Stall,
    Truncated,
    Restart,
    Huge,
    Endless,
    /// A good page whose clock (`x-kvscope-sim-time`) is 30 s in the past.
    ClockBack,
}

/// A raw-TCP `/metrics` server that plays `schedule` (then Ok forever), rendering a
/// simulated vLLM page for Ok answers. `down` makes it refuse connections for a while.
/// Returns the port and the head of every request received.
fn fault_server(
    schedule: Vec<Fault>,
    down: Option<(usize, Duration)>,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let hits2 = hits.clone();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let heads2 = heads.clone();
    let sim = Arc::new(Mutex::new(Simulation::new(
        scenario::scenario("healthy").unwrap(),
        1,
        1,
        1_800_000_000.0,
    )));
    std::thread::spawn(move || {
        let mut listener = Some(listener);
        let started = Instant::now();
        let mut t = 0.0;
        while let Some(l) = listener.as_ref() {
            let Ok((mut sock, _)) = l.accept() else { break };
            let k = hits2.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
            let n = sock.read(&mut buf).unwrap_or(0);
            heads2
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let fault = schedule.get(k).copied().unwrap_or(Fault::Ok);
            t += 1.0;
            let page = {
                let mut s = sim.lock().unwrap();
                if matches!(fault, Fault::Restart) {
                    *s = Simulation::new(
                        scenario::scenario("healthy").unwrap(),
                        2,
                        1,
                        1_800_000_000.0,
                    );
                    t = 1.0;
                }
                s.advance_to(t);
                s.render()
            };
            let body: Vec<u8> = match fault {
                Fault::Ok | Fault::Restart | Fault::ClockBack => page.into_bytes(),
                Fault::Garbage => (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
                Fault::Html => b"<html><body>502 Bad Gateway</body></html>".to_vec(),
                _ => Vec::new(),
            };
            let _ = match fault {
                Fault::Status(code) => write!(
                    sock,
                    "HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
                Fault::Stall => {
                    std::thread::sleep(Duration::from_millis(1500));
                    Ok(())
                }
                Fault::Truncated => write!(
                    sock,
                    "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n# TYPE vllm:num_req"
                ),
                Fault::Huge => {
                    let _ = write!(
                        sock,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        100u64 << 20
                    );
                    let chunk = vec![b'#'; 1 << 20];
                    for _ in 0..100 {
                        if sock.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    Ok(())
                }
                Fault::Endless => {
                    let _ = write!(
                        sock,
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    );
                    let until = Instant::now() + Duration::from_secs(3);
                    while Instant::now() < until {
                        if write!(sock, "10\r\n# keep going...\n\r\n").is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(())
                }
                _ => {
                    let clock = if matches!(fault, Fault::ClockBack) {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs_f64();
                        format!("x-kvscope-sim-time: {:.3}\r\n", now - 30.0)
                    } else {
                        String::new()
                    };
                    write!(sock, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n{clock}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                        .and_then(|_| sock.write_all(&body))
                }
            };
            drop(sock);
            if let Some((at, dur)) = down
                && k + 1 == at
            {
                // Vanish: stop listening, come back on the same port.
                drop(listener.take());
                std::thread::sleep(dur);
                listener = std::net::TcpListener::bind(("127.0.0.1", port)).ok();
            }
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
    });
    (port, heads)
}

#[test]
fn recorder_survives_every_fault_and_keeps_every_sample() {
    use Fault::*;
    let schedule = vec![
        Ok,
        Ok,
        Status(500),
        Ok,
        Status(503),
        Ok,
        Garbage,
        Ok,
        Html,
        Ok,
        Stall,
        Ok,
        Truncated,
        Ok,
        Restart,
        Ok,
        Ok,
        Huge,
        Ok,
        Endless,
        Ok,
        Ok,
    ];
    let (port, _hits) = fault_server(schedule, Some((23, Duration::from_millis(1500))));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    let o = Command::new(bin())
        .args([
            "record",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--duration",
            "9s",
            "--interval",
            "250ms",
            "--timeout",
            "600ms",
            "--out",
        ])
        .arg(&out)
        .bounded_output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = store::read_samples_jsonl(&out.join(store::SAMPLES_JSONL)).unwrap();
    let meta = store::read_metadata(&out).unwrap().unwrap();
    assert!(meta.complete);
    assert_eq!(rows.len() as u64, meta.row_counts.samples);
    let errors: Vec<String> = rows.iter().filter_map(|r| r.scrape_error.clone()).collect();
    let has = |s: &str| errors.iter().any(|e| e.contains(s));
    assert!(has("HTTP status 500"), "{errors:?}");
    assert!(has("HTTP status 503"), "{errors:?}");
    assert!(has("not vLLM metrics"), "{errors:?}");
    assert!(has("timed out"), "{errors:?}");
    assert!(has("larger than"), "{errors:?}");
    assert!(has("connection refused"), "{errors:?}");
    // Samples before and after every fault are kept; the restart is a counter reset.
    let ok = rows.iter().filter(|r| r.scrape_ok).count();
    assert!(ok >= 12, "{ok} good rows");
    assert!(rows.iter().any(|r| r.counter_reset));
    // Analysis handles the gaps.
    let o = kvscope([std::ffi::OsStr::new("analyze"), out.as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = store::events::read_events(&out.join(store::EVENTS_JSONL)).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.event.as_deref() == Some("SCRAPE_GAP") && e.reason.is_some())
    );
    assert!(
        events
            .iter()
            .any(|e| e.event.as_deref() == Some("COUNTER_RESET"))
    );
}

#[test]
fn sigkill_loses_no_completed_interval_and_repair_recovers() {
    let (port, _hits) = fault_server(vec![], None);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    let mut child =
        crate::common::spawn_long_record(&format!("http://127.0.0.1:{port}"), &out, "100ms");
    child.kill().unwrap();
    child.wait().unwrap();
    let rows = store::read_samples_jsonl(&out.join(store::SAMPLES_JSONL)).unwrap();
    assert!(rows.len() >= 8, "{} rows", rows.len());
    assert!(!store::parquet_is_valid(&out.join(store::SAMPLES_PARQUET)));
    // verify says what is wrong; analyze works from the JSONL; repair rebuilds.
    let o = kvscope([std::ffi::OsStr::new("verify"), out.as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("samples.parquet") && text.contains("not finalized"),
        "{text}"
    );
    let o = kvscope([std::ffi::OsStr::new("analyze"), out.as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = kvscope([std::ffi::OsStr::new("repair"), out.as_os_str()]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("({} rows)", rows.len())));
    assert!(store::parquet_is_valid(&out.join(store::SAMPLES_PARQUET)));
}

#[test]
fn bad_sessions_give_clear_errors() {
    let (_tmp, dir) = record_scenario("healthy", 1);
    let verify = |d: &std::path::Path| {
        let o = kvscope([std::ffi::OsStr::new("verify"), d.as_os_str()]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert_eq!(verify(&dir).0, Some(0));
    // Truncated Parquet.
    let pq = dir.join(store::SAMPLES_PARQUET);
    let bytes = std::fs::read(&pq).unwrap();
    std::fs::write(&pq, &bytes[..bytes.len() / 2]).unwrap();
    let (code, text) = verify(&dir);
    assert_eq!(code, Some(1));
    assert!(
        text.contains("samples.parquet") && text.contains("unreadable"),
        "{text}"
    );
    std::fs::write(&pq, &bytes).unwrap();
    // Corrupted JSON line.
    let jl = dir.join(store::SAMPLES_JSONL);
    let orig = std::fs::read_to_string(&jl).unwrap();
    let mut lines: Vec<&str> = orig.lines().collect();
    lines[4] = "{\"ts\": oops";
    std::fs::write(&jl, lines.join("\n") + "\n").unwrap();
    let (code, text) = verify(&dir);
    assert_eq!(code, Some(1));
    assert!(text.contains("samples.jsonl:5"), "{text}");
    // Newer schema_version.
    let meta_path = dir.join(store::METADATA_FILE);
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    std::fs::write(
        &meta_path,
        meta.replace(
            &format!("\"schema_version\": {}", store::schema::SCHEMA_VERSION),
            "\"schema_version\": 99",
        ),
    )
    .unwrap();
    let o = kvscope([std::ffi::OsStr::new("analyze"), dir.as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("schema_version 99"));
    // CSV with a missing column.
    let tmp2 = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp2.path().join(store::SAMPLES_CSV),
        "ts,server,kv_cache_usage_pct,requests_running\n1,a,1.0,1\n",
    )
    .unwrap();
    let o = kvscope([std::ffi::OsStr::new("analyze"), tmp2.path().as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("metrics.csv:1") && err.contains("requests_waiting"),
        "{err}"
    );
    // Missing files.
    let empty = tempfile::tempdir().unwrap();
    let o = kvscope([std::ffi::OsStr::new("analyze"), empty.path().as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a KVScope session"));
    // A file where a session directory is expected: named, and the cause said once.
    let file = empty.path().join("samples.parquet");
    std::fs::write(&file, b"x").unwrap();
    let o = kvscope([std::ffi::OsStr::new("doctor"), file.as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!("error: {}: no such session or directory", file.display())
    );
    // A samples.parquet that is not Parquet, and nothing else to read: the file is named.
    let o = kvscope([std::ffi::OsStr::new("analyze"), empty.path().as_os_str()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("error: {}: no Parquet footer", file.display())),
        "{err}"
    );
}

#[test]
fn simulator_binds_loopback_by_default() {
    let o = Command::new(bin())
        .args(["simulate", "--help"])
        .bounded_output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("127.0.0.1:8000"));
}

#[test]
fn full_disk_is_a_clear_error_and_keeps_earlier_data() {
    // A file-size limit stands in for a full disk: writes past it fail with EFBIG
    // (SIGXFSZ ignored, as a shell `trap` passes on through exec).
    let (port, _hits) = fault_server(vec![], None);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    let script = format!(
        "trap '' XFSZ; ulimit -f 64; exec '{}' record --server http://127.0.0.1:{port} --duration 30s --interval 50ms --out '{}'",
        bin().display(),
        out.display()
    );
    let o = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .bounded_output()
        .unwrap();
    assert!(!o.status.success(), "recording past the limit must fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("File too large") || err.contains("file too large"),
        "{err}"
    );
    // Every interval written before the limit is still readable.
    let rows = store::read_samples_jsonl(&out.join(store::SAMPLES_JSONL)).unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.scrape_ok));
}

#[test]
fn bearer_token_is_sent_and_never_stored_and_clock_jumps_are_survived() {
    use Fault::*;
    let (port, heads) = fault_server(vec![Ok, Ok, Ok, ClockBack, Ok, Ok], None);
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "s3cr3t-token\n").unwrap();
    let out = tmp.path().join("s");
    let o = Command::new(bin())
        .args(["--log", "debug", "record", "--server"])
        .arg(format!("http://user:pw@127.0.0.1:{port}"))
        .args([
            "--duration",
            "2s",
            "--interval",
            "200ms",
            "--bearer-token-file",
        ])
        .arg(&token_file)
        .arg("--out")
        .arg(&out)
        .bounded_output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sent = heads.lock().unwrap().join("\n");
    assert!(
        sent.contains("authorization: Bearer s3cr3t-token")
            || sent.contains("Authorization: Bearer s3cr3t-token"),
        "{sent}"
    );
    // Never in metadata, logs or any session file; URL credentials redacted.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("s3cr3t") && !stderr.contains(":pw@"));
    for f in std::fs::read_dir(&out).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("s3cr3t") && !text.contains(":pw@"));
    }
    let meta = std::fs::read_to_string(out.join(store::METADATA_FILE)).unwrap();
    assert!(meta.contains("***@127.0.0.1"), "{meta}");
    // The clock went back 30 s once: the row is kept, no rate is negative, analysis runs.
    let rows = store::read_samples_jsonl(&out.join(store::SAMPLES_JSONL)).unwrap();
    assert!(
        rows.windows(2).any(|w| w[1].ts < w[0].ts),
        "no clock jump recorded"
    );
    for r in &rows {
        for v in [
            r.generation_tokens_per_s,
            r.prompt_tokens_per_s,
            r.preemptions_per_s,
        ]
        .into_iter()
        .flatten()
        {
            assert!(v >= 0.0);
        }
    }
    let o = kvscope([std::ffi::OsStr::new("analyze"), out.as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A fleet's `samples.parquet` with a column of the wrong type (KV usage written as
/// text) is an error naming the file and the column, exit 2, at once. (It once failed in
/// a query of every chunk worker, and with more chunks than workers the reader then
/// waited forever to hand over the next one: the run hung instead of exiting.)
#[test]
fn a_column_of_the_wrong_type_is_named_not_hung() {
    use datafusion::arrow::array::{RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    crate::common::record_fleet(&dir, 6, 60);
    let path = dir.join(store::SAMPLES_PARQUET);
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let schema = batches[0].schema();
    let k = schema.index_of("kv_cache_usage_pct").unwrap();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[k] = Field::new("kv_cache_usage_pct", DataType::Utf8, true);
    let text_schema = Arc::new(Schema::new(fields));
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        text_schema.clone(),
        None,
    )
    .unwrap();
    for b in &batches {
        let kv = b.column(k);
        let text: StringArray = (0..kv.len())
            .map(|i| datafusion::arrow::util::display::array_value_to_string(kv, i).ok())
            .collect();
        let mut columns = b.columns().to_vec();
        columns[k] = Arc::new(text);
        writer
            .write(&RecordBatch::try_new(text_schema.clone(), columns).unwrap())
            .unwrap();
    }
    writer.close().unwrap();
    let mut child = Command::new(bin())
        .args(["analyze", dir.to_str().unwrap(), "--chunk-rows", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("analyze still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("samples.parquet") && err.contains("kv_cache_usage_pct is Utf8"),
        "{err}"
    );
}
