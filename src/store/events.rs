//! The `events.jsonl` record: phase transitions, condition changes, condition episodes,
//! transient events and data-quality events, one JSON object per line.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

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
    pub peak_evidence: Option<serde_json::Value>,
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
    pub evidence: Option<serde_json::Value>,
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
        let line = serde_json::to_string(e).map_err(|err| StoreError::Invalid {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        w.write_all(line.as_bytes())
            .and_then(|_| w.write_all(b"\n"))
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
        Arc::new(StringArray::from_iter(
            events
                .iter()
                .map(|e| e.evidence.as_ref().map(|v| v.to_string())),
        )),
    ];
    // Built from the same field list as the schema, so this cannot fail.
    datafusion::arrow::array::RecordBatch::try_new(events_schema(), columns)
        .unwrap_or_else(|e| unreachable!("events schema out of sync: {e}"))
}

/// `events.parquet` bytes (snappy, row groups of 64 Ki events).
pub fn events_to_parquet(events: &[Event]) -> Result<Vec<u8>, StoreError> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let err = |e: parquet::errors::ParquetError| StoreError::Invalid {
        path: std::path::PathBuf::from(super::EVENTS_PARQUET),
        message: e.to_string(),
    };
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), events_schema(), Some(props))
        .map_err(err)?;
    for chunk in events.chunks(1 << 16) {
        w.write(&events_to_batch(chunk)).map_err(err)?;
    }
    w.into_inner().map_err(err)
}

/// Reads `events.jsonl`; a malformed line is an error naming it.
pub fn read_events(path: &Path) -> Result<Vec<Event>, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    events_from_reader(BufReader::new(file), path)
}

/// [`read_events`] over any reader; `path` names the file in errors.
pub fn events_from_reader(r: impl BufRead, path: &Path) -> Result<Vec<Event>, StoreError> {
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
        out.push(ev);
    }
    Ok(out)
}
