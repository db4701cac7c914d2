//! Big sessions in chunks of whole servers.
//!
//! A session's samples are streamed in (server, ts) order and cut at server boundaries
//! into chunks of about [`CHUNK_ROWS`] samples (a small session is one chunk). Every query of the catalog partitions by server, so a
//! chunk's results do not depend on where the cut falls. Workers (one per core) each own
//! a single-partition context and take chunks one after another; one more chunk waits
//! while they run, so memory stays at (workers + 1) chunks whatever the session size.
//!
//! A worker plans each query once, on its first chunk, and executes the same physical
//! plans on every later chunk. The tables the plans read — `samples_raw` and each table
//! the catalog creates — are slots the worker refills per chunk. Planning the catalog
//! costs ~45 ms (mostly DataFusion's logical and physical optimizers), as much as
//! executing it on 30,000 samples; re-planned per chunk, it was a fifth of the CPU of a
//! 10⁷-sample session and made small chunks (less memory) expensive. Before each run a
//! plan goes through DataFusion's `reset_plan_states` (every operator cloned with fresh
//! state and metrics, properties kept); dynamic filters, which that does not reset, are
//! off in worker contexts.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext, col};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use futures::StreamExt;

use super::spill::Spill;
use super::{
    AnalysisError, AnalyzeOptions, CATALOG, CatalogOutput, Query, QueryKind, Thresholds,
    UNITS_SINGLE_ENGINE, events_from_batch, qerr, run_histogram_queries, sort_events,
};
use crate::store::StoreError;

/// Samples per chunk (whole servers, so a chunk can be bigger): bounds memory for
/// fleets and days of data.
pub const CHUNK_ROWS: usize = 1 << 16;

/// The order samples are streamed to the workers in (and declared to their plans).
const INPUT_ORDER: [&str; 2] = ["server", "ts"];

/// Chunks analysed at once (each on its own single-partition context).
fn chunk_workers(opts: AnalyzeOptions) -> usize {
    opts.chunk_workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, 8)
}

/// Runs the catalog over a registered session: streamed in (server, ts) order, cut into
/// chunks of whole servers analysed concurrently. `ctx` holds `samples_raw` (the input)
/// and `histograms`; `samples_view` is the SQL of the `samples` view over `samples_raw`.
///
/// With `spill`, each chunk's events (sorted) are written to `spill/run-NNNNNN.arrows` as
/// soon as the chunk is done instead of being returned, and its result rows to a
/// directory next to `spill` ([`super::spill`]), read back when every chunk is done:
/// memory then holds (workers + 1) chunks whatever the number of events or servers, and
/// [`super::merge`] merges the runs into `events.jsonl` and `events.parquet`. The events
/// returned are then empty.
pub(super) async fn run_catalog(
    ctx: &SessionContext,
    samples_view: &str,
    thresholds: &Thresholds,
    opts: AnalyzeOptions,
    spill: Option<&Path>,
    shard: Option<&[String]>,
) -> Result<CatalogOutput, AnalysisError> {
    let chunk_rows = opts.chunk_rows.unwrap_or(CHUNK_ROWS).max(1);
    // Only a shard's servers (a cluster task): every query partitions by server, so a
    // shard's results are its servers' part of the whole session's. Row groups whose
    // server range misses the shard are skipped by their statistics.
    let filter = shard.map_or(String::new(), super::servers_filter);
    // Raw columns only: the `samples` view (NULL columns, t_rel_sec) is evaluated in
    // each worker's context, so that work runs on the workers, not on this reader.
    let df = ctx
        .sql(&format!(
            "SELECT * FROM samples_raw{filter} ORDER BY {}",
            INPUT_ORDER.join(", ")
        ))
        .await
        .map_err(qerr("read samples"))?;
    // Read in one partition: a file written in (server, ts) order (its `sorting_columns`
    // say so) is then streamed as it lies, where split into partitions its parts were
    // merged again row by row (~1 s of CPU on a 10⁷-sample fleet, on the workers' cores).
    let (state, plan) = df.into_parts();
    let mut config = state.config().clone().with_target_partitions(1);
    // (The catalogs are shared with `ctx`: building a state must not replace its default
    // catalog, which holds `histograms`.)
    config
        .options_mut()
        .catalog
        .create_default_catalog_and_schema = false;
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build();
    let df = datafusion::dataframe::DataFrame::new(state, plan);
    let mut input = df.execute_stream().await.map_err(qerr("read samples"))?;
    let schema = input.schema();
    let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Vec<RecordBatch>)>(1);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    // A streamed analysis keeps its result rows on disk until the end too (`spill.rs`),
    // in a directory of their own: `spill` holds only event runs (a cluster worker ships
    // every file in it).
    let results_dir = match spill {
        Some(dir) => {
            let parent = dir.parent().unwrap_or(dir);
            Some(
                tempfile::Builder::new()
                    .prefix(".kvscope-results-")
                    .tempdir_in(parent)
                    .map_err(|e| StoreError::io(parent, e))?,
            )
        }
        None => None,
    };
    let mut handles = Vec::new();
    for k in 0..chunk_workers(opts) {
        let rx = rx.clone();
        let mut worker =
            Worker::new(schema.clone(), samples_view, chunk_rows, thresholds, opts).await?;
        // Streamed: where this worker's event runs and result rows go.
        let mut streamed = spill
            .zip(results_dir.as_ref())
            .map(|(runs, results)| (runs.to_path_buf(), Spill::new(results.path(), k)));
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let done = async {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((i, batches)) = next else { break };
                    let (events, results) = worker.run(batches).await?;
                    match &mut streamed {
                        Some((runs, kept)) => {
                            super::merge::write_run(&super::merge::run_path(runs, i), &events)?;
                            kept.add(i, results)?;
                        }
                        None => out.push((i, (events, results))),
                    }
                }
                Ok::<_, AnalysisError>(())
            }
            .await;
            if done.is_err() {
                // No chunk for anyone any more: the reader's next send fails and it
                // stops, the other workers finish what is queued, and the error is
                // reported below. (Otherwise the reader waits forever on a full channel
                // once every worker has failed.)
                rx.lock().await.close();
            }
            done?;
            let kept = streamed.map(|(_, kept)| kept.finish()).transpose()?;
            Ok::<_, AnalysisError>((out, kept))
        }));
    }
    // Only the workers hold the receiving end: if they all stop, sending fails.
    drop(rx);
    // Cut the ordered stream where a server starts, once the rows before reach
    // `chunk_rows`: chunks of whole servers, each at least `chunk_rows` (the last aside).
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0usize;
    let mut chunk_no = 0usize;
    'read: while let Some(batch) = input.next().await {
        let batch = batch.map_err(qerr("read samples"))?;
        let mut from = 0usize;
        for start in server_starts(&batch).map_err(qerr("read samples"))? {
            if pending_rows + (start - from) < chunk_rows {
                continue;
            }
            pending.push(batch.slice(from, start - from));
            let chunk = std::mem::take(&mut pending);
            if tx.send((chunk_no, chunk)).await.is_err() {
                break 'read; // a worker failed; its error is reported below
            }
            chunk_no += 1;
            pending_rows = 0;
            from = start;
        }
        if from < batch.num_rows() {
            pending_rows += batch.num_rows() - from;
            pending.push(batch.slice(from, batch.num_rows() - from));
        }
    }
    if !pending.is_empty() {
        let _ = tx.send((chunk_no, pending)).await;
    }
    drop(tx);
    let mut parts = Vec::new();
    let mut spilled = Vec::new();
    for h in handles {
        let (done, kept) = h.await.map_err(|e| AnalysisError::Query {
            query: "chunk worker",
            source: DataFusionError::External(Box::new(e)),
        })??;
        parts.extend(done);
        spilled.extend(kept);
    }
    parts.sort_by_key(|(i, _)| *i);
    // One allocation of the final size: growing by doubling would hold up to twice the
    // events (and both buffers while moving) at the peak of a fleet analysis.
    let mut events = Vec::with_capacity(parts.iter().map(|(_, (ev, _))| ev.len()).sum());
    let mut results = match results_dir {
        Some(_) => super::spill::read_back(spilled)?,
        None => BTreeMap::new(),
    };
    for (_, (ev, res)) in parts {
        events.extend(ev);
        for (k, v) in res {
            results.entry(k).or_default().extend(v);
        }
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        let batches: Vec<&RecordBatch> = results.values().flatten().collect();
        tracing::debug!(
            "kept result rows: {} batches, {} bytes",
            batches.len(),
            batches
                .iter()
                .map(|b| b.get_array_memory_size())
                .sum::<usize>()
        );
    }
    // Histograms are per session, not per chunk (a shard leaves them to its coordinator).
    if shard.is_none() {
        results.extend(run_histogram_queries(ctx, thresholds).await?);
    }
    sort_events(&mut events);
    Ok((events, results))
}

/// Analyses a moving window of samples again and again with the catalog planned once:
/// the dashboard's live analysis. Each call runs the same physical plans over the
/// window's rows (one server's, or several), so a tick costs the execution only.
pub struct WindowAnalyzer {
    worker: Worker,
    thresholds: Thresholds,
}

impl WindowAnalyzer {
    pub async fn new(thresholds: &Thresholds) -> Result<Self, AnalysisError> {
        // The view over in-memory rows is the same whatever the rows: register it once
        // over an empty window to learn the raw schema and the view's SQL.
        let ctx = super::context();
        let view = super::register_session(&ctx, &super::SamplesInput::Rows(vec![]), None).await?;
        let raw = crate::store::schema::samples_to_batch(&[]).schema();
        let opts = AnalyzeOptions {
            series: true,
            ..Default::default()
        };
        Ok(Self {
            worker: Worker::new(raw, &view, CHUNK_ROWS, thresholds, opts).await?,
            thresholds: thresholds.clone(),
        })
    }

    /// Events, summary and per-sample phases of `rows` (any order).
    pub async fn analyze(
        &mut self,
        rows: &[crate::store::schema::Sample],
    ) -> Result<super::Analysis, AnalysisError> {
        let mut rows = rows.to_vec();
        rows.sort_by(|a, b| (&a.server, a.ts).cmp(&(&b.server, b.ts)));
        let batch = crate::store::schema::samples_to_batch(&rows);
        let (events, results) = self.worker.run(vec![batch]).await?;
        let tally = super::summary::EventTally::from_events(&events);
        let summary = super::summary::build(&results, &tally, &self.thresholds, None)?;
        let series = super::series_from(&results)?;
        Ok(super::Analysis {
            events,
            summary,
            series,
        })
    }
}

/// Copies of `batches` in buffers of their own size. A result row set is kept until the
/// session is done, and aggregate outputs can sit in buffers sized for a whole chunk
/// (DataFusion's median accumulator): kept as they are, a 5,000-server fleet held 76 MB
/// of them.
fn compact(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, DataFusionError> {
    batches
        .into_iter()
        .map(|b| {
            let rows = u32::try_from(b.num_rows())
                .map_err(|_| DataFusionError::Plan("result batch over 4 G rows".into()))?;
            let all = datafusion::arrow::array::UInt32Array::from_iter_values(0..rows);
            Ok(datafusion::arrow::compute::take_record_batch(&b, &all)?)
        })
        .collect()
}

/// Rows where a server's run starts inside the batch (not row 0: that server may
/// continue from the previous batch).
fn server_starts(batch: &RecordBatch) -> Result<Vec<usize>, DataFusionError> {
    let Some(server) = batch.column_by_name("server") else {
        return Err(DataFusionError::Plan(
            "samples have no server column".into(),
        ));
    };
    let parts = datafusion::arrow::compute::partition(std::slice::from_ref(server))?;
    Ok(parts
        .ranges()
        .into_iter()
        .map(|r| r.start)
        .filter(|&s| s > 0)
        .collect())
}

/// One worker: a single-partition context whose tables are refilled per chunk, and the
/// physical plan of each query, made on first use.
struct Worker {
    ctx: SessionContext,
    /// Table name → its schema and the rows of the current chunk.
    tables: HashMap<String, (SchemaRef, Rows)>,
    plans: HashMap<&'static str, Arc<dyn ExecutionPlan>>,
    /// Every query a chunk may run, parsed once (thresholds substituted).
    parsed: HashMap<&'static str, Parsed>,
    /// View name → the tables it reads.
    views: HashMap<String, Vec<String>>,
    opts: AnalyzeOptions,
}

impl Worker {
    async fn new(
        raw: SchemaRef,
        samples_view: &str,
        chunk_rows: usize,
        thresholds: &Thresholds,
        opts: AnalyzeOptions,
    ) -> Result<Self, AnalysisError> {
        let mut cfg = SessionConfig::new()
            .with_target_partitions(1)
            // Batches as big as a chunk: every window stage of the catalog materializes
            // its whole input anyway, and with one batch that concatenation is free.
            // (Capped: some operators allocate a batch's capacity up front.)
            .with_batch_size(chunk_rows.clamp(8192, 1 << 20))
            .with_information_schema(false);
        // Plans are executed again on later chunks: no state may carry over between
        // executions, and dynamic filters are state `reset_plan_states` keeps.
        cfg = cfg.set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false);
        let mut parsed = HashMap::new();
        for q in CATALOG.iter().chain([&UNITS_SINGLE_ENGINE]) {
            parsed.insert(
                q.name,
                parse(q.name, &thresholds.substitute(q.name, q.sql)?)?,
            );
        }
        let view = parse("samples view", samples_view)?;
        let views = view
            .creates
            .iter()
            .map(|v| (v.clone(), view.reads.clone()))
            .collect();
        let mut worker = Self {
            ctx: super::context_from(cfg),
            tables: HashMap::new(),
            plans: HashMap::new(),
            parsed,
            views,
            opts,
        };
        worker.register("samples_raw", &raw, &INPUT_ORDER)?;
        worker
            .ctx
            .sql(samples_view)
            .await
            .map_err(qerr("samples view"))?;
        Ok(worker)
    }

    /// Registers `name` as a table sorted by `order` whose rows [`Worker::fill`] sets.
    /// Every field is nullable: a plan made on one chunk must accept the rows of the next
    /// (the two `units` queries differ in what they declare non-null).
    fn register(
        &mut self,
        name: &str,
        schema: &SchemaRef,
        order: &[impl AsRef<str>],
    ) -> Result<(), AnalysisError> {
        let err = |e: DataFusionError| AnalysisError::Query {
            query: "chunk tables",
            source: e,
        };
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let rows = Rows::default();
        let slot = Slot {
            schema: schema.clone(),
            rows: rows.clone(),
        };
        let table = StreamingTable::try_new(schema.clone(), vec![Arc::new(slot)])
            .map_err(err)?
            .with_sort_order(
                order
                    .iter()
                    .map(|c| col(c.as_ref()).sort(true, false))
                    .collect(),
            );
        self.ctx
            .register_table(name, Arc::new(table))
            .map_err(err)?;
        self.tables.insert(name.to_string(), (schema, rows));
        Ok(())
    }

    /// Sets the rows of a registered table, as one batch of the table's schema.
    fn fill(&self, name: &str, batches: Vec<RecordBatch>) -> Result<(), AnalysisError> {
        let err = |e: DataFusionError| AnalysisError::Query {
            query: "chunk tables",
            source: e,
        };
        let Some((schema, rows)) = self.tables.get(name) else {
            return Err(err(DataFusionError::Plan(format!("no chunk table {name}"))));
        };
        let batch = match batches.first() {
            None => RecordBatch::new_empty(schema.clone()),
            Some(first) => {
                // Same names in the same order: columns are matched by position below.
                let names = |s: &Schema| -> Vec<String> {
                    s.fields().iter().map(|f| f.name().clone()).collect()
                };
                if names(&first.schema()) != names(schema) {
                    return Err(err(DataFusionError::Plan(format!(
                        "rows for {name} have columns {:?}, the table has {:?}",
                        names(&first.schema()),
                        names(schema)
                    ))));
                }
                let one = datafusion::arrow::compute::concat_batches(&first.schema(), &batches)
                    .map_err(|e| err(e.into()))?;
                RecordBatch::try_new(schema.clone(), one.columns().to_vec())
                    .map_err(|e| err(e.into()))?
            }
        };
        *lock(rows) = vec![batch];
        Ok(())
    }

    /// The catalog (without the histogram query) over one chunk of whole servers,
    /// sorted by (server, ts).
    async fn run(&mut self, chunk: Vec<RecordBatch>) -> Result<CatalogOutput, AnalysisError> {
        let single_engine = one_row_per_unit(&chunk).map_err(qerr("chunk"))?;
        self.fill("samples_raw", chunk)?;
        let queries = chunk_queries(self.opts, single_engine);
        let mut events = Vec::new();
        let mut results = BTreeMap::new();
        for (k, q) in queries.iter().enumerate() {
            let started = std::time::Instant::now();
            let plan = match self.plans.get(q.name) {
                Some(plan) => plan.clone(),
                None => {
                    let plan = self.plan(q).await?;
                    self.plans.insert(q.name, plan.clone());
                    plan
                }
            };
            let fresh = reset_plan_states(plan.clone()).map_err(qerr(q.name))?;
            let batches = collect(fresh.clone(), self.ctx.task_ctx())
                .await
                .map_err(qerr(q.name))?;
            match q.kind {
                QueryKind::Table => {
                    let parsed = self.parsed(q.name)?;
                    let (Some(name), order) = (parsed.creates.clone(), parsed.order.clone()) else {
                        return Err(not_a_table(q.name));
                    };
                    if !self.tables.contains_key(&name) {
                        self.register(&name, &plan.schema(), &order)?;
                    }
                    self.fill(&name, batches)?;
                }
                QueryKind::Events => {
                    for b in &batches {
                        events.extend(events_from_batch(b)?);
                    }
                }
                _ => {
                    results.insert(q.name, compact(batches).map_err(qerr(q.name))?);
                }
            }
            tracing::debug!("{} took {:?}", q.name, started.elapsed());
            // Where a query's time goes, operator by operator (`KVSCOPE_LOG=trace`).
            if tracing::enabled!(tracing::Level::TRACE) {
                tracing::trace!(
                    "{} plan with metrics:\n{}",
                    q.name,
                    datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
                        fresh.as_ref()
                    )
                    .indent(true)
                );
            }
            // Empty the tables no later query reads: bounds a chunk's memory to the
            // tables in use. (`samples_raw` is read through the `samples` view.)
            let later = queries.get(k + 1..).unwrap_or_default();
            for (name, (_, rows)) in &self.tables {
                if !later.iter().any(|l| self.reads(l.name, name)) {
                    lock(rows).clear();
                }
            }
        }
        sort_events(&mut events);
        Ok((events, results))
    }

    async fn plan(&self, q: &Query) -> Result<Arc<dyn ExecutionPlan>, AnalysisError> {
        let parsed = self.parsed(q.name)?;
        let state = self.ctx.state();
        let logical = state
            .statement_to_plan(parsed.select.clone())
            .await
            .map_err(qerr(q.name))?;
        let df = datafusion::dataframe::DataFrame::new(state, logical);
        df.create_physical_plan().await.map_err(qerr(q.name))
    }

    fn parsed(&self, query: &'static str) -> Result<&Parsed, AnalysisError> {
        self.parsed.get(query).ok_or_else(|| AnalysisError::Query {
            query,
            source: DataFusionError::Plan("not in the parsed catalog".into()),
        })
    }

    /// Whether `query` reads `table`, directly or through a view.
    fn reads(&self, query: &'static str, table: &str) -> bool {
        self.parsed.get(query).is_none_or(|p| {
            p.reads.iter().any(|r| {
                r == table
                    || self
                        .views
                        .get(r)
                        .is_some_and(|v| v.iter().any(|t| t == table))
            })
        })
    }
}

/// What DataFusion's SQL parser says about one statement of the catalog: the runner
/// takes table names, dependencies and sort orders from here, never from the SQL text.
#[derive(Debug, Clone)]
struct Parsed {
    /// The table a `CREATE TABLE … AS` statement creates.
    creates: Option<String>,
    /// The query to plan (a table's `AS` query, else the statement itself).
    select: DFStatement,
    /// Tables and views the statement reads (CTE names excluded).
    reads: Vec<String>,
    /// The leading plain columns of the final `ORDER BY`: the order the rows come out
    /// in, declared to DataFusion for the created table so later window queries do not
    /// sort again.
    order: Vec<String>,
}

/// Parses one statement (thresholds already substituted).
fn parse(query: &'static str, sql: &str) -> Result<Parsed, AnalysisError> {
    use datafusion::sql::sqlparser::ast::{Expr, OrderByKind, Statement};
    let fail = |m: String| AnalysisError::Query {
        query,
        source: DataFusionError::Plan(m),
    };
    let mut statements = DFParser::parse_sql(sql).map_err(qerr(query))?;
    let (Some(statement), true) = (statements.pop_front(), statements.is_empty()) else {
        return Err(fail("a catalog file holds exactly one statement".into()));
    };
    let (refs, _ctes) = datafusion::sql::resolve::resolve_table_references(&statement, true)
        .map_err(qerr(query))?;
    let DFStatement::Statement(inner) = statement else {
        return Err(fail("not a SQL statement".into()));
    };
    let (creates, select) = match *inner {
        Statement::CreateTable(ct) => {
            let Some(select) = ct.query else {
                return Err(not_a_table(query));
            };
            (Some(ct.name.to_string()), select)
        }
        Statement::CreateView(cv) => (Some(cv.name.to_string()), cv.query),
        Statement::Query(select) => (None, select),
        other => return Err(fail(format!("unsupported statement: {other}"))),
    };
    let order = match select.order_by.as_ref().map(|o| &o.kind) {
        Some(OrderByKind::Expressions(exprs)) => exprs
            .iter()
            .map_while(|e| match &e.expr {
                Expr::Identifier(id) if e.options.asc != Some(false) => Some(id.value.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Parsed {
        reads: refs
            .iter()
            .map(|r| r.table().to_string())
            .filter(|t| Some(t) != creates.as_ref())
            .collect(),
        creates,
        select: DFStatement::Statement(Box::new(Statement::Query(select))),
        order,
    })
}

fn not_a_table(query: &'static str) -> AnalysisError {
    AnalysisError::Query {
        query,
        source: DataFusionError::Plan(
            "a table query must be `CREATE TABLE name AS <query>`".into(),
        ),
    }
}

/// The catalog queries a chunk runs, in order: all but the histogram queries, the
/// series query only when asked for, and the single-engine units query when every
/// (server, ts) has one row.
fn chunk_queries(opts: AnalyzeOptions, single_engine: bool) -> Vec<&'static Query> {
    CATALOG
        .iter()
        .filter(|q| q.kind != QueryKind::Histograms)
        .filter(|q| q.kind != QueryKind::Series || opts.series)
        .map(|q| {
            if single_engine && q.name == "01_units.sql" {
                &UNITS_SINGLE_ENGINE
            } else {
                q
            }
        })
        .collect()
}

/// The rows of one chunk table, shared by the worker (which sets them) and the table's
/// stream (which reads them when a plan executes).
type Rows = Arc<Mutex<Vec<RecordBatch>>>;

fn lock(rows: &Rows) -> MutexGuard<'_, Vec<RecordBatch>> {
    // Nothing panics while holding the lock; a poisoned one still holds valid batches.
    rows.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct Slot {
    schema: SchemaRef,
    rows: Rows,
}

impl PartitionStream for Slot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }
    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = lock(&self.rows).clone();
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ))
    }
}

/// True when no two consecutive rows (sorted by server, ts) share (server, ts).
fn one_row_per_unit(batches: &[RecordBatch]) -> Result<bool, DataFusionError> {
    use datafusion::common::ScalarValue;
    let key = |b: &RecordBatch, i: usize| -> Result<(ScalarValue, ScalarValue), DataFusionError> {
        let col = |n: &str| {
            b.column_by_name(n)
                .ok_or_else(|| DataFusionError::Plan(format!("samples have no {n} column")))
        };
        Ok((
            ScalarValue::try_from_array(col("server")?, i)?,
            ScalarValue::try_from_array(col("ts")?, i)?,
        ))
    };
    let mut last: Option<(ScalarValue, ScalarValue)> = None;
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        let (Some(server), Some(ts)) = (b.column_by_name("server"), b.column_by_name("ts")) else {
            return Ok(false);
        };
        let runs = datafusion::arrow::compute::partition(&[server.clone(), ts.clone()])?;
        if runs.len() != b.num_rows() {
            return Ok(false);
        }
        if last.as_ref() == Some(&key(b, 0)?) {
            return Ok(false);
        }
        last = Some(key(b, b.num_rows() - 1)?);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(name: &'static str) -> Parsed {
        let q = CATALOG
            .iter()
            .chain([&UNITS_SINGLE_ENGINE])
            .find(|q| q.name == name)
            .unwrap();
        parse(
            name,
            &Thresholds::default().substitute(name, q.sql).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn tables_reads_and_orders_come_from_the_parser() {
        let t = parsed("02_timeline.sql");
        assert_eq!(t.creates.as_deref(), Some("timeline"));
        // CTEs (`counted`, `base`, `smoothed`, …) are not tables it reads.
        assert_eq!(t.reads, ["units"]);
        assert_eq!(t.order, ["server", "ts"]);
        let m = parsed("05_condition_marks.sql");
        assert_eq!(m.creates.as_deref(), Some("condition_marks"));
        assert_eq!(m.reads, ["sample_flags"]);
        assert!(
            m.order.is_empty(),
            "a UNION without ORDER BY declares no order"
        );
        let e = parsed("10_phase_transitions.sql");
        assert_eq!(e.creates, None);
        assert_eq!(e.reads, ["sample_flags"]);
        let bad = parse("x", "CREATE TABLE t (a INT)");
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("CREATE TABLE name AS")
        );
        assert!(parse("x", "SELECT 1; SELECT 2").is_err());
    }

    #[test]
    fn every_table_query_creates_a_table_later_queries_read() {
        for q in CATALOG.iter().filter(|q| q.kind == QueryKind::Table) {
            let name = parsed(q.name).creates.unwrap();
            assert!(
                CATALOG.iter().any(|l| parsed(l.name).reads.contains(&name)),
                "{} creates {name}, which nothing reads",
                q.name
            );
        }
    }
}
