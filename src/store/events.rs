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
