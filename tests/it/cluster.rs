//! A real local cluster (feature `cluster`): two `kvscope worker` processes of the built
//! binary on free 127.0.0.1 ports, sessions on the project's S3 test server, and the
//! coordinator in the `kvscope analyze|doctor --cluster` process. The files must be those
//! of a local run, byte for byte; a worker that dies mid-run must leave either the same
//! files (its units retried on the other worker) or a clear error and nothing written.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::{S3Server, bin};

/// A `kvscope worker` process, killed on drop.
struct WorkerProc {
    child: Child,
    url: String,
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a worker on a free port (it prints its URL once it accepts connections).
fn worker(s3: &S3Server, env: &[(&str, &str)]) -> WorkerProc {
    let mut child = Command::new(bin())
        .args(["worker", "--listen", "127.0.0.1:0"])
        .envs(s3.env())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker");
    let stdout = child.stdout.take().expect("worker stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("worker prints its address");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected worker output {line:?}"))
        .to_string();
    WorkerProc { child, url }
}

/// Records a simulated fleet and places it on the S3 server under `key`.
fn fleet_on_s3(s3: &S3Server, key: &str, servers: usize, seconds: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    let out = crate::common::kvscope([
        "simulate",
        "--fleet",
        &servers.to_string(),
        "--seconds",
        &seconds.to_string(),
        "--profile",
        "busy",
        "--seed",
        "7",
        "--record-to",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dest = s3.object_path(key);
    std::fs::create_dir_all(&dest).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
        }
    }
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
}

const OUTPUTS: [&str; 3] = ["summary.json", "events.jsonl", "events.parquet"];

/// `analyze` locally and with `--cluster` into two directories; asserts identical files
/// and returns the local run's event count and the cluster run's stderr.
fn assert_cluster_equals_local(
    s3: &S3Server,
    session: &str,
    cluster: &str,
    chunk_rows: &str,
) -> (usize, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (local, dist) = (tmp.path().join("local"), tmp.path().join("cluster"));
    let a = s3.kvscope([
        "analyze",
        session,
        "--out",
        local.to_str().unwrap(),
        "--chunk-rows",
        chunk_rows,
    ]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = s3.kvscope([
        "analyze",
        session,
        "--out",
        dist.to_str().unwrap(),
        "--chunk-rows",
        chunk_rows,
        "--cluster",
        cluster,
    ]);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    // What the user reads is the same too.
    assert_eq!(
        String::from_utf8_lossy(&a.stdout).replace(local.to_str().unwrap(), "OUT"),
        String::from_utf8_lossy(&b.stdout).replace(dist.to_str().unwrap(), "OUT")
    );
    for f in OUTPUTS {
        let (x, y) = (read(&local, f), read(&dist, f));
        assert!(
            x == y,
            "{session}: {f} differs ({} vs {} bytes)",
            x.len(),
            y.len()
        );
    }
    // Nothing left behind: no staging directory, no run file.
    let mut left: Vec<String> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["events.jsonl", "events.parquet", "summary.json"]);
    let events = read(&local, "events.jsonl")
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    (events, String::from_utf8_lossy(&b.stderr).into_owned())
}

#[test]
fn cluster_analysis_and_batch_doctor_equal_the_local_runs() {
    let s3 = S3Server::start(&["lake"]);
    fleet_on_s3(&s3, "lake/fleets/two", 2, 900);
    fleet_on_s3(&s3, "lake/fleets/fifty", 50, 600);
    let (w1, w2) = (worker(&s3, &[]), worker(&s3, &[]));
    let cluster = format!("{},{}", w1.url, w2.url);

    // 2 servers: one shard per worker. 50 servers at 2,000-row chunks: 4 shards of
    // 12-13 servers, each several chunks (run files) on its worker.
    let (two, _) = assert_cluster_equals_local(&s3, "s3://lake/fleets/two", &cluster, "65536");
    let (fifty, _) = assert_cluster_equals_local(&s3, "s3://lake/fleets/fifty", &cluster, "2000");
    assert!(two > 10, "{two} events");
    assert!(fifty > 500, "{fifty} events");

    // Batch doctor over the prefix, with a broken session beside the two good ones: the
    // same fleet table, the same doctor.json in each session, the same failure.
    let broken = s3.object_path("lake/fleets/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("samples.parquet"), b"not parquet").unwrap();
    let local = s3.kvscope(["doctor", "s3://lake/fleets/"]);
    let doctor_json = |k: &str| read(&s3.object_path(&format!("lake/fleets/{k}")), "doctor.json");
    let local_reports = (doctor_json("two"), doctor_json("fifty"));
    for k in ["two", "fifty"] {
        std::fs::remove_file(s3.object_path(&format!("lake/fleets/{k}/doctor.json"))).unwrap();
    }
    let dist = s3.kvscope(["doctor", "s3://lake/fleets/", "--cluster", &cluster]);
    assert_eq!(local.status.code(), Some(2), "one session failed");
    assert_eq!(dist.status.code(), local.status.code());
    assert_eq!(
        String::from_utf8_lossy(&dist.stdout),
        String::from_utf8_lossy(&local.stdout)
    );
    // The same error lines (a warning about the broken file is logged where the session
    // was read: by the worker).
    let errors = |o: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| l.starts_with("error:"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(errors(&dist), errors(&local));
    assert_eq!(errors(&dist).len(), 1);
    assert!(String::from_utf8_lossy(&dist.stderr).contains("lake/fleets/broken"));
    assert!(local_reports.0 == doctor_json("two"));
    assert!(local_reports.1 == doctor_json("fifty"));

    // Export of the prefix into a Hive dataset, one session per unit: the same files.
    let tmp = tempfile::tempdir().unwrap();
    let (la, lb) = (tmp.path().join("local"), tmp.path().join("cluster"));
    let export = |to: &Path, cluster: Option<&str>| {
        let mut args = vec!["export", "s3://lake/fleets/", "--out", to.to_str().unwrap()];
        args.extend(["--partition-by", "server"]);
        if let Some(c) = cluster {
            args.extend(["--cluster", c]);
        }
        s3.kvscope(args)
    };
    let (x, y) = (export(&la, None), export(&lb, Some(&cluster)));
    assert_eq!(x.status.code(), Some(2), "the broken session");
    assert_eq!(y.status.code(), x.status.code());
    assert_eq!(errors(&y), errors(&x));
    let (ta, tb) = (tree(&la), tree(&lb));
    assert_eq!(ta.len(), 52, "one file per server of both fleets");
    assert!(ta == tb, "the datasets differ");
}

/// Every file under `root`: relative path and bytes, in path order.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_worker_lost_mid_run_is_retried_or_nothing_is_written() {
    let s3 = S3Server::start(&["lake"]);
    fleet_on_s3(&s3, "lake/f", 50, 600);
    // The first worker dies when it starts its second shard (its first already sent):
    // the coordinator keeps the shards that completed and runs the rest on the other.
    let dying = worker(&s3, &[("KVSCOPE_WORKER_DIE_AFTER_UNITS", "1")]);
    let healthy = worker(&s3, &[]);
    let cluster = format!("{},{}", dying.url, healthy.url);
    let (_, log) = assert_cluster_equals_local(&s3, "s3://lake/f", &cluster, "2000");
    assert!(
        log.contains("attempt 1 failed"),
        "the lost worker was noticed: {log}"
    );

    // Batch doctor: four sessions, two per worker; the dying worker takes one down with
    // it, and that session is diagnosed on the other: the same table and reports.
    for k in 0..4 {
        fleet_on_s3(&s3, &format!("lake/batch/s{k}"), 2, 300);
    }
    let local = s3.kvscope(["doctor", "s3://lake/batch/"]);
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    let reports = |k: usize| read(&s3.object_path(&format!("lake/batch/s{k}")), "doctor.json");
    let before: Vec<Vec<u8>> = (0..4).map(reports).collect();
    let (dying, healthy) = (
        worker(&s3, &[("KVSCOPE_WORKER_DIE_AFTER_UNITS", "1")]),
        worker(&s3, &[]),
    );
    let dist = s3.kvscope([
        "doctor",
        "s3://lake/batch/",
        "--cluster",
        &format!("{},{}", dying.url, healthy.url),
    ]);
    let err = String::from_utf8_lossy(&dist.stderr);
    assert!(dist.status.success(), "{err}");
    assert!(err.contains("attempt 1 failed"), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&dist.stdout),
        String::from_utf8_lossy(&local.stdout)
    );
    assert!(before == (0..4).map(reports).collect::<Vec<_>>());

    // Every worker dies: a clear error, non-zero exit, and no output written as complete.
    let d1 = worker(&s3, &[("KVSCOPE_WORKER_DIE_AFTER_UNITS", "1")]);
    let d2 = worker(&s3, &[("KVSCOPE_WORKER_DIE_AFTER_UNITS", "1")]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = s3.kvscope([
        "analyze",
        "s3://lake/f",
        "--out",
        out.to_str().unwrap(),
        "--chunk-rows",
        "2000",
        "--cluster",
        &format!("{},{}", d1.url, d2.url),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    // (Whether the last attempt found no worker answering, or one that died under it.)
    assert!(
        err.contains("error: --cluster: none of the workers answers")
            || (err.contains("units not completed after 3 attempts; nothing written")),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert_eq!(left, vec![0], "nothing written in {}", out.display());

    // Bad --cluster values and a dead address are named.
    let o = s3.kvscope(["analyze", "s3://lake/f", "--cluster", "localhost"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--cluster localhost: not a worker URL"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = s3.kvscope([
        "doctor",
        "s3://lake/f",
        "--cluster",
        &format!("127.0.0.1:{port}"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("none of the workers answers"));
    let o = crate::common::kvscope(["worker", "--listen", "nowhere"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--listen nowhere: not an address"));
}
