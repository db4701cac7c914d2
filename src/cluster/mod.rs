//! Beyond one machine (feature `cluster`): the catalog and the doctor on a distributed
//! DataFusion engine, [datafusion-distributed](https://github.com/datafusion-contrib/datafusion-distributed).
//!
//! Workers are `kvscope worker` processes (a gRPC / Arrow Flight service each); the
//! process that runs `analyze|doctor --cluster URL…` coordinates: it plans a
//! [`exec::JobExec`] — a leaf whose units are shards of a session's servers, or whole
//! sessions — and the distributed planner gives each worker a contiguous group of units,
//! ships it there and streams the results back as Arrow.
//!
//! Why the unit is a shard of servers and not each query's plan: the catalog is sixteen
//! statements, most of them materialising a table the next one reads, and every one
//! partitions by server. Distributed statement by statement, each intermediate table
//! would cross the network; cut by server, a shard runs the whole catalog where its rows
//! are, exactly as a single machine runs it on a chunk. The coordinator then finishes as
//! a local run does (histogram queries, the events' k-way merge, the summary), so the
//! files are byte-identical to a local run's.
//!
//! A lost worker: units are kept only when complete (their `done` row arrived); the
//! units left are run again on the workers still answering, up to [`ATTEMPTS`] times,
//! and nothing is written unless every unit completed.

pub mod exec;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{SchemaRef, UInt32Type, UInt64Type};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::Expr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::prelude::SessionContext;
use datafusion_distributed::{
    DistributedExt, NetworkCoalesceExec, SessionStateBuilderExt, WorkerResolver,
};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::analysis::{self, AnalysisError, AnalyzeOptions, Thresholds, Written};
use crate::diagnosis::Report;
use crate::store::export::{ExportReport, PartitionKey};
use crate::store::location::Location;
use exec::{JobCodec, JobExec, Part};

/// Tries per unit before the job fails.
pub const ATTEMPTS: usize = 3;

/// Errors of a cluster run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--cluster {0}: not a worker URL (http://HOST:PORT)")]
    BadUrl(String),
    #[error("--cluster: none of the workers answers ({0})")]
    NoWorkers(String),
    #[error(
        "{left} of {total} units not completed after {ATTEMPTS} attempts; nothing written (last error: {last})"
    )]
    Incomplete {
        left: usize,
        total: usize,
        last: String,
    },
    #[error("cluster: {0}")]
    Query(#[from] DataFusionError),
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    #[error("cluster: unit {unit}: {message}")]
    Unit { unit: usize, message: String },
    #[error("cluster: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("worker: cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("worker: {0}")]
    Serve(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a cluster runs; units say on what.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// The catalog over shards of one session's servers (a unit's `work`: its servers).
    Analyze {
        session: String,
        thresholds: Thresholds,
        chunk_rows: Option<usize>,
    },
    /// The doctor over whole sessions (a unit's `work`: one session), each writing its
    /// files (summary, events, doctor.json) into the session as a local run does.
    Doctor {
        thresholds: Thresholds,
        vllm_version: Option<String>,
    },
    /// Whole sessions exported into one Hive dataset at `out` (a unit's `work`: one
    /// session; each session's files are named by its id, so workers never collide).
    Export {
        out: String,
        partition_by: Vec<String>,
    },
}

impl Job {
    fn kind(&self) -> &'static str {
        match self {
            Job::Analyze { .. } => "analyze",
            Job::Doctor { .. } => "doctor",
            Job::Export { .. } => "export",
        }
    }
}

/// One unit of a job: its index (the order results are put back in) and its work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unit {
    pub index: usize,
    pub work: Vec<String>,
}

/// The workers of `--cluster`.
#[derive(Debug, Clone)]
pub struct Cluster {
    urls: Vec<Url>,
}

/// The planner's view of the workers: those that answered before this attempt.
#[derive(Clone)]
struct Workers(Vec<Url>);

impl WorkerResolver for Workers {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.0.clone())
    }
}

/// A [`JobExec`] as a table, so that it is planned like any scan.
#[derive(Debug)]
struct JobTable(Arc<JobExec>);

#[async_trait]
impl TableProvider for JobTable {
    fn schema(&self) -> SchemaRef {
        exec::output_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let all = exec::output_schema().fields().len();
        if projection.is_some_and(|p| *p != (0..all).collect::<Vec<_>>()) {
            return Err(DataFusionError::Internal(
                "KvscopeJobExec is read whole".into(),
            ));
        }
        Ok(self.0.clone())
    }
}

/// Puts the network boundary above the job: `tasks` producer tasks gathered into the
/// coordinator. Placed by hand (the planner distributes only plans that repartition: a
/// one-partition leaf would run on the coordinator), as the last physical optimizer rule
/// so that no earlier rule drops the final coalesce; the planner still scales the leaf
/// ([`exec::scale_up`]).
#[derive(Debug)]
struct Gather {
    tasks: usize,
}

impl PhysicalOptimizerRule for Gather {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if !node.is::<JobExec>() {
                return Ok(Transformed::no(node));
            }
            let gathered = NetworkCoalesceExec::try_new(node, self.tasks, 1)?;
            Ok(Transformed::yes(Arc::new(CoalescePartitionsExec::new(
                Arc::new(gathered),
            ))))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "kvscope_gather"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

impl Cluster {
    /// `--cluster` values: worker URLs (`http://HOST:PORT`, or `HOST:PORT`), repeated or
    /// comma-separated.
    pub fn parse(specs: &[String]) -> Result<Self, ClusterError> {
        let mut urls = Vec::new();
        for spec in specs.iter().flat_map(|s| s.split(',')) {
            let spec = spec.trim();
            if spec.is_empty() {
                continue;
            }
            let full = crate::source::scrape::with_default_scheme(spec);
            let url = Url::parse(&full).map_err(|_| ClusterError::BadUrl(spec.to_string()))?;
            if url.scheme() != "http" || url.host_str().is_none() || url.port().is_none() {
                return Err(ClusterError::BadUrl(spec.to_string()));
            }
            urls.push(url);
        }
        if urls.is_empty() {
            return Err(ClusterError::BadUrl(specs.join(",")));
        }
        Ok(Self { urls })
    }

    /// The workers accepting connections now (a killed worker refuses them).
    async fn live(&self) -> Vec<Url> {
        let mut live = Vec::new();
        for url in &self.urls {
            let (Some(host), Some(port)) = (url.host_str(), url.port()) else {
                continue;
            };
            let connect = tokio::net::TcpStream::connect((host, port));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
                live.push(url.clone());
            }
        }
        live
    }

    async fn live_or_err(&self) -> Result<Vec<Url>, ClusterError> {
        let live = self.live().await;
        if live.is_empty() {
            let all: Vec<String> = self.urls.iter().map(Url::to_string).collect();
            return Err(ClusterError::NoWorkers(all.join(", ")));
        }
        Ok(live)
    }

    /// Runs `units` of `job` on the workers; events (analyze) are written as run files
    /// into `runs`. Units of a failed attempt run again on the workers still answering.
    async fn run(
        &self,
        job: Job,
        units: Vec<Unit>,
        runs: Option<&Path>,
    ) -> Result<BTreeMap<usize, UnitOutput>, ClusterError> {
        let total = units.len();
        let mut collected = Collected::new(runs);
        let mut pending = units;
        let mut last = String::new();
        let started = std::time::Instant::now();
        for attempt in 1..=ATTEMPTS {
            let live = self.live_or_err().await?;
            tracing::debug!(
                "cluster: attempt {attempt}, {} units on {} workers",
                pending.len(),
                live.len()
            );
            if let Err(e) = run_once(&job, &pending, live, &mut collected).await {
                tracing::warn!("cluster: attempt {attempt} failed: {e}");
                last = e.to_string();
            }
            collected.drop_partial()?;
            pending.retain(|u| !collected.done.contains_key(&u.index));
            if pending.is_empty() {
                tracing::debug!("cluster: {total} units done in {:?}", started.elapsed());
                return Ok(collected.done);
            }
            if last.is_empty() {
                last = format!("{} units returned nothing", pending.len());
            }
        }
        Err(ClusterError::Incomplete {
            left: pending.len(),
            total,
            last,
        })
    }

    /// `analyze --cluster`: the session cut into shards of whole servers (two per live
    /// worker, by sample count), the catalog run on the workers, then finished here as a
    /// local run finishes: the same three files, byte for byte.
    pub async fn analyze_and_write(
        &self,
        loc: &Location,
        out: Option<&Location>,
        thresholds: &Thresholds,
        opts: AnalyzeOptions,
    ) -> Result<Written, ClusterError> {
        let out = out.unwrap_or(loc);
        let servers = analysis::session_servers(loc).await?;
        let workers = self.live_or_err().await?.len();
        let units: Vec<Unit> = shards(&servers, workers * 2)
            .into_iter()
            .enumerate()
            .map(|(index, work)| Unit { index, work })
            .collect();
        let staging = analysis::Staging::new(out)?;
        let job = Job::Analyze {
            session: absolute(loc),
            thresholds: thresholds.clone(),
            chunk_rows: opts.chunk_rows,
        };
        let done = self.run(job, units, Some(staging.runs())).await?;
        let mut results: BTreeMap<&'static str, Vec<RecordBatch>> = BTreeMap::new();
        for (unit, output) in done {
            if let Some(message) = output.failed {
                return Err(ClusterError::Unit { unit, message });
            }
            for (name, bytes) in output.tables {
                let query = analysis::query_name(&name).ok_or_else(|| ClusterError::Unit {
                    unit,
                    message: format!("unknown result table {name}"),
                })?;
                let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
                    .map_err(DataFusionError::from)?;
                let batches = reader
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(DataFusionError::from)?;
                results.entry(query).or_default().extend(batches);
            }
        }
        Ok(analysis::write_from_shards(loc, out, thresholds, results, &staging).await?)
    }

    /// `doctor --cluster`: each session diagnosed on a worker (which writes its files
    /// into the session); the reports in argument order, or why a session failed.
    pub async fn doctor(
        &self,
        sessions: &[Location],
        thresholds: &Thresholds,
        vllm_version: Option<String>,
    ) -> Result<Vec<Result<Report, String>>, ClusterError> {
        let job = Job::Doctor {
            thresholds: thresholds.clone(),
            vllm_version,
        };
        self.per_session(job, sessions).await
    }

    /// `export --cluster`: each session exported by a worker into the dataset at `out`;
    /// what each wrote, in argument order, or why a session failed.
    pub async fn export(
        &self,
        sessions: &[Location],
        out: &Location,
        partition_by: &[PartitionKey],
    ) -> Result<Vec<Result<ExportReport, String>>, ClusterError> {
        let job = Job::Export {
            out: absolute(out),
            partition_by: partition_by
                .iter()
                .map(|k| k.as_str().to_string())
                .collect(),
        };
        self.per_session(job, sessions).await
    }

    /// Runs a job with one unit per session; each unit's JSON report decoded.
    async fn per_session<T: serde::de::DeserializeOwned>(
        &self,
        job: Job,
        sessions: &[Location],
    ) -> Result<Vec<Result<T, String>>, ClusterError> {
        let units: Vec<Unit> = sessions
            .iter()
            .enumerate()
            .map(|(index, loc)| Unit {
                index,
                work: vec![absolute(loc)],
            })
            .collect();
        let done = self.run(job, units, None).await?;
        let mut out = Vec::with_capacity(done.len());
        for (unit, output) in done {
            out.push(match output.failed {
                Some(message) => Err(message),
                None => serde_json::from_slice(&output.report)
                    .map_err(|e| format!("unit {unit}: the worker's report does not parse: {e}")),
            });
        }
        Ok(out)
    }
}

/// A location as every worker reads it: local paths made absolute (workers share the
/// filesystem, not the coordinator's working directory).
fn absolute(loc: &Location) -> String {
    match loc.as_local() {
        Some(p) => std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string(),
        None => loc.to_string(),
    }
}

/// Cuts `servers` (in order, with their sample counts) into at most `n` contiguous
/// shards of about equal samples.
fn shards(servers: &[(String, u64)], n: usize) -> Vec<Vec<String>> {
    let total: u64 = servers.iter().map(|(_, c)| c).sum();
    let n = n.clamp(1, servers.len().max(1)) as u64;
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut seen = 0u64;
    for (server, count) in servers {
        // The shard this server starts in: by the samples before it.
        let shard = (seen * n / total.max(1)) as usize;
        if out.len() <= shard {
            out.push(Vec::new());
        }
        if let Some(last) = out.last_mut() {
            last.push(server.clone());
        }
        seen += count;
    }
    out
}

/// Runs one attempt: a distributed plan of `units` over `workers`, its rows collected.
async fn run_once(
    job: &Job,
    units: &[Unit],
    workers: Vec<Url>,
    collected: &mut Collected,
) -> Result<(), ClusterError> {
    // One task per worker (at most one per unit), and never fewer than two: a boundary
    // from one task to one is elided, which would run the job here.
    let tasks = workers.len().min(units.len()).max(2);
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(Gather { tasks }))
        .with_distributed_worker_resolver(Workers(workers))
        .with_distributed_planner()
        .with_distributed_user_codec(JobCodec)
        .with_distributed_desired_task_count_handler(exec::desired_task_count)
        .with_distributed_scale_up_leaf_node_handler(exec::scale_up)
        .build();
    let ctx = SessionContext::from(state);
    let table = JobTable(Arc::new(JobExec::new(job.clone(), units.to_vec())));
    let df = ctx.read_table(Arc::new(table))?;
    if tracing::enabled!(tracing::Level::DEBUG) {
        let plan = df.clone().create_physical_plan().await?;
        tracing::debug!(
            "cluster plan:\n{}",
            datafusion_distributed::display_plan_ascii(plan.as_ref(), false)
        );
    }
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        collected.add(&batch?)?;
    }
    Ok(())
}

/// What one completed unit returned.
#[derive(Debug, Default)]
struct UnitOutput {
    /// Result tables (analyze): query name → Arrow IPC stream.
    tables: BTreeMap<String, Vec<u8>>,
    /// `doctor.json` (doctor).
    report: Vec<u8>,
    /// Why the unit failed (its own error, not a worker's).
    failed: Option<String>,
    /// Event run files written so far, per chunk (pieces are counted in `next`).
    events: BTreeMap<u32, PathBuf>,
    /// The next piece expected per (part, name).
    next: HashMap<(String, String), u32>,
}

/// Rows from the workers, assembled per unit; a unit moves to `done` on its `done` row.
struct Collected {
    runs: Option<PathBuf>,
    partial: HashMap<usize, UnitOutput>,
    done: BTreeMap<usize, UnitOutput>,
}

impl Collected {
    fn new(runs: Option<&Path>) -> Self {
        Self {
            runs: runs.map(Path::to_path_buf),
            partial: HashMap::new(),
            done: BTreeMap::new(),
        }
    }

    fn add(&mut self, batch: &RecordBatch) -> Result<(), ClusterError> {
        let col = |i: usize| batch.column(i);
        let units = col(0).as_primitive::<UInt64Type>();
        let parts = col(1).as_string::<i32>();
        let chunks = col(2).as_primitive::<UInt32Type>();
        let names = col(3).as_string::<i32>();
        let seqs = col(4).as_primitive::<UInt32Type>();
        let datas = col(5).as_binary::<i32>();
        for row in 0..batch.num_rows() {
            let unit = usize::try_from(units.value(row)).unwrap_or(usize::MAX);
            let bad = |message: String| ClusterError::Unit { unit, message };
            let part = Part::parse(parts.value(row))
                .ok_or_else(|| bad(format!("unknown part {}", parts.value(row))))?;
            let (chunk, name, seq, data) = (
                chunks.value(row),
                names.value(row),
                seqs.value(row),
                datas.value(row),
            );
            if self.done.contains_key(&unit) {
                return Err(bad("rows after its end".into()));
            }
            if part == Part::Done {
                let output = self.partial.remove(&unit).unwrap_or_default();
                self.finish(unit, output)?;
                continue;
            }
            let out = self.partial.entry(unit).or_default();
            let key = (part.as_str().to_string(), format!("{name}/{chunk}"));
            let expected = out.next.entry(key).or_insert(0);
            if seq != *expected {
                return Err(bad(format!("piece {seq} arrived, {expected} expected")));
            }
            *expected += 1;
            match part {
                Part::Events => {
                    let Some(runs) = &self.runs else {
                        return Err(bad("events from a job without them".into()));
                    };
                    let path = runs.join(format!("part-{unit:06}-{chunk:06}.part"));
                    let mut f = if seq == 0 {
                        File::create(&path)
                    } else {
                        std::fs::OpenOptions::new().append(true).open(&path)
                    }
                    .map_err(io(&path))?;
                    f.write_all(data).map_err(io(&path))?;
                    out.events.insert(chunk, path);
                }
                Part::Table => out
                    .tables
                    .entry(name.to_string())
                    .or_default()
                    .extend_from_slice(data),
                Part::Report => out.report.extend_from_slice(data),
                Part::Failed => out
                    .failed
                    .get_or_insert_with(String::new)
                    .push_str(&String::from_utf8_lossy(data)),
                Part::Done => {}
            }
        }
        Ok(())
    }

    /// A complete unit: its event parts become run files the merge reads.
    fn finish(&mut self, unit: usize, output: UnitOutput) -> Result<(), ClusterError> {
        if let Some(runs) = &self.runs {
            for (chunk, path) in &output.events {
                let run = analysis::shard_run_path(runs, unit, *chunk as usize);
                std::fs::rename(path, &run).map_err(io(path))?;
            }
        }
        self.done.insert(unit, output);
        Ok(())
    }

    /// Forgets the units a failed attempt left incomplete (their event parts removed).
    fn drop_partial(&mut self) -> Result<(), ClusterError> {
        for (_, output) in self.partial.drain() {
            for path in output.events.values() {
                std::fs::remove_file(path).map_err(io(path))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_contiguous_and_balanced_by_samples() {
        let servers: Vec<(String, u64)> = (0..10).map(|i| (format!("s{i}"), 100)).collect();
        let s = shards(&servers, 4);
        let sizes: Vec<usize> = s.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 2, 3, 2]);
        assert_eq!(
            s.concat(),
            servers.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>()
        );
        // More shards than servers: one server each.
        assert_eq!(shards(&servers[..2], 8).len(), 2);
        // One heavy server takes a shard of its own.
        let skewed = vec![("a".into(), 1000), ("b".into(), 10), ("c".into(), 10)];
        assert_eq!(
            shards(&skewed, 2),
            vec![vec!["a".to_string()], vec!["b".into(), "c".into()]]
        );
    }

    #[test]
    fn cluster_urls_are_checked() {
        let c = Cluster::parse(&["127.0.0.1:9001,http://127.0.0.1:9002".into()]).unwrap();
        assert_eq!(c.urls.len(), 2);
        assert_eq!(c.urls[0].as_str(), "http://127.0.0.1:9001/");
        for bad in ["", "127.0.0.1", "https://h:1", "ftp://h:2"] {
            let e = Cluster::parse(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains("--cluster"), "{bad}: {e}");
        }
    }
}
