//! The session layout, defined once: which files a session has, which of them make a
//! directory (or object-store prefix) a session, and in which order samples are read.
//!
//! ```text
//! <session>/
//!   metadata.json        schema version, source, recorder settings, servers (ServerMeta)
//!   samples.parquet      normalized samples (what KVScope writes)
//!   samples/part-*.parquet   the contract's alternative for long recordings (read, not written)
//!   samples.jsonl        the same rows, appended and flushed per interval (crash safety)
//!   metrics.csv          the same rows as CSV
//!   histograms.parquet   raw histogram buckets, long format
//!   raw_pages.jsonl.gz   every raw page (`record --raw`)
//!   events.jsonl  summary.json  doctor.json   analysis and diagnosis outputs
//! ```

pub const METADATA_FILE: &str = "metadata.json";
pub const SAMPLES_PARQUET: &str = "samples.parquet";
pub const SAMPLES_PARTS_DIR: &str = "samples";
pub const SAMPLES_CSV: &str = "metrics.csv";
pub const SAMPLES_JSONL: &str = "samples.jsonl";
pub const HISTOGRAMS_PARQUET: &str = "histograms.parquet";
pub const EVENTS_JSONL: &str = "events.jsonl";
/// The same records as `events.jsonl`, typed columns (DuckDB, Polars, pandas).
pub const EVENTS_PARQUET: &str = "events.parquet";
pub const SUMMARY_JSON: &str = "summary.json";
pub const DOCTOR_JSON: &str = "doctor.json";

/// Where a session's samples can come from, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplesSource {
    /// `samples/part-*.parquet`.
    Parts,
    /// `samples.parquet` (used only when its footer is intact).
    Parquet,
    /// `samples.jsonl`: legacy sessions, or a recorder that died before the Parquet
    /// footer (`kvscope repair` rewrites the Parquet).
    Jsonl,
    /// `metrics.csv`: legacy sessions.
    Csv,
}

impl SamplesSource {
    pub const PREFERENCE: [Self; 4] = [Self::Parts, Self::Parquet, Self::Jsonl, Self::Csv];

    /// The entry's name in the session (a directory for [`SamplesSource::Parts`]).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Parts => SAMPLES_PARTS_DIR,
            Self::Parquet => SAMPLES_PARQUET,
            Self::Jsonl => SAMPLES_JSONL,
            Self::Csv => SAMPLES_CSV,
        }
    }
    pub const fn is_dir(self) -> bool {
        matches!(self, Self::Parts)
    }
}

/// What one listing of a session directory (or prefix) holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// File names directly inside.
    pub files: Vec<String>,
    /// Sub-directory names directly inside.
    pub dirs: Vec<String>,
}

impl Listing {
    pub fn has(&self, source: SamplesSource) -> bool {
        if source.is_dir() {
            self.dirs.iter().any(|d| d == source.name())
        } else {
            self.files.iter().any(|f| f == source.name())
        }
    }
    /// The sample sources present, best first.
    pub fn samples(&self) -> impl Iterator<Item = SamplesSource> + '_ {
        SamplesSource::PREFERENCE
            .into_iter()
            .filter(|s| self.has(*s))
    }
    /// A session has metadata or samples of some kind.
    pub fn is_session(&self) -> bool {
        self.files.iter().any(|f| f == METADATA_FILE) || self.samples().next().is_some()
    }
}

/// Whether a key (relative path) below some prefix marks its directory as a session,
/// and which directory that is: `a/b/metadata.json` → `a/b`; `a/samples/part-0.parquet`
/// → `a`.
pub fn session_of_key(key: &str) -> Option<&str> {
    let (dir, file) = key.rsplit_once('/').unwrap_or(("", key));
    if let Some(d) = dir.strip_suffix(SAMPLES_PARTS_DIR)
        && (d.is_empty() || d.ends_with('/'))
        && file.ends_with(".parquet")
    {
        return Some(d.trim_end_matches('/'));
    }
    let marks = file == METADATA_FILE
        || SamplesSource::PREFERENCE
            .iter()
            .any(|s| !s.is_dir() && s.name() == file);
    marks.then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_of_keys() {
        assert_eq!(session_of_key("a/b/metadata.json"), Some("a/b"));
        assert_eq!(session_of_key("metrics.csv"), Some(""));
        assert_eq!(session_of_key("a/samples/part-00001.parquet"), Some("a"));
        assert_eq!(session_of_key("a/xsamples/part-00001.parquet"), None);
        assert_eq!(session_of_key("a/summary.json"), None);
        let l = Listing {
            files: vec![SAMPLES_JSONL.into(), SAMPLES_PARQUET.into()],
            dirs: vec![],
        };
        assert_eq!(
            l.samples().collect::<Vec<_>>(),
            [SamplesSource::Parquet, SamplesSource::Jsonl]
        );
        assert!(l.is_session());
        assert!(!Listing::default().is_session());
    }
}
