//! `kvscope verify`: checks a session's integrity file by file and says what is wrong,
//! naming the file and line.

use std::path::Path;

use parquet::file::reader::FileReader;

use super::schema::{CORE_COLUMNS, SCHEMA_VERSION};
use super::{
    EVENTS_JSONL, HISTOGRAMS_PARQUET, METADATA_FILE, SAMPLES_CSV, SAMPLES_JSONL, SAMPLES_PARQUET,
    events, read_metadata, read_samples_csv, read_samples_jsonl,
};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Error,
}

/// One line of the verification report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    pub file: String,
    pub level: Level,
    pub message: String,
}

fn check(file: &str, level: Level, message: impl Into<String>) -> Check {
    Check {
        file: file.to_string(),
        level,
        message: message.into(),
    }
}

fn parquet_rows(path: &Path) -> Result<(i64, Vec<String>), String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let r = parquet::file::reader::SerializedFileReader::new(f).map_err(|e| e.to_string())?;
    let md = r.metadata().file_metadata();
    let cols = md
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    Ok((md.num_rows(), cols))
}

/// Verifies every file of the session in `dir`.
pub fn verify(dir: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let meta = match read_metadata(dir) {
        Ok(Some(m)) => {
            out.push(check(
                METADATA_FILE,
                Level::Ok,
                format!(
                    "schema_version {} (this kvscope: {SCHEMA_VERSION})",
                    m.schema_version
                ),
            ));
            if !m.complete {
                out.push(check(
                    METADATA_FILE,
                    Level::Warning,
                    "session not finalized (recorder still running or killed); `kvscope repair` rebuilds the Parquet",
                ));
            }
            Some(m)
        }
        Ok(None) => {
            out.push(check(
                METADATA_FILE,
                Level::Warning,
                "missing (legacy or partial session)",
            ));
            None
        }
        Err(e) => {
            out.push(check(METADATA_FILE, Level::Error, e.to_string()));
            None
        }
    };
    let expected = meta
        .as_ref()
        .filter(|m| m.complete)
        .map(|m| m.row_counts.samples as i64);

    let pq = dir.join(SAMPLES_PARQUET);
    if pq.exists() {
        match parquet_rows(&pq) {
            Ok((n, cols)) => {
                let missing: Vec<&str> = CORE_COLUMNS
                    .iter()
                    .copied()
                    .filter(|c| !cols.iter().any(|x| x == c))
                    .collect();
                if !missing.is_empty() {
                    out.push(check(
                        SAMPLES_PARQUET,
                        Level::Error,
                        format!("missing column(s) {}", missing.join(", ")),
                    ));
                } else if expected.is_some_and(|e| e != n) {
                    out.push(check(
                        SAMPLES_PARQUET,
                        Level::Error,
                        format!("{n} rows, metadata.json says {}", expected.unwrap_or(0)),
                    ));
                } else {
                    out.push(check(SAMPLES_PARQUET, Level::Ok, format!("{n} rows")));
                }
            }
            Err(e) => out.push(check(
                SAMPLES_PARQUET,
                Level::Error,
                format!("unreadable: {e}"),
            )),
        }
    }
    let jl = dir.join(SAMPLES_JSONL);
    let csv = dir.join(SAMPLES_CSV);
    type Reader = fn(&Path) -> Result<Vec<super::schema::Sample>, super::StoreError>;
    let text_files: [(&str, &Path, Reader); 2] = [
        (SAMPLES_JSONL, &jl, read_samples_jsonl),
        (SAMPLES_CSV, &csv, read_samples_csv),
    ];
    for (name, path, read) in text_files {
        if !path.exists() {
            continue;
        }
        out.push(match read(path) {
            Ok(rows) if expected.is_some_and(|e| e != rows.len() as i64) => check(
                name,
                Level::Error,
                format!(
                    "{} rows, metadata.json says {}",
                    rows.len(),
                    expected.unwrap_or(0)
                ),
            ),
            Ok(rows) => check(name, Level::Ok, format!("{} rows", rows.len())),
            Err(e) => check(name, Level::Error, e.to_string()),
        });
    }
    if !pq.exists() && !jl.exists() && !csv.exists() && !dir.join(super::SAMPLES_PARTS_DIR).is_dir()
    {
        out.push(check(
            SAMPLES_PARQUET,
            Level::Error,
            "no samples at all (samples.parquet, samples.jsonl or metrics.csv)",
        ));
    }
    let hist = dir.join(HISTOGRAMS_PARQUET);
    if hist.exists() {
        match parquet_rows(&hist) {
            Ok((n, _)) => out.push(check(HISTOGRAMS_PARQUET, Level::Ok, format!("{n} rows"))),
            Err(e) => out.push(check(
                HISTOGRAMS_PARQUET,
                Level::Error,
                format!("unreadable: {e}"),
            )),
        }
    }
    let ev = dir.join(EVENTS_JSONL);
    if ev.exists() {
        match events::read_events(&ev) {
            Ok(e) => out.push(check(
                EVENTS_JSONL,
                Level::Ok,
                format!("{} events", e.len()),
            )),
            Err(e) => out.push(check(EVENTS_JSONL, Level::Error, e.to_string())),
        }
    }
    out
}
