//! `kvscope report`: self-contained HTML, rendered by a real headless Chromium (Debian's
//! package; `scripts/test.sh` installs it) with networking off.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::Bounded;
use crate::common::{kvscope, record_scenario, record_scenario_at};

fn chromium() -> &'static str {
    let p = "/usr/bin/chromium";
    assert!(
        Path::new(p).exists(),
        "Chromium is not installed (scripts/test.sh installs Debian's `chromium`)"
    );
    p
}

/// Runs headless Chromium on `file` with every network path closed; `what` is
/// `--dump-dom` or `--screenshot=PNG`. Returns stdout.
fn headless(file: &Path, what: &str, profile: &Path) -> String {
    let o = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            // Any host lookup fails: a report that tried to fetch something would show it.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--window-size=1100,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(what)
        .arg(format!("file://{}", file.display()))
        .bounded_output()
        .expect("run chromium");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Nothing in the file makes a browser fetch anything: no script, stylesheet, image,
/// frame or font, every link an in-page anchor, every `url()` a local pattern. (A URL in
/// the text, such as the recorded server's, is fine.)
fn assert_self_contained(html: &str) {
    for bad in [
        "<script", "<link", "@import", "<img", "<iframe", "<object", "<embed", "src=",
    ] {
        assert!(!html.contains(bad), "{bad} in the report");
    }
    for (attr, local) in [("href=", "href='#"), ("url(", "url(#")] {
        let outside: Vec<&str> = html
            .match_indices(attr)
            .map(|(i, _)| &html[i..(i + 40).min(html.len())])
            .filter(|s| !s.starts_with(local))
            .collect();
        assert!(outside.is_empty(), "external references: {outside:?}");
    }
}

/// Records a simulator session into `tmp/name` with extra `simulate` flags.
fn simulated(tmp: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let dir = tmp.join(name);
    let o = kvscope(
        ["simulate", "--record-to", dir.to_str().unwrap()]
            .iter()
            .chain(flags),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir
}

fn report_of(dir: &Path) -> (PathBuf, String) {
    let o = kvscope(["report", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert_eq!(path, dir.join("report.html"));
    let html = std::fs::read_to_string(&path).unwrap();
    (path, html)
}

/// Writes a session's report and checks, in headless Chromium, that every chart and
/// each of `texts` is there. Used on the real capture too (`capture.rs`).
pub fn check_session_report(dir: &Path, texts: &[&str]) -> String {
    let (path, html) = report_of(dir);
    assert_self_contained(&html);
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(&path, "--dump-dom", profile.path());
    for panel in ["kv", "scheduler", "ttft", "itl", "tokens", "preemptions"] {
        assert!(
            dom.contains(&format!("id=\"panel-{panel}\"")),
            "no {panel} chart"
        );
    }
    for t in texts {
        assert!(dom.contains(t), "no `{t}` in the rendered report");
    }
    html
}

#[test]
fn session_report_renders_offline_with_every_section() {
    let (_tmp, dir) = record_scenario("mixed-incident", 1);
    let html = check_session_report(
        &dir,
        &[
            "KV_CACHE_THRASHING",
            "--max-num-seqs",
            "class=\"band\"",
            "class=\"episode\"",
            "class=\"marker\"",
            "kv_saturated_pct 95",
        ],
    );
    insta::assert_json_snapshot!(
        "report_structure_mixed_incident",
        kvscope::present::report::structure(&html)
    );
    let path = dir.join("report.html");
    let profile = tempfile::tempdir().unwrap();
    let png = profile.path().join("shot.png");
    headless(
        &path,
        &format!("--screenshot={}", png.display()),
        profile.path(),
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    // A blank 1100×2400 page compresses to a few KB; charts and text do not.
    assert!(
        bytes.len() > 60_000,
        "screenshot looks blank: {} bytes",
        bytes.len()
    );
}

/// A 20-session fleet: every scenario, some twice with another seed and interval.
#[test]
fn fleet_report_ranks_servers_and_links_sections() {
    let tmp = tempfile::tempdir().unwrap();
    let mut keep = Vec::new();
    let names = kvscope::sim::scenario::NAMES;
    for i in 0..20 {
        let name = names[i % names.len()];
        let (seed, interval) = if i < names.len() { (1, 1.0) } else { (2, 2.0) };
        let (t, dir) = record_scenario_at(name, seed, interval, |_| {});
        std::fs::rename(&dir, tmp.path().join(format!("{i:02}-{name}"))).unwrap();
        keep.push(t);
    }
    let out = tmp.path().join("fleet.html");
    let o = kvscope([
        "report",
        tmp.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&out).unwrap();
    assert_self_contained(&html);
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(&out, "--dump-dom", profile.path());
    assert_eq!(dom.matches("class=\"spark\"").count(), 20);
    assert_eq!(dom.matches("<section").count(), 20);
    // Ranked by severity: high rows first, the healthy and idle sessions last.
    let table = &dom[dom.find("class=\"fleet\"").unwrap()..dom.find("<section").unwrap()];
    let rows: Vec<&str> = table.split("<tr>").skip(2).collect();
    assert!(rows[0].contains("sev-high"), "{}", rows[0]);
    let rank = |r: &str| {
        ["sev-high", "sev-medium", "sev-low", "sev-info"]
            .iter()
            .position(|s| r.contains(s))
    };
    let ranks: Vec<_> = rows.iter().map(|r| rank(r)).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    for i in 0..20 {
        assert!(dom.contains(&format!("href=\"#s{i}-s0\"")));
        assert!(dom.contains(&format!("id=\"s{i}-s0\"")));
    }
}

/// `kvscope demo` ends by writing the report and saying where; it renders.
#[test]
fn the_demo_writes_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let o = kvscope([
        "demo",
        "--seconds",
        "40",
        "--speed",
        "20",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = dir.join("report.html");
    assert!(
        out.contains(&format!("Report:  {}", report.display())),
        "{out}"
    );
    assert!(report.is_file());
    check_session_report(&dir, &["Session", "KVScope incident report"]);
}

/// A data-parallel server: one line per engine in every chart, named in its title.
#[test]
fn data_parallel_engines_get_their_own_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--scenario", "kv-saturation", "--engines", "2"];
    let dir = simulated(tmp.path(), "dp", &flags);
    let html = check_session_report(&dir, &["engine 0", "engine 1"]);
    let s = kvscope::present::report::structure(&html);
    assert_eq!(s[".series"], 20, "10 lines per engine");
}

/// A day at 1 Hz stays a small file: the min/max envelope has one pair per pixel.
#[test]
fn a_day_at_one_hertz_is_under_3_mb() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = simulated(tmp.path(), "day", &["--fleet", "1", "--seconds", "86400"]);
    let (_, html) = report_of(&dir);
    assert!(html.len() < 3_000_000, "{} bytes", html.len());
    assert!(html.contains("id='panel-kv'"));
}

/// A fleet session (30 servers): charts for the 24 servers that matter most, the top
/// finding's server first, and a line saying so; a 1,000-server session made a 437 MB
/// page before.
#[test]
fn a_fleet_session_charts_the_servers_that_matter() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    crate::common::record_busy_fleet(&dir);
    let (_, html) = report_of(&dir);
    assert!(
        html.contains("Charts for the 24 of 30 servers the findings rank first"),
        "no note on the charted servers"
    );
    let charted: Vec<&str> = html
        .match_indices("<h3 id='session-s")
        .filter_map(|(i, _)| {
            let rest = html.get(i..)?;
            let name = rest.split('>').nth(1)?.split('<').next()?;
            Some(name)
        })
        .collect();
    assert_eq!(charted.len(), 24, "{charted:?}");
    let doctor = kvscope(["doctor", dir.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let top = v["hypotheses"][0]["server"].as_str().unwrap_or_default();
    assert_eq!(charted.first().copied(), Some(top));
    // Anchored by the server's place in the session (srv-0000 … srv-0029), as a fleet
    // report's table links it, not by its place among the charted.
    let k: usize = top
        .trim_start_matches("srv-")
        .trim_end_matches(":8000")
        .parse()
        .unwrap();
    assert!(
        html.contains(&format!("<h3 id='session-s{k}'>{top}</h3>")),
        "{top} not anchored as session-s{k}"
    );
}
