//! `kvscope worker`: a datafusion-distributed worker (a gRPC / Arrow Flight service)
//! that decodes [`super::exec::JobExec`] and runs its units: a shard of a session through
//! the catalog ([`crate::analysis::analyze_shard`]), or a session through the doctor.

use std::net::SocketAddr;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::Result;
use datafusion::error::DataFusionError;
use datafusion_distributed::{DistributedExt, Worker, WorkerQueryContext};
use tokio::sync::mpsc::Sender;

use super::exec::{JobCodec, Part, part_batch};
use super::{ClusterError, Job, Unit};
use crate::analysis::{self, AnalyzeOptions};
use crate::store::export::{self, ExportReport, PartitionKey};
use crate::store::location::Location;

/// Serves a worker on `addr` until the process ends. `ready` is called with the bound
/// address once it accepts connections (port 0 picks a free one).
pub async fn serve(addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> Result<(), ClusterError> {
    let worker = Worker::from_session_builder(|ctx: WorkerQueryContext| async move {
        Ok(ctx.builder.with_distributed_user_codec(JobCodec).build())
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ClusterError::Listen(addr.to_string(), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| ClusterError::Listen(addr.to_string(), e))?;
    ready(bound);
    tonic::transport::Server::builder()
        .add_service(worker.into_worker_server())
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await
        .map_err(|e| ClusterError::Serve(e.to_string()))
}

/// Fault injection for the cluster tests: with `KVSCOPE_WORKER_DIE_AFTER_UNITS=N`, the
/// worker process exits (as a crashed machine disappears, connections dropped mid-stream)
/// when it is about to start its unit N + 1, its earlier units already sent.
fn die_if_told() {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let limit = std::env::var("KVSCOPE_WORKER_DIE_AFTER_UNITS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    if limit.is_some_and(|limit| n >= limit) {
        eprintln!("worker: KVSCOPE_WORKER_DIE_AFTER_UNITS reached; exiting");
        std::process::exit(3);
    }
}

fn ext(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

async fn send(tx: &Sender<Result<RecordBatch>>, batch: RecordBatch) -> Result<()> {
    tx.send(Ok(batch))
        .await
        .map_err(|_| DataFusionError::Execution("the coordinator went away".into()))
}

/// Runs one unit and sends its output, `done` last. An error of the unit's own (a
/// session that cannot be read) is sent as a `failed` part; an error of the worker ends
/// the task.
pub async fn run_unit(job: &Job, unit: &Unit, tx: &Sender<Result<RecordBatch>>) -> Result<()> {
    die_if_told();
    match job {
        Job::Analyze {
            session,
            thresholds,
            chunk_rows,
        } => {
            let loc = Location::parse(session).map_err(ext)?;
            let runs = tempfile::Builder::new()
                .prefix("kvscope-shard-")
                .tempdir()
                .map_err(ext)?;
            let opts = AnalyzeOptions {
                chunk_rows: *chunk_rows,
                ..Default::default()
            };
            let results = match analysis::analyze_shard(
                &loc,
                &unit.work,
                thresholds,
                opts,
                runs.path(),
            )
            .await
            {
                Ok(results) => results,
                // The session's own error (unreadable, empty): the same on any worker,
                // so reported, not retried.
                Err(e) => {
                    let message = crate::error_chain(&e);
                    send(
                        tx,
                        part_batch(unit.index, Part::Failed, 0, "", message.as_bytes())?,
                    )
                    .await?;
                    return send(tx, part_batch(unit.index, Part::Done, 0, "", &[])?).await;
                }
            };
            // The shard's runs, in chunk order (run-NNNNNN.arrows).
            let mut files: Vec<_> = std::fs::read_dir(runs.path())
                .map_err(ext)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            files.sort();
            for (chunk, path) in files.iter().enumerate() {
                let bytes = std::fs::read(path).map_err(ext)?;
                let chunk = u32::try_from(chunk).unwrap_or(u32::MAX);
                send(tx, part_batch(unit.index, Part::Events, chunk, "", &bytes)?).await?;
            }
            for (name, batches) in results {
                let Some(first) = batches.first() else {
                    continue;
                };
                let mut w = StreamWriter::try_new(Vec::new(), &first.schema())?;
                for b in &batches {
                    w.write(b)?;
                }
                let bytes = w.into_inner()?;
                send(tx, part_batch(unit.index, Part::Table, 0, name, &bytes)?).await?;
            }
        }
        Job::Doctor {
            thresholds,
            vllm_version,
        } => {
            let version = vllm_version
                .as_deref()
                .and_then(crate::adapter::version::VllmVersion::parse);
            let session = unit.work.first().map(String::as_str).unwrap_or_default();
            let outcome = match Location::parse(session) {
                Ok(loc) => crate::diagnosis::doctor_location(&loc, thresholds, version)
                    .await
                    .map_err(|e| crate::error_chain(&e))
                    .and_then(|r| serde_json::to_vec_pretty(&r).map_err(|e| e.to_string())),
                Err(e) => Err(e.to_string()),
            };
            let batch = match outcome {
                Ok(report) => part_batch(unit.index, Part::Report, 0, "", &report)?,
                Err(e) => part_batch(unit.index, Part::Failed, 0, "", e.as_bytes())?,
            };
            send(tx, batch).await?;
        }
        Job::Export { out, partition_by } => {
            let session = unit.work.first().map(String::as_str).unwrap_or_default();
            let outcome = export_one(session, out, partition_by).await;
            let batch = match outcome {
                Ok(report) => part_batch(unit.index, Part::Report, 0, "", &report)?,
                Err(e) => part_batch(unit.index, Part::Failed, 0, "", e.as_bytes())?,
            };
            send(tx, batch).await?;
        }
    }
    send(tx, part_batch(unit.index, Part::Done, 0, "", &[])?).await
}

/// One session of an export job: what it wrote, as JSON, or why it failed.
async fn export_one(session: &str, out: &str, partition_by: &[String]) -> Result<Vec<u8>, String> {
    let keys = partition_by
        .iter()
        .map(|k| PartitionKey::parse(k))
        .collect::<Result<Vec<_>, _>>()?;
    let loc = Location::parse(session).map_err(|e| crate::error_chain(&e))?;
    let out = Location::parse(out).map_err(|e| crate::error_chain(&e))?;
    let mut report = ExportReport::default();
    export::export_session(&loc, &out, &keys, &mut report)
        .await
        .map_err(|e| crate::error_chain(&e))?;
    serde_json::to_vec(&report).map_err(|e| e.to_string())
}
