//! Register a KVScope session in your own DataFusion `SessionContext` and run ad-hoc SQL.
//!
//! ```sh
//! cargo run --example adhoc_sql              # records a simulated session first
//! cargo run --example adhoc_sql -- SESSION   # or use yours
//! ```
//!
//! The example checks its own output: the share of samples above 95 % KV usage that it
//! computes with plain SQL must equal the SATURATED-or-worse share KVScope reports.

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use kvscope::analysis::{self, Thresholds};
use kvscope::sim::{self, scenario};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile_dir();
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let run =
                sim::OfflineRun::new(scenario::scenario("kv-saturation").ok_or("scenario")?, 1);
            sim::record_offline(&run, &tmp.join("session"), "example")?
        }
    };

    // Your own context: the session is just Parquet.
    let ctx = SessionContext::new();
    let path = dir.join("samples.parquet");
    ctx.register_parquet(
        "samples",
        path.to_string_lossy().as_ref(),
        ParquetReadOptions::default(),
    )
    .await?;
    let df = ctx
        .sql(
            "SELECT server,
                    COUNT(*) AS samples,
                    ROUND(MAX(kv_cache_usage_pct), 1) AS kv_max_pct,
                    SUM(CASE WHEN kv_cache_usage_pct >= 95 THEN 1 ELSE 0 END) AS samples_kv_ge_95,
                    MAX(preemptions_total) AS preemptions
             FROM samples GROUP BY server ORDER BY server",
        )
        .await?;
    df.clone().show().await?;

    // Cross-check with KVScope's own analysis (whose phases are debounced, so allow a
    // couple of samples of difference).
    let batches = df.collect().await?;
    let ours = analysis::analyze_dir(&dir, &Thresholds::default()).await?;
    let saturated = ours.summary.servers[0]
        .phases
        .get(&kvscope::vocab::Phase::Saturated)
        .map_or(0, |p| p.samples) as i64;
    let col = batches[0]
        .column_by_name("samples_kv_ge_95")
        .ok_or("column")?
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .ok_or("type")?
        .value(0);
    println!("plain SQL: {col} samples at ≥95 % KV; kvscope: {saturated} samples SATURATED");
    assert!((col - saturated).abs() <= 6, "{col} vs {saturated}");
    Ok(())
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kvscope-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::create_dir_all(&d);
    d
}
