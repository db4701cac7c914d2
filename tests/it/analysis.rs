//! Analysis over legacy and partial sessions, episode properties, thresholds.

use kvscope::analysis::{self, Thresholds};
use kvscope::present::timeline::{self, TimelineOptions};
use kvscope::store::{self, events::Event, schema::Sample};
use kvscope::vocab::Phase;
use proptest::prelude::*;

use crate::common::{block_on, record_scenario};

#[test]
fn legacy_session_without_parquet_analyses_from_jsonl_and_csv() {
    let (_tmp, dir) = record_scenario("mixed-incident", 1);
    let full = block_on(analysis::analyze_dir(&dir, &Thresholds::default())).unwrap();
    std::fs::remove_file(dir.join(store::SAMPLES_PARQUET)).unwrap();
    std::fs::remove_file(dir.join(store::HISTOGRAMS_PARQUET)).unwrap();
    let from_jsonl = block_on(analysis::analyze_dir(&dir, &Thresholds::default())).unwrap();
    assert_eq!(from_jsonl.events, full.events);
    assert!(
        !dir.join(store::SAMPLES_PARQUET).exists(),
        "analysis must not rewrite a legacy session"
    );
    std::fs::remove_file(dir.join(store::SAMPLES_JSONL)).unwrap();
    let from_csv = block_on(analysis::analyze_dir(&dir, &Thresholds::default())).unwrap();
    assert_eq!(from_csv.events, full.events);
    assert_eq!(
        from_csv.summary.servers[0].phases,
        full.summary.servers[0].phases
    );
    // No histograms: session quantiles are missing and said to be.
    assert!(
        from_csv
            .summary
            .data_quality
            .missing_histograms
            .contains(&"ttft_s".to_string())
    );
}

#[test]
fn legacy_prefill_pressure_phase_is_shown() {
    let events: Vec<Event> = serde_json::from_str::<Vec<Event>>(
        r#"[{"type":"phase","ts":"2025-01-01T00:00:01Z","t_rel_sec":1.0,"server":"old:8000","phase":"HEALTHY"},
            {"type":"phase","ts":"2025-01-01T00:00:09Z","t_rel_sec":9.0,"server":"old:8000","phase":"PREFILL_PRESSURE"}]"#,
    )
    .unwrap();
    let text = timeline::render(&events, &TimelineOptions::default());
    assert!(text.contains("PREFILL_PRESSURE"), "{text}");
    let doc = timeline::doc(&events, &TimelineOptions::default());
    assert_eq!(doc.phases.len(), 2);
}

#[test]
fn core_only_parquet_session() {
    use datafusion::arrow::array::{
        Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let n = 120;
    let ts: Vec<i64> = (0..n)
        .map(|i| 1_800_000_000_000_000 + i * 1_000_000)
        .collect();
    let kv: Vec<f64> = (0..n)
        .map(|i| if (40..80).contains(&i) { 97.0 } else { 30.0 })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("server", DataType::Utf8, false),
        Field::new("kv_cache_usage_pct", DataType::Float64, true),
        Field::new("requests_running", DataType::Int64, true),
        Field::new("requests_waiting", DataType::Int64, true),
        Field::new("generation_tokens_per_s", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(StringArray::from(vec!["core:1"; n as usize])),
            Arc::new(Float64Array::from(kv)),
            Arc::new(Int64Array::from(vec![8; n as usize])),
            Arc::new(Int64Array::from(
                (0..n)
                    .map(|i| if (40..80).contains(&i) { 3 } else { 0 })
                    .collect::<Vec<i64>>(),
            )),
            Arc::new(Float64Array::from(vec![500.0; n as usize])),
        ],
    )
    .unwrap();
    store::write_batches_parquet(&tmp.path().join(store::SAMPLES_PARQUET), &[batch]).unwrap();
    let a = block_on(analysis::analyze_dir(tmp.path(), &Thresholds::default())).unwrap();
    let s = &a.summary.servers[0];
    assert_eq!(s.samples, 120);
    assert!(
        (s.phases[&Phase::Saturated].seconds - 40.0).abs() <= 1.0,
        "{:?}",
        s.phases
    );
    let sat: Vec<_> = a
        .events
        .iter()
        .filter(|e| e.event.as_deref() == Some("KV_SATURATION"))
        .collect();
    assert_eq!(sat.len(), 1);
    assert_eq!(sat[0].t_rel_sec, 40.0);
    // Time-weighted figures without an interval_s column: each sample stands for the
    // second since the one before it (40 samples of 1 s waiting with KV at 97 %).
    assert_eq!(s.kv_wait_s, 40.0);
}

#[test]
fn missing_core_column_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(store::SAMPLES_CSV), "ts,server\n1,a\n").unwrap();
    let err = block_on(analysis::analyze_dir(tmp.path(), &Thresholds::default()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metrics.csv") && err.contains("kv_cache_usage_pct"),
        "{err}"
    );
}

#[test]
fn thresholds_change_results_and_are_recorded() {
    let (_tmp, dir) = record_scenario("mixed-incident", 1);
    let strict = Thresholds {
        kv_saturated_pct: 101.0,
        ..Thresholds::default()
    };
    let a = block_on(analysis::analyze_dir(&dir, &strict)).unwrap();
    assert!(!a.summary.servers[0].phases.contains_key(&Phase::Saturated));
    assert_eq!(a.summary.thresholds["kv_saturated_pct"], 101.0);
}

fn rows_from_waiting(waiting: &[bool]) -> Vec<Sample> {
    waiting
        .iter()
        .enumerate()
        .map(|(i, w)| Sample {
            ts: 1_800_000_000_000_000 + i as i64 * 1_000_000,
            t_rel_sec: i as f64,
            server: "p:1".into(),
            model_name: "m".into(),
            engine: "0".into(),
            scrape_ok: true,
            interval_s: (i > 0).then_some(1.0),
            kv_cache_usage_pct: Some(20.0),
            requests_running: Some(4),
            requests_waiting: Some(if *w { 5 } else { 0 }),
            generation_tokens_per_s: Some(100.0),
            ..Default::default()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn episodes_respect_min_duration_merge_gap_and_do_not_overlap(pattern in proptest::collection::vec(any::<bool>(), 20..90)) {
        // Runs of length 1-6 so gaps and short islands are common.
        let mut waiting = Vec::new();
        for (i, on) in pattern.iter().enumerate() {
            let len = 1 + (i * 7 % 6);
            waiting.extend(std::iter::repeat_n(*on, len));
        }
        let th = Thresholds::default();
        let a = block_on(analysis::analyze_rows(rows_from_waiting(&waiting), &th)).unwrap();
        let mut eps: Vec<&Event> = a.events.iter().filter(|e| e.kind == "condition_episode" && e.condition.as_deref() == Some("QUEUE_DELAY")).collect();
        eps.sort_by(|x, y| x.t_rel_sec.partial_cmp(&y.t_rel_sec).unwrap());
        for e in &eps {
            prop_assert!(e.duration_sec.unwrap() >= th.episode_min_s);
        }
        for w in eps.windows(2) {
            let end_prev = w[0].t_rel_sec + w[0].duration_sec.unwrap();
            prop_assert!(w[1].t_rel_sec > end_prev + th.episode_merge_gap_s - 1e-9, "overlap or unmerged gap: {:?}", w);
        }
    }
}

#[test]
fn schema_doc_lists_every_column() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema.md"),
    )
    .unwrap();
    for c in kvscope::store::schema::COLUMNS {
        assert!(
            doc.contains(&format!("| `{}` |", c.name)),
            "docs/schema.md lacks {}",
            c.name
        );
    }
}

/// Big sessions are analysed in chunks of whole servers; the result must not depend on
/// where the chunks are cut (every query partitions by server).
#[test]
fn chunked_analysis_equals_whole_session_analysis() {
    use analysis::AnalyzeOptions;
    let tmp = tempfile::tempdir().unwrap();
    let th = Thresholds::default();
    let run_with = |dir: &std::path::Path, chunk: usize, workers: Option<usize>| {
        block_on(analysis::analyze_dir_with(
            dir,
            &th,
            AnalyzeOptions {
                series: true,
                chunk_rows: Some(chunk),
                chunk_workers: workers,
            },
        ))
        .unwrap()
    };
    let run = |dir: &std::path::Path, chunk: usize| run_with(dir, chunk, None);
    let assert_same_events_and_summary = |a: &analysis::Analysis, b: &analysis::Analysis| {
        assert_eq!(a.events, b.events);
        assert_eq!(
            serde_json::to_value(&a.summary).unwrap(),
            serde_json::to_value(&b.summary).unwrap()
        );
    };
    let assert_same = |a: &analysis::Analysis, b: &analysis::Analysis| {
        assert_same_events_and_summary(a, b);
        assert_eq!(a.series, b.series);
    };
    // A fleet: 12 servers × 900 s, cut into ~6 chunks.
    let fleet = tmp.path().join("fleet");
    kvscope::sim::fleet::generate(&fleet, 12, 900, 7).unwrap();
    let whole = run(&fleet, usize::MAX);
    let chunked = run(&fleet, 2000);
    assert_eq!(whole.summary.servers.len(), 12);
    assert!(whole.events.len() > 50, "{} events", whole.events.len());
    assert_same(&whole, &chunked);
    // The busy profile (a regime switch every ~2 minutes, noisy gauges): many more
    // phase changes, episodes and events per chunk.
    let busy = tmp.path().join("busy");
    kvscope::sim::fleet::generate_profile(
        &busy,
        12,
        900,
        7,
        kvscope::sim::fleet::FleetProfile::Busy,
    )
    .unwrap();
    let whole = run(&busy, usize::MAX);
    let chunked = run(&busy, 2000);
    assert!(whole.events.len() > 400, "{} events", whole.events.len());
    let episodes: u64 = whole.summary.servers.iter().map(|s| s.trouble_count).sum();
    assert!(episodes >= 15, "{episodes} episodes of trouble");
    assert_same(&whole, &chunked);
    // One data-parallel server (2 engines) bigger than a chunk: one chunk, same result.
    let sc = kvscope::sim::scenario::scenario("mixed-incident").unwrap();
    let dp = tmp.path().join("dp");
    let off = kvscope::sim::OfflineRun {
        engines: 2,
        server: "dp:8000".into(),
        ..kvscope::sim::OfflineRun::new(sc, 4)
    };
    kvscope::sim::record_offline(&off, &dp, "dp").unwrap();
    let whole = run(&dp, usize::MAX);
    let chunked = run(&dp, 10);
    assert_eq!(whole.summary.servers[0].engines, 2);
    assert_same_events_and_summary(&whole, &chunked);
    // Servers with one and with two engines in one session, a chunk each: plans made on
    // a chunk that takes one `units` query are re-used on chunks that take the other
    // (with one worker, certainly: it sees every chunk).
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    let mut jsonl = String::new();
    for (i, (name, engines)) in [("a", 1), ("b", 2), ("c", 1), ("d", 2), ("e", 1), ("f", 2)]
        .into_iter()
        .enumerate()
    {
        let dir = tmp.path().join(format!("part-{name}"));
        let off = kvscope::sim::OfflineRun {
            engines,
            seconds: Some(240.0),
            server: format!("{name}:8000"),
            ..kvscope::sim::OfflineRun::new(
                kvscope::sim::scenario::scenario("mixed-incident").unwrap(),
                i as u64,
            )
        };
        kvscope::sim::record_offline(&off, &dir, name).unwrap();
        jsonl.push_str(&std::fs::read_to_string(dir.join("samples.jsonl")).unwrap());
    }
    std::fs::write(mixed.join("samples.jsonl"), jsonl).unwrap();
    let whole = run(&mixed, usize::MAX);
    let chunked = run(&mixed, 100);
    let one_worker = run_with(&mixed, 100, Some(1));
    let engines: Vec<u64> = whole.summary.servers.iter().map(|s| s.engines).collect();
    assert_eq!(engines, [1, 2, 1, 2, 1, 2]);
    assert!(whole.events.len() > 20, "{} events", whole.events.len());
    assert_same(&whole, &chunked);
    assert_same(&whole, &one_worker);
}

/// One slow request in an otherwise quiet interval: vLLM's TTFT buckets put a 1.01 s first
/// token in (1, 2.5], which `histogram_quantile` reads as p95 2.43 s. With fewer than
/// `quantile_min_count` observations the analysis uses what the buckets prove (> 1 s), so
/// no TTFT_ELEVATED (≥ 2 s) — at a 1 s or a 5 s interval. (Against a 50 ms baseline a
/// proven 1 s is still a TTFT_SPIKE, and rightly so.)
#[test]
fn a_one_request_interval_never_makes_ttft_elevated() {
    for interval in [1.0, 5.0] {
        let (_tmp, dir) = crate::common::record_scenario_at("healthy", 1, interval, |_| {});
        let mut rows = store::read_samples_jsonl(&dir.join(store::SAMPLES_JSONL)).unwrap();
        let n = rows.len();
        for r in rows.iter_mut().skip(n / 2).take(3) {
            r.ttft_count = Some(1);
            r.ttft_p95_s = Some(2.425);
            r.ttft_p95_floor_s = Some(1.0);
        }
        let a = block_on(kvscope::analysis::analyze_rows(
            rows.clone(),
            &Thresholds::default(),
        ))
        .unwrap();
        let hit = |a: &kvscope::analysis::Analysis| {
            a.events
                .iter()
                .any(|e| e.condition.as_deref() == Some("TTFT_ELEVATED"))
        };
        assert!(!hit(&a), "{interval} s: one request made TTFT evidence");
        // With enough observations the same p95 is evidence.
        for r in rows.iter_mut().skip(n / 2).take(3) {
            r.ttft_count = Some(20);
        }
        let a = block_on(kvscope::analysis::analyze_rows(
            rows,
            &Thresholds::default(),
        ))
        .unwrap();
        assert!(hit(&a), "{interval} s: 20 requests at 2.4 s are evidence");
    }
}
