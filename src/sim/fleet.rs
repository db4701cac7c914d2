//! A fast synthetic fleet generator for scale tests and benches: N servers × S seconds
//! at 1 Hz of the core columns (ts, server, KV %, running, waiting, per-second rates,
//! TTFT/E2E p95) in one `samples.parquet`.
//!
//! It is not the scheduler model (simulating 10⁷ server-seconds step by step would take
//! hours). Two profiles ([`FleetProfile`]):
//! - `calm`: each server follows a load random walk with rare incidents drawn at random
//!   (KV saturation with preemption, queue build-ups, TTFT spikes);
//! - `busy`: each server switches regime every ~2 minutes (exponential durations) —
//!   idle 15 %, healthy 45 %, queueing 15 %, KV rising 15 %, saturated with preemption
//!   10 % — with noisy gauges and TTFT spikes: many phase changes, episodes and events,
//!   the worst case for memory that grows with the event count.
//!
//! Both are deterministic for a seed.

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

/// How a generated fleet behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FleetProfile {
    /// A load random walk with rare incidents.
    #[default]
    Calm,
    /// Regime switches every ~2 minutes, noisy gauges, TTFT spikes.
    Busy,
}

/// One row's core values.
struct Row {
    kv: f64,
    running: f64,
    waiting: f64,
    preempt: f64,
    prompt_tps: f64,
    gen_tps: f64,
    ttft: f64,
    e2e: f64,
}

/// Per-server state of the busy profile.
struct Busy {
    regime: u8,
    left: u32,
    load: f64,
    queue: f64,
}

impl Busy {
    fn new() -> Self {
        Self {
            regime: 1,
            left: 0,
            load: 0.4,
            queue: 0.0,
        }
    }

    /// The next second: regimes idle 15 %, healthy 45 %, queueing 15 %, KV rising 15 %,
    /// saturated with preemption 10 %, each for an exponential ~120 s (at least 10 s).
    fn next(&mut self, rng: &mut SmallRng) -> Row {
        if self.left == 0 {
            let u: f64 = rng.random();
            self.regime = match u {
                u if u < 0.15 => 0,
                u if u < 0.60 => 1,
                u if u < 0.75 => 2,
                u if u < 0.90 => 3,
                _ => 4,
            };
            let exp = -120.0 * (1.0 - rng.random::<f64>()).ln();
            self.left = exp.clamp(10.0, 900.0) as u32;
            self.load = rng.random_range(0.2..0.7);
            self.queue = 0.0;
        }
        self.left -= 1;
        let noise = |rng: &mut SmallRng, a: f64| rng.random_range(-a..a);
        let (kv, running, waiting, preempt, mut ttft) = match self.regime {
            0 => (0.0, 0.0, 0.0, 0.0, 0.0),
            1 => {
                let w = if rng.random::<f64>() < 0.05 {
                    rng.random_range(1.0..3.0)
                } else {
                    0.0
                };
                (
                    self.load * 70.0 + noise(rng, 4.0),
                    (self.load * 64.0 + noise(rng, 4.0)).max(1.0),
                    w,
                    0.0,
                    0.05 + self.load * 0.1,
                )
            }
            2 => {
                self.queue = (self.queue + rng.random_range(-2.0..6.0)).clamp(3.0, 200.0);
                (
                    50.0 + noise(rng, 6.0),
                    64.0,
                    self.queue,
                    0.0,
                    rng.random_range(1.0..5.0),
                )
            }
            3 => (
                rng.random_range(80.0..94.0) + noise(rng, 3.0),
                rng.random_range(40.0..64.0),
                if rng.random::<f64>() < 0.3 {
                    rng.random_range(1.0..4.0)
                } else {
                    0.0
                },
                0.0,
                rng.random_range(0.2..0.8),
            ),
            _ => (
                rng.random_range(95.0..100.0),
                rng.random_range(30.0..64.0),
                rng.random_range(5.0..60.0),
                rng.random_range(0.0..5.0),
                rng.random_range(2.0..10.0),
            ),
        };
        // TTFT spikes on top of any busy regime.
        if self.regime > 0 && rng.random::<f64>() < 0.01 {
            ttft *= rng.random_range(10.0..30.0);
        }
        let running = running.round();
        Row {
            kv: kv.clamp(0.0, 100.0),
            running,
            waiting: waiting.round(),
            preempt,
            prompt_tps: running * rng.random_range(40.0..80.0),
            gen_tps: running * rng.random_range(20.0..40.0) / (1.0 + preempt),
            ttft,
            e2e: ttft
                + if running > 0.0 {
                    rng.random_range(1.0..4.0)
                } else {
                    0.0
                },
        }
    }
}

/// Generates `servers × seconds` rows of the calm profile into `dir/samples.parquet`.
pub fn generate(dir: &Path, servers: usize, seconds: usize, seed: u64) -> Result<u64, StoreError> {
    generate_profile(dir, servers, seconds, seed, FleetProfile::Calm)
}

/// Generates `servers × seconds` rows into `dir/samples.parquet`, server-major.
pub fn generate_profile(
    dir: &Path,
    servers: usize,
    seconds: usize,
    seed: u64,
    profile: FleetProfile,
) -> Result<u64, StoreError> {
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
            if profile == FleetProfile::Busy {
                let mut b = Busy::new();
                for t in 0..seconds {
                    let r = b.next(&mut rng);
                    ts.push(t0 + t as i64 * 1_000_000);
                    server.push(name.clone());
                    kv.push(r.kv);
                    run.push(r.running as i64);
                    wait.push(r.waiting as i64);
                    pre.push(r.preempt);
                    ptps.push(r.prompt_tps);
                    gtps.push(r.gen_tps);
                    ttft.push(r.ttft);
                    e2e.push(r.e2e);
                }
                continue;
            }
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
