//! Raw `/metrics` pages kept beside a session (`record --raw`): one JSON line per scrape,
//! `{"ts", "server", "status", "error", "text"}`, gzip-compressed. A later KVScope can
//! replay (`kvscope replay`) or re-normalize them.
//!
//! Each page is written as its own gzip member and flushed, so a killed recorder loses at
//! most the page in flight and the file stays readable (`zcat`, any gzip reader: a gzip
//! file may hold several members). The reader also takes real captures in the same shape
//! (`metrics_scrapes.jsonl.gz`, whose lines carry a `phase` label), gzip or plain.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

/// Errors reading or writing raw pages (the source stage's file error).
pub use super::FileError as RawError;

/// The raw-pages file of a session.
pub const RAW_PAGES: &str = "raw_pages.jsonl.gz";

/// One scrape as it came off the wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RawPage {
    /// Scrape time, Unix seconds.
    pub ts: f64,
    /// Server label (absent in single-server captures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// HTTP status (absent when no response came back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the scrape failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The page (text exposition), when one came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A capture's load label (real captures carry one per scrape).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

impl RawPage {
    /// Whether the scrape gave a page (HTTP 200 or unknown status, with text).
    pub fn ok(&self) -> bool {
        self.text.is_some() && self.error.is_none() && self.status.is_none_or(|s| s == 200)
    }
}

/// Appends pages to `raw_pages.jsonl.gz`.
pub struct RawWriter {
    path: PathBuf,
    file: File,
}

impl RawWriter {
    /// Creates (or appends to) the raw-pages file in `dir`.
    pub fn create(dir: &Path) -> Result<Self, RawError> {
        let path = dir.join(RAW_PAGES);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| RawError::io(&path, e))?;
        Ok(Self { path, file })
    }

    /// Writes one page as its own gzip member and flushes it.
    pub fn append(&mut self, page: &RawPage) -> Result<(), RawError> {
        let line = serde_json::to_vec(page).map_err(|e| RawError::Invalid {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let mut gz = GzEncoder::new(Vec::with_capacity(line.len() / 4), Compression::fast());
        let member = gz
            .write_all(&line)
            .and_then(|_| gz.write_all(b"\n"))
            .and_then(|_| gz.finish())
            .map_err(|e| RawError::io(&self.path, e))?;
        self.file
            .write_all(&member)
            .and_then(|_| self.file.flush())
            .map_err(|e| RawError::io(&self.path, e))
    }
}

/// Reads every page of a raw-pages file or capture (`.gz` or plain JSON lines), in file
/// order. A malformed line is an error naming the file and line; a file cut short by a
/// crash ends at its last complete page.
pub fn read_pages(path: &Path) -> Result<Vec<RawPage>, RawError> {
    let (reader, gz) = super::open_text(path)?;
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            // A truncated gzip member at the end (crash while writing): keep what came before.
            Err(e) if gz && e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(RawError::io(path, e)),
        };
        if line.trim().is_empty() {
            continue;
        }
        let page: RawPage = serde_json::from_str(&line).map_err(|e| RawError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        if !page.ts.is_finite() {
            return Err(RawError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                message: format!("`ts` must be a finite Unix time, got {}", page.ts),
            });
        }
        out.push(page);
    }
    Ok(out)
}

/// Finds the pages file of `path`: the file itself, a session's `raw_pages.jsonl.gz`, or
/// a capture directory's `metrics_scrapes.jsonl.gz`.
pub fn pages_file(path: &Path) -> Result<PathBuf, RawError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    for name in [
        RAW_PAGES,
        "metrics_scrapes.jsonl.gz",
        "metrics_scrapes.jsonl",
    ] {
        let p = path.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(RawError::Invalid {
        path: path.to_path_buf(),
        message: format!(
            "no raw pages here: expected a pages file, a session recorded with --raw ({RAW_PAGES}) or a capture (metrics_scrapes.jsonl.gz)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_trip_and_survive_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RawWriter::create(dir.path()).unwrap();
        for k in 0..3 {
            w.append(&RawPage {
                ts: 100.0 + f64::from(k),
                server: Some("s:1".into()),
                status: Some(200),
                text: Some(format!("vllm:num_requests_running {k}\n")),
                ..Default::default()
            })
            .unwrap();
        }
        drop(w);
        let path = dir.path().join(RAW_PAGES);
        let pages = read_pages(&path).unwrap();
        assert_eq!(pages.len(), 3);
        assert_eq!(
            pages[2].text.as_deref(),
            Some("vllm:num_requests_running 2\n")
        );
        assert!(pages[0].ok());
        // Cut inside the last member: the first two pages are still read.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        assert_eq!(read_pages(&path).unwrap().len(), 2);
    }
}
