//! Sessions on object storage, against a real S3-compatible server (s3s-fs) started on
//! 127.0.0.1 by the test: record → upload, analyze/timeline/doctor reading Parquet
//! straight from the store, batch doctor over a prefix with one broken session,
//! multipart uploads, export to a Hive dataset (local and s3), clear errors.

use std::path::Path;

use kvscope::store::location::Location;
use object_store::aws::AmazonS3Builder;

use crate::common::Bounded;
use crate::common::{self, S3_KEY, S3_SECRET, S3Server, kvscope, record_scenario};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Copies a local session into the server's bucket directory (the store's own layout:
/// one file per object), for tests of the read path.
fn place(s3: &S3Server, session: &Path, key: &str) {
    let dest = s3.object_path(key);
    std::fs::create_dir_all(&dest).unwrap();
    for e in std::fs::read_dir(session).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
        }
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn s3_builder(s3: &S3Server) -> AmazonS3Builder {
    AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id(S3_KEY)
        .with_secret_access_key(S3_SECRET)
}

#[test]
fn record_to_s3_uploads_the_session_and_analysis_reads_it_from_the_store() {
    let s3 = S3Server::start(&["kvs-runs"]);
    let (mut sim, url) = common::spawn_simulator("kv-saturation", 20.0);
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let out = s3.kvscope([
        "record",
        "--server",
        &url,
        "--duration",
        "3s",
        "--interval",
        "250ms",
        "--wait",
        "--out",
        "s3://kvs-runs/runs/r1",
        "--staging",
        staging.to_str().unwrap(),
    ]);
    let _ = sim.kill();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "s3://kvs-runs/runs/r1");
    // Every file of the local session is in the bucket, byte for byte.
    for f in [
        "metadata.json",
        "samples.parquet",
        "histograms.parquet",
        "metrics.csv",
        "samples.jsonl",
    ] {
        let local = std::fs::read(staging.join(f)).unwrap();
        let remote = std::fs::read(s3.object_path("kvs-runs/runs/r1").join(f)).unwrap();
        assert_eq!(local, remote, "{f}");
    }
    let meta = json(&staging.join("metadata.json"));
    let rows = meta["row_counts"]["samples"].as_u64().unwrap();
    assert!(rows >= 8, "{rows} samples");

    // analyze on the s3 session writes its outputs next to it, in the bucket, and they
    // equal a local analysis of the same files.
    let out = s3.kvscope(["analyze", "s3://kvs-runs/runs/r1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("wrote s3://kvs-runs/runs/r1/summary.json"));
    let local = kvscope(["analyze", staging.to_str().unwrap()]);
    assert!(local.status.success());
    let remote_summary = json(&s3.object_path("kvs-runs/runs/r1/summary.json"));
    assert_eq!(remote_summary, json(&staging.join("summary.json")));
    assert_eq!(
        remote_summary["servers"][0]["samples"].as_u64(),
        Some(rows),
        "every recorded row analysed"
    );
    assert_eq!(
        std::fs::read(s3.object_path("kvs-runs/runs/r1/events.jsonl")).unwrap(),
        std::fs::read(staging.join("events.jsonl")).unwrap()
    );

    // --out sends the outputs elsewhere (here: a local directory).
    let elsewhere = tmp.path().join("outputs");
    let out = s3.kvscope([
        "analyze",
        "s3://kvs-runs/runs/r1",
        "--out",
        elsewhere.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&elsewhere.join("summary.json")), remote_summary);

    // timeline reads the same store.
    let out = s3.kvscope(["timeline", "s3://kvs-runs/runs/r1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc.is_object());

    // report writes report.html into the session on the store.
    let out = s3.kvscope(["report", "s3://kvs-runs/runs/r1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "s3://kvs-runs/runs/r1/report.html"
    );
    let html = std::fs::read_to_string(s3.object_path("kvs-runs/runs/r1/report.html")).unwrap();
    assert!(html.contains("id='panel-kv'"));
}

#[test]
fn batch_doctor_over_a_prefix_reports_a_broken_session_and_ranks_the_rest() {
    let s3 = S3Server::start(&["fleet"]);
    let mut sessions = Vec::new();
    for (i, sc) in ["kv-saturation", "healthy", "queue-pressure"]
        .iter()
        .enumerate()
    {
        let (tmp, dir) = record_scenario(sc, 1);
        place(&s3, &dir, &format!("fleet/prod/day1/s{i}-{sc}"));
        sessions.push(tmp);
    }
    // A session whose metadata.json is not JSON: reported, the others still diagnosed.
    let broken = s3.object_path("fleet/prod/day1/s9-broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("metadata.json"), b"{ not json").unwrap();
    // Not a session: ignored.
    std::fs::write(s3.object_path("fleet/prod/README.txt"), b"hello").unwrap();

    let out = s3.kvscope(["doctor", "s3://fleet/prod/", "--jobs", "2", "--json"]);
    // Exit 2: one session failed, the rest were reported.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("s3://fleet/prod/day1/s9-broken") && err.contains("metadata.json"),
        "{err}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = doc["fleet"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    // Ranked by score: the KV-saturated session first, healthy last.
    assert_eq!(rows[0]["session"], "s3://fleet/prod/day1/s0-kv-saturation");
    assert_eq!(rows[2]["session"], "s3://fleet/prod/day1/s1-healthy");
    // doctor.json (and the analysis outputs) were written next to each session.
    for name in ["s0-kv-saturation", "s1-healthy", "s2-queue-pressure"] {
        let d = s3.object_path(&format!("fleet/prod/day1/{name}"));
        let report = json(&d.join("doctor.json"));
        assert!(report["hypotheses"].is_array(), "{name}");
        assert!(d.join("summary.json").exists() && d.join("events.jsonl").exists());
    }
    // Text output: the fleet table lists the three sessions.
    let out = s3.kvscope(["doctor", "s3://fleet/prod/day1/"]);
    let text = stdout(&out);
    assert!(
        text.contains("s0-kv-saturation") && text.contains("s2-queue-pressure"),
        "{text}"
    );
}

#[test]
fn big_files_go_up_in_parts_and_are_read_back_by_range() {
    let s3 = S3Server::start(&["big"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    // 60 servers × 4000 s: ~10 MB of Parquet, above the 8 MiB multipart threshold.
    let out = kvscope([
        "simulate",
        "--record-to",
        dir.to_str().unwrap(),
        "--fleet",
        "60",
        "--seconds",
        "4000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let size = std::fs::metadata(dir.join("samples.parquet"))
        .unwrap()
        .len();
    assert!(size > 8 * 1024 * 1024, "{size} bytes");
    let loc = Location::parse_with("s3://big/fleet", s3_builder(&s3)).unwrap();
    let uploaded = common::block_on(loc.upload_dir(&dir)).unwrap();
    assert!(uploaded >= size);
    assert_eq!(
        std::fs::read(s3.object_path("big/fleet/samples.parquet")).unwrap(),
        std::fs::read(dir.join("samples.parquet")).unwrap()
    );
    // Found as a session, analysed from the store: same per-server totals as locally.
    let found = common::block_on(
        Location::parse_with("s3://big/", s3_builder(&s3))
            .unwrap()
            .find_sessions(),
    )
    .unwrap();
    assert_eq!(
        found.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        ["s3://big/fleet"]
    );
    let remote = s3.kvscope(["analyze", "s3://big/fleet", "--json"]);
    assert!(remote.status.success(), "{}", stderr(&remote));
    let local = kvscope(["analyze", dir.to_str().unwrap(), "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&remote.stdout).unwrap();
    let l: serde_json::Value = serde_json::from_slice(&local.stdout).unwrap();
    assert_eq!(r["servers"].as_array().unwrap().len(), 60);
    assert_eq!(r["servers"], l["servers"]);
}

#[test]
fn export_writes_a_hive_dataset_locally_and_to_s3() {
    let s3 = S3Server::start(&["lake"]);
    let (_t1, a) = record_scenario("kv-saturation", 2);
    let (_t2, b) = record_scenario("healthy", 2);
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("dataset");
    let out = kvscope([
        "export",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--partition-by",
        "server,date",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Both sessions come from server `sim:8000` on 2027-01-15 (epoch 1.8e9): one
    // partition directory, one file per session, the server value percent-encoded.
    let part = out_dir.join("server=sim%3A8000").join("date=2027-01-15");
    let mut files: Vec<String> = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["part-test-session.parquet"], "{part:?}");
    // Same session id twice: the second export overwrote the first's file. Rows = the
    // healthy session's (exported last).
    let meta_b = json(&b.join("metadata.json"));
    let file = std::fs::File::open(part.join(&files[0])).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    let md = reader.metadata().file_metadata();
    assert_eq!(
        md.num_rows() as u64,
        meta_b["row_counts"]["samples"].as_u64().unwrap()
    );
    let kv: Vec<(String, String)> = md
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
        .collect();
    assert!(
        kv.contains(&(
            "schema_version".into(),
            kvscope::store::schema::SCHEMA_VERSION.to_string()
        )),
        "{kv:?}"
    );
    let names: Vec<String> = md
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert!(
        !names.contains(&"server".to_string()),
        "partition column in file"
    );
    assert!(names.contains(&"session_id".to_string()) && names.contains(&"model".to_string()));

    // To S3: the same layout under the prefix.
    let out = s3.kvscope([
        "export",
        a.to_str().unwrap(),
        "--out",
        "s3://lake/vllm",
        "--partition-by",
        "server",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        s3.object_path("lake/vllm/server=sim%3A8000/part-test-session.parquet")
            .is_file()
    );

    // An unknown partition column is refused with the choices.
    let out = kvscope([
        "export",
        a.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--partition-by",
        "engine",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("choose from: server, date"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn object_store_errors_are_clear_and_nonzero() {
    let s3 = S3Server::start(&["present"]);
    // A bucket that does not exist.
    let out = s3.kvscope(["analyze", "s3://absent/s1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("s3://absent/s1"), "{err}");
    // An empty prefix is not a session.
    let out = s3.kvscope(["doctor", "s3://present/nothing/"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holds no sessions"),
        "{}",
        stderr(&out)
    );
    // record --out s3:// to an unreachable endpoint fails before recording anything.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::bin())
        .args([
            "record",
            "--server",
            "http://127.0.0.1:1",
            "--duration",
            "2s",
            "--out",
            "s3://present/x",
            "--staging",
        ])
        .arg(tmp.path().join("st"))
        .envs(s3.env())
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("checking access to s3://present/x"),
        "{}",
        stderr(&out)
    );
    assert!(!tmp.path().join("st").exists(), "nothing recorded");
}
