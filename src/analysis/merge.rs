//! The streamed end of a big analysis: chunk event runs merged into `events.jsonl` and
//! `events.parquet`.
//!
//! Each chunk of servers leaves its events, sorted, in a run file
//! (`run-NNNNNN.jsonl`, chunk order) as soon as it is analysed. The runs are merged here
//! by [`event_order`] with ties going to the earlier chunk — exactly the order a stable
//! sort of all events in chunk order gives, which is what the in-memory path writes. A
//! line goes to `events.jsonl` as it was serialized (one serializer for both paths); the
//! event it reads as goes to `events.parquet` and the summary's [`EventTally`]. Memory
//! holds one buffered line per run and one Parquet batch, whatever the number of events.
//!
//! More runs than [`MAX_OPEN`] are merged in groups first (file descriptors are limited;
//! a 5 × 10⁷-sample fleet has ~800 runs).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::event_order;
use super::summary::EventTally;
use crate::store::StoreError;
use crate::store::events::{Event, EventsParquetWriter};

/// Runs merged at once.
const MAX_OPEN: usize = 128;

/// Merged events handed to the Parquet encoder at once.
const MERGE_BATCH: usize = 4096;

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
    // Parquet is encoded on a thread of its own, fed batches of merged events: the merge
    // (read, order, write the line, count) and the encoding each take about half.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Event>>(4);
    let encoder_tmp = parquet_tmp.clone();
    std::thread::scope(|scope| -> Result<(), StoreError> {
        let encoder = scope.spawn(move || -> Result<(), StoreError> {
            for batch in rx {
                for e in batch {
                    pq.push(e)?;
                }
            }
            pq.finish()?
                .into_inner()
                .map_err(|e| StoreError::io(&encoder_tmp, e.into_error()))?;
            Ok(())
        });
        let mut batch = Vec::with_capacity(MERGE_BATCH);
        let merged = merge(&runs, |event, line| {
            lines
                .write_all(line.as_bytes())
                .map_err(|e| StoreError::io(&jsonl_tmp, e))?;
            tally.add(&event);
            batch.push(event);
            if batch.len() == MERGE_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(MERGE_BATCH));
                // A closed channel means the encoder failed: its error is reported below.
                let _ = tx.send(full);
            }
            Ok(())
        });
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
        let encoded = encoder.join().unwrap_or_else(|_| {
            Err(StoreError::Invalid {
                path: parquet.to_path_buf(),
                message: "the Parquet encoder panicked".into(),
            })
        });
        merged.and(encoded)
    })?;
    lines.flush().map_err(|e| StoreError::io(&jsonl_tmp, e))?;
    drop(lines);
    std::fs::rename(&jsonl_tmp, jsonl).map_err(|e| StoreError::io(jsonl, e))?;
    std::fs::rename(&parquet_tmp, parquet).map_err(|e| StoreError::io(parquet, e))
}

/// The next line of one run and the event it reads as.
struct Head {
    event: Event,
    line: String,
    run: usize,
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
        event_order(&other.event, &self.event).then_with(|| other.run.cmp(&self.run))
    }
}

/// One run being read, and where it is (for errors).
struct Run {
    reader: BufReader<File>,
    path: PathBuf,
    line_no: usize,
}

impl Run {
    /// Reads the run's next event into `head` (its line buffer reused: a fresh `String`
    /// per line grew by doubling, a third of the merge's time); false at the end.
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
            head.event = serde_json::from_str(line).map_err(|e| StoreError::Line {
                path: self.path.clone(),
                line: self.line_no,
                message: e.to_string(),
            })?;
            return Ok(true);
        }
    }
}

/// Calls `sink` with every event of `runs` (each sorted) in merged order, and its line
/// (newline included).
fn merge(
    runs: &[PathBuf],
    mut sink: impl FnMut(Event, &str) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut readers = Vec::with_capacity(runs.len());
    // Boxed: a head is ~450 bytes and a heap moves its entries log(runs) times per event.
    let mut heap: BinaryHeap<Box<Head>> = BinaryHeap::with_capacity(runs.len());
    for (i, path) in runs.iter().enumerate() {
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let mut run = Run {
            reader: BufReader::with_capacity(1 << 16, file),
            path: path.clone(),
            line_no: 0,
        };
        let mut head = Box::new(Head {
            event: Event::default(),
            line: String::with_capacity(512),
            run: i,
        });
        if run.advance(&mut head)? {
            heap.push(head);
        }
        readers.push(run);
    }
    while let Some(mut head) = heap.pop() {
        // Taken, not cloned: the next line is read into a new event anyway.
        sink(std::mem::take(&mut head.event), &head.line)?;
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
        for chunk in 0..(MAX_OPEN * 2 + 3) {
            let mut events: Vec<Event> = (0..5)
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
