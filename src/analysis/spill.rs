//! Result rows of a streamed analysis, kept on disk until the catalog is done.
//!
//! Each chunk leaves a few per-server rows per query (the summary's aggregates, phase
//! times, trouble episodes): ~9 KB per server, 45 MB for a 5,000-server fleet. Held in
//! memory, those small long-lived buffers sat among each chunk's short-lived ones and
//! kept the allocator from reusing or returning the space between them: peak RSS grew
//! from 335 MB (the same run with the rows dropped) to 460 MB. Spilled, each worker
//! appends its chunks' rows to one Arrow IPC stream per query; [`read_back`] returns them
//! in chunk order once the catalog's memory is free, exactly as the in-memory path
//! gathers them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use crate::store::StoreError;

/// One query's result rows per chunk, as the catalog returns them.
pub(super) type Results = BTreeMap<&'static str, Vec<RecordBatch>>;

/// A worker's spilled results: one stream per query, and which chunk wrote how many
/// batches to which stream, in the order written.
pub(super) struct Spill {
    dir: PathBuf,
    worker: usize,
    writers: BTreeMap<&'static str, (PathBuf, StreamWriter<BufWriter<File>>)>,
    index: Vec<(usize, &'static str, usize)>,
}

/// A finished [`Spill`]: its streams and index.
pub(super) struct Spilled {
    files: BTreeMap<&'static str, PathBuf>,
    index: Vec<(usize, &'static str, usize)>,
}

impl Spill {
    /// Worker `worker`'s streams, in `dir` (which must exist).
    pub(super) fn new(dir: &Path, worker: usize) -> Self {
        Self {
            dir: dir.to_path_buf(),
            worker,
            writers: BTreeMap::new(),
            index: Vec::new(),
        }
    }

    /// Appends chunk `chunk`'s results.
    pub(super) fn add(&mut self, chunk: usize, results: Results) -> Result<(), StoreError> {
        for (query, batches) in results {
            if let Some(first) = batches.first() {
                if !self.writers.contains_key(query) {
                    let path = self.dir.join(format!("w{}-{query}.arrows", self.worker));
                    let file = File::create(&path).map_err(|e| StoreError::io(&path, e))?;
                    let w = StreamWriter::try_new(BufWriter::new(file), &first.schema())
                        .map_err(|e| StoreError::invalid(&path, e))?;
                    self.writers.insert(query, (path, w));
                }
                if let Some((path, w)) = self.writers.get_mut(query) {
                    for b in &batches {
                        w.write(b).map_err(|e| StoreError::invalid(path, e))?;
                    }
                }
            }
            self.index.push((chunk, query, batches.len()));
        }
        Ok(())
    }

    /// Flushes the streams.
    pub(super) fn finish(self) -> Result<Spilled, StoreError> {
        let mut files = BTreeMap::new();
        for (query, (path, mut w)) in self.writers {
            w.finish().map_err(|e| StoreError::invalid(&path, e))?;
            files.insert(query, path);
        }
        Ok(Spilled {
            files,
            index: self.index,
        })
    }
}

/// The workers' spilled results read back, per query in chunk order (a query with no
/// rows in any chunk is present and empty, as in memory).
pub(super) fn read_back(spilled: Vec<Spilled>) -> Result<Results, StoreError> {
    let mut parts: Vec<(usize, &'static str, Vec<RecordBatch>)> = Vec::new();
    for s in spilled {
        let mut readers = BTreeMap::new();
        for (query, path) in &s.files {
            let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
            let r = StreamReader::try_new(BufReader::new(file), None)
                .map_err(|e| StoreError::invalid(path, e))?;
            readers.insert(*query, (path, r));
        }
        for (chunk, query, n) in s.index {
            let mut batches = Vec::with_capacity(n);
            if n > 0 {
                let Some((path, r)) = readers.get_mut(query) else {
                    return Err(StoreError::invalid(
                        &PathBuf::from(query),
                        "spilled results missing",
                    ));
                };
                for _ in 0..n {
                    match r.next() {
                        Some(b) => batches.push(b.map_err(|e| StoreError::invalid(path, e))?),
                        None => return Err(StoreError::invalid(path, "spilled results end early")),
                    }
                }
            }
            parts.push((chunk, query, batches));
        }
    }
    // (Stable: a chunk's queries keep their order.)
    parts.sort_by_key(|(chunk, _, _)| *chunk);
    let mut results = Results::new();
    for (_, query, batches) in parts {
        results.entry(query).or_default().extend(batches);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn rows(server: &str, n: i64) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "server",
                Arc::new(StringArray::from(vec![server; n as usize])) as _,
            ),
            ("n", Arc::new(Int64Array::from_iter_values(0..n)) as _),
        ])
        .unwrap()
    }

    #[test]
    fn results_come_back_in_chunk_order_whichever_worker_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w0, mut w1) = (Spill::new(dir.path(), 0), Spill::new(dir.path(), 1));
        // Worker 0 ran chunks 0 and 3, worker 1 chunks 1 and 2; chunk 2 had no rows for
        // "b", and no chunk had any for "c".
        let chunk = |s: &str, b: Vec<RecordBatch>| -> Results {
            [("a", vec![rows(s, 2)]), ("b", b), ("c", vec![])].into()
        };
        w0.add(0, chunk("s0", vec![rows("s0", 1), rows("s0", 3)]))
            .unwrap();
        w1.add(1, chunk("s1", vec![rows("s1", 1)])).unwrap();
        w1.add(2, chunk("s2", vec![])).unwrap();
        w0.add(3, chunk("s3", vec![rows("s3", 4)])).unwrap();
        let back = read_back(vec![w0.finish().unwrap(), w1.finish().unwrap()]).unwrap();
        let servers = |q: &str| -> Vec<(String, usize)> {
            back[q]
                .iter()
                .map(|b| {
                    let s = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                    (s.value(0).to_string(), b.num_rows())
                })
                .collect()
        };
        let owned = |v: &[(&str, usize)]| -> Vec<(String, usize)> {
            v.iter().map(|(s, n)| (s.to_string(), *n)).collect()
        };
        assert_eq!(
            servers("a"),
            owned(&[("s0", 2), ("s1", 2), ("s2", 2), ("s3", 2)])
        );
        assert_eq!(
            servers("b"),
            owned(&[("s0", 1), ("s0", 3), ("s1", 1), ("s3", 4)])
        );
        assert!(back["c"].is_empty());
    }

    #[test]
    fn a_damaged_stream_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Spill::new(dir.path(), 0);
        w.add(0, [("a", vec![rows("s0", 5)])].into()).unwrap();
        let done = w.finish().unwrap();
        let path = dir.path().join("w0-a.arrows");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_back(vec![done]).err().unwrap().to_string();
        assert!(err.contains("w0-a.arrows"), "{err}");
    }
}
