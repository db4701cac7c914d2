//! The plan node a cluster runs: [`JobExec`], a leaf whose work is a list of units (a
//! shard of a session's servers, or one session to diagnose), split into one group per
//! task by the distributed planner, with the codec that carries it to the workers.
//!
//! A task runs its units one after another and streams each unit's output back as rows
//! of [`output_schema`]: pieces of at most [`PIECE_BYTES`] (a gRPC message has a size
//! limit), then a `done` row. The coordinator keeps a unit only once its `done` row has
//! arrived, so a worker lost mid-unit leaves nothing half-kept.

use std::fmt;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, RecordBatch, StringBuilder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err, internal_err};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedTaskContext,
    ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse,
};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use super::{Job, Unit};

/// The most bytes one output row carries.
pub const PIECE_BYTES: usize = 1 << 20;

/// What a row of a unit's output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Sorted events of one chunk, as `events.jsonl` lines (`chunk` numbers them).
    Events,
    /// A catalog result table as an Arrow IPC stream (`name` is the query).
    Table,
    /// A diagnosed session's `doctor.json`.
    Report,
    /// The unit could not be done for a reason of its own (bad session): the message.
    Failed,
    /// The unit is complete.
    Done,
}

impl Part {
    const ALL: [Part; 5] = [
        Part::Events,
        Part::Table,
        Part::Report,
        Part::Failed,
        Part::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Events => "events",
            Part::Table => "table",
            Part::Report => "report",
            Part::Failed => "failed",
            Part::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// unit, part, chunk, name, seq (piece number within the part), data.
pub fn output_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("unit", DataType::UInt64, false),
            Field::new("part", DataType::Utf8, false),
            Field::new("chunk", DataType::UInt32, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("seq", DataType::UInt32, false),
            Field::new("data", DataType::Binary, false),
        ]))
    });
    SCHEMA.clone()
}

/// Rows of one part of a unit's output, `data` cut into pieces.
pub fn part_batch(
    unit: usize,
    part: Part,
    chunk: u32,
    name: &str,
    data: &[u8],
) -> Result<RecordBatch> {
    let pieces: Vec<&[u8]> = if data.is_empty() {
        vec![data]
    } else {
        data.chunks(PIECE_BYTES).collect()
    };
    let n = pieces.len();
    let mut units = UInt64Builder::with_capacity(n);
    let mut parts = StringBuilder::new();
    let mut chunks = UInt32Builder::with_capacity(n);
    let mut names = StringBuilder::new();
    let mut seqs = UInt32Builder::with_capacity(n);
    let mut datas = BinaryBuilder::new();
    for (i, piece) in pieces.into_iter().enumerate() {
        units.append_value(unit as u64);
        parts.append_value(part.as_str());
        chunks.append_value(chunk);
        names.append_value(name);
        seqs.append_value(u32::try_from(i).unwrap_or(u32::MAX));
        datas.append_value(piece);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(units.finish()),
        Arc::new(parts.finish()),
        Arc::new(chunks.finish()),
        Arc::new(names.finish()),
        Arc::new(seqs.finish()),
        Arc::new(datas.finish()),
    ];
    Ok(RecordBatch::try_new(output_schema(), cols)?)
}

/// The leaf a cluster distributes: `job` over `tasks[i]` on task `i`.
#[derive(Debug, Clone)]
pub struct JobExec {
    job: Arc<Job>,
    tasks: Vec<Vec<Unit>>,
    properties: Arc<PlanProperties>,
}

impl JobExec {
    /// All `units` in one task (the planner splits them).
    pub fn new(job: Job, units: Vec<Unit>) -> Self {
        Self::with_tasks(Arc::new(job), vec![units])
    }

    fn with_tasks(job: Arc<Job>, tasks: Vec<Vec<Unit>>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(output_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            job,
            tasks,
            properties,
        }
    }

    fn units(&self) -> usize {
        self.tasks.iter().map(Vec::len).sum()
    }
}

impl DisplayAs for JobExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "KvscopeJobExec: {} ", self.job.kind())?;
        let sizes: Vec<String> = self.tasks.iter().map(|t| t.len().to_string()).collect();
        write!(f, "units per task [{}]", sizes.join(", "))
    }
}

impl ExecutionPlan for JobExec {
    fn name(&self) -> &str {
        "KvscopeJobExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return exec_err!("KvscopeJobExec has one partition, not {partition}");
        }
        let task = DistributedTaskContext::from_ctx(&context).task_index;
        let Some(units) = self.tasks.get(task).cloned() else {
            return exec_err!("KvscopeJobExec: no units for task {task}");
        };
        let mut builder = RecordBatchReceiverStream::builder(output_schema(), 2);
        let tx = builder.tx();
        let job = self.job.clone();
        builder.spawn(async move {
            for unit in units {
                super::worker::run_unit(&job, &unit, &tx).await?;
            }
            Ok(())
        });
        Ok(builder.build())
    }
}

/// How many tasks a job wants: one per unit (the planner caps it at the workers).
pub fn desired_task_count(
    ev: DesiredTaskCountEvent,
) -> Option<Result<DesiredTaskCountEventResponse>> {
    let plan = ev.plan.downcast_ref::<JobExec>()?;
    Some(Ok(DesiredTaskCountEventResponse::desired(
        plan.units().max(1),
    )))
}

/// Splits a job's units into `task_count` contiguous groups of nearly equal size (shards
/// are cut in server order, so each task's part stays in order).
pub fn scale_up(ev: ScaleUpLeafNodeEvent) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    let plan = ev.plan.downcast_ref::<JobExec>()?;
    let units: Vec<Unit> = plan.tasks.iter().flatten().cloned().collect();
    let k = ev.task_count.max(1);
    let n = units.len();
    let tasks: Vec<Vec<Unit>> = (0..k)
        .map(|i| units[i * n / k..(i + 1) * n / k].to_vec())
        .collect();
    Some(Ok(ScaleUpLeafNodeEventResponse::new(Arc::new(
        JobExec::with_tasks(plan.job.clone(), tasks),
    ))))
}

/// What crosses the network for a [`JobExec`] (JSON: small, and the job's thresholds are
/// serde types already).
#[derive(Serialize, Deserialize)]
struct Wire {
    job: Job,
    tasks: Vec<Vec<Unit>>,
}

/// Encodes and decodes [`JobExec`]; registered on the coordinator and on every worker.
#[derive(Debug)]
pub struct JobCodec;

impl PhysicalExtensionCodec for JobCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return internal_err!("KvscopeJobExec has no inputs, got {}", inputs.len());
        }
        let wire: Wire = serde_json::from_slice(buf)
            .map_err(|e| DataFusionError::Internal(format!("decoding KvscopeJobExec: {e}")))?;
        Ok(Arc::new(JobExec::with_tasks(
            Arc::new(wire.job),
            wire.tasks,
        )))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(exec) = node.downcast_ref::<JobExec>() else {
            return internal_err!("expected KvscopeJobExec, got {}", node.name());
        };
        let wire = Wire {
            job: (*exec.job).clone(),
            tasks: exec.tasks.clone(),
        };
        serde_json::to_writer(buf, &wire)
            .map_err(|e| DataFusionError::Internal(format!("encoding KvscopeJobExec: {e}")))
    }
}
