//! The session schema: every normalized sample column, defined once.
//!
//! The [`Sample`] struct, the column list written to `metadata.json`, the Arrow schema
//! and the Arrow conversion all come from the one table in `sample_columns!` below, so a
//! column cannot exist in one place and not another. Adding a column: one line here and a
//! bump of [`SCHEMA_VERSION`].

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// Version of the on-disk session format. Written into every file.
pub const SCHEMA_VERSION: u32 = 4;

/// Logical type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// UTC timestamp in microseconds.
    TimestampUs,
    Float64,
    Int64,
    Utf8,
    Boolean,
}

impl ColumnType {
    pub fn arrow(self) -> DataType {
        match self {
            Self::TimestampUs => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Float64 => DataType::Float64,
            Self::Int64 => DataType::Int64,
            Self::Utf8 => DataType::Utf8,
            Self::Boolean => DataType::Boolean,
        }
    }
}

/// One column's description, as written to `metadata.json`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Column {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    pub nullable: bool,
    pub unit: &'static str,
    pub meaning: &'static str,
}

macro_rules! col_rust_ty {
    (Ts) => { i64 };
    (F64) => { f64 };
    (Str) => { String };
    (Bool) => { bool };
    (OptF64) => { Option<f64> };
    (OptI64) => { Option<i64> };
    (OptStr) => { Option<String> };
}

macro_rules! col_meta {
    (Ts) => {
        (ColumnType::TimestampUs, false)
    };
    (F64) => {
        (ColumnType::Float64, false)
    };
    (Str) => {
        (ColumnType::Utf8, false)
    };
    (Bool) => {
        (ColumnType::Boolean, false)
    };
    (OptF64) => {
        (ColumnType::Float64, true)
    };
    (OptI64) => {
        (ColumnType::Int64, true)
    };
    (OptStr) => {
        (ColumnType::Utf8, true)
    };
}

macro_rules! col_array {
    (Ts, $rows:ident, $f:ident) => {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values($rows.iter().map(|r| r.$f))
                .with_timezone("UTC"),
        ) as ArrayRef
    };
    (F64, $rows:ident, $f:ident) => {
        Arc::new(Float64Array::from_iter_values($rows.iter().map(|r| r.$f))) as ArrayRef
    };
    (Str, $rows:ident, $f:ident) => {
        Arc::new(StringArray::from_iter_values(
            $rows.iter().map(|r| r.$f.as_str()),
        )) as ArrayRef
    };
    (Bool, $rows:ident, $f:ident) => {
        Arc::new(BooleanArray::from_iter($rows.iter().map(|r| Some(r.$f)))) as ArrayRef
    };
    (OptF64, $rows:ident, $f:ident) => {
        Arc::new(Float64Array::from_iter($rows.iter().map(|r| r.$f))) as ArrayRef
    };
    (OptI64, $rows:ident, $f:ident) => {
        Arc::new(Int64Array::from_iter($rows.iter().map(|r| r.$f))) as ArrayRef
    };
    (OptStr, $rows:ident, $f:ident) => {
        Arc::new(StringArray::from_iter(
            $rows.iter().map(|r| r.$f.as_deref()),
        )) as ArrayRef
    };
}

macro_rules! sample_columns {
    ($( $name:ident : $kind:ident, $unit:literal, $meaning:literal; )*) => {
        /// One normalized sample (`KVScopeSample`): one row per (scrape, server,
        /// model_name, engine). Units are in the names.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct Sample {
            $( pub $name: col_rust_ty!($kind), )*
        }

        /// Every column, in file order.
        pub const COLUMNS: &[Column] = &[
            $( Column {
                name: stringify!($name),
                kind: col_meta!($kind).0,
                nullable: col_meta!($kind).1,
                unit: $unit,
                meaning: $meaning,
            }, )*
        ];

        /// Converts rows to an Arrow batch with [`sample_schema`].
        pub fn samples_to_batch(rows: &[Sample]) -> RecordBatch {
            let columns: Vec<ArrayRef> = vec![ $( col_array!($kind, rows, $name), )* ];
            // The arrays are built from the same table as the schema, so this cannot fail.
            RecordBatch::try_new(sample_schema(), columns)
                .unwrap_or_else(|e| unreachable!("schema table out of sync: {e}"))
        }
    };
}

sample_columns! {
    ts: Ts, "µs since Unix epoch, UTC", "Scrape time (simulated time for `kvscope simulate`).";
    t_rel_sec: F64, "s", "Seconds since the session started.";
    server: Str, "", "Server label (the --server URL's host:port or --label).";
    model_name: Str, "", "Served model name (vLLM `model_name` label; Triton `model`).";
    engine: Str, "", "Engine-core index (vLLM `engine` label; \"0\" when not exposed).";
    scrape_ok: Bool, "", "False when the scrape failed; metric columns are then null.";
    scrape_ms: OptF64, "ms", "Scrape duration.";
    scrape_error: OptStr, "", "Why the scrape failed (refused, timeout, HTTP status, not metrics text).";
    interval_s: OptF64, "s", "Seconds since the previous sample of this series.";
    counter_reset: Bool, "", "A counter decreased since the previous sample (server restart).";
    kv_cache_usage_pct: OptF64, "% (0-100)", "KV-cache blocks held by live requests (vLLM exposes a 0-1 fraction; ×100 here).";
    requests_running: OptI64, "requests", "Requests in the running batch.";
    requests_waiting: OptI64, "requests", "Requests waiting to be scheduled (includes preempted ones).";
    requests_waiting_capacity: OptI64, "requests", "Waiting for KV/batch capacity (vLLM ≥0.20).";
    requests_waiting_deferred: OptI64, "requests", "Waiting on a transient constraint (vLLM ≥0.20).";
    requests_swapped: OptI64, "requests", "Swapped to CPU (V0 engines only).";
    preemptions_total: OptI64, "preemptions", "Cumulative preemptions as exposed.";
    preemptions_per_s: OptF64, "1/s", "Preemption rate over the interval (reset-aware).";
    prompt_tokens_total: OptI64, "tokens", "Cumulative prompt tokens (includes prefix-cache hits).";
    prompt_tokens_per_s: OptF64, "tokens/s", "Prompt-token rate over the interval.";
    prompt_tokens_cached_per_s: OptF64, "tokens/s", "Rate of prompt tokens served from the prefix cache.";
    generation_tokens_total: OptI64, "tokens", "Cumulative generated tokens.";
    generation_tokens_per_s: OptF64, "tokens/s", "Generation-token rate over the interval.";
    requests_finished_total: OptI64, "requests", "Cumulative finished requests, all finish reasons.";
    requests_finished_per_s: OptF64, "requests/s", "Finished-request rate over the interval.";
    requests_aborted_per_s: OptF64, "requests/s", "Aborted/errored-request rate over the interval.";
    prefix_cache_queries_total: OptI64, "tokens", "Cumulative prefix-cache lookups.";
    prefix_cache_hits_total: OptI64, "tokens", "Cumulative prefix-cache hits.";
    prefix_cache_hit_rate_pct: OptF64, "% (0-100)", "Prefix-cache hit rate over the interval.";
    ttft_p50_s: OptF64, "s", "Time to first token, median over the interval (histogram_quantile on bucket deltas).";
    ttft_p95_s: OptF64, "s", "Time to first token, p95 over the interval.";
    ttft_p99_s: OptF64, "s", "Time to first token, p99 over the interval.";
    ttft_p95_floor_s: OptF64, "s", "Lower edge of the bucket holding the interval's TTFT p95 rank: what the buckets prove when an interval has few observations (schema 2).";
    ttft_mean_s: OptF64, "s", "Time to first token, mean over the interval.";
    ttft_count: OptI64, "requests", "First tokens observed in the interval.";
    e2e_p50_s: OptF64, "s", "End-to-end request latency, median over the interval.";
    e2e_p95_s: OptF64, "s", "End-to-end request latency, p95 over the interval.";
    e2e_p99_s: OptF64, "s", "End-to-end request latency, p99 over the interval.";
    e2e_p95_floor_s: OptF64, "s", "Lower edge of the bucket holding the interval's E2E p95 rank (schema 2).";
    e2e_count: OptI64, "requests", "Requests finished in the interval (e2e observations).";
    itl_p50_s: OptF64, "s", "Inter-token latency, median over the interval.";
    itl_p95_s: OptF64, "s", "Inter-token latency, p95 over the interval.";
    itl_mean_s: OptF64, "s", "Inter-token latency, mean over the interval.";
    queue_time_p95_s: OptF64, "s", "Queue (WAITING) time, p95 over the interval (smallest vLLM bucket is 0.3 s).";
    queue_time_mean_s: OptF64, "s", "Queue time, mean over the interval.";
    prefill_time_p95_s: OptF64, "s", "Prefill time, p95 over the interval.";
    decode_time_p95_s: OptF64, "s", "Decode time, p95 over the interval.";
    iteration_tokens_p50: OptF64, "tokens", "Tokens per engine step, median over the interval.";
    iteration_tokens_mean: OptF64, "tokens", "Tokens per engine step, mean over the interval.";
    prompt_len_p95: OptF64, "tokens", "Prompt length of requests finished in the interval, p95.";
    gpu_util_pct: OptF64, "% (0-100)", "GPU utilization: share of time a kernel ran (DCGM `DCGM_FI_DEV_GPU_UTIL` from `record --gpu-metrics`, or nvidia-smi via `import nvidia-smi`); reads high for small and memory-bound kernels too.";
    gpu_mem_used_pct: OptF64, "% (0-100)", "GPU framebuffer used (when a GPU exporter is scraped).";
    engine_steps_per_s: OptF64, "steps/s", "Engine steps per second over the interval (count of vLLM's iteration-tokens histogram); zero with work present means no progress (schema 2).";
    process_start_time_s: OptF64, "s since Unix epoch", "Start time of the process serving /metrics (`process_start_time_seconds`); a change means a restart (schema 2).";
    requests_abandoned_per_s: OptF64, "requests/s", "Requests that left without finishing over the interval (clients disconnected, vLLM aborted them). Two books, each a lower bound of the requests that left since it started; the interval gets the growth of the larger: the engine's (the largest of the counted aborts, −Δ(running + waiting) − finished and first tokens − finished − preemptions − Δrunning) and the server's HTTP counter (2xx answers of the generation handlers, finished or abandoned, minus the requests vLLM finished; its highest value so far). On a data-parallel server the HTTP book's excess is shared among the engines in proportion to their own books (schema 2).";
    api_cpu_util_pct: OptF64, "% of one core", "CPU used by the process serving /metrics (vLLM's API server: HTTP, tokenization, detokenization) over the interval, from `process_cpu_seconds_total`; near 100 % it is saturated (one Python thread). V1's engine core is another process, not counted (schema 2).";
    gpu_sm_active_pct: OptF64, "% (0-100)", "Share of cycles an SM had a warp assigned, mean over SMs (DCGM `DCGM_FI_PROF_SM_ACTIVE`, a 0-1 ratio ×100): unlike utilization, a small or memory-bound step reads low (schema 3).";
    gpu_sm_occupancy_pct: OptF64, "% (0-100)", "Resident warps per SM over the maximum (DCGM `DCGM_FI_PROF_SM_OCCUPANCY` ×100) (schema 3).";
    gpu_tensor_active_pct: OptF64, "% (0-100)", "Cycles the tensor pipe was active (DCGM `DCGM_FI_PROF_PIPE_TENSOR_ACTIVE` ×100) (schema 3).";
    gpu_sm_clock_mhz: OptF64, "MHz", "SM clock (DCGM `DCGM_FI_DEV_SM_CLOCK`); below the boost clock under load means throttling (schema 3).";
    gpu_power_w: OptF64, "W", "Power draw per GPU (DCGM `DCGM_FI_DEV_POWER_USAGE`) (schema 3).";
    gpu_temp_c: OptF64, "°C", "GPU temperature (DCGM `DCGM_FI_DEV_GPU_TEMP`) (schema 3).";
    gpu_throttle: OptI64, "bitmask", "Clock-event (throttle) reasons, OR-ed over the engine's GPUs (DCGM `DCGM_FI_DEV_CLOCK_THROTTLE_REASONS` / `_CLOCKS_EVENT_REASONS`): 0x4 power cap, 0x8 HW slowdown, 0x20 SW thermal, 0x40 HW thermal, 0x80 power brake; 0x1 is merely idle (schema 3).";
    gpu_xid: OptI64, "XID code", "Last XID error reported by the driver (DCGM `DCGM_FI_DEV_XID_ERRORS`; 0 none), worst over the engine's GPUs (schema 3).";
    api_rss_mib: OptF64, "MiB", "Resident memory of the process serving /metrics (`process_resident_memory_bytes`) (schema 3).";
    kv_evictions_sampled: OptI64, "blocks", "Sampled KV blocks evicted in the interval (count of `vllm:kv_block_lifetime_seconds`, `--kv-cache-metrics`; only `--kv-cache-metrics-sample` of blocks are tracked, and vLLM 0.26-0.33 also counts blocks that were never cached) (schema 3).";
    kv_evictions_sampled_per_s: OptF64, "blocks/s", "Sampled KV block evictions per second over the interval; ÷ the sample rate for all blocks (schema 3).";
    kv_block_lifetime_p50_s: OptF64, "s", "Median allocation → eviction time of the blocks evicted in the interval (schema 3).";
    kv_block_idle_p50_s: OptF64, "s", "Median last access → eviction time of the blocks evicted in the interval: short means blocks still in use are thrown out (schema 3).";
    kv_block_reuse_gap_p50_s: OptF64, "s", "Median gap between consecutive accesses (prefix-cache hits) of the blocks evicted in the interval (schema 3).";
    kv_block_reuses: OptI64, "gaps", "Reuse gaps observed in the interval (count of `vllm:kv_block_reuse_gap_seconds`) (schema 3).";
    requests_rejected_per_s: OptF64, "requests/s", "Requests the API server turned away at admission over the interval, HTTP 503 (`vllm:admission_rejections_total`, vLLM ≥ 0.32, both reasons: `--max-num-queued-reqs`, `--max-num-queued-tokens`). The API server's count, without an `engine` label: on engine 0's row (schema 4).";
    quantile_flags: OptStr, "", "Quantiles clamped to the first (`lower`) or last finite (`upper`) bucket, e.g. `ttft_p99_s:upper`.";
}

/// The Arrow schema of [`Sample`] rows, with `schema_version` in its metadata.
pub fn sample_schema() -> SchemaRef {
    let fields: Vec<Field> = COLUMNS
        .iter()
        .map(|c| Field::new(c.name, c.kind.arrow(), c.nullable))
        .collect();
    Arc::new(
        Schema::new(fields)
            .with_metadata([("schema_version".to_string(), SCHEMA_VERSION.to_string())].into()),
    )
}

/// The core columns a session must have to be analysed; every other column may be absent
/// and is then treated as null.
pub const CORE_COLUMNS: &[&str] = &[
    "ts",
    "server",
    "kv_cache_usage_pct",
    "requests_running",
    "requests_waiting",
];

/// One raw histogram bucket row (`histograms.parquet`, long format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramRow {
    pub ts: i64,
    pub server: String,
    pub model_name: String,
    pub engine: String,
    /// Canonical vLLM family name without prefix, e.g. `time_to_first_token_seconds`.
    pub metric: String,
    pub le: f64,
    pub cumulative_count: f64,
    /// Reset-aware increase of this bucket since the previous scrape of the series.
    pub increase: f64,
    pub sum: f64,
    pub count: f64,
}

/// Arrow schema of [`HistogramRow`].
pub fn histogram_schema() -> SchemaRef {
    Arc::new(
        Schema::new(vec![
            Field::new("ts", ColumnType::TimestampUs.arrow(), false),
            Field::new("server", DataType::Utf8, false),
            Field::new("model_name", DataType::Utf8, false),
            Field::new("engine", DataType::Utf8, false),
            Field::new("metric", DataType::Utf8, false),
            Field::new("le", DataType::Float64, false),
            Field::new("cumulative_count", DataType::Float64, false),
            Field::new("increase", DataType::Float64, false),
            Field::new("sum", DataType::Float64, false),
            Field::new("count", DataType::Float64, false),
        ])
        .with_metadata([("schema_version".to_string(), SCHEMA_VERSION.to_string())].into()),
    )
}

/// Converts histogram rows to an Arrow batch.
pub fn histograms_to_batch(rows: &[HistogramRow]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        col_array!(Ts, rows, ts),
        col_array!(Str, rows, server),
        col_array!(Str, rows, model_name),
        col_array!(Str, rows, engine),
        col_array!(Str, rows, metric),
        col_array!(F64, rows, le),
        col_array!(F64, rows, cumulative_count),
        col_array!(F64, rows, increase),
        col_array!(F64, rows, sum),
        col_array!(F64, rows, count),
    ];
    RecordBatch::try_new(histogram_schema(), columns)
        .unwrap_or_else(|e| unreachable!("histogram schema out of sync: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_unique_and_units_in_names() {
        let mut names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), COLUMNS.len());
        for c in COLUMNS {
            if c.unit == "s" && c.name != "t_rel_sec" && c.name != "interval_s" {
                assert!(c.name.ends_with("_s"), "{} has unit s", c.name);
            }
            if c.unit.starts_with('%') {
                assert!(c.name.ends_with("_pct"), "{}", c.name);
            }
        }
    }

    #[test]
    fn batch_matches_schema() {
        let rows = vec![Sample {
            ts: 1,
            server: "s".into(),
            kv_cache_usage_pct: Some(73.4),
            ..Default::default()
        }];
        let b = samples_to_batch(&rows);
        assert_eq!(b.num_columns(), COLUMNS.len());
        assert_eq!(b.num_rows(), 1);
    }
}
