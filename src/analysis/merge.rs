//! The streamed end of a big analysis: chunk event runs merged into `events.jsonl` and
//! `events.parquet`.
//!
//! Each chunk of servers leaves its events, sorted, in a run file
//! (`run-NNNNNN.jsonl`, chunk order) as soon as it is analysed. The runs are merged here
//! by [`super::event_order`] (from each line's key alone) with ties going to the earlier
//! chunk — exactly the order a stable sort of all events in chunk order gives, which is
//! what the in-memory path writes. A line goes to `events.jsonl` as it was serialized
//! (one serializer for both paths); the event it reads as goes to `events.parquet` and
//! the summary's [`EventTally`]. Memory holds one buffered line per run and a few
//! batches of lines and events, whatever the number of events.
//!
//! More runs than [`MAX_OPEN`] are merged in groups first (file descriptors are limited;
//! a 5 × 10⁷-sample fleet has ~800 runs).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::OrderKey;
use super::summary::EventTally;
use crate::store::StoreError;
use crate::store::events::{Event, EventsParquetWriter, events_to_batch};

/// Runs merged at once.
const MAX_OPEN: usize = 128;

/// Merged lines handed to a parser at once.
const MERGE_BATCH: usize = 4096;

/// Threads reading merged lines as events and Arrow batches.
const PARSERS: usize = 2;

/// A parsed batch: the events (for the tally) and their Arrow form (for Parquet).
type Parsed = (Vec<Event>, datafusion::arrow::array::RecordBatch);

/// Where chunk `chunk`'s events go.
pub(super) fn run_path(dir: &Path, chunk: usize) -> PathBuf {
    dir.join(format!("run-{chunk:06}.jsonl"))
}

/// The run file of chunk `chunk` of shard `shard` (a cluster task's): shards' runs sort
/// in (shard, chunk) order, which is server order as the shards are cut.
pub fn shard_run_path(dir: &Path, shard: usize, chunk: usize) -> PathBuf {
    dir.join(format!("run-{shard:06}-{chunk:06}.jsonl"))
}

/// The run files in `dir`, in chunk order.
fn runs_in(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| StoreError::io(dir, e))?
        .filter_map(|d| d.ok().map(|d| d.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("run-") && n.ends_with(".jsonl"))
        })
        .collect();
    runs.sort();
    Ok(runs)
}

/// Merges the runs in `dir` into `jsonl` and `parquet` (each written to a temporary file
/// renamed into place), counting every event into `tally`.
///
/// A pipeline: this thread orders the lines by their [`OrderKey`] (read alone from each
/// line) and writes them to `events.jsonl`; [`PARSERS`] threads read batches of them as
/// events and Arrow columns, in turn; an encoder counts the events in order and writes
/// `events.parquet`. Reading whole events on the merging thread and encoding them on one
/// more made the merge one core's work: ~3 s of a busy 10⁷-sample fleet's analysis
/// (522,331 events), the catalog's cores idle.
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
            let out = dir.join(format!("level{level}-{g:06}.jsonl"));
            let mut w = BufWriter::new(File::create(&out).map_err(|e| StoreError::io(&out, e))?);
            merge(group, |_, line| {
                w.write_all(line.as_bytes())
                    .map_err(|e| StoreError::io(&out, e))
            })?;
            w.flush().map_err(|e| StoreError::io(&out, e))?;
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
    let mut lines =
        BufWriter::new(File::create(&jsonl_tmp).map_err(|e| StoreError::io(&jsonl_tmp, e))?);
    let pq_file = File::create(&parquet_tmp).map_err(|e| StoreError::io(&parquet_tmp, e))?;
    let mut pq = EventsParquetWriter::new(BufWriter::new(pq_file), parquet)?;
    let encoder_tmp = parquet_tmp.clone();
    let runs = &runs;
    // What the merge reports when a later stage has stopped (that stage's error wins).
    let stopped = || StoreError::Invalid {
        path: parquet.to_path_buf(),
        message: "the event encoder stopped".into(),
    };
    let panicked = |stage: &str| StoreError::Invalid {
        path: parquet.to_path_buf(),
        message: format!("the event {stage} panicked"),
    };
    std::thread::scope(|scope| -> Result<(), StoreError> {
        // Batch k goes to parser k % PARSERS and comes back from it in the same turn.
        let mut to_parsers = Vec::with_capacity(PARSERS);
        let mut from_parsers = Vec::with_capacity(PARSERS);
        let mut parsers = Vec::with_capacity(PARSERS);
        for _ in 0..PARSERS {
            let (lines_tx, lines_rx) = std::sync::mpsc::sync_channel::<Lines>(1);
            let (parsed_tx, parsed_rx) = std::sync::mpsc::sync_channel::<Parsed>(1);
            parsers.push(scope.spawn(move || -> Result<(), StoreError> {
                for batch in lines_rx {
                    let events = batch.parse(runs)?;
                    let arrow = events_to_batch(&events);
                    if parsed_tx.send((events, arrow)).is_err() {
                        break; // the encoder failed: its error is reported below
                    }
                }
                Ok(())
            }));
            to_parsers.push(lines_tx);
            from_parsers.push(parsed_rx);
        }
        let encoder = scope.spawn(move || -> Result<(), StoreError> {
            'batches: for turn in 0.. {
                let Some(Ok((events, arrow))) =
                    from_parsers.get(turn % PARSERS).map(|rx| rx.recv())
                else {
                    break 'batches; // every batch done (or a parser failed: reported below)
                };
                for e in &events {
                    tally.add(e);
                }
                pq.write(&arrow)?;
            }
            pq.finish()?
                .into_inner()
                .map_err(|e| StoreError::io(&encoder_tmp, e.into_error()))?;
            Ok(())
        });
        let mut batch = Lines::default();
        let mut sent = 0usize;
        let mut send = |batch: Lines| -> Result<(), StoreError> {
            let tx = to_parsers.get(sent % PARSERS).ok_or_else(stopped)?;
            sent += 1;
            tx.send(batch).map_err(|_| stopped())
        };
        let merged = merge(runs, |origin, line| {
            lines
                .write_all(line.as_bytes())
                .map_err(|e| StoreError::io(&jsonl_tmp, e))?;
            batch.push(origin, line);
            if batch.origin.len() == MERGE_BATCH {
                send(std::mem::take(&mut batch))?;
            }
            Ok(())
        })
        .and_then(|()| {
            if batch.origin.is_empty() {
                return Ok(());
            }
            send(batch)
        });
        drop(to_parsers);
        let mut parsed = Ok(());
        for p in parsers {
            let r = p.join().unwrap_or_else(|_| Err(panicked("parser")));
            parsed = parsed.and(r);
        }
        let encoded = encoder.join().unwrap_or_else(|_| Err(panicked("encoder")));
        parsed.and(encoded).and(merged)
    })?;
    lines.flush().map_err(|e| StoreError::io(&jsonl_tmp, e))?;
    drop(lines);
    std::fs::rename(&jsonl_tmp, jsonl).map_err(|e| StoreError::io(jsonl, e))?;
    std::fs::rename(&parquet_tmp, parquet).map_err(|e| StoreError::io(parquet, e))
}

/// Where a line came from: its run (index into the merged runs) and line number.
type Origin = (usize, usize);

/// Merged lines on their way to the parser: the text, where each line ends, and where
/// each came from (for errors).
#[derive(Default)]
struct Lines {
    text: String,
    ends: Vec<usize>,
    origin: Vec<Origin>,
}

impl Lines {
    fn push(&mut self, origin: Origin, line: &str) {
        self.text.push_str(line);
        self.ends.push(self.text.len());
        self.origin.push(origin);
    }

    /// The lines read as events; a line that does not is an error naming its run file
    /// and line.
    fn parse(&self, runs: &[PathBuf]) -> Result<Vec<Event>, StoreError> {
        let mut start = 0;
        let mut out = Vec::with_capacity(self.ends.len());
        for (&end, &(run, line_no)) in self.ends.iter().zip(&self.origin) {
            let line = self.text.get(start..end).unwrap_or_default();
            start = end;
            out.push(
                serde_json::from_str(line.trim_end()).map_err(|e| StoreError::Line {
                    path: runs.get(run).cloned().unwrap_or_default(),
                    line: line_no,
                    message: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }
}

/// The fields of an event line its place in the merge depends on ([`OrderKey`]).
#[derive(Debug, Default, serde::Deserialize)]
struct LineKey {
    #[serde(rename = "type")]
    kind: String,
    t_rel_sec: f64,
    server: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

impl LineKey {
    fn order(&self) -> OrderKey<'_> {
        OrderKey {
            t_rel_sec: self.t_rel_sec,
            server: &self.server,
            kind: &self.kind,
            event: self.event.as_deref(),
            condition: self.condition.as_deref(),
            state: self.state.as_deref(),
        }
    }
}

/// The next line of one run and its key.
struct Head {
    key: LineKey,
    line: String,
    run: usize,
    line_no: usize,
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
        other
            .key
            .order()
            .cmp(&self.key.order())
            .then_with(|| other.run.cmp(&self.run))
    }
}

/// One run being read, and where it is (for errors).
struct Run {
    reader: BufReader<File>,
    path: PathBuf,
    line_no: usize,
}

impl Run {
    /// Reads the run's next line and its key into `head` (its line buffer reused: a fresh
    /// `String` per line grew by doubling, a third of the merge's time); false at the end.
    fn advance(&mut self, head: &mut Head) -> Result<bool, StoreError> {
        loop {
            head.line.clear();
            let n = self
                .reader
                .read_line(&mut head.line)
                .map_err(|e| StoreError::io(&self.path, e))?;
            if n == 0 {
                return Ok(false);
            }
            self.line_no += 1;
            if !head.line.ends_with('\n') {
                head.line.push('\n');
            }
            let line = head.line.trim_end_matches('\n');
            if line.is_empty() {
                continue;
            }
            head.key = serde_json::from_str(line).map_err(|e| StoreError::Line {
                path: self.path.clone(),
                line: self.line_no,
                message: e.to_string(),
            })?;
            head.line_no = self.line_no;
            return Ok(true);
        }
    }
}

/// Calls `sink` with every line of `runs` (each sorted) in merged order, newline
/// included, and where it came from.
fn merge(
    runs: &[PathBuf],
    mut sink: impl FnMut(Origin, &str) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut readers = Vec::with_capacity(runs.len());
    // Boxed: a heap moves its entries log(runs) times per line.
    let mut heap: BinaryHeap<Box<Head>> = BinaryHeap::with_capacity(runs.len());
    for (i, path) in runs.iter().enumerate() {
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let mut run = Run {
            reader: BufReader::with_capacity(1 << 16, file),
            path: path.clone(),
            line_no: 0,
        };
        let mut head = Box::new(Head {
            key: LineKey::default(),
            line: String::with_capacity(512),
            run: i,
            line_no: 0,
        });
        if run.advance(&mut head)? {
            heap.push(head);
        }
        readers.push(run);
    }
    while let Some(mut head) = heap.pop() {
        sink((head.run, head.line_no), &head.line)?;
        let more = match readers.get_mut(head.run) {
            Some(r) => r.advance(&mut head)?,
            None => false,
        };
        if more {
            heap.push(head);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: f64, server: &str, tag: &str) -> Event {
        Event {
            kind: "transient".into(),
            t_rel_sec: t,
            server: server.into(),
            event: Some("TTFT_SPIKE".into()),
            reason: Some(tag.into()),
            ..Default::default()
        }
    }

    /// Runs merged through the group level equal a stable sort of all events in chunk
    /// order: ties (same time, server and name) keep their chunk order.
    #[test]
    fn merged_runs_are_the_stable_order_through_every_level() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        // More runs than MAX_OPEN, so the grouped level runs too.
        // More events than a Parquet batch: the parsers take several turns and the
        // encoder's staged batches cross a Parquet batch boundary.
        for chunk in 0..(MAX_OPEN * 2 + 3) {
            let mut events: Vec<Event> = (0..260)
                .map(|k| {
                    ev(
                        f64::from(((chunk * 7 + k * 13) % 11) as u32),
                        "s",
                        &format!("{chunk}-{k}"),
                    )
                })
                .collect();
            super::super::sort_events(&mut events);
            crate::store::events::write_events(&run_path(dir.path(), chunk), &events).unwrap();
            all.extend(events);
        }
        super::super::sort_events(&mut all);
        let (jsonl, parquet) = (dir.path().join("e.jsonl"), dir.path().join("e.parquet"));
        let mut tally = EventTally::default();
        merge_runs(dir.path(), &jsonl, &parquet, &mut tally).unwrap();
        assert_eq!(tally.total(), all.len() as u64);
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
}
