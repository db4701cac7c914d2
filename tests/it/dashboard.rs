//! Dashboard: render snapshots at both densities from recorded samples, `--once` against
//! the simulator, and the same phases as `analyze`.

use std::process::{Command, Stdio};

use kvscope::analysis::{self, Thresholds};
use kvscope::present::dashboard::render_text;
use kvscope::present::dashboard::state::{Density, ServerPane, State};
use kvscope::store;

use crate::common::Bounded;
use crate::common::{bin, block_on, record_scenario};

fn state_from_session(name: &str, density: Density) -> State {
    let (_tmp, dir) = record_scenario(name, 1);
    let rows = store::read_samples_jsonl(&dir.join(store::SAMPLES_JSONL)).unwrap();
    let mut pane = ServerPane::new("sim:8000", "http://sim:8000/metrics");
    // Feed scrape by scrape, as the live loop does, keeping a 300 s window.
    for r in rows {
        pane.push(vec![r], 300.0);
    }
    let window: Vec<_> = pane.rows.iter().cloned().collect();
    pane.analysis = Some(block_on(analysis::analyze_rows(window, &Thresholds::default())).unwrap());
    State::new(vec![pane], density)
}

#[test]
fn render_snapshots_compact_and_full() {
    let compact = render_text(
        &state_from_session("kv-saturation", Density::Compact),
        80,
        24,
    );
    assert!(compact.contains("phase SATURATED"), "{compact}");
    insta::assert_snapshot!("dashboard_compact_kv_saturation", compact);
    let full = render_text(
        &state_from_session("queue-pressure", Density::Full),
        120,
        40,
    );
    assert!(
        full.contains("engines") && full.contains("latency"),
        "{full}"
    );
    insta::assert_snapshot!("dashboard_full_queue_pressure", full);
}

#[test]
fn dashboard_phases_equal_analyze_phases() {
    let (_tmp, dir) = record_scenario("mixed-incident", 2);
    let files = crate::common::analyze_with_series(&dir);
    let rows = store::read_samples_jsonl(&dir.join(store::SAMPLES_JSONL)).unwrap();
    let mut pane = ServerPane::new("sim:8000", "");
    for r in rows {
        pane.push(vec![r], 10_000.0);
    }
    let live = block_on(analysis::analyze_rows(
        pane.rows.iter().cloned().collect(),
        &Thresholds::default(),
    ))
    .unwrap();
    let a: Vec<_> = files.series.iter().map(|p| p.phase).collect();
    let b: Vec<_> = live.series.iter().map(|p| p.phase).collect();
    assert_eq!(a.len(), 91);
    assert_eq!(a, b);
    pane.analysis = Some(live);
    assert_eq!(pane.phase(), files.series.last().and_then(|p| p.phase));
}

#[test]
fn once_against_the_simulator() {
    let (mut sim, url) = crate::common::spawn_simulator("queue-pressure", 20.0);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let o = Command::new(bin())
        .args([
            "dashboard",
            "--server",
            &url,
            "--once",
            "--interval",
            "200ms",
        ])
        .bounded_output()
        .unwrap();
    let dead = Command::new(bin())
        .args([
            "dashboard",
            "--server",
            "http://127.0.0.1:9",
            "--once",
            "--interval",
            "100ms",
            "--timeout",
            "300ms",
        ])
        .bounded_output()
        .unwrap();
    let _ = sim.kill();
    let _ = sim.wait();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("sim-llama-8b") && text.contains("phase QUEUE_PRESSURE"),
        "{text}"
    );
    let text = String::from_utf8_lossy(&dead.stdout);
    assert!(text.contains("no data since"), "{text}");
    // Without a terminal and without --once it refuses clearly.
    let o = Command::new(bin())
        .args(["dashboard", "--server", "http://127.0.0.1:9"])
        .stdin(Stdio::null())
        .bounded_output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--once"));
}

/// The dashboard runs `record`'s pipeline: driven well past its window against the
/// simulator while recording with `r`, its relative time keeps running from the start,
/// its live (plans-made-once) analysis of the window gives the same phases as `analyze`
/// of the same rows, and the recorded files hold exactly the rows it showed.
#[test]
fn dashboard_past_its_window_matches_analyze_and_its_recording() {
    use kvscope::present::dashboard::{DashboardConfig, Live};
    use kvscope::record::Target;
    let (mut sim, url) = crate::common::spawn_simulator("mixed-incident", 30.0);
    let tmp = tempfile::tempdir().unwrap();
    let window_s = 40.0;
    let server = Target::parse(&url).unwrap();
    let mut gpu = Target::parse(&format!("{url}/dcgm/metrics")).unwrap();
    gpu.gpu_for = Some(server.label.clone());
    let cfg = DashboardConfig {
        targets: vec![server],
        gpu_targets: vec![gpu],
        interval: std::time::Duration::from_millis(100),
        timeout: std::time::Duration::from_secs(2),
        density: Density::Compact,
        window_s,
        sessions_dir: tmp.path().to_path_buf(),
        bearer: None,
    };
    let (pane, dir) = block_on(async {
        let mut live = Live::new(cfg).await.unwrap();
        live.toggle_recording().unwrap();
        // ~3 simulated seconds per round: 60 rounds are ~180 s, past the 40 s window.
        for _ in 0..60 {
            live.round().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let dir = live.finish().unwrap().expect("a recording was running");
        (live.state.panes[0].clone(), dir)
    });
    let _ = sim.kill();
    let _ = sim.wait();
    let rows: Vec<_> = pane.rows.iter().cloned().collect();
    let first = rows.first().unwrap();
    let last = rows.last().unwrap();
    // Relative time from the start, not from the window's edge.
    assert!(first.t_rel_sec > 60.0, "t_rel {}", first.t_rel_sec);
    // The simulator's DCGM exporter, scraped in the same rounds, fills the GPU columns.
    assert!(
        rows.iter().all(|r| r.gpu_sm_clock_mhz == Some(1980.0)),
        "{:?}",
        rows.iter().map(|r| r.gpu_sm_clock_mhz).collect::<Vec<_>>()
    );
    assert!(
        (last.t_rel_sec - first.t_rel_sec) <= window_s + 1e-6,
        "window {} … {}",
        first.t_rel_sec,
        last.t_rel_sec
    );
    let live = pane.analysis.as_ref().expect("analysed");
    let batch = block_on(analysis::analyze_rows(rows.clone(), &Thresholds::default())).unwrap();
    let phases =
        |a: &analysis::Analysis| a.series.iter().map(|p| (p.ts, p.phase)).collect::<Vec<_>>();
    assert!(live.series.len() >= 10, "{} points", live.series.len());
    assert_eq!(phases(live), phases(&batch));
    assert_eq!(live.summary.servers, batch.summary.servers);
    // The recording holds the window's rows, identical (same pipeline, same t0).
    let recorded = store::read_samples_jsonl(&dir.join(store::SAMPLES_JSONL)).unwrap();
    let in_window: Vec<_> = recorded
        .iter()
        .filter(|r| r.ts >= first.ts)
        .cloned()
        .collect();
    assert_eq!(in_window, rows);
    let from_files = block_on(analysis::analyze_rows(in_window, &Thresholds::default())).unwrap();
    assert_eq!(phases(&from_files), phases(live));
}
