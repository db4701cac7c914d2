//! The `events.jsonl` record: phase transitions, condition changes, condition episodes,
//! transient events and data-quality events, one JSON object per line.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::vocab::{Condition, EventName, EventType, Phase};

/// One line of `events.jsonl`. `type` says which optional fields are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    /// `phase_transition`, `condition_change`, `condition_episode`, `transient`,
    /// `data_quality`.
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339, UTC.
    pub ts: String,
    pub t_rel_sec: f64,
    pub server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Legacy sessions recorded the phase of a sample as `phase`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_evidence: Option<Fields>,
    /// Transient/data-quality event name (`TTFT_SPIKE`, `SCRAPE_GAP`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Fields>,
}

/// A small JSON object (an event's evidence, an episode's peak) kept as a sorted slice
/// of entries: a fleet analysis holds hundreds of thousands of events, and a
/// `serde_json::Map` costs a whole B-tree node (~600 bytes) for its three or four keys.
/// Written and read as a JSON object, keys in order; a legacy value that is not an
/// object reads as `{"value": …}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(Box<[(Box<str>, serde_json::Value)]>);

impl Fields {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .and_then(|i| self.0.get(i))
            .map(|(_, v)| v)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &serde_json::Value)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, serde_json::Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (String, serde_json::Value)>>(it: I) -> Self {
        let mut v: Vec<(Box<str>, serde_json::Value)> = it
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        Self(v.into_boxed_slice())
    }
}

impl From<serde_json::Value> for Fields {
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Object(m) => m.into_iter().collect(),
            other => std::iter::once(("value".to_string(), other)).collect(),
        }
    }
}

impl Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Fields::from)
    }
}

impl Event {
    /// The line's `type`, when it is one KVScope writes.
    pub fn event_type(&self) -> Option<EventType> {
        self.kind.parse().ok()
    }
    /// The transient/data-quality event name.
    pub fn event_name(&self) -> Option<EventName> {
        self.event.as_deref()?.parse().ok()
    }
    /// The condition of a change or episode.
    pub fn condition_name(&self) -> Option<Condition> {
        self.condition.as_deref()?.parse().ok()
    }
    /// The phase a transition leads to (None for a legacy phase such as the historical
    /// `PREFILL_PRESSURE`).
    pub fn to_phase(&self) -> Option<Phase> {
        self.to.as_deref()?.parse().ok()
    }
}

/// Writes events, one per line.
pub fn write_events(path: &Path, events: &[Event]) -> Result<(), StoreError> {
    let tmp = path.with_extension("jsonl.tmp");
    let file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    let mut w = BufWriter::new(file);
    for e in events {
        // Straight into the buffer: no string per event.
        serde_json::to_writer(&mut w, e).map_err(|err| StoreError::Invalid {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        w.write_all(b"\n")
            .map_err(|err| StoreError::io(&tmp, err))?;
    }
    w.flush().map_err(|err| StoreError::io(&tmp, err))?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
}

/// Events as JSON lines (what [`write_events`] writes).
pub fn events_to_jsonl(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 256);
    for e in events {
        // Event holds only strings, numbers and JSON values: serialization cannot fail.
        if let Ok(line) = serde_json::to_vec(e) {
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
    }
    out
}

/// Arrow schema of `events.parquet`: the fields of [`Event`] as typed columns (times
/// as UTC µs timestamps, the peak of an episode split into metric, value and time, the
/// evidence map as JSON text).
pub fn events_schema() -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let utf8 = |n: &str| Field::new(n, DataType::Utf8, true);
    let f64_ = |n: &str| Field::new(n, DataType::Float64, true);
    std::sync::Arc::new(
        Schema::new(vec![
            Field::new("type", DataType::Utf8, false),
            Field::new("ts", ts(), true),
            Field::new("t_rel_sec", DataType::Float64, false),
            Field::new("server", DataType::Utf8, false),
            utf8("from_phase"),
            utf8("to_phase"),
            utf8("condition"),
            utf8("state"),
            Field::new("start_time", ts(), true),
            Field::new("end_time", ts(), true),
            f64_("duration_sec"),
            utf8("event"),
            utf8("metric"),
            f64_("value"),
            f64_("baseline"),
            utf8("reason"),
            utf8("peak_metric"),
            f64_("peak_value"),
            Field::new("peak_at", ts(), true),
            utf8("evidence"),
        ])
        .with_metadata(
            [(
                "schema_version".to_string(),
                crate::store::schema::SCHEMA_VERSION.to_string(),
            )]
            .into(),
        ),
    )
}

fn rfc_us(s: Option<&str>) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s?)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Events as one Arrow batch of [`events_schema`].
pub fn events_to_batch(events: &[Event]) -> datafusion::arrow::array::RecordBatch {
    use datafusion::arrow::array::{
        ArrayRef, Float64Array, StringArray, TimestampMicrosecondArray,
    };
    use std::sync::Arc;
    let ts = |f: &dyn Fn(&Event) -> Option<i64>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from_iter(events.iter().map(f)).with_timezone("UTC"))
    };
    let s = |f: &dyn Fn(&Event) -> Option<&str>| -> ArrayRef {
        Arc::new(StringArray::from_iter(events.iter().map(f)))
    };
    let n = |f: &dyn Fn(&Event) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(events.iter().map(f)))
    };
    let peak = |e: &Event, k: &str| e.peak_evidence.as_ref().and_then(|p| p.get(k).cloned());
    let columns: Vec<ArrayRef> = vec![
        s(&|e| Some(e.kind.as_str())),
        ts(&|e| rfc_us(Some(&e.ts))),
        n(&|e| Some(e.t_rel_sec)),
        s(&|e| Some(e.server.as_str())),
        s(&|e| e.from.as_deref().or(e.phase.as_deref())),
        s(&|e| e.to.as_deref()),
        s(&|e| e.condition.as_deref()),
        s(&|e| e.state.as_deref()),
        ts(&|e| rfc_us(e.start_time.as_deref())),
        ts(&|e| rfc_us(e.end_time.as_deref())),
        n(&|e| e.duration_sec),
        s(&|e| e.event.as_deref()),
        s(&|e| e.metric.as_deref()),
        n(&|e| e.value),
        n(&|e| e.baseline),
        s(&|e| e.reason.as_deref()),
        Arc::new(StringArray::from_iter(events.iter().map(|e| {
            peak(e, "metric").and_then(|v| v.as_str().map(str::to_string))
        }))),
        n(&|e| peak(e, "value").and_then(|v| v.as_f64())),
        ts(&|e| peak(e, "at").and_then(|v| rfc_us(v.as_str()))),
        Arc::new(StringArray::from_iter(events.iter().map(|e| {
            e.evidence
                .as_ref()
                .and_then(|v| serde_json::to_string(v).ok())
        }))),
    ];
    // Built from the same field list as the schema, so this cannot fail.
    datafusion::arrow::array::RecordBatch::try_new(events_schema(), columns)
        .unwrap_or_else(|e| unreachable!("events schema out of sync: {e}"))
}

/// Events per `events.parquet` batch.
const PARQUET_BATCH: usize = 1 << 16;

/// `events.parquet` written one event at a time (snappy, [`PARQUET_BATCH`] events per
/// batch): what the streamed merge of a fleet's events writes through, and what the
/// in-memory writers use, so both write the same file.
pub struct EventsParquetWriter<W: Write + Send> {
    w: parquet::arrow::ArrowWriter<W>,
    pending: Vec<Event>,
    /// Batches given to [`Self::write`], not yet encoded, and their rows.
    staged: Vec<RecordBatch>,
    staged_rows: usize,
    path: std::path::PathBuf,
}

impl<W: Write + Send> EventsParquetWriter<W> {
    /// A writer into `sink`; `path` names the file in errors.
    pub fn new(sink: W, path: &Path) -> Result<Self, StoreError> {
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let w = parquet::arrow::ArrowWriter::try_new(sink, events_schema(), Some(props))
            .map_err(|e| parquet_err(path, e))?;
        Ok(Self {
            w,
            pending: Vec::with_capacity(PARQUET_BATCH),
            staged: Vec::new(),
            staged_rows: 0,
            path: path.to_path_buf(),
        })
    }

    pub fn push(&mut self, e: Event) -> Result<(), StoreError> {
        self.pending.push(e);
        if self.pending.len() >= PARQUET_BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), StoreError> {
        self.write_staged()?;
        if !self.pending.is_empty() {
            self.w
                .write(&events_to_batch(&self.pending))
                .map_err(|e| parquet_err(&self.path, e))?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Writes `batch` ([`events_to_batch`] of the next events) after what is pending.
    /// Batches are gathered into [`PARQUET_BATCH`] rows before they are encoded, so the
    /// file is the same as when the events are pushed one by one.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        if !self.pending.is_empty() {
            self.flush_batch()?;
        }
        let mut rest = batch.clone();
        while rest.num_rows() > 0 {
            let take = (PARQUET_BATCH - self.staged_rows).min(rest.num_rows());
            self.staged.push(rest.slice(0, take));
            self.staged_rows += take;
            rest = rest.slice(take, rest.num_rows() - take);
            if self.staged_rows == PARQUET_BATCH {
                self.write_staged()?;
            }
        }
        Ok(())
    }

    fn write_staged(&mut self) -> Result<(), StoreError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let batch = datafusion::arrow::compute::concat_batches(&events_schema(), &self.staged)
            .map_err(|e| StoreError::Invalid {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        self.staged.clear();
        self.staged_rows = 0;
        self.w.write(&batch).map_err(|e| parquet_err(&self.path, e))
    }

    /// Writes what is pending and the footer; returns the sink.
    pub fn finish(mut self) -> Result<W, StoreError> {
        self.flush_batch()?;
        self.w.into_inner().map_err(|e| parquet_err(&self.path, e))
    }
}

fn parquet_err(path: &Path, e: parquet::errors::ParquetError) -> StoreError {
    StoreError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes `events.parquet` into `sink`.
fn events_parquet_into<W: Write + Send>(
    sink: W,
    events: &[Event],
    path: &Path,
) -> Result<W, StoreError> {
    let mut w = EventsParquetWriter::new(sink, path)?;
    for chunk in events.chunks(PARQUET_BATCH) {
        w.w.write(&events_to_batch(chunk))
            .map_err(|e| parquet_err(path, e))?;
    }
    w.finish()
}

/// `events.parquet` bytes (for object storage).
pub fn events_to_parquet(events: &[Event]) -> Result<Vec<u8>, StoreError> {
    events_parquet_into(Vec::new(), events, Path::new(super::EVENTS_PARQUET))
}

/// Writes `events.parquet` to a local file, streamed (atomically: a temporary file
/// renamed into place).
pub fn write_events_parquet(path: &Path, events: &[Event]) -> Result<(), StoreError> {
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    let w = events_parquet_into(BufWriter::new(file), events, path)?;
    w.into_inner()
        .map_err(|e| StoreError::io(&tmp, e.into_error()))?
        .sync_all()
        .map_err(|e| StoreError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
}

/// Reads `events.jsonl`; a malformed line is an error naming it.
pub fn read_events(path: &Path) -> Result<Vec<Event>, StoreError> {
    read_events_where(path, |_| true)
}

/// The events of `events.jsonl` that `keep` selects (the others are parsed and
/// dropped, never held); a malformed line is an error naming it.
pub fn read_events_where(
    path: &Path,
    keep: impl Fn(&Event) -> bool,
) -> Result<Vec<Event>, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    events_from_reader_where(BufReader::new(file), path, keep)
}

/// [`read_events`] over any reader; `path` names the file in errors.
pub fn events_from_reader(r: impl BufRead, path: &Path) -> Result<Vec<Event>, StoreError> {
    events_from_reader_where(r, path, |_| true)
}

fn events_from_reader_where(
    r: impl BufRead,
    path: &Path,
    keep: impl Fn(&Event) -> bool,
) -> Result<Vec<Event>, StoreError> {
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line.map_err(|e| StoreError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let ev: Event = serde_json::from_str(&line).map_err(|e| StoreError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        if keep(&ev) {
            out.push(ev);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_and_write_as_a_json_object() {
        let f = Fields::from(serde_json::json!({"b": 2.5, "a": "x", "c": null}));
        assert_eq!(f.get("a"), Some(&serde_json::json!("x")));
        assert_eq!(f.get("b").and_then(|v| v.as_f64()), Some(2.5));
        assert_eq!(f.get("zz"), None);
        // Keys in order, as serde_json's map wrote them.
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"a":"x","b":2.5,"c":null}"#
        );
        let back: Fields = serde_json::from_str(r#"{"c":null,"b":2.5,"a":"x"}"#).unwrap();
        assert_eq!(back, f);
        // A legacy scalar keeps its value.
        let legacy: Fields = serde_json::from_str("7").unwrap();
        assert_eq!(legacy.get("value"), Some(&serde_json::json!(7)));
    }
}
