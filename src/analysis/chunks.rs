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
use futures::StreamExt;

use super::{
    AnalysisError, AnalyzeOptions, CATALOG, CatalogOutput, Query, QueryKind, Thresholds,
    UNITS_SINGLE_ENGINE, events_from_batch, qerr, run_histogram_queries, sort_events,
};

/// Samples per chunk (whole servers, so a chunk can be bigger): bounds memory for
/// fleets and days of data.
pub const CHUNK_ROWS: usize = 1 << 16;

/// Chunks analysed at once (each on its own single-partition context).
fn chunk_workers(opts: AnalyzeOptions) -> usize {
    opts.chunk_workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, 8)
}

/// Runs the catalog over a registered session: streamed in (server, ts) order, cut into
/// chunks of whole servers analysed concurrently. `ctx` holds `samples_raw` (the input)
/// and `histograms`; `samples_view` is the SQL of the `samples` view over `samples_raw`.
pub(super) async fn run_catalog(
    ctx: &SessionContext,
    samples_view: &str,
    thresholds: &Thresholds,
    opts: AnalyzeOptions,
) -> Result<CatalogOutput, AnalysisError> {
    let chunk_rows = opts.chunk_rows.unwrap_or(CHUNK_ROWS).max(1);
    // Raw columns only: the `samples` view (NULL columns, t_rel_sec) is evaluated in
    // each worker's context, so that work runs on the workers, not on this reader.
    let df = ctx
        .sql("SELECT * FROM samples_raw ORDER BY server, ts")
        .await
        .map_err(qerr("read samples"))?;
    let mut input = df.execute_stream().await.map_err(qerr("read samples"))?;
    let schema = input.schema();
    let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Vec<RecordBatch>)>(1);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut handles = Vec::new();
    for _ in 0..chunk_workers(opts) {
        let rx = rx.clone();
        let mut worker =
            Worker::new(schema.clone(), samples_view, chunk_rows, thresholds, opts).await?;
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = rx.lock().await.recv().await;
                let Some((i, batches)) = next else { break };
                out.push((i, worker.run(batches).await?));
            }
            Ok::<_, AnalysisError>(out)
        }));
    }
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
    for h in handles {
        let done = h.await.map_err(|e| AnalysisError::Query {
            query: "chunk worker",
            source: DataFusionError::External(Box::new(e)),
        })??;
        parts.extend(done);
    }
    parts.sort_by_key(|(i, _)| *i);
    let mut events = Vec::new();
    let mut results: BTreeMap<&'static str, Vec<RecordBatch>> = BTreeMap::new();
    for (_, (ev, res)) in parts {
        events.extend(ev);
        for (k, v) in res {
            results.entry(k).or_default().extend(v);
        }
    }
    // Histograms are per session, not per chunk.
    results.extend(run_histogram_queries(ctx, thresholds).await?);
    sort_events(&mut events);
    Ok((events, results))
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
    thresholds: Thresholds,
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
        let mut worker = Self {
            ctx: super::context_from(cfg),
            tables: HashMap::new(),
            plans: HashMap::new(),
            thresholds: thresholds.clone(),
            opts,
        };
        worker.register("samples_raw", &raw, &["server", "ts"])?;
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
        order: &[&str],
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
            .with_sort_order(order.iter().map(|c| col(*c).sort(true, false)).collect());
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
            let batches = collect(fresh, self.ctx.task_ctx())
                .await
                .map_err(qerr(q.name))?;
            match q.kind {
                QueryKind::Table => {
                    let sql = self.thresholds.substitute(q.name, q.sql)?;
                    let (name, _) = split_create_table(q, &sql)?;
                    if !self.tables.contains_key(name) {
                        self.register(name, &plan.schema(), q.order)?;
                    }
                    self.fill(name, batches)?;
                }
                QueryKind::Events => events.extend(batches.iter().flat_map(events_from_batch)),
                _ => {
                    results.insert(q.name, batches);
                }
            }
            tracing::debug!("{} took {:?}", q.name, started.elapsed());
            // Empty the tables no later query reads: bounds a chunk's memory to the
            // tables in use. (`samples_raw` is read through the `samples` view.)
            let later = queries.get(k + 1..).unwrap_or_default();
            for (name, (_, rows)) in &self.tables {
                let read_as = if name == "samples_raw" {
                    "samples"
                } else {
                    name
                };
                if !later.iter().any(|l| mentions(l.sql, read_as)) {
                    lock(rows).clear();
                }
            }
        }
        sort_events(&mut events);
        Ok((events, results))
    }

    async fn plan(&self, q: &Query) -> Result<Arc<dyn ExecutionPlan>, AnalysisError> {
        let sql = self.thresholds.substitute(q.name, q.sql)?;
        let select = match q.kind {
            QueryKind::Table => split_create_table(q, &sql)?.1,
            _ => sql.as_str(),
        };
        let df = self.ctx.sql(select).await.map_err(qerr(q.name))?;
        df.create_physical_plan().await.map_err(qerr(q.name))
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

/// Whether `sql` (comments aside) names `table` as a whole word.
fn mentions(sql: &str, table: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    sql.lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .any(|l| {
            l.match_indices(table).any(|(i, _)| {
                let before = l.get(..i).and_then(|p| p.chars().next_back());
                let after = l.get(i + table.len()..).and_then(|p| p.chars().next());
                !before.is_some_and(word) && !after.is_some_and(word)
            })
        })
}

/// Splits `CREATE TABLE name AS <select>` into the name and the select.
fn split_create_table<'a>(q: &Query, sql: &'a str) -> Result<(&'a str, &'a str), AnalysisError> {
    let bad = || AnalysisError::Query {
        query: q.name,
        source: DataFusionError::Plan(
            "a table query must start with `CREATE TABLE name AS`".into(),
        ),
    };
    let upper = sql.to_ascii_uppercase();
    let at = upper.find("CREATE TABLE ").ok_or_else(bad)?;
    let rest = sql.get(at + "CREATE TABLE ".len()..).ok_or_else(bad)?;
    let (name, select) = rest
        .trim_start()
        .split_once(char::is_whitespace)
        .ok_or_else(bad)?;
    let select = select.trim_start();
    let select = select
        .get(..2)
        .filter(|k| k.eq_ignore_ascii_case("AS"))
        .and_then(|_| select.get(2..))
        .filter(|rest| rest.starts_with(char::is_whitespace))
        .ok_or_else(bad)?;
    Ok((name, select))
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

    #[test]
    fn table_mentions_ignore_comments_and_longer_names() {
        assert!(mentions("SELECT * FROM units\nWHERE x", "units"));
        assert!(!mentions("-- reads units\nSELECT 1 FROM timeline", "units"));
        assert!(!mentions("SELECT units_total FROM t", "units"));
        assert!(mentions("FROM sample_flags WHERE", "sample_flags"));
    }
}
