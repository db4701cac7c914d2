//! Analysis stage: one DataFusion `SessionContext` per run, the session's samples
//! registered as `samples` (and raw buckets as `histograms`), then the SQL catalog in
//! `queries/` (embedded with `include_str!`, never read from the working directory).
//!
//! The catalog is [`CATALOG`]: tables built in order, then event queries, then summary
//! queries. Every phase, condition and event is defined there, once; this module only
//! runs the SQL and turns result rows into [`Event`]s and a [`Summary`].

mod chunks;
mod merge;
mod spill;
pub mod summary;
pub mod thresholds;
pub mod udf;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

use crate::store::events::Event;
use crate::store::location::Location;
use crate::store::schema::{COLUMNS, CORE_COLUMNS, Sample, histogram_schema, samples_to_batch};
use crate::store::{self, StoreError};
pub use chunks::CHUNK_ROWS;
pub use summary::Summary;
pub use thresholds::Thresholds;

/// Errors of the analysis stage.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("query `{query}` failed: {source}")]
    Query {
        query: &'static str,
        #[source]
        source: DataFusionError,
    },
    #[error("{path}: samples lack required column(s) {missing}")]
    MissingColumns { path: String, missing: String },
    #[error("{path}: column(s) of the wrong type: {wrong}")]
    ColumnTypes { path: String, wrong: String },
    #[error(transparent)]
    Threshold(#[from] thresholds::UnknownThreshold),
    #[error("{0}: the session has no samples")]
    Empty(String),
    /// The SQL catalog emitted a name the vocabulary lacks (a renamed phase, condition
    /// or event): a bug, reported rather than silently ignored.
    #[error("the query catalog emitted {0}")]
    Vocabulary(#[from] crate::vocab::UnknownName),
    /// A query result lacks a column the summary reads.
    #[error("query `{query}` has no column `{column}` (the summary reads it)")]
    MissingColumn { query: &'static str, column: String },
}

/// What a catalog query produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// `CREATE TABLE …`: an intermediate table later queries read.
    Table,
    /// Rows that become events.
    Events,
    /// Rows read by the summary builder.
    Summary,
    /// Per-sample series, run only when asked for ([`AnalyzeOptions::series`]).
    Series,
    /// Reads the `histograms` table only: run once per session, not per chunk.
    Histograms,
}

/// One SQL file of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub name: &'static str,
    pub sql: &'static str,
    pub kind: QueryKind,
}

macro_rules! q {
    ($file:literal, $kind:ident) => {
        Query {
            name: $file,
            sql: include_str!(concat!("../../queries/", $file)),
            kind: QueryKind::$kind,
        }
    };
}

/// The catalog, in execution order. Adding a query: one file in `queries/` + one line.
pub const CATALOG: &[Query] = &[
    q!("01_units.sql", Table),
    q!("02_timeline.sql", Table),
    q!("03_sample_flags.sql", Table),
    q!("04_transient_flags.sql", Table),
    q!("05_condition_marks.sql", Table),
    q!("10_phase_transitions.sql", Events),
    q!("11_condition_changes.sql", Events),
    q!("12_condition_episodes.sql", Events),
    q!("13_transient_events.sql", Events),
    q!("14_data_quality_events.sql", Events),
    q!("20_server_summary.sql", Summary),
    q!("21_phase_time.sql", Summary),
    q!("22_histogram_increase.sql", Histograms),
    q!("23_phase_series.sql", Series),
    q!("24_trouble_episodes.sql", Summary),
];

/// `units` for sessions with one row per (server, ts), chosen per chunk instead of
/// `01_units.sql` (whose GROUP BY is then the identity).
const UNITS_SINGLE_ENGINE: Query = q!("01_units_single_engine.sql", Table);

pub use crate::store::location::SamplesInput;
pub use chunks::WindowAnalyzer;

/// The result of analysing a session.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub events: Vec<Event>,
    pub summary: Summary,
    /// Per-sample phases, when asked for.
    pub series: Vec<PhasePoint>,
}

/// One sample's phase.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PhasePoint {
    pub server: String,
    pub ts: i64,
    pub t_rel_sec: f64,
    pub scrape_ok: bool,
    pub phase: Option<crate::vocab::Phase>,
    pub kv_max_pct: Option<f64>,
    pub running: Option<f64>,
    pub waiting: Option<f64>,
    pub ttft_p95_s: Option<f64>,
    pub generation_tokens_per_s: Option<f64>,
}

/// What to compute beyond events and summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnalyzeOptions {
    /// Also return the per-sample phase series.
    pub series: bool,
    /// Samples per chunk (default [`CHUNK_ROWS`]).
    pub chunk_rows: Option<usize>,
    /// Chunks analysed at once (default: one per core, at most 8).
    pub chunk_workers: Option<usize>,
}

/// Builds a context with KVScope's window functions registered.
pub fn context() -> SessionContext {
    context_with_partitions(2)
}

fn context_with_partitions(partitions: usize) -> SessionContext {
    context_from(
        SessionConfig::new()
            .with_target_partitions(partitions)
            .with_information_schema(false),
    )
}

fn context_from(cfg: SessionConfig) -> SessionContext {
    let ctx = SessionContext::new_with_config(cfg);
    for f in udf::all() {
        ctx.register_udwf(f);
    }
    ctx
}

fn qerr(query: &'static str) -> impl FnOnce(DataFusionError) -> AnalysisError {
    move |source| AnalysisError::Query { query, source }
}

/// Whether a file's column of type `ty` can stand for a contract column of `kind`: any
/// number for a number (the queries cast), any string encoding for a string.
fn column_type_fits(kind: store::schema::ColumnType, ty: &DataType) -> bool {
    use store::schema::ColumnType;
    let string =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    match kind {
        ColumnType::Float64 | ColumnType::Int64 => ty.is_numeric(),
        ColumnType::Utf8 => string(ty) || matches!(ty, DataType::Dictionary(_, v) if string(v)),
        ColumnType::Boolean => *ty == DataType::Boolean,
        ColumnType::TimestampUs => matches!(ty, DataType::Timestamp(..)),
    }
}

/// Registers `samples_raw` (the input), the view `samples` over it (adding NULL columns
/// for every optional column the input lacks) and, when given, `histograms`. Returns the
/// view's SQL, which chunk contexts re-create over their own `samples_raw`.
pub async fn register_session(
    ctx: &SessionContext,
    input: &SamplesInput,
    histograms: Option<&str>,
) -> Result<String, AnalysisError> {
    let present: Vec<String> = match input {
        SamplesInput::Parquet(path) => {
            ctx.register_parquet("samples_raw", path, ParquetReadOptions::default())
                .await
                .map_err(qerr("register samples"))?;
            let df = ctx
                .table("samples_raw")
                .await
                .map_err(qerr("register samples"))?;
            let fields = df.schema().fields();
            // A column of the wrong type (a string where a number belongs, from a
            // hand-written or converted file) is named here; left to the queries it
            // failed inside one of them, as a function without a matching signature.
            let wrong: Vec<String> = fields
                .iter()
                .filter_map(|f| {
                    let c = COLUMNS.iter().find(|c| c.name == f.name())?;
                    (!column_type_fits(c.kind, f.data_type())).then(|| {
                        format!("{} is {}, not {}", f.name(), f.data_type(), c.kind.arrow())
                    })
                })
                .collect();
            if !wrong.is_empty() {
                return Err(AnalysisError::ColumnTypes {
                    path: path.clone(),
                    wrong: wrong.join("; "),
                });
            }
            fields.iter().map(|f| f.name().clone()).collect()
        }
        SamplesInput::Rows(rows) => {
            let batch = samples_to_batch(rows);
            let table = MemTable::try_new(batch.schema(), vec![vec![batch]])
                .map_err(qerr("register samples"))?;
            ctx.register_table("samples_raw", Arc::new(table))
                .map_err(qerr("register samples"))?;
            COLUMNS.iter().map(|c| c.name.to_string()).collect()
        }
    };
    let missing: Vec<&str> = CORE_COLUMNS
        .iter()
        .copied()
        .filter(|c| !present.iter().any(|p| p == c))
        .collect();
    if !missing.is_empty() {
        let path = match input {
            SamplesInput::Parquet(p) => p.clone(),
            SamplesInput::Rows(_) => "samples".into(),
        };
        return Err(AnalysisError::MissingColumns {
            path,
            missing: missing.join(", "),
        });
    }
    // Sessions without t_rel_sec: measure from the first sample (a literal, so no
    // whole-table window is needed).
    let t0_us: i64 = if present.iter().any(|p| p == "t_rel_sec") {
        0
    } else {
        let df = ctx
            .sql("SELECT CAST(MIN(ts) AS BIGINT) AS t0 FROM samples_raw")
            .await
            .map_err(qerr("samples view"))?;
        let b = df.collect().await.map_err(qerr("samples view"))?;
        b.first().and_then(|b| Cols(b).f64("t0", 0)).unwrap_or(0.0) as i64
    };
    // A view with every contract column: absent optional ones become typed NULLs.
    let select: Vec<String> = COLUMNS
        .iter()
        .map(|c| {
            if present.iter().any(|p| p == c.name) {
                format!("\"{}\"", c.name)
            } else {
                let ty = match c.kind {
                    store::schema::ColumnType::Float64 => "DOUBLE",
                    store::schema::ColumnType::Int64 => "BIGINT",
                    store::schema::ColumnType::Utf8 => "VARCHAR",
                    store::schema::ColumnType::Boolean => "BOOLEAN",
                    store::schema::ColumnType::TimestampUs => "TIMESTAMP",
                };
                // Core-only sessions: treat rows as good scrapes with one engine.
                match c.name {
                    "scrape_ok" => "true AS \"scrape_ok\"".to_string(),
                    "counter_reset" => "false AS \"counter_reset\"".to_string(),
                    "engine" => "'0' AS \"engine\"".to_string(),
                    "model_name" => "'' AS \"model_name\"".to_string(),
                    "t_rel_sec" => format!(
                        "CAST(CAST(\"ts\" AS BIGINT) - {t0_us} AS DOUBLE) / 1e6 AS \"t_rel_sec\""
                    ),
                    // Each sample stands for the time since the one before it (the
                    // recorder's interval_s): without it every time-weighted figure
                    // (preempting, KV-wait, decode-drop seconds) would read 0. The view
                    // runs per chunk of whole servers, so the window stays in the chunk.
                    "interval_s" => format!(
                        "seconds_since_previous(CAST(\"ts\" AS BIGINT)) OVER (PARTITION BY \"server\"{} ORDER BY \"ts\") AS \"interval_s\"",
                        if present.iter().any(|p| p == "engine") {
                            ", \"engine\""
                        } else {
                            ""
                        }
                    ),
                    _ => format!("CAST(NULL AS {ty}) AS \"{}\"", c.name),
                }
            }
        })
        .collect();
    let view = format!(
        "CREATE VIEW samples AS SELECT {} FROM samples_raw",
        select.join(", ")
    );
    ctx.sql(&view).await.map_err(qerr("samples view"))?;
    register_histograms(ctx, histograms).await?;
    Ok(view)
}

async fn register_histograms(
    ctx: &SessionContext,
    histograms: Option<&str>,
) -> Result<(), AnalysisError> {
    match histograms {
        Some(path) => {
            ctx.register_parquet("histograms", path, ParquetReadOptions::default())
                .await
                .map_err(qerr("register histograms"))?;
        }
        None => {
            let empty = RecordBatch::new_empty(histogram_schema());
            let table = MemTable::try_new(histogram_schema(), vec![vec![empty]])
                .map_err(qerr("register histograms"))?;
            ctx.register_table("histograms", Arc::new(table))
                .map_err(qerr("register histograms"))?;
        }
    }
    Ok(())
}

/// Catalog results: events, and the rows of each summary/series query.
type CatalogOutput = (Vec<Event>, BTreeMap<&'static str, Vec<RecordBatch>>);

/// Runs the queries over the whole session's `histograms` (once, not per chunk).
async fn run_histogram_queries(
    ctx: &SessionContext,
    thresholds: &Thresholds,
) -> Result<BTreeMap<&'static str, Vec<RecordBatch>>, AnalysisError> {
    let mut results = BTreeMap::new();
    for q in CATALOG.iter().filter(|q| q.kind == QueryKind::Histograms) {
        let sql = thresholds.substitute(q.name, q.sql)?;
        let df = ctx.sql(&sql).await.map_err(qerr(q.name))?;
        results.insert(q.name, df.collect().await.map_err(qerr(q.name))?);
    }
    Ok(results)
}

/// Analyses a session directory (local path).
pub async fn analyze_dir(dir: &Path, thresholds: &Thresholds) -> Result<Analysis, AnalysisError> {
    analyze_dir_with(dir, thresholds, AnalyzeOptions::default()).await
}

/// [`analyze_dir`] with options.
pub async fn analyze_dir_with(
    dir: &Path,
    thresholds: &Thresholds,
    opts: AnalyzeOptions,
) -> Result<Analysis, AnalysisError> {
    analyze_location(&Location::Local(dir.to_path_buf()), thresholds, opts).await
}

/// Analyses a session wherever it lives: local directory or object store. DataFusion
/// reads a remote session's Parquet straight from the store.
pub async fn analyze_location(
    loc: &Location,
    thresholds: &Thresholds,
    opts: AnalyzeOptions,
) -> Result<Analysis, AnalysisError> {
    Ok(analyze_location_to(loc, thresholds, opts, None).await?.0)
}

/// [`analyze_location`], the events streamed to `files` when given (then not returned).
async fn analyze_location_to(
    loc: &Location,
    thresholds: &Thresholds,
    opts: AnalyzeOptions,
    files: Option<&EventFiles>,
) -> Result<(Analysis, u64), AnalysisError> {
    let meta = loc.read_metadata().await?;
    let input = loc.samples_input().await?;
    let hist = histograms_url(loc).await?;
    let ctx = context();
    loc.register(&ctx);
    let view = register_session(&ctx, &input, hist.as_deref()).await?;
    let (analysis, events) =
        analyze_registered(&ctx, &view, meta.as_ref(), thresholds, opts, files).await?;
    if analysis.summary.servers.is_empty() {
        return Err(AnalysisError::Empty(loc.to_string()));
    }
    Ok((analysis, events))
}

/// The session's raw-bucket file, when it has a readable one (a histograms file without
/// its footer — a crash — is skipped, not an error).
async fn histograms_url(loc: &Location) -> Result<Option<String>, AnalysisError> {
    Ok((loc.exists(store::HISTOGRAMS_PARQUET).await?
        && loc.parquet_footer_ok(store::HISTOGRAMS_PARQUET).await?)
        .then(|| loc.file_url(store::HISTOGRAMS_PARQUET)))
}

/// Where a streamed analysis puts its events: chunk runs in `runs` (a directory of its
/// own), merged into `jsonl` and `parquet`.
struct EventFiles {
    runs: PathBuf,
    jsonl: PathBuf,
    parquet: PathBuf,
}

/// The columns a report charts, per sample row.
pub const CHART_COLUMNS: &[&str] = &[
    "kv_cache_usage_pct",
    "requests_running",
    "requests_waiting",
    "ttft_p50_s",
    "ttft_p95_s",
    "ttft_p99_s",
    "itl_p95_s",
    "prompt_tokens_per_s",
    "generation_tokens_per_s",
    "preemptions_per_s",
];

/// One engine's samples of one server, in time order, for charts.
#[derive(Debug, Clone, Default)]
pub struct EngineSeries {
    pub server: String,
    pub engine: String,
    pub ts: Vec<i64>,
    pub ok: Vec<bool>,
    /// One vector per [`CHART_COLUMNS`] entry, aligned with `ts`.
    pub values: Vec<Vec<Option<f64>>>,
}

/// ` WHERE server IN ('a', 'b')` for a query over samples, quotes doubled.
fn servers_filter(servers: &[String]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect();
    format!(" WHERE server IN ({})", list.join(", "))
}

/// Every engine's chart columns, ordered by (server, engine, ts): of every server, or of
/// `servers` only.
pub async fn chart_series(
    loc: &Location,
    servers: Option<&[String]>,
) -> Result<Vec<EngineSeries>, AnalysisError> {
    let input = loc.samples_input().await?;
    let ctx = context();
    loc.register(&ctx);
    register_session(&ctx, &input, None).await?;
    let cols: Vec<String> = CHART_COLUMNS
        .iter()
        .map(|c| format!("CAST(\"{c}\" AS DOUBLE) AS \"{c}\""))
        .collect();
    let only = servers.map_or(String::new(), servers_filter);
    let sql = format!(
        "SELECT server, engine, ts, scrape_ok, {} FROM samples{only} ORDER BY server, engine, ts",
        cols.join(", ")
    );
    let df = ctx.sql(&sql).await.map_err(qerr("chart series"))?;
    let batches = df.collect().await.map_err(qerr("chart series"))?;
    let mut out: Vec<EngineSeries> = Vec::new();
    for b in &batches {
        let c = Cols(b);
        for i in 0..b.num_rows() {
            let server = c.str("server", i).unwrap_or_default();
            let engine = c.str("engine", i).unwrap_or_default();
            if out
                .last()
                .is_none_or(|e| e.server != server || e.engine != engine)
            {
                out.push(EngineSeries {
                    server,
                    engine,
                    values: vec![Vec::new(); CHART_COLUMNS.len()],
                    ..Default::default()
                });
            }
            let Some(e) = out.last_mut() else { continue };
            e.ts.push(c.ts_us("ts", i).unwrap_or(0));
            e.ok.push(c.phase_ok(i));
            for (k, name) in CHART_COLUMNS.iter().enumerate() {
                if let Some(v) = e.values.get_mut(k) {
                    v.push(c.f64(name, i));
                }
            }
        }
    }
    Ok(out)
}

/// The catalog over a registered session (`view` is the SQL of its `samples` view); the
/// analysis and how many events it found.
async fn analyze_registered(
    ctx: &SessionContext,
    view: &str,
    meta: Option<&store::Metadata>,
    thresholds: &Thresholds,
    opts: AnalyzeOptions,
    files: Option<&EventFiles>,
) -> Result<(Analysis, u64), AnalysisError> {
    let started = std::time::Instant::now();
    let (events, results) = chunks::run_catalog(
        ctx,
        view,
        thresholds,
        opts,
        files.map(|f| f.runs.as_path()),
        None,
    )
    .await?;
    tracing::debug!(
        "catalog: {} events in {:?}",
        events.len(),
        started.elapsed()
    );
    let tally = match files {
        Some(f) => {
            let mut tally = summary::EventTally::default();
            merge::merge_runs(&f.runs, &f.jsonl, &f.parquet, &mut tally)?;
            let n = tally.total();
            tracing::debug!("{n} events merged at {:?}", started.elapsed());
            tally
        }
        None => summary::EventTally::from_events(&events),
    };
    let summary = summary::build(&results, &tally, thresholds, meta)?;
    tracing::debug!("summary built at {:?}", started.elapsed());
    let series = series_from(&results)?;
    Ok((
        Analysis {
            events,
            summary,
            series,
        },
        tally.total(),
    ))
}

/// The events of `servers` only, and with `series` their per-sample phases (else none),
/// in memory: every query partitions by server, so they are those servers' part of the
/// whole session's analysis (what a fleet report charts, without holding the fleet's;
/// what `timeline --server` prints).
pub async fn analyze_servers(
    loc: &Location,
    servers: &[String],
    thresholds: &Thresholds,
    series: bool,
) -> Result<(Vec<Event>, Vec<PhasePoint>), AnalysisError> {
    let opts = AnalyzeOptions {
        series,
        ..Default::default()
    };
    let (events, results) = catalog_of_servers(loc, servers, thresholds, opts, None).await?;
    Ok((events, series_from(&results)?))
}

/// The catalog over `servers` of the session at `loc` (every query partitions by server:
/// their part of the whole session's analysis), events returned or left as runs in
/// `runs`. Histograms are not read: they are per session.
async fn catalog_of_servers(
    loc: &Location,
    servers: &[String],
    thresholds: &Thresholds,
    opts: AnalyzeOptions,
    runs: Option<&Path>,
) -> Result<CatalogOutput, AnalysisError> {
    let input = loc.samples_input().await?;
    let ctx = context();
    loc.register(&ctx);
    // Registered whole: a session without t_rel_sec measures from its first sample, the
    // same origin whatever the servers.
    let view = register_session(&ctx, &input, None).await?;
    chunks::run_catalog(&ctx, &view, thresholds, opts, runs, Some(servers)).await
}

/// Analyses rows held in memory (the dashboard's recent window, tests).
pub async fn analyze_rows(
    rows: Vec<Sample>,
    thresholds: &Thresholds,
) -> Result<Analysis, AnalysisError> {
    let ctx = context();
    let view = register_session(&ctx, &SamplesInput::Rows(rows), None).await?;
    let opts = AnalyzeOptions {
        series: true,
        ..Default::default()
    };
    let (events, results) = chunks::run_catalog(&ctx, &view, thresholds, opts, None, None).await?;
    let tally = summary::EventTally::from_events(&events);
    let summary = summary::build(&results, &tally, thresholds, None)?;
    let series = series_from(&results)?;
    Ok(Analysis {
        events,
        summary,
        series,
    })
}

/// What a written analysis left: its summary and how many events it wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub summary: Summary,
    pub events: u64,
}

/// Analyses the session at `loc` and writes `summary.json`, `events.jsonl` and
/// `events.parquet` to `out` (next to the session when `None`; an object-store output
/// gets them uploaded). The events are streamed: each chunk's events go to a run file
/// next to the output (a local one; the system's temporary directory for object storage)
/// and are merged into the two files, so memory does not grow with the number of events.
pub async fn analyze_and_write_location(
    loc: &Location,
    out: Option<&Location>,
    thresholds: &Thresholds,
    opts: AnalyzeOptions,
) -> Result<Written, AnalysisError> {
    Ok(write_keeping(loc, out, thresholds, opts, None).await?.0)
}

/// [`analyze_and_write_location`], and the written events `keep` selects, read back from
/// the merged `events.jsonl`: memory holds those only (a diagnosis keeps the events its
/// rules read).
pub async fn analyze_write_and_keep(
    loc: &Location,
    out: Option<&Location>,
    thresholds: &Thresholds,
    opts: AnalyzeOptions,
    keep: impl Fn(&Event) -> bool + Sync,
) -> Result<(Written, Vec<Event>), AnalysisError> {
    write_keeping(loc, out, thresholds, opts, Some(&keep)).await
}

async fn write_keeping(
    loc: &Location,
    out: Option<&Location>,
    thresholds: &Thresholds,
    opts: AnalyzeOptions,
    keep: Option<&(dyn Fn(&Event) -> bool + Sync)>,
) -> Result<(Written, Vec<Event>), AnalysisError> {
    let out = out.unwrap_or(loc);
    let staging = Staging::new(out)?;
    let (analysis, events) =
        analyze_location_to(loc, thresholds, opts, Some(&staging.files)).await?;
    let kept = match keep {
        Some(keep) => store::events::read_events_where(&staging.files.jsonl, keep)?,
        None => Vec::new(),
    };
    staging.publish(out, &analysis.summary).await?;
    let written = Written {
        summary: analysis.summary,
        events,
    };
    Ok((written, kept))
}

/// The private directory a written analysis keeps its event runs in (next to a local
/// output, in the system's temporary directory for object storage; removed on drop,
/// error or not), and where the merged event files go.
pub struct Staging {
    _dir: tempfile::TempDir,
    files: EventFiles,
}

impl Staging {
    /// Stages the outputs for `out` (created when local).
    pub fn new(out: &Location) -> Result<Self, AnalysisError> {
        let dir = match out.as_local() {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
                tempfile::Builder::new()
                    .prefix(".kvscope-events-")
                    .tempdir_in(dir)
                    .map_err(|e| StoreError::io(dir, e))?
            }
            None => tempfile::Builder::new()
                .prefix("kvscope-events-")
                .tempdir()
                .map_err(|e| StoreError::io(&std::env::temp_dir(), e))?,
        };
        let final_dir = out.as_local().unwrap_or(dir.path());
        let files = EventFiles {
            runs: dir.path().join("runs"),
            jsonl: final_dir.join(store::EVENTS_JSONL),
            parquet: final_dir.join(store::EVENTS_PARQUET),
        };
        std::fs::create_dir(&files.runs).map_err(|e| StoreError::io(&files.runs, e))?;
        Ok(Self { _dir: dir, files })
    }

    /// The directory of event runs ([`shard_run_path`] names a shard's).
    pub fn runs(&self) -> &Path {
        &self.files.runs
    }

    /// Uploads the merged event files (object storage) and writes `summary.json`: last,
    /// so an output with a summary is complete.
    async fn publish(&self, out: &Location, summary: &Summary) -> Result<(), AnalysisError> {
        if out.as_local().is_none() {
            for (name, path) in [
                (store::EVENTS_JSONL, &self.files.jsonl),
                (store::EVENTS_PARQUET, &self.files.parquet),
            ] {
                let bytes = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
                out.write(name, bytes).await?;
            }
        }
        write_summary(out, summary).await?;
        Ok(())
    }
}

pub use merge::shard_run_path;

/// A session's servers and their sample counts, in server order: what a coordinator cuts
/// into shards.
pub async fn session_servers(loc: &Location) -> Result<Vec<(String, u64)>, AnalysisError> {
    let input = loc.samples_input().await?;
    let ctx = context();
    loc.register(&ctx);
    register_session(&ctx, &input, None).await?;
    let df = ctx
        .sql("SELECT server, CAST(COUNT(*) AS BIGINT) AS n FROM samples_raw GROUP BY server ORDER BY server")
        .await
        .map_err(qerr("session servers"))?;
    let batches = df.collect().await.map_err(qerr("session servers"))?;
    let mut out = Vec::new();
    for b in &batches {
        let c = Cols(b);
        for i in 0..b.num_rows() {
            let n = c.f64_any("n", i).unwrap_or(0.0) as u64;
            out.push((c.str("server", i).unwrap_or_default(), n));
        }
    }
    if out.is_empty() {
        return Err(AnalysisError::Empty(loc.to_string()));
    }
    Ok(out)
}

/// A shard of a session's servers analysed on its own (a cluster task): the catalog over
/// `servers` only, its events left as sorted runs in `runs` (`run-NNNNNN.arrows`, in
/// chunk order), its result rows returned. Histograms are the coordinator's
/// ([`write_from_shards`]).
pub async fn analyze_shard(
    loc: &Location,
    servers: &[String],
    thresholds: &Thresholds,
    opts: AnalyzeOptions,
    runs: &Path,
) -> Result<BTreeMap<&'static str, Vec<RecordBatch>>, AnalysisError> {
    let (_, results) = catalog_of_servers(loc, servers, thresholds, opts, Some(runs)).await?;
    Ok(results)
}

/// The catalog query a result table came from, by name (results crossing a network).
pub fn query_name(name: &str) -> Option<&'static str> {
    CATALOG.iter().map(|q| q.name).find(|q| *q == name)
}

/// Finishes a session analysed in shards, as [`analyze_and_write_location`] finishes a
/// local run: `results` are the shards' rows in shard order, their event runs are in
/// `staging`; the histogram queries run here, the runs are merged into `events.jsonl` and
/// `events.parquet`, and `summary.json` is written last.
pub async fn write_from_shards(
    loc: &Location,
    out: &Location,
    thresholds: &Thresholds,
    mut results: BTreeMap<&'static str, Vec<RecordBatch>>,
    staging: &Staging,
) -> Result<Written, AnalysisError> {
    let meta = loc.read_metadata().await?;
    let input = loc.samples_input().await?;
    let hist = histograms_url(loc).await?;
    let ctx = context();
    loc.register(&ctx);
    register_session(&ctx, &input, hist.as_deref()).await?;
    results.extend(run_histogram_queries(&ctx, thresholds).await?);
    let started = std::time::Instant::now();
    let mut tally = summary::EventTally::default();
    let f = &staging.files;
    merge::merge_runs(&f.runs, &f.jsonl, &f.parquet, &mut tally)?;
    tracing::debug!("{} events merged in {:?}", tally.total(), started.elapsed());
    let summary = summary::build(&results, &tally, thresholds, meta.as_ref())?;
    if summary.servers.is_empty() {
        return Err(AnalysisError::Empty(loc.to_string()));
    }
    staging.publish(out, &summary).await?;
    Ok(Written {
        summary,
        events: tally.total(),
    })
}

/// Writes `summary.json` (streamed into a local file: a 5,000-server fleet's summary is
/// ~70 MB of text; uploaded whole to object storage).
async fn write_summary(out: &Location, summary: &Summary) -> Result<(), AnalysisError> {
    match out.as_local() {
        Some(dir) => store::write_json_atomic(&dir.join(store::SUMMARY_JSON), summary)?,
        None => {
            let mut bytes =
                serde_json::to_vec_pretty(summary).map_err(|e| StoreError::Invalid {
                    path: PathBuf::from(out.file_url(store::SUMMARY_JSON)),
                    message: e.to_string(),
                })?;
            bytes.push(b'\n'); // as write_json_atomic ends its files
            out.write(store::SUMMARY_JSON, bytes).await?;
        }
    }
    Ok(())
}

/// Writes an analysis held in memory to `out`: the same three files as
/// [`analyze_and_write_location`] (the doctor, which needs the events, writes this way).
pub async fn write_analysis(out: &Location, analysis: &Analysis) -> Result<(), AnalysisError> {
    write_summary(out, &analysis.summary).await?;
    let events = &analysis.events;
    match out.as_local() {
        // Streamed to the files (a fleet session has hundreds of thousands of events).
        Some(dir) => {
            store::events::write_events(&dir.join(store::EVENTS_JSONL), events)?;
            store::events::write_events_parquet(&dir.join(store::EVENTS_PARQUET), events)?;
        }
        None => {
            out.write(store::EVENTS_JSONL, store::events::events_to_jsonl(events))
                .await?;
            let bytes = store::events::events_to_parquet(events)?;
            out.write(store::EVENTS_PARQUET, bytes).await?;
        }
    }
    Ok(())
}

fn series_from(
    results: &BTreeMap<&'static str, Vec<RecordBatch>>,
) -> Result<Vec<PhasePoint>, AnalysisError> {
    let mut out = Vec::new();
    for b in results.get("23_phase_series.sql").into_iter().flatten() {
        let c = Cols(b);
        for i in 0..b.num_rows() {
            out.push(PhasePoint {
                server: c.str("server", i).unwrap_or_default(),
                ts: c.ts_us("ts", i).unwrap_or(0),
                t_rel_sec: c.f64("t_rel_sec", i).unwrap_or(0.0),
                scrape_ok: c.phase_ok(i),
                phase: c.str("phase", i).map(|p| p.parse()).transpose()?,
                kv_max_pct: c.f64("kv_max_pct", i),
                running: c.f64("running", i),
                waiting: c.f64("waiting", i),
                ttft_p95_s: c.f64("ttft_p95_s", i),
                generation_tokens_per_s: c.f64("gen_tps", i),
            });
        }
    }
    Ok(out)
}

/// The order of `events.jsonl`: time, server, type, then name (ties keep their order).
pub fn event_order(a: &Event, b: &Event) -> std::cmp::Ordering {
    OrderKey::of(a).cmp(&OrderKey::of(b))
}

/// What [`event_order`] compares, borrowed: the merge of a fleet's event runs orders
/// lines by it without reading whole events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OrderKey<'a> {
    pub t_rel_sec: f64,
    pub server: &'a str,
    pub kind: &'a str,
    pub event: Option<&'a str>,
    pub condition: Option<&'a str>,
    pub state: Option<&'a str>,
}

impl<'a> OrderKey<'a> {
    fn of(e: &'a Event) -> Self {
        Self {
            t_rel_sec: e.t_rel_sec,
            server: &e.server,
            kind: &e.kind,
            event: e.event.as_deref(),
            condition: e.condition.as_deref(),
            state: e.state.as_deref(),
        }
    }

    pub fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        fn rank(kind: &str) -> u8 {
            match kind {
                "data_quality" => 0,
                "phase_transition" => 1,
                "condition_change" => 2,
                "transient" => 3,
                _ => 4,
            }
        }
        self.t_rel_sec
            .partial_cmp(&other.t_rel_sec)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| self.server.cmp(other.server))
            .then_with(|| rank(self.kind).cmp(&rank(other.kind)))
            .then_with(|| self.event.cmp(&other.event))
            .then_with(|| self.condition.cmp(&other.condition))
            .then_with(|| self.state.cmp(&other.state))
    }
}

/// Sorts stably by [`event_order`].
pub fn sort_events(events: &mut [Event]) {
    // A stable sort of indices, applied in place by following the permutation's cycles:
    // a stable sort of the events themselves would allocate half of them again (an
    // `Event` is ~400 bytes and a fleet has hundreds of thousands).
    let mut idx: Vec<usize> = (0..events.len()).collect();
    idx.sort_by(|&a, &b| event_order(&events[a], &events[b]));
    // Position i takes the event now at idx[i].
    for start in 0..idx.len() {
        if idx[start] == start {
            continue;
        }
        let mut i = start;
        loop {
            let from = idx[i];
            idx[i] = i;
            if from == start {
                break;
            }
            events.swap(i, from);
            i = from;
        }
    }
}

/// Typed column access by name over one batch.
pub(crate) struct Cols<'a>(pub &'a RecordBatch);

impl Cols<'_> {
    /// The column `name` (absent: every value is `None`).
    pub fn col(&self, name: &str) -> Col<'_> {
        Col(self.0.column_by_name(name))
    }
    pub fn str(&self, name: &str, row: usize) -> Option<String> {
        self.col(name).str(row)
    }
    pub fn f64(&self, name: &str, row: usize) -> Option<f64> {
        self.col(name).f64(row)
    }
    /// Like [`Cols::f64`] but keeps infinities (bucket bounds).
    pub fn f64_any(&self, name: &str, row: usize) -> Option<f64> {
        self.col(name).f64_any(row)
    }
    /// `scrape_ok` of a row (true when the column is absent).
    pub fn phase_ok(&self, row: usize) -> bool {
        self.0
            .column_by_name("scrape_ok")
            .and_then(|c| c.as_boolean_opt().map(|b| b.is_valid(row) && b.value(row)))
            .unwrap_or(true)
    }
    pub fn ts_us(&self, name: &str, row: usize) -> Option<i64> {
        self.col(name).ts_us(row)
    }
}

/// One column of a batch, found once and read row by row (a fleet's event batches have
/// hundreds of thousands of rows: looking each column up by name per value was a third
/// of turning them into events).
#[derive(Clone, Copy)]
pub(crate) struct Col<'a>(Option<&'a datafusion::arrow::array::ArrayRef>);

impl Col<'_> {
    pub fn str(&self, row: usize) -> Option<String> {
        let c = self.0?;
        if c.is_null(row) {
            return None;
        }
        match c.data_type() {
            DataType::Utf8 => Some(c.as_string::<i32>().value(row).to_string()),
            DataType::Utf8View => Some(c.as_string_view().value(row).to_string()),
            DataType::LargeUtf8 => Some(c.as_string::<i64>().value(row).to_string()),
            _ => None,
        }
    }
    pub fn f64(&self, row: usize) -> Option<f64> {
        self.f64_any(row).filter(|v| v.is_finite())
    }
    pub fn f64_any(&self, row: usize) -> Option<f64> {
        let c = self.0?;
        if c.is_null(row) {
            return None;
        }
        let v = match c.data_type() {
            DataType::Float64 => c.as_primitive::<Float64Type>().value(row),
            DataType::Int64 => c.as_primitive::<Int64Type>().value(row) as f64,
            _ => {
                let casted = datafusion::arrow::compute::cast(c, &DataType::Float64).ok()?;
                let a = casted.as_primitive::<Float64Type>();
                if a.is_null(row) {
                    return None;
                }
                a.value(row)
            }
        };
        (!v.is_nan()).then_some(v)
    }
    pub fn ts_us(&self, row: usize) -> Option<i64> {
        let c = self.0?;
        if c.is_null(row) {
            return None;
        }
        match c.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Some(c.as_primitive::<TimestampMicrosecondType>().value(row))
            }
            _ => {
                let casted = datafusion::arrow::compute::cast(
                    c,
                    &DataType::Timestamp(TimeUnit::Microsecond, None),
                )
                .ok()?;
                let a = casted.as_primitive::<TimestampMicrosecondType>();
                (!a.is_null(row)).then(|| a.value(row))
            }
        }
    }
}

/// A name a query emitted, checked against the vocabulary.
fn named<T>(v: Option<String>) -> Result<Option<String>, AnalysisError>
where
    T: std::str::FromStr<Err = crate::vocab::UnknownName>,
{
    if let Some(name) = &v {
        name.parse::<T>()?;
    }
    Ok(v)
}

fn events_from_batch(batch: &RecordBatch) -> Result<Vec<Event>, AnalysisError> {
    use crate::vocab::{Condition, EventName, EventType, Phase};
    let c = Cols(batch);
    let schema = batch.schema();
    let evidence_cols: Vec<(String, Col<'_>)> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| n.starts_with("ev_"))
        .map(|n| (n.trim_start_matches("ev_").to_string(), c.col(n)))
        .collect();
    let [
        kind,
        ts,
        t_rel_sec,
        server,
        from_phase,
        to_phase,
        condition,
        state,
        start_ts,
        end_ts,
        duration_sec,
        peak_value,
        peak_metric,
        peak_ts,
        event,
        value,
        baseline,
        metric,
        reason,
    ] = [
        "type",
        "ts",
        "t_rel_sec",
        "server",
        "from_phase",
        "to_phase",
        "condition",
        "state",
        "start_ts",
        "end_ts",
        "duration_sec",
        "peak_value",
        "peak_metric",
        "peak_ts",
        "event",
        "value",
        "baseline",
        "metric",
        "reason",
    ]
    .map(|n| c.col(n));
    (0..batch.num_rows())
        .map(|r| {
            let rfc = |col: Col<'_>| col.ts_us(r).map(crate::record::rfc3339);
            let mut evidence: Vec<(String, serde_json::Value)> = Vec::new();
            for (name, col) in &evidence_cols {
                if let Some(v) = col.f64(r) {
                    evidence.push((name.clone(), round_json(v)));
                }
            }
            let peak = peak_value.f64(r).map(|v| {
                crate::store::events::Fields::from(serde_json::json!({
                    "metric": peak_metric.str(r),
                    "value": round_json(v),
                    "at": rfc(peak_ts),
                }))
            });
            Ok(Event {
                kind: kind
                    .str(r)
                    .unwrap_or_default()
                    .parse::<EventType>()?
                    .as_str()
                    .to_string(),
                ts: rfc(ts).unwrap_or_default(),
                t_rel_sec: round3(t_rel_sec.f64(r).unwrap_or(0.0)),
                server: server.str(r).unwrap_or_default(),
                from: named::<Phase>(from_phase.str(r))?,
                to: named::<Phase>(to_phase.str(r))?,
                phase: None,
                condition: named::<Condition>(condition.str(r))?,
                state: state.str(r),
                start_time: rfc(start_ts),
                end_time: rfc(end_ts),
                duration_sec: duration_sec.f64(r).map(round3),
                peak_evidence: peak,
                event: named::<EventName>(event.str(r))?,
                value: value.f64(r).map(round3),
                baseline: baseline.f64(r).map(round3),
                metric: metric.str(r),
                reason: reason.str(r),
                evidence: (!evidence.is_empty()).then(|| {
                    evidence
                        .into_iter()
                        .collect::<crate::store::events::Fields>()
                }),
            })
        })
        .collect()
}

/// Rounds to 3 decimals (stable output, no float noise in snapshots).
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn round_json(v: f64) -> serde_json::Value {
    serde_json::json!(round3(v))
}

#[cfg(test)]
mod tests {
    /// The in-place index sort gives the order of a plain stable sort, ties included.
    #[test]
    fn sort_events_is_the_stable_order() {
        let mut events: Vec<Event> = (0..500u32)
            .map(|i| Event {
                kind: ["transient", "phase_transition", "data_quality"][(i % 3) as usize].into(),
                t_rel_sec: f64::from((i * 7919) % 37),
                server: format!("s{}", (i * 31) % 4),
                // Ties on every key but this one show stability.
                reason: Some(i.to_string()),
                ..Default::default()
            })
            .collect();
        let mut reference = events.clone();
        let rank = |k: &str| match k {
            "data_quality" => 0,
            "phase_transition" => 1,
            _ => 3,
        };
        reference.sort_by(|a, b| {
            a.t_rel_sec
                .total_cmp(&b.t_rel_sec)
                .then_with(|| a.server.cmp(&b.server))
                .then_with(|| rank(&a.kind).cmp(&rank(&b.kind)))
        });
        sort_events(&mut events);
        assert_eq!(events, reference);
    }

    use super::*;
    use crate::vocab::{Condition, EventName, EventType, Phase};

    /// Every `queries/*.sql` file is in the catalog (or is the single-engine `units`).
    #[test]
    fn every_query_file_is_registered() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let mut known: Vec<String> = CATALOG
            .iter()
            .chain([&UNITS_SINGLE_ENGINE])
            .map(|q| q.name.to_string())
            .collect();
        known.sort();
        assert_eq!(files, known);
    }

    /// `01_units_single_engine.sql` is `01_units.sql` where every (server, ts) has one
    /// row: on recorded single-engine sessions with a hung engine, an outage and a
    /// restart, and KV saturation, both give the same table, column for column.
    #[tokio::test]
    async fn the_single_engine_units_query_equals_the_general_one() {
        let thresholds = Thresholds::default();
        for name in ["stuck-engine", "restart", "kv-saturation"] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("s");
            let run = crate::sim::OfflineRun::new(crate::sim::scenario::scenario(name).unwrap(), 3);
            crate::sim::record_offline(&run, &dir, "t").unwrap();
            let rows = store::read_samples_jsonl(&dir.join(store::SAMPLES_JSONL)).unwrap();
            let ctx = context();
            register_session(&ctx, &SamplesInput::Rows(rows), None)
                .await
                .unwrap();
            let mut tables = Vec::new();
            for q in [&CATALOG[0], &UNITS_SINGLE_ENGINE] {
                let sql = thresholds.substitute(q.name, q.sql).unwrap();
                let (_, select) = sql.split_once("CREATE TABLE units AS").unwrap();
                let batches = ctx.sql(select).await.unwrap().collect().await.unwrap();
                let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string();
                tables.push(text);
            }
            assert_eq!(CATALOG[0].name, "01_units.sql");
            assert!(tables[0].lines().count() > 60, "{name}: {}", tables[0]);
            assert!(
                tables[0] == tables[1],
                "{name}: the two units queries differ"
            );
            if name == "stuck-engine" {
                // The hang is in the table: frozen and hung samples with their gauges.
                let hung = tables[0]
                    .lines()
                    .filter(|l| l.contains("| 1              | 1            |"))
                    .count();
                assert!(hung >= 5, "{hung} hung samples:\n{}", tables[0]);
            }
        }
    }

    /// The names the catalog can emit are the vocabulary's, and every vocabulary value
    /// is emitted by some query: a rename on either side fails here.
    #[test]
    fn the_catalog_speaks_the_vocabulary() {
        let mut literals = std::collections::BTreeSet::new();
        for q in CATALOG.iter().chain([&UNITS_SINGLE_ENGINE]) {
            for line in q.sql.lines() {
                let code = line.split("--").next().unwrap_or_default();
                for (i, part) in code.split('\'').enumerate() {
                    if i % 2 == 1 {
                        literals.insert(part.to_string());
                    }
                }
            }
        }
        let is_name = |l: &str| {
            l.len() > 3
                && l.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && l.starts_with(|c: char| c.is_ascii_uppercase())
        };
        let in_vocab = |l: &str| {
            l.parse::<Phase>().is_ok()
                || l.parse::<Condition>().is_ok()
                || l.parse::<EventName>().is_ok()
        };
        let unknown: Vec<&String> = literals
            .iter()
            .filter(|l| is_name(l) && !in_vocab(l))
            .collect();
        assert!(
            unknown.is_empty(),
            "names not in the vocabulary: {unknown:?}"
        );
        let names = Phase::ALL
            .iter()
            .map(|v| v.as_str())
            .chain(Condition::ALL.iter().map(|v| v.as_str()))
            .chain(EventName::ALL.iter().map(|v| v.as_str()))
            .chain(EventType::ALL.iter().map(|v| v.as_str()));
        let unused: Vec<&str> = names.filter(|n| !literals.contains(*n)).collect();
        assert!(unused.is_empty(), "no query emits {unused:?}");
    }

    /// The queries choose what an event's `baseline` holds; the text output names it
    /// (`EventName::baseline_label`): "threshold" exactly where the query writes a
    /// threshold (`${…}`) there, so changing either side without the other fails here.
    #[test]
    fn event_baselines_are_named_for_what_the_queries_put_there() {
        let mut seen = Vec::new();
        for q in CATALOG
            .iter()
            .filter(|q| q.name.starts_with("13_") || q.name.starts_with("14_"))
        {
            let code: String = q
                .sql
                .lines()
                .map(|l| l.split("--").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" ");
            for branch in code.split("UNION ALL") {
                let select = branch.split_once("SELECT").map_or("", |(_, s)| s);
                let select = select.split(" FROM ").next().unwrap_or_default();
                // The SELECT list at the top level (commas inside parentheses belong
                // to an expression): type, server, ts, t_rel_sec, event, metric, value,
                // baseline, …
                let (mut items, mut depth, mut item) = (Vec::new(), 0i32, String::new());
                for c in select.chars() {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        ',' if depth == 0 => {
                            items.push(std::mem::take(&mut item));
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                let event = items
                    .get(4)
                    .and_then(|i| i.trim().split('\'').nth(1))
                    .and_then(|n| n.parse::<EventName>().ok())
                    .unwrap_or_else(|| panic!("no event name in {}: {select}", q.name));
                let baseline = items.get(7).map_or("", |i| i.trim());
                if baseline.starts_with("NULL") {
                    continue;
                }
                assert_eq!(
                    event.baseline_label() == "threshold",
                    baseline.starts_with("${"),
                    "{event}: the query's baseline is `{baseline}`, the text calls it {}",
                    event.baseline_label()
                );
                seen.push(event);
            }
        }
        assert_eq!(seen.len(), 9, "{seen:?}");
    }

    /// DataFusion's `AND`/`OR` short-circuit as patched (`vendor/README.md`): where the
    /// left side leaves at most a fifth of the rows open, the right side is evaluated on
    /// those rows of only the columns it reads. Its values must be the unpatched ones,
    /// whichever columns (and in which order) the right side reads.
    #[tokio::test]
    async fn short_circuited_and_or_read_the_right_columns() {
        use datafusion::arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let ctx = context();
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("z1", DataType::Float64, false),
            Field::new("x", DataType::Float64, false),
            Field::new("y", DataType::Utf8, false),
            Field::new("z2", DataType::Float64, false),
        ]));
        let rows = 0..100i64;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.clone())),
                Arc::new(Float64Array::from_iter_values(
                    rows.clone().map(|i| i as f64),
                )),
                Arc::new(Float64Array::from_iter_values(
                    rows.clone().map(|i| (i % 7) as f64),
                )),
                Arc::new(StringArray::from_iter_values(
                    rows.clone().map(|i| if i % 3 == 0 { "k" } else { "m" }),
                )),
                Arc::new(Float64Array::from_iter_values(rows.map(|i| i as f64))),
            ],
        )
        .unwrap();
        ctx.register_batch("s", batch).unwrap();
        let out = ctx
            .sql(
                "SELECT a < 10 AND x > 5.0 AS p, a >= 10 OR y = 'k' AS q, \
                        z2 < 5 AND (x + z1) > 4 AS r FROM s",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let true_rows = |col: usize| -> Vec<usize> {
            let mut k = 0;
            let mut rows = Vec::new();
            for b in &out {
                let a = b
                    .column(col)
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .unwrap();
                for v in a.iter() {
                    if v == Some(true) {
                        rows.push(k);
                    }
                    k += 1;
                }
            }
            rows
        };
        // a < 10 holds on 10 % of the rows; x > 5 on those where a % 7 == 6.
        assert_eq!(true_rows(0), vec![6]);
        // a >= 10 leaves 10 % open; y = 'k' where a % 3 == 0.
        let q: Vec<usize> = [0, 3, 6, 9].into_iter().chain(10..100).collect();
        assert_eq!(true_rows(1), q);
        // z2 < 5 leaves 5 %; x + z1 = 2a there.
        assert_eq!(true_rows(2), vec![3, 4]);
    }
}
