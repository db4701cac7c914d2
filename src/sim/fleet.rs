//! A fast synthetic fleet generator for scale tests and benches: N servers × S seconds
//! at 1 Hz of the core columns (ts, server, KV %, running, waiting, per-second rates,
//! TTFT/E2E p95) in one `samples.parquet`.
//!
//! It is not the scheduler model (simulating 10⁷ server-seconds step by step would take
//! hours); each server follows a load random walk with incidents drawn at random:
//! KV saturation with preemption, queue build-ups and TTFT spikes, so every query path
//! of the analyzer has work to do.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::store::{self, StoreError};

/// Schema of a generated fleet session (the core columns).
pub fn fleet_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("server", DataType::Utf8, false),
        Field::new("kv_cache_usage_pct", DataType::Float64, true),
        Field::new("requests_running", DataType::Int64, true),
        Field::new("requests_waiting", DataType::Int64, true),
        Field::new("preemptions_per_s", DataType::Float64, true),
        Field::new("prompt_tokens_per_s", DataType::Float64, true),
        Field::new("generation_tokens_per_s", DataType::Float64, true),
        Field::new("ttft_p95_s", DataType::Float64, true),
        Field::new("e2e_p95_s", DataType::Float64, true),
    ]))
}

/// Generates `servers × seconds` rows into `dir/samples.parquet`, server-major.
pub fn generate(dir: &Path, servers: usize, seconds: usize, seed: u64) -> Result<u64, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let path = dir.join(store::SAMPLES_PARQUET);
    let schema = fleet_schema();
    let mut rng = SmallRng::seed_from_u64(seed);
    let t0: i64 = 1_800_000_000_000_000;
    let mut rows = 0u64;
    // Batches of whole servers, about 1M rows each, to bound memory.
    let per_batch = (1_000_000 / seconds.max(1)).max(1);
    let mut start = 0;
    let file = std::fs::File::create(&path).map_err(|e| StoreError::io(&path, e))?;
    // Rows are written server-major, each server in time order: say so in the file, so
    // readers (DataFusion infers it from `sorting_columns`) need not sort 10⁷ rows.
    let sorted_by = |column_idx: i32| parquet::file::metadata::SortingColumn {
        column_idx,
        descending: false,
        nulls_first: false,
    };
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_sorting_columns(Some(vec![sorted_by(1), sorted_by(0)]))
        .build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| {
            StoreError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            }
        })?;
    while start < servers {
        let end = (start + per_batch).min(servers);
        let n = (end - start) * seconds;
        let mut ts = Vec::with_capacity(n);
        let mut server = Vec::with_capacity(n);
        let mut kv = Vec::with_capacity(n);
        let mut run = Vec::with_capacity(n);
        let mut wait = Vec::with_capacity(n);
        let mut pre = Vec::with_capacity(n);
        let mut ptps = Vec::with_capacity(n);
        let mut gtps = Vec::with_capacity(n);
        let mut ttft = Vec::with_capacity(n);
        let mut e2e = Vec::with_capacity(n);
        for s in start..end {
            let name = format!("srv-{s:04}:8000");
            let mut load: f64 = rng.random_range(0.1..0.6);
            let mut incident = 0usize;
            let mut kind = 0u8;
            for t in 0..seconds {
                load = (load + rng.random_range(-0.02..0.02)).clamp(0.0, 0.9);
                if incident == 0 && rng.random::<f64>() < 0.002 {
                    incident = rng.random_range(10..120);
                    kind = rng.random_range(0..3);
                }
                let (mut k, mut r, mut wq, mut p, mut tt) = (
                    load * 90.0,
                    (load * 64.0).round(),
                    0.0,
                    0.0,
                    0.05 + load * 0.1,
                );
                if incident > 0 {
                    incident -= 1;
                    match kind {
                        0 => {
                            k = 96.0 + rng.random_range(0.0..4.0);
                            p = rng.random_range(0.0..4.0);
                            wq = rng.random_range(5.0..40.0);
                            tt = rng.random_range(2.0..10.0);
                        }
                        1 => {
                            wq = rng.random_range(10.0..200.0);
                            r = 64.0;
                            tt = rng.random_range(1.0..5.0);
                        }
                        _ => tt = rng.random_range(1.0..3.0),
                    }
                }
                ts.push(t0 + t as i64 * 1_000_000);
                server.push(name.clone());
                kv.push(k.min(100.0));
                run.push(r as i64);
                wait.push(wq as i64);
                pre.push(p);
                ptps.push(r * rng.random_range(40.0..80.0));
                gtps.push(r * rng.random_range(20.0..40.0) / (1.0 + p));
                ttft.push(tt);
                e2e.push(tt + rng.random_range(1.0..4.0));
            }
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(StringArray::from(server)),
            Arc::new(Float64Array::from(kv)),
            Arc::new(Int64Array::from(run)),
            Arc::new(Int64Array::from(wait)),
            Arc::new(Float64Array::from(pre)),
            Arc::new(Float64Array::from(ptps)),
            Arc::new(Float64Array::from(gtps)),
            Arc::new(Float64Array::from(ttft)),
            Arc::new(Float64Array::from(e2e)),
        ];
        let batch =
            RecordBatch::try_new(schema.clone(), cols).map_err(|e| StoreError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })?;
        rows += batch.num_rows() as u64;
        w.write(&batch).map_err(|e| StoreError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        start = end;
    }
    w.close().map_err(|e| StoreError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(rows)
}
