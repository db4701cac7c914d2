//! The streamed end of a big analysis: chunk event runs merged into `events.jsonl` and
//! `events.parquet`.
//!
//! Each chunk of servers leaves its events, sorted, in a run file (`run-NNNNNN.arrows`,
//! chunk order) as soon as it is analysed: an Arrow IPC stream of [`events_schema`]'s
//! columns plus each event's `events.jsonl` line, serialized by the worker (one
//! serializer for both paths). The runs are merged here by [`super::event_order`]
//! (read from the key columns) with ties going to the earlier chunk — exactly the order
//! a stable sort of all events in chunk order gives, which is what the in-memory path
//! writes. The merge copies each line to `events.jsonl`, counts it into the summary's
//! [`EventTally`], and gathers the rows' columns (`interleave`) for `events.parquet`:
//! nothing is parsed again. Memory holds one batch of [`RUN_BATCH`] events per run and a
//! few output batches, whatever the number of events.
//!
//! More runs than [`MAX_OPEN`] are merged in groups first (file descriptors are limited;
//! a 5 × 10⁷-sample fleet has ~800 runs).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use super::OrderKey;
use super::summary::{EventTally, TallyKey};
use crate::store::StoreError;
use crate::store::events::{Event, EventsParquetWriter, events_schema, events_to_batch};

/// Runs merged at once.
const MAX_OPEN: usize = 256;

/// Events per batch of a run file: what the merge holds of each run.
const RUN_BATCH: usize = 128;

/// Merged rows gathered into one output batch.
const MERGE_BATCH: usize = 2048;

/// The run files' extension.
const RUN_EXT: &str = "arrows";

/// The column of a run holding each event's `events.jsonl` line (no newline).
const LINE: &str = "line";

/// Where chunk `chunk`'s events go.
pub(super) fn run_path(dir: &Path, chunk: usize) -> PathBuf {
    dir.join(format!("run-{chunk:06}.{RUN_EXT}"))
}

/// The run file of chunk `chunk` of shard `shard` (a cluster task's): shards' runs sort
/// in (shard, chunk) order, which is server order as the shards are cut.
pub fn shard_run_path(dir: &Path, shard: usize, chunk: usize) -> PathBuf {
    dir.join(format!("run-{shard:06}-{chunk:06}.{RUN_EXT}"))
}

/// Metadata keys of a run file: the first and the last of its servers, or that it has
/// no events.
const FIRST_SERVER: &str = "kvscope.first_server";
const LAST_SERVER: &str = "kvscope.last_server";
const NO_EVENTS: &str = "kvscope.no_events";

/// Which servers a run holds events of, as its metadata says.
#[derive(Debug, Clone, PartialEq)]
enum RunServers {
    /// None: the run has no events.
    NoEvents,
    /// The first and the last of its servers, by name.
    Range(String, String),
    /// Not said (a merged group of runs that share servers).
    Unknown,
}

impl RunServers {
    fn of(schema: &Schema) -> Self {
        let m = schema.metadata();
        match (m.get(FIRST_SERVER), m.get(LAST_SERVER)) {
            (Some(first), Some(last)) => Self::Range(first.clone(), last.clone()),
            _ if m.contains_key(NO_EVENTS) => Self::NoEvents,
            _ => Self::Unknown,
        }
    }

    /// The servers of runs merged into one.
    fn merged(runs: &[RunServers]) -> Self {
        if !runs_in_server_order(runs) {
            return Self::Unknown;
        }
        // In order, so no run is `Unknown`: the first range's first server and the last
        // range's last.
        let mut ranges = runs.iter().filter_map(|r| match r {
            Self::Range(first, last) => Some((first, last)),
            _ => None,
        });
        match ranges.next() {
            None => Self::NoEvents,
            Some((first, last)) => {
                let last = ranges.next_back().map_or(last, |(_, l)| l);
                Self::Range(first.clone(), last.clone())
            }
        }
    }
}

/// The schema of a run file: the events' columns, then their lines; the metadata says
/// which servers the run holds.
fn run_schema(servers: &RunServers) -> SchemaRef {
    let events = events_schema();
    let mut fields: Vec<Field> = events.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(LINE, DataType::Utf8, false));
    let mut metadata = events.metadata().clone();
    match servers {
        RunServers::NoEvents => {
            metadata.insert(NO_EVENTS.into(), "true".into());
        }
        RunServers::Range(first, last) => {
            metadata.insert(FIRST_SERVER.into(), first.clone());
            metadata.insert(LAST_SERVER.into(), last.clone());
        }
        RunServers::Unknown => {}
    }
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// Whether every run's servers come after the previous run's (runs without events
/// aside). Chunks are cut at server boundaries from samples in server order, and shards
/// likewise, so they do: two events of different runs are then never of the same server,
/// and at the same time the earlier run's comes first — the merge orders by time and run
/// alone instead of comparing whole keys (a third of its time on a busy fleet).
fn runs_in_server_order(runs: &[RunServers]) -> bool {
    let mut last: Option<&str> = None;
    for run in runs {
        match run {
            RunServers::NoEvents => {}
            RunServers::Unknown => return false,
            RunServers::Range(first, end) => {
                if first > end || last.is_some_and(|l| l >= first.as_str()) {
                    return false;
                }
                last = Some(end);
            }
        }
    }
    true
}

/// A run file being written: batches of [`run_schema`], its metadata naming the servers.
struct RunWriter {
    w: StreamWriter<BufWriter<File>>,
    schema: SchemaRef,
    path: PathBuf,
}

impl RunWriter {
    fn create(path: &Path, servers: &RunServers) -> Result<Self, StoreError> {
        let file = File::create(path).map_err(|e| StoreError::io(path, e))?;
        let schema = run_schema(servers);
        let w = StreamWriter::try_new(BufWriter::new(file), &schema)
            .map_err(|e| StoreError::invalid(path, e))?;
        Ok(Self {
            w,
            schema,
            path: path.to_path_buf(),
        })
    }

    /// Writes the run columns `columns` (the events', then the lines).
    fn write(&mut self, columns: Vec<ArrayRef>) -> Result<(), StoreError> {
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| StoreError::invalid(&self.path, e))?;
        self.w
            .write(&batch)
            .map_err(|e| StoreError::invalid(&self.path, e))
    }

    fn finish(mut self) -> Result<(), StoreError> {
        self.w
            .finish()
            .map_err(|e| StoreError::invalid(&self.path, e))?;
        self.w
            .into_inner()
            .map_err(|e| StoreError::invalid(&self.path, e))?
            .into_inner()
            .map_err(|e| StoreError::io(&self.path, e.into_error()))?;
        Ok(())
    }
}

/// Writes `events` (sorted) as the run file `path`: [`RUN_BATCH`] events per batch, each
/// with its line. Written to a temporary file renamed into place.
pub(super) fn write_run(path: &Path, events: &[Event]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let servers = || events.iter().map(|e| e.server.as_str());
    let range = match servers().min().zip(servers().max()) {
        Some((first, last)) => RunServers::Range(first.to_string(), last.to_string()),
        None => RunServers::NoEvents,
    };
    let mut w = RunWriter::create(&tmp, &range)?;
    for part in events.chunks(RUN_BATCH) {
        let lines = part
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::invalid(path, e))?;
        let mut columns = events_to_batch(part).columns().to_vec();
        columns.push(Arc::new(StringArray::from(lines)));
        w.write(columns)?;
    }
    w.finish()?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
}

/// The run files in `dir`, in chunk order.
fn runs_in(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| StoreError::io(dir, e))?
        .filter_map(|d| d.ok().map(|d| d.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == RUN_EXT)
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("run-"))
        })
        .collect();
    runs.sort();
    Ok(runs)
}

/// Merges the runs in `dir` into `jsonl` and `parquet` (each written to a temporary file
/// renamed into place), counting every event into `tally`.
///
/// This thread orders the rows, copies their lines into buffers and counts them; a
/// writer thread writes the buffers to `events.jsonl` ([`LineWriter`]), and an encoder
/// thread gathers each output batch's columns and writes `events.parquet`. (Lines parsed back
/// into events and Arrow columns on the merging thread made the merge ~2.6 s of a busy
/// 10⁷-sample fleet's 11 s, the catalog's cores idle.)
pub(super) fn merge_runs(
    dir: &Path,
    jsonl: &Path,
    parquet: &Path,
    tally: &mut EventTally,
) -> Result<(), StoreError> {
    let mut runs = runs_in(dir)?;
    let mut level = 0usize;
    while runs.len() > MAX_OPEN {
        // Consecutive groups keep chunk order: ties still go to the earlier chunk.
        let mut next = Vec::new();
        for (g, group) in runs.chunks(MAX_OPEN).enumerate() {
            let out = dir.join(format!("level{level}-{g:06}.{RUN_EXT}"));
            let readers = open_runs(group)?;
            let servers: Vec<_> = readers.iter().map(|r| r.servers.clone()).collect();
            let mut w = RunWriter::create(&out, &RunServers::merged(&servers))?;
            merge(
                readers,
                |_, _| Ok(()),
                |gathered| {
                    let batch = gathered
                        .interleave(None)
                        .map_err(|e| StoreError::invalid(&out, e))?;
                    w.write(batch.columns().to_vec())
                },
            )?;
            w.finish()?;
            for r in group {
                let _ = std::fs::remove_file(r);
            }
            next.push(out);
        }
        runs = next;
        level += 1;
    }
    let jsonl_tmp = jsonl.with_extension("jsonl.tmp");
    let parquet_tmp = parquet.with_extension("parquet.tmp");
    let lines_file = File::create(&jsonl_tmp).map_err(|e| StoreError::io(&jsonl_tmp, e))?;
    let pq_file = File::create(&parquet_tmp).map_err(|e| StoreError::io(&parquet_tmp, e))?;
    let mut pq = EventsParquetWriter::new(BufWriter::new(pq_file), parquet)?;
    let encoder_tmp = parquet_tmp.clone();
    let runs = &runs;
    std::thread::scope(|scope| -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Gathered>(2);
        let encoder = scope.spawn(move || -> Result<(), StoreError> {
            let events = events_schema();
            // The events' columns, without the lines.
            let columns: Vec<usize> = (0..events.fields().len()).collect();
            for gathered in rx {
                let batch = gathered
                    .interleave(Some(&columns))
                    .map_err(|e| StoreError::invalid(parquet, e))?;
                let batch = RecordBatch::try_new(events.clone(), batch.columns().to_vec())
                    .map_err(|e| StoreError::invalid(parquet, e))?;
                pq.write(&batch)?;
            }
            pq.finish()?
                .into_inner()
                .map_err(|e| StoreError::io(&encoder_tmp, e.into_error()))?;
            Ok(())
        });
        let mut lines = LineWriter::spawn(scope, lines_file, &jsonl_tmp);
        let merged = open_runs(runs).and_then(|readers| {
            merge(
                readers,
                |cols, row| {
                    lines.push(cols.line.value(row))?;
                    tally.add_key(cols.tally_key(row));
                    Ok(())
                },
                |gathered| {
                    tx.send(gathered)
                        .map_err(|_| StoreError::invalid(parquet, "the event encoder stopped"))
                },
            )
        });
        drop(tx);
        let written = lines.finish();
        let encoded = encoder
            .join()
            .unwrap_or_else(|_| Err(StoreError::invalid(parquet, "the event encoder panicked")));
        // The writers' errors explain a merge stopped by them.
        written.and(encoded).and(merged)
    })?;
    std::fs::rename(&jsonl_tmp, jsonl).map_err(|e| StoreError::io(jsonl, e))?;
    std::fs::rename(&parquet_tmp, parquet).map_err(|e| StoreError::io(parquet, e))
}

/// `events.jsonl`'s lines written by a thread of their own: the merge fills a buffer of
/// [`LINE_BUFFER`] bytes and hands it over, so the file system's copy of 10⁸ bytes
/// (and its page zeroing) runs beside the merge, not in it. Written buffers come back
/// to be filled again (three at most: filling, queued, being written).
struct LineWriter<'scope> {
    buffer: Vec<u8>,
    full: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
    writer: std::thread::ScopedJoinHandle<'scope, Result<(), StoreError>>,
    path: &'scope Path,
}

/// Bytes of lines handed to the writer thread at once.
const LINE_BUFFER: usize = 1 << 20;

impl<'scope> LineWriter<'scope> {
    fn spawn<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        mut file: impl Write + Send + 'scope,
        path: &'scope Path,
    ) -> Self {
        let (full, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
        let (empty_tx, empty) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let writer = scope.spawn(move || -> Result<(), StoreError> {
            for mut buffer in full_rx {
                file.write_all(&buffer)
                    .map_err(|e| StoreError::io(path, e))?;
                buffer.clear();
                // Never wait to give a buffer back: when the merge is finishing (it no
                // longer takes buffers) or holds enough already, this one is not needed.
                // A blocking send here hung `analyze` for good when the merge had made
                // more buffers than the pool holds and stopped taking them to join this
                // thread.
                let _ = empty_tx.try_send(buffer);
            }
            file.flush().map_err(|e| StoreError::io(path, e))
        });
        Self {
            buffer: Vec::with_capacity(LINE_BUFFER),
            full: Some(full),
            empty,
            writer,
            path,
        }
    }

    /// Appends `line` and a newline.
    fn push(&mut self, line: &str) -> Result<(), StoreError> {
        if self.buffer.len() + line.len() + 1 > LINE_BUFFER && !self.buffer.is_empty() {
            self.hand_over()?;
        }
        self.buffer.extend_from_slice(line.as_bytes());
        self.buffer.push(b'\n');
        Ok(())
    }

    fn hand_over(&mut self) -> Result<(), StoreError> {
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(LINE_BUFFER));
        let full = std::mem::replace(&mut self.buffer, next);
        let stopped = || StoreError::invalid(self.path, "the line writer stopped");
        self.full
            .as_ref()
            .ok_or_else(stopped)?
            .send(full)
            .map_err(|_| stopped())
    }

    /// Writes what is left and waits for the writer: its error, if any.
    fn finish(mut self) -> Result<(), StoreError> {
        let handed = if self.buffer.is_empty() {
            Ok(())
        } else {
            self.hand_over()
        };
        self.full = None;
        let written = self
            .writer
            .join()
            .unwrap_or_else(|_| Err(StoreError::invalid(self.path, "the line writer panicked")));
        written.and(handed)
    }
}

/// Rows of the merge's order gathered from the runs' batches: `rows[k]` is
/// (index into `batches`, row).
#[derive(Default)]
struct Gathered {
    batches: Vec<RecordBatch>,
    rows: Vec<(usize, usize)>,
}

impl Gathered {
    /// The gathered rows as one batch (of the given columns only, else all).
    fn interleave(
        &self,
        columns: Option<&[usize]>,
    ) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
        let projected: Vec<RecordBatch> = match columns {
            Some(c) => self
                .batches
                .iter()
                .map(|b| b.project(c))
                .collect::<Result<_, _>>()?,
            None => self.batches.clone(),
        };
        let batches: Vec<&RecordBatch> = projected.iter().collect();
        datafusion::arrow::compute::interleave_record_batch(&batches, &self.rows)
    }
}

/// One batch of a run, its columns typed once.
struct RunBatch {
    batch: RecordBatch,
    t_rel_sec: Float64Array,
    server: StringArray,
    kind: StringArray,
    event: StringArray,
    condition: StringArray,
    state: StringArray,
    duration_sec: Float64Array,
    line: StringArray,
}

impl RunBatch {
    /// The batch's columns typed (its schema was checked when the run was opened).
    fn new(batch: RecordBatch) -> Self {
        let f64s = |n: &str| -> Float64Array {
            batch
                .column_by_name(n)
                .map(|c| c.as_primitive::<Float64Type>().clone())
                .unwrap_or_else(|| Float64Array::new_null(batch.num_rows()))
        };
        let strs = |n: &str| -> StringArray {
            batch
                .column_by_name(n)
                .map(|c| c.as_string::<i32>().clone())
                .unwrap_or_else(|| StringArray::new_null(batch.num_rows()))
        };
        Self {
            t_rel_sec: f64s("t_rel_sec"),
            server: strs("server"),
            kind: strs("type"),
            event: strs("event"),
            condition: strs("condition"),
            state: strs("state"),
            duration_sec: f64s("duration_sec"),
            line: strs(LINE),
            batch,
        }
    }

    fn opt(a: &StringArray, row: usize) -> Option<&str> {
        a.is_valid(row).then(|| a.value(row))
    }

    fn key(&self, row: usize) -> OrderKey<'_> {
        OrderKey {
            t_rel_sec: self.t_rel_sec.value(row),
            server: self.server.value(row),
            kind: self.kind.value(row),
            event: Self::opt(&self.event, row),
            condition: Self::opt(&self.condition, row),
            state: Self::opt(&self.state, row),
        }
    }

    fn tally_key(&self, row: usize) -> TallyKey<'_> {
        TallyKey {
            kind: self.kind.value(row),
            server: self.server.value(row),
            event: Self::opt(&self.event, row),
            condition: Self::opt(&self.condition, row),
            duration_sec: self
                .duration_sec
                .is_valid(row)
                .then(|| self.duration_sec.value(row)),
        }
    }
}

/// One run being read.
struct Run {
    reader: StreamReader<BufReader<File>>,
    path: PathBuf,
    servers: RunServers,
}

/// Opens the runs at `paths`; a file that is not a run (other columns) is an error
/// naming it.
fn open_runs(paths: &[PathBuf]) -> Result<Vec<Run>, StoreError> {
    let expected = run_schema(&RunServers::Unknown);
    paths
        .iter()
        .map(|path| {
            let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
            let reader = StreamReader::try_new(BufReader::with_capacity(1 << 16, file), None)
                .map_err(|e| StoreError::invalid(path, e))?;
            let schema = reader.schema();
            if schema.fields() != expected.fields() {
                return Err(StoreError::invalid(
                    path,
                    "not a KVScope event run (unexpected columns)",
                ));
            }
            Ok(Run {
                servers: RunServers::of(&schema),
                reader,
                path: path.clone(),
            })
        })
        .collect()
}

impl Run {
    /// The run's next non-empty batch, if any.
    fn next_batch(&mut self) -> Result<Option<Arc<RunBatch>>, StoreError> {
        for batch in self.reader.by_ref() {
            let batch = batch.map_err(|e| StoreError::invalid(&self.path, e))?;
            if batch.num_rows() > 0 {
                return Ok(Some(Arc::new(RunBatch::new(batch))));
            }
        }
        Ok(None)
    }
}

/// The next row of one run.
struct Head {
    batch: Arc<RunBatch>,
    row: usize,
    /// The row's time.
    t: f64,
    run: usize,
    /// Runs hold disjoint servers in order ([`runs_in_server_order`]): time and run
    /// order the rows.
    by_time_and_run: bool,
    /// The batch's index in the output being gathered, valid while `generation` is the
    /// output's.
    gathered_as: Option<(u64, usize)>,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    /// Reversed: `BinaryHeap` pops the greatest, the merge wants the first event.
    fn cmp(&self, other: &Self) -> Ordering {
        let ours = if self.by_time_and_run && self.run != other.run {
            // (NaN compares equal, as in `OrderKey`; the server then decides, which the
            // run order is.)
            other.t.partial_cmp(&self.t).unwrap_or(Ordering::Equal)
        } else {
            other.batch.key(other.row).cmp(&self.batch.key(self.row))
        };
        ours.then_with(|| other.run.cmp(&self.run))
    }
}

/// Calls `row` with every event of the runs (each sorted) in merged order, and `flush`
/// with the rows gathered, [`MERGE_BATCH`] at a time.
fn merge(
    mut readers: Vec<Run>,
    mut row: impl FnMut(&RunBatch, usize) -> Result<(), StoreError>,
    mut flush: impl FnMut(Gathered) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let servers: Vec<_> = readers.iter().map(|r| r.servers.clone()).collect();
    let by_time_and_run = runs_in_server_order(&servers);
    let mut heap: BinaryHeap<Head> = BinaryHeap::with_capacity(readers.len());
    for (i, run) in readers.iter_mut().enumerate() {
        if let Some(batch) = run.next_batch()? {
            heap.push(Head {
                t: batch.t_rel_sec.value(0),
                batch,
                row: 0,
                run: i,
                by_time_and_run,
                gathered_as: None,
            });
        }
    }
    let mut out = Gathered::default();
    let mut generation = 0u64;
    while let Some(mut head) = heap.pop() {
        row(&head.batch, head.row)?;
        let index = match head.gathered_as {
            Some((g, index)) if g == generation => index,
            _ => {
                out.batches.push(head.batch.batch.clone());
                let index = out.batches.len() - 1;
                head.gathered_as = Some((generation, index));
                index
            }
        };
        out.rows.push((index, head.row));
        if out.rows.len() == MERGE_BATCH {
            flush(std::mem::take(&mut out))?;
            generation += 1;
        }
        head.row += 1;
        if head.row == head.batch.batch.num_rows() {
            let next = match readers.get_mut(head.run) {
                Some(r) => r.next_batch()?,
                None => None,
            };
            let Some(batch) = next else { continue };
            head.batch = batch;
            head.row = 0;
            head.gathered_as = None;
        }
        head.t = head.batch.t_rel_sec.value(head.row);
        heap.push(head);
    }
    if !out.rows.is_empty() {
        flush(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events of every kind the tally tells apart, on three servers of `group`.
    fn ev(t: f64, k: usize, group: &str, tag: &str) -> Event {
        let server = format!("server-{group}{}", k % 3);
        let base = Event {
            t_rel_sec: t,
            server,
            reason: Some(tag.into()),
            ..Default::default()
        };
        match k % 4 {
            0 => Event {
                kind: "transient".into(),
                event: Some("TTFT_SPIKE".into()),
                value: Some(t * 2.0),
                ..base
            },
            1 => Event {
                kind: "data_quality".into(),
                event: Some("SCRAPE_GAP".into()),
                ..base
            },
            2 => Event {
                kind: "condition_episode".into(),
                condition: Some("QUEUE_DELAY".into()),
                duration_sec: Some(t + 0.125),
                ..base
            },
            _ => Event {
                kind: "condition_change".into(),
                condition: Some("TTFT_ELEVATED".into()),
                state: Some(if k % 8 == 3 { "start" } else { "end" }.into()),
                ..base
            },
        }
    }

    /// Writes more runs than MAX_OPEN (so the grouped level runs too), each with more
    /// events than a run batch, merges them, and checks the files and the tally against
    /// a stable sort of all events in chunk order. `group` names a chunk's servers.
    fn merge_checked(group: impl Fn(usize) -> String) {
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        for chunk in 0..(MAX_OPEN + 3) {
            let mut events: Vec<Event> = (0..300)
                .map(|k| {
                    ev(
                        f64::from(((chunk * 7 + k * 13) % 11) as u32),
                        k,
                        &group(chunk),
                        &format!("{chunk}-{k}"),
                    )
                })
                .collect();
            super::super::sort_events(&mut events);
            write_run(&run_path(dir.path(), chunk), &events).unwrap();
            all.extend(events);
        }
        super::super::sort_events(&mut all);
        let (jsonl, parquet) = (dir.path().join("e.jsonl"), dir.path().join("e.parquet"));
        let mut tally = EventTally::default();
        merge_runs(dir.path(), &jsonl, &parquet, &mut tally).unwrap();
        assert_eq!(tally.total(), 77_700);
        assert_eq!(tally, EventTally::from_events(&all));
        let merged = crate::store::events::read_events(&jsonl).unwrap();
        let tags = |v: &[Event]| v.iter().map(|e| e.reason.clone()).collect::<Vec<_>>();
        assert_eq!(tags(&merged), tags(&all));
        assert_eq!(
            std::fs::read(&jsonl).unwrap(),
            crate::store::events::events_to_jsonl(&all)
        );
        assert_eq!(
            std::fs::read(&parquet).unwrap(),
            crate::store::events::events_to_parquet(&all).unwrap()
        );
    }

    /// Runs of disjoint servers in order (chunks): merged by time and run.
    #[test]
    fn runs_of_servers_in_order_merge_to_the_stable_order() {
        merge_checked(|chunk| format!("{chunk:04}-"));
    }

    /// Runs sharing servers: merged by whole keys; ties (same time, server and name) keep
    /// their chunk order.
    #[test]
    fn runs_sharing_servers_merge_to_the_stable_order() {
        merge_checked(|_| String::new());
    }

    #[test]
    fn server_order_of_runs() {
        use RunServers::{NoEvents, Range, Unknown};
        let r = |a: &str, b: &str| Range(a.to_string(), b.to_string());
        let ordered = [r("a", "c"), NoEvents, r("d", "d"), r("e", "z")];
        assert!(runs_in_server_order(&ordered));
        assert_eq!(RunServers::merged(&ordered), r("a", "z"));
        assert!(runs_in_server_order(&[NoEvents, NoEvents]));
        assert_eq!(RunServers::merged(&[NoEvents, NoEvents]), NoEvents);
        assert_eq!(RunServers::merged(&[NoEvents, r("b", "c")]), r("b", "c"));
        for unordered in [
            vec![r("a", "c"), r("c", "d")],
            vec![r("d", "e"), r("a", "b")],
            vec![r("b", "a")],
            vec![r("a", "b"), Unknown],
            vec![Unknown, NoEvents],
        ] {
            assert!(!runs_in_server_order(&unordered), "{unordered:?}");
            assert_eq!(RunServers::merged(&unordered), Unknown);
        }
    }

    /// A run that is not one (truncated, or another file's bytes) fails the merge with
    /// its path, and leaves no events file behind.
    #[test]
    fn a_damaged_run_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let events: Vec<Event> = (0..500).map(|k| ev(k as f64, k, "", "x")).collect();
        write_run(&run_path(dir.path(), 0), &events).unwrap();
        let damaged = run_path(dir.path(), 1);
        write_run(&damaged, &events).unwrap();
        let bytes = std::fs::read(&damaged).unwrap();
        std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
        let (jsonl, parquet) = (dir.path().join("e.jsonl"), dir.path().join("e.parquet"));
        let err = merge_runs(dir.path(), &jsonl, &parquet, &mut EventTally::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("run-000001.arrows"), "{err}");
        assert!(!jsonl.exists() && !parquet.exists());

        std::fs::write(&damaged, b"{\"type\": \"transient\"}\n").unwrap();
        let err = merge_runs(dir.path(), &jsonl, &parquet, &mut EventTally::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("run-000001.arrows"), "{err}");
    }

    #[test]
    fn lines_go_out_in_order_and_a_failed_write_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        // Lines of 1,000 bytes: buffers handed over ~1,000 times.
        let line = |k: usize| format!("{k:0>999}");
        std::thread::scope(|scope| {
            let mut w = LineWriter::spawn(scope, File::create(&path).unwrap(), &path);
            for k in 0..1100 {
                w.push(&line(k)).unwrap();
            }
            w.finish().unwrap();
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1100);
        assert_eq!(lines[1099], line(1099));
        assert!(lines.iter().enumerate().all(|(k, l)| *l == line(k)));

        // A full disk (Linux's /dev/full): the error names the file, and the merge hears
        // of it at the latest when it finishes.
        let full = Path::new("/dev/full");
        let err = std::thread::scope(|scope| {
            let file = std::fs::OpenOptions::new().write(true).open(full).unwrap();
            let mut w = LineWriter::spawn(scope, file, full);
            let pushed = (0..3000).try_for_each(|k| w.push(&line(k)));
            let finished = w.finish();
            finished.and(pushed).unwrap_err().to_string()
        });
        assert!(err.contains("/dev/full"), "{err}");
    }

    /// A file that takes its first write only once released (a slow disk, a busy page
    /// cache): meanwhile the merge fills new buffers, more than the writer's pool of
    /// empty ones holds once they all come back.
    struct HeldFile {
        released: std::sync::mpsc::Receiver<()>,
        waiting: bool,
        bytes: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for HeldFile {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if std::mem::take(&mut self.waiting) {
                let _ = self.released.recv();
            }
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Five buffers' worth of lines while the file holds the first: the merge makes new
    /// buffers, and when the file lets go they all come back to a pool of two. The
    /// writer blocked forever giving back the third while `finish` waited for it
    /// (`analyze` hung after writing every event, seen on a busy 10⁶ fleet).
    #[test]
    fn a_slow_file_does_not_hang_the_merge() {
        let path = Path::new("held.jsonl");
        let (release, released) = std::sync::mpsc::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let line = |k: usize| format!("{k:0>999}");
        let lines = 5 * LINE_BUFFER / 1000;
        let bytes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let written = bytes.clone();
        std::thread::spawn(move || {
            std::thread::scope(|scope| {
                let file = HeldFile {
                    released,
                    waiting: true,
                    bytes: written,
                };
                let mut w = LineWriter::spawn(scope, file, path);
                // Let the file go once the merge is blocked handing over a buffer.
                scope.spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    let _ = release.send(());
                });
                for k in 0..lines {
                    w.push(&line(k)).unwrap();
                }
                let _ = done_tx.send(w.finish().map_err(|e| e.to_string()));
            });
        });
        let finished = done
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the line writer hung");
        assert_eq!(finished, Ok(()));
        let text = String::from_utf8(bytes.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), lines);
        assert!(text.lines().enumerate().all(|(k, l)| l == line(k)));
    }
}
