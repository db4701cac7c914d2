//! `kvscope export`: sessions → one Hive-partitioned Parquet dataset for pandas, Polars,
//! DuckDB and Spark (`DIR/server=…/date=YYYY-MM-DD/part-<session>.parquet`; one file per
//! session, server and partition: without `server` in the partitions the file name
//! carries it, `part-<session>-<server>.parquet`).
//!
//! Files hold the contract's columns with the contract's names and types (timestamps UTC
//! microseconds, percentages float64, counts int64, strings UTF-8) plus `session_id` and
//! `model` from metadata.json; partition columns live in the directory names only (the
//! Hive convention every reader above expects), with values percent-encoded. Each file's
//! key/value metadata carries `schema_version` and `session_id`. Re-exporting a session
//! overwrites its own files (one deterministic file name per session and partition).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::DateTime;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimestampMicrosecondType};
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::StoreError;
use super::location::{Location, SamplesInput};
use super::schema::{SCHEMA_VERSION, samples_to_batch};

/// A Hive partition column of the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKey {
    Server,
    /// UTC calendar day of the sample (`YYYY-MM-DD`).
    Date,
}

impl PartitionKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "server" => Ok(Self::Server),
            "date" => Ok(Self::Date),
            other => Err(format!(
                "cannot partition by `{other}` (choose from: server, date)"
            )),
        }
    }

    /// The name [`Self::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Date => "date",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Date => "date",
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportReport {
    pub sessions: usize,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
}

/// Everything but unreserved characters is encoded in partition values, so a server
/// label like `10.0.0.1:8000` becomes `10.0.0.1%3A8000` (decoded by all the readers).
const PARTITION_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

fn invalid(loc: &Location, message: impl ToString) -> StoreError {
    StoreError::invalid(&PathBuf::from(loc.to_string()), message)
}

/// Exports one session into the dataset at `out`, adding to `report`.
pub async fn export_session(
    session: &Location,
    out: &Location,
    partition_by: &[PartitionKey],
    report: &mut ExportReport,
) -> Result<(), StoreError> {
    let meta = session.read_metadata().await?;
    let session_id = meta
        .as_ref()
        .map(|m| m.session_id.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| session.name());
    let models: HashMap<String, String> = meta
        .iter()
        .flat_map(|m| m.servers.iter())
        .filter(|s| !s.model_names.is_empty())
        .map(|s| {
            let names: Vec<&str> = s.model_names.iter().map(String::as_str).collect();
            (s.server.clone(), names.join(","))
        })
        .collect();

    // Plain UTF-8 strings (not Utf8View) so the files carry the contract's types.
    let mut cfg = SessionConfig::new().with_target_partitions(2);
    cfg.options_mut().execution.parquet.schema_force_view_types = false;
    let ctx = SessionContext::new_with_config(cfg);
    session.register(&ctx);
    let err = |e: datafusion::error::DataFusionError| invalid(session, e);
    match session.samples_input().await? {
        SamplesInput::Parquet(url) => {
            ctx.register_parquet("samples", url, ParquetReadOptions::default())
                .await
                .map_err(err)?;
        }
        SamplesInput::Rows(rows) => {
            let batch = samples_to_batch(&rows);
            let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(err)?;
            ctx.register_table("samples", Arc::new(table))
                .map_err(err)?;
        }
    }
    // Files are written one at a time, so the rows of one (server, partition) must be
    // adjacent: ordered by server, then time (every partition key is the server or a
    // function of time).
    let sql = "SELECT * FROM samples ORDER BY server, ts".to_string();
    let df = ctx.sql(&sql).await.map_err(err)?;
    let mut stream = df.execute_stream().await.map_err(err)?;

    let mut current: Option<(String, PartWriter)> = None;
    let mut written: std::collections::HashSet<String> = std::collections::HashSet::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(err)?;
        let batch = add_columns(&batch, &session_id, &models).map_err(|e| invalid(session, e))?;
        let keys =
            file_names(&batch, partition_by, &session_id).map_err(|e| invalid(session, e))?;
        let mut start = 0;
        while start < batch.num_rows() {
            let key = keys.get(start).cloned().unwrap_or_default();
            let mut end = start + 1;
            while end < batch.num_rows() && keys.get(end) == Some(&key) {
                end += 1;
            }
            let slice = batch.slice(start, end - start);
            if current.as_ref().is_none_or(|(k, _)| *k != key) {
                if let Some((k, w)) = current.take() {
                    finish_part(out, &k, w, report).await?;
                }
                if !written.insert(key.clone()) {
                    return Err(invalid(
                        session,
                        format!("{key}: rows of one file are not adjacent (would overwrite)"),
                    ));
                }
                current = Some((
                    key.clone(),
                    PartWriter::new(&slice, partition_by, &session_id)?,
                ));
            }
            if let Some((_, w)) = current.as_mut() {
                w.write(&slice)?;
            }
            start = end;
        }
    }
    if let Some((k, w)) = current.take() {
        finish_part(out, &k, w, report).await?;
    }
    report.sessions += 1;
    Ok(())
}

async fn finish_part(
    out: &Location,
    name: &str,
    w: PartWriter,
    report: &mut ExportReport,
) -> Result<(), StoreError> {
    let (bytes, rows) = w.finish()?;
    report.files += 1;
    report.rows += rows;
    report.bytes += bytes.len() as u64;
    out.write(name, bytes).await
}

/// The file every row goes to: one per (session, server, partition). The partition
/// directory, then `part-<session>.parquet` when the server is a partition column, else
/// `part-<session>-<server, percent-encoded>.parquet` — two servers' rows never share
/// (and so never overwrite) a file.
fn file_names(
    batch: &RecordBatch,
    partition_by: &[PartitionKey],
    session_id: &str,
) -> Result<Vec<String>, String> {
    let dirs = partition_paths(batch, partition_by)?;
    let by_server = partition_by.iter().any(|k| k.name() == "server");
    let server = batch
        .column_by_name("server")
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or("samples lack a UTF-8 `server` column")?;
    Ok(dirs
        .into_iter()
        .enumerate()
        .map(|(i, dir)| {
            let file = if by_server {
                format!("part-{session_id}.parquet")
            } else {
                let s = if server.is_valid(i) {
                    server.value(i)
                } else {
                    ""
                };
                format!(
                    "part-{session_id}-{}.parquet",
                    utf8_percent_encode(s, PARTITION_VALUE)
                )
            };
            if dir.is_empty() {
                file
            } else {
                format!("{dir}/{file}")
            }
        })
        .collect())
}

/// `session_id` and `model` columns (the server's model names from metadata.json, else
/// the row's `model_name`).
fn add_columns(
    batch: &RecordBatch,
    session_id: &str,
    models: &HashMap<String, String>,
) -> Result<RecordBatch, String> {
    let n = batch.num_rows();
    let server = batch
        .column_by_name("server")
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or("samples lack a UTF-8 `server` column")?;
    let model_name = batch
        .column_by_name("model_name")
        .and_then(|c| c.as_string_opt::<i32>());
    let model: StringArray = (0..n)
        .map(|i| {
            let from_meta = server
                .is_valid(i)
                .then(|| models.get(server.value(i)))
                .flatten()
                .cloned();
            from_meta.or_else(|| {
                model_name
                    .filter(|m| m.is_valid(i) && !m.value(i).is_empty())
                    .map(|m| m.value(i).to_string())
            })
        })
        .collect();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    fields.push(Field::new("session_id", DataType::Utf8, false));
    cols.push(Arc::new(StringArray::from(vec![session_id; n])));
    fields.push(Field::new("model", DataType::Utf8, true));
    cols.push(Arc::new(model));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| e.to_string())
}

/// The partition directory (`server=…/date=…`) of every row.
fn partition_paths(batch: &RecordBatch, keys: &[PartitionKey]) -> Result<Vec<String>, String> {
    if keys.is_empty() {
        return Ok(vec![String::new(); batch.num_rows()]);
    }
    let server = batch
        .column_by_name("server")
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or("samples lack a UTF-8 `server` column")?;
    let ts = batch
        .column_by_name("ts")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or("samples lack a microsecond `ts` column")?;
    Ok((0..batch.num_rows())
        .map(|i| {
            keys.iter()
                .map(|k| {
                    let value = match k {
                        PartitionKey::Server if server.is_valid(i) => server.value(i).to_string(),
                        PartitionKey::Date if ts.is_valid(i) => {
                            DateTime::from_timestamp_micros(ts.value(i))
                                .map(|d| d.format("%Y-%m-%d").to_string())
                                .unwrap_or_else(|| "__HIVE_DEFAULT_PARTITION__".into())
                        }
                        _ => "__HIVE_DEFAULT_PARTITION__".into(),
                    };
                    format!(
                        "{}={}",
                        k.name(),
                        utf8_percent_encode(&value, PARTITION_VALUE)
                    )
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect())
}

/// One partition file being written into memory.
struct PartWriter {
    writer: ArrowWriter<Vec<u8>>,
    keep: Vec<usize>,
    rows: u64,
}

impl PartWriter {
    fn new(
        sample: &RecordBatch,
        partition_by: &[PartitionKey],
        session_id: &str,
    ) -> Result<Self, StoreError> {
        let full = sample.schema();
        let keep: Vec<usize> = full
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !partition_by.iter().any(|k| k.name() == f.name()))
            .map(|(i, _)| i)
            .collect();
        let schema = Arc::new(full.project(&keep).map_err(|e| pq_invalid(e.to_string()))?);
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(vec![
                KeyValue::new("schema_version".into(), SCHEMA_VERSION.to_string()),
                KeyValue::new("session_id".into(), session_id.to_string()),
            ]))
            .build();
        let writer = ArrowWriter::try_new(Vec::new(), schema, Some(props))
            .map_err(|e| pq_invalid(e.to_string()))?;
        Ok(Self {
            writer,
            keep,
            rows: 0,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        let projected = batch
            .project(&self.keep)
            .map_err(|e| pq_invalid(e.to_string()))?;
        self.rows += projected.num_rows() as u64;
        self.writer
            .write(&projected)
            .map_err(|e| pq_invalid(e.to_string()))
    }

    fn finish(self) -> Result<(Vec<u8>, u64), StoreError> {
        let rows = self.rows;
        self.writer
            .into_inner()
            .map(|b| (b, rows))
            .map_err(|e| pq_invalid(e.to_string()))
    }
}

fn pq_invalid(message: String) -> StoreError {
    StoreError::Invalid {
        path: PathBuf::from("export"),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_percent_encoded() {
        let v = utf8_percent_encode("10.0.0.1:8000/x y", PARTITION_VALUE).to_string();
        assert_eq!(v, "10.0.0.1%3A8000%2Fx%20y");
        assert_eq!(PartitionKey::parse("date"), Ok(PartitionKey::Date));
        assert!(
            PartitionKey::parse("engine")
                .unwrap_err()
                .contains("server, date")
        );
    }
}
