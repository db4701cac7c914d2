//! Store stage: sessions on disk. Owns the file layout of a session directory, the
//! column definitions ([`schema`]), the writers used while recording and the readers used
//! by analysis (Parquet, and `samples.jsonl`/`metrics.csv` for legacy sessions).
//!
//! Crash safety: `samples.jsonl` is appended and flushed every interval, so a killed
//! recorder loses at most the row in flight; the Parquet files are only valid once
//! [`SessionWriter::finish`] has written their footers, and [`repair`] rebuilds them from
//! `samples.jsonl` when that did not happen.

pub mod events;
pub mod export;
pub mod layout;
pub mod location;
pub mod schema;
pub mod verify;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use schema::{
    COLUMNS, HistogramRow, SCHEMA_VERSION, Sample, histograms_to_batch, samples_to_batch,
};

pub use layout::{
    DOCTOR_JSON, EVENTS_JSONL, EVENTS_PARQUET, HISTOGRAMS_PARQUET, METADATA_FILE, SAMPLES_CSV,
    SAMPLES_JSONL, SAMPLES_PARQUET, SAMPLES_PARTS_DIR, SUMMARY_JSON,
};

/// Rows per Parquet row group: bounds the recorder's memory on hour-long sessions.
pub const ROW_GROUP_ROWS: usize = 8192;

/// Errors of the store stage. Each names the file (and line where there is one).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{location}: {source}")]
    ObjectStore {
        location: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error(
        "{0} is not a KVScope session: no metadata.json, samples.parquet, samples.jsonl or metrics.csv"
    )]
    NotASession(PathBuf),
}

impl StoreError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    /// A file that is not what it should be (damaged, wrong format), and why.
    pub fn invalid(path: &Path, message: impl ToString) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
    fn pq(path: &Path, source: parquet::errors::ParquetError) -> Self {
        Self::Parquet {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where samples came from.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct SourceInfo {
    /// `scrape`, `simulator`, `prometheus-import`, `vllm-log` or `legacy`.
    pub kind: String,
    /// Where from, credentials removed (servers, a Prometheus, log files).
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Imports: the selector used (`prometheus-import`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Imports: the window asked for, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_end: Option<String>,
    /// Imports: what the data cannot show (e.g. a log has no latency quantiles).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Recorder settings.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct RecorderSettings {
    pub interval_s: f64,
    pub timeout_s: f64,
    pub duration_s: Option<f64>,
}

/// Facts about one server gathered while recording: one entry of `metadata.json`'s
/// `servers`, written and read back as this type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerMeta {
    pub server: String,
    pub engine_kind: String,
    /// vLLM release line (`0.29`): stated with `--vllm-version`, else inferred from the
    /// `cache_config_info` label set (`adapter::version`); absent when neither says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vllm_version: Option<String>,
    /// Where `vllm_version` came from (`stated`, `inferred from cache_config_info`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vllm_version_source: Option<String>,
    pub model_names: std::collections::BTreeSet<String>,
    /// Engine labels (`engine` of data-parallel servers; `""` for one engine).
    pub engines: std::collections::BTreeSet<String>,
    /// `cache_config_info` labels as exposed (one map per label set seen).
    pub cache_config: Vec<std::collections::BTreeMap<String, String>>,
    pub kv_capacity_tokens: Option<f64>,
    pub unknown_vllm_metrics: std::collections::BTreeSet<String>,
    pub skipped_lines: usize,
    /// CUDA graphs captured and replayed (profilemate sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_graphs: Option<crate::source::profilemate::CudaGraphSummary>,
}

/// `metadata.json`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Metadata {
    pub schema_version: u32,
    pub session_id: String,
    pub kvscope_version: String,
    pub started_at: String,
    #[serde(default)]
    pub ended_at: Option<String>,
    /// False while recording (or after a crash); true once every file was finalized.
    #[serde(default)]
    pub complete: bool,
    #[serde(default)]
    pub source: SourceInfo,
    #[serde(default)]
    pub recorder: RecorderSettings,
    #[serde(default)]
    pub servers: Vec<ServerMeta>,
    #[serde(default)]
    pub row_counts: RowCounts,
    #[serde(default)]
    pub columns: serde_json::Value,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub samples: u64,
    pub histograms: u64,
}

impl Metadata {
    /// Sets every server's `vllm_version` (and where it came from), e.g. as stated by the
    /// user for a session recorded without it.
    pub fn state_vllm_version(&mut self, version: &str, source: &str) {
        for s in &mut self.servers {
            s.vllm_version = Some(version.to_string());
            s.vllm_version_source = Some(source.to_string());
        }
    }

    /// A fresh metadata record for a new session.
    pub fn new(
        session_id: &str,
        started_at: &str,
        source: SourceInfo,
        recorder: RecorderSettings,
    ) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            session_id: session_id.to_string(),
            kvscope_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: started_at.to_string(),
            ended_at: None,
            complete: false,
            source,
            recorder,
            servers: Vec::new(),
            row_counts: RowCounts::default(),
            columns: serde_json::to_value(COLUMNS).unwrap_or_default(),
        }
    }
}

/// Writes `value` as pretty JSON (and a final newline) to `path` atomically (temp file +
/// rename), streamed into the file rather than built as one string first.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let tmp = path.with_extension("json.tmp");
    let file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    let mut w = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, value).map_err(|e| StoreError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    w.write_all(b"\n")
        .and_then(|()| w.flush())
        .map_err(|e| StoreError::io(&tmp, e))?;
    drop(w);
    fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
}

fn parquet_writer(
    path: &Path,
    schema: datafusion::arrow::datatypes::SchemaRef,
) -> Result<ArrowWriter<File>, StoreError> {
    let file = File::create(path).map_err(|e| StoreError::io(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            "schema_version".to_string(),
            SCHEMA_VERSION.to_string(),
        )]))
        .build();
    ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| StoreError::pq(path, e))
}

/// Writes a session directory while recording.
pub struct SessionWriter {
    dir: PathBuf,
    samples: ArrowWriter<File>,
    histograms: ArrowWriter<File>,
    csv: csv::Writer<BufWriter<File>>,
    jsonl: BufWriter<File>,
    metadata: Metadata,
}

impl SessionWriter {
    /// Creates `dir` (which must not hold a session already) and opens every file.
    pub fn create(dir: &Path, metadata: Metadata) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let meta_path = dir.join(METADATA_FILE);
        if meta_path.exists() {
            return Err(StoreError::Invalid {
                path: meta_path,
                message: "a session already exists here; choose another --out".into(),
            });
        }
        write_json_atomic(&meta_path, &metadata)?;
        let samples = parquet_writer(&dir.join(SAMPLES_PARQUET), schema::sample_schema())?;
        let histograms = parquet_writer(&dir.join(HISTOGRAMS_PARQUET), schema::histogram_schema())?;
        let csv_path = dir.join(SAMPLES_CSV);
        let csv_file = File::create(&csv_path).map_err(|e| StoreError::io(&csv_path, e))?;
        let csv = csv::WriterBuilder::new().from_writer(BufWriter::new(csv_file));
        let jsonl_path = dir.join(SAMPLES_JSONL);
        let jsonl =
            BufWriter::new(File::create(&jsonl_path).map_err(|e| StoreError::io(&jsonl_path, e))?);
        Ok(Self {
            dir: dir.to_path_buf(),
            samples,
            histograms,
            csv,
            jsonl,
            metadata,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one interval's rows to every file and flushes the text files.
    pub fn append(
        &mut self,
        samples: &[Sample],
        histograms: &[HistogramRow],
    ) -> Result<(), StoreError> {
        if !samples.is_empty() {
            let jpath = self.dir.join(SAMPLES_JSONL);
            for s in samples {
                let line = serde_json::to_string(s).map_err(|e| StoreError::Invalid {
                    path: jpath.clone(),
                    message: e.to_string(),
                })?;
                self.jsonl
                    .write_all(line.as_bytes())
                    .and_then(|_| self.jsonl.write_all(b"\n"))
                    .map_err(|e| StoreError::io(&jpath, e))?;
            }
            self.jsonl.flush().map_err(|e| StoreError::io(&jpath, e))?;
            let cpath = self.dir.join(SAMPLES_CSV);
            for s in samples {
                self.csv.serialize(s).map_err(|e| StoreError::Invalid {
                    path: cpath.clone(),
                    message: e.to_string(),
                })?;
            }
            self.csv.flush().map_err(|e| StoreError::io(&cpath, e))?;
            let batch = samples_to_batch(samples);
            self.samples
                .write(&batch)
                .map_err(|e| StoreError::pq(&self.dir.join(SAMPLES_PARQUET), e))?;
            self.metadata.row_counts.samples += samples.len() as u64;
        }
        if !histograms.is_empty() {
            let batch = histograms_to_batch(histograms);
            self.histograms
                .write(&batch)
                .map_err(|e| StoreError::pq(&self.dir.join(HISTOGRAMS_PARQUET), e))?;
            self.metadata.row_counts.histograms += histograms.len() as u64;
        }
        Ok(())
    }

    /// Mutable access to the metadata written at [`finish`](Self::finish).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Writes Parquet footers and the final metadata. Returns the session directory.
    pub fn finish(mut self, ended_at: &str) -> Result<PathBuf, StoreError> {
        self.samples
            .close()
            .map_err(|e| StoreError::pq(&self.dir.join(SAMPLES_PARQUET), e))?;
        self.histograms
            .close()
            .map_err(|e| StoreError::pq(&self.dir.join(HISTOGRAMS_PARQUET), e))?;
        let cpath = self.dir.join(SAMPLES_CSV);
        self.csv.flush().map_err(|e| StoreError::io(&cpath, e))?;
        self.metadata.ended_at = Some(ended_at.to_string());
        self.metadata.complete = true;
        write_json_atomic(&self.dir.join(METADATA_FILE), &self.metadata)?;
        Ok(self.dir)
    }
}

/// Reads `metadata.json`; None when the file does not exist.
pub fn read_metadata(dir: &Path) -> Result<Option<Metadata>, StoreError> {
    let path = dir.join(METADATA_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = fs::read_to_string(&path).map_err(|e| StoreError::io(&path, e))?;
    parse_metadata(&text, &path).map(Some)
}

/// Parses `metadata.json` text; `path` names the file in errors.
pub fn parse_metadata(text: &str, path: &Path) -> Result<Metadata, StoreError> {
    let path = path.to_path_buf();
    let meta: Metadata = serde_json::from_str(text).map_err(|e| StoreError::Line {
        path: path.clone(),
        line: e.line(),
        message: e.to_string(),
    })?;
    if meta.schema_version > SCHEMA_VERSION {
        return Err(StoreError::Invalid {
            path,
            message: format!(
                "schema_version {} is newer than this kvscope understands ({SCHEMA_VERSION}); upgrade kvscope",
                meta.schema_version
            ),
        });
    }
    Ok(meta)
}

/// Reads `samples.jsonl`. A malformed line is an error naming the line, except a
/// truncated last line (a crash mid-write), which is skipped.
pub fn read_samples_jsonl(path: &Path) -> Result<Vec<Sample>, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    samples_jsonl_from_reader(BufReader::new(file), path)
}

/// [`read_samples_jsonl`] over any reader; `path` names the file in errors.
pub fn samples_jsonl_from_reader(r: impl BufRead, path: &Path) -> Result<Vec<Sample>, StoreError> {
    let lines: Vec<String> = r
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::io(path, e))?;
    let last = lines.len();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Sample>(line) {
            Ok(s) => out.push(s),
            Err(_) if i + 1 == last && !line.ends_with('}') => {
                tracing::warn!("{}:{}: truncated last line skipped", path.display(), i + 1);
            }
            Err(e) => {
                return Err(StoreError::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// Reads `metrics.csv` (legacy sessions). The header must have the core columns.
pub fn read_samples_csv(path: &Path) -> Result<Vec<Sample>, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    samples_csv_from_reader(file, path)
}

/// [`read_samples_csv`] over any reader; `path` names the file in errors.
pub fn samples_csv_from_reader(
    r: impl std::io::Read,
    path: &Path,
) -> Result<Vec<Sample>, StoreError> {
    let mut rdr = csv::Reader::from_reader(r);
    let headers = rdr
        .headers()
        .map_err(|e| StoreError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .clone();
    for core in schema::CORE_COLUMNS {
        if !headers.iter().any(|h| h == *core) {
            return Err(StoreError::Line {
                path: path.to_path_buf(),
                line: 1,
                message: format!("header lacks the required column `{core}`"),
            });
        }
    }
    let mut out = Vec::new();
    for (i, rec) in rdr.deserialize::<Sample>().enumerate() {
        let s = rec.map_err(|e| StoreError::Line {
            path: path.to_path_buf(),
            line: i + 2,
            message: e.to_string(),
        })?;
        out.push(s);
    }
    Ok(out)
}

/// Rebuilds `samples.parquet` from `samples.jsonl` (after a crash, or for a legacy
/// session). Returns the number of rows written.
pub fn rebuild_parquet_from_jsonl(dir: &Path) -> Result<usize, StoreError> {
    let rows = read_samples_jsonl(&dir.join(SAMPLES_JSONL))?;
    write_samples_parquet(&dir.join(SAMPLES_PARQUET), &rows)?;
    Ok(rows.len())
}

/// Replaces a session's sample rows in every samples file (`samples.jsonl` first: it is
/// what `repair` rebuilds from), each written to a temp file and renamed.
pub fn rewrite_samples(dir: &Path, rows: &[Sample]) -> Result<(), StoreError> {
    let jsonl = dir.join(SAMPLES_JSONL);
    let tmp = jsonl.with_extension("jsonl.tmp");
    let mut w = BufWriter::new(File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?);
    for r in rows {
        serde_json::to_writer(&mut w, r).map_err(|e| StoreError::Invalid {
            path: tmp.clone(),
            message: e.to_string(),
        })?;
        w.write_all(b"\n").map_err(|e| StoreError::io(&tmp, e))?;
    }
    w.flush().map_err(|e| StoreError::io(&tmp, e))?;
    drop(w);
    fs::rename(&tmp, &jsonl).map_err(|e| StoreError::io(&jsonl, e))?;
    let csv_path = dir.join(SAMPLES_CSV);
    let tmp = csv_path.with_extension("csv.tmp");
    let file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    let mut c = csv::WriterBuilder::new().from_writer(BufWriter::new(file));
    for r in rows {
        c.serialize(r).map_err(|e| StoreError::Invalid {
            path: tmp.clone(),
            message: e.to_string(),
        })?;
    }
    c.flush().map_err(|e| StoreError::io(&tmp, e))?;
    drop(c);
    fs::rename(&tmp, &csv_path).map_err(|e| StoreError::io(&csv_path, e))?;
    write_samples_parquet(&dir.join(SAMPLES_PARQUET), rows)
}

/// Writes rows to a new Parquet file at `path` (temp file + rename).
pub fn write_samples_parquet(path: &Path, rows: &[Sample]) -> Result<(), StoreError> {
    let tmp = path.with_extension("parquet.tmp");
    let mut w = parquet_writer(&tmp, schema::sample_schema())?;
    for chunk in rows.chunks(ROW_GROUP_ROWS) {
        w.write(&samples_to_batch(chunk))
            .map_err(|e| StoreError::pq(&tmp, e))?;
    }
    w.close().map_err(|e| StoreError::pq(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
}

/// Writes one batch to a new Parquet file (used by generators and exports).
pub fn write_batches_parquet(path: &Path, batches: &[RecordBatch]) -> Result<(), StoreError> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let mut w = parquet_writer(path, first.schema())?;
    for b in batches {
        w.write(b).map_err(|e| StoreError::pq(path, e))?;
    }
    w.close().map_err(|e| StoreError::pq(path, e)).map(|_| ())
}

/// True when `path` is a complete Parquet file (has its footer).
pub fn parquet_is_valid(path: &Path) -> bool {
    File::open(path)
        .ok()
        .and_then(|f| parquet::file::reader::SerializedFileReader::new(f).ok())
        .is_some()
}

/// What [`repair`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    pub rebuilt_rows: Option<usize>,
}

/// Makes a session analysable after a crash: when `samples.parquet` is missing or has no
/// footer but `samples.jsonl` exists, rebuilds it.
pub fn repair(dir: &Path) -> Result<RepairReport, StoreError> {
    let pq = dir.join(SAMPLES_PARQUET);
    let parts = dir.join(SAMPLES_PARTS_DIR);
    let jsonl = dir.join(SAMPLES_JSONL);
    let needs = !parts.is_dir() && (!pq.exists() || !parquet_is_valid(&pq));
    if needs && jsonl.exists() {
        let n = rebuild_parquet_from_jsonl(dir)?;
        return Ok(RepairReport {
            rebuilt_rows: Some(n),
        });
    }
    Ok(RepairReport { rebuilt_rows: None })
}

/// Checks that `dir` looks like a session.
pub fn check_session_dir(dir: &Path) -> Result<(), StoreError> {
    if !dir.is_dir() {
        return Err(StoreError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such session directory"),
        });
    }
    let mut listing = layout::Listing::default();
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            listing.dirs.push(name);
        } else {
            listing.files.push(name);
        }
    }
    if listing.is_session() {
        Ok(())
    } else {
        Err(StoreError::NotASession(dir.to_path_buf()))
    }
}

#[cfg(test)]
mod server_meta_tests {
    use super::*;

    /// `metadata.json` is read back into the same typed record it was written from.
    #[test]
    fn server_meta_round_trips_through_metadata_json() {
        let mut meta = Metadata::new(
            "s",
            "2026-01-01T00:00:00Z",
            SourceInfo::default(),
            RecorderSettings::default(),
        );
        meta.servers.push(ServerMeta {
            server: "a:8000".into(),
            engine_kind: "vllm".into(),
            vllm_version: Some("0.26".into()),
            vllm_version_source: Some("inferred".into()),
            model_names: ["m".to_string()].into(),
            engines: ["0".to_string(), "1".to_string()].into(),
            cache_config: vec![[("num_gpu_blocks".to_string(), "2048".to_string())].into()],
            kv_capacity_tokens: Some(16384.0),
            ..Default::default()
        });
        let text = serde_json::to_string(&meta).unwrap();
        let back: Metadata = serde_json::from_str(&text).unwrap();
        assert_eq!(back.servers, meta.servers);
        // A server entry written by an older KVScope (fewer fields) still reads.
        let old: ServerMeta = serde_json::from_str(r#"{"server":"b","engines":[""]}"#).unwrap();
        assert_eq!(old.server, "b");
        assert_eq!(old.engines.len(), 1);
    }
}
