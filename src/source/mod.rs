//! Source stage: bytes in. The exposition parser ([`prom`]), the HTTP scraper
//! ([`scrape`]), raw pages as recorded or captured ([`raw`]) and their replay as a live
//! endpoint ([`replay`]), and Prometheus's query API for history ([`promapi`]). Knows nothing of vLLM metric names; hands parsed
//! [`prom::Exposition`]s to the adapter.

pub mod nvidia_smi;
pub mod profilemate;
pub mod prom;
pub mod promapi;
pub mod raw;
pub mod replay;
pub mod scrape;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// A file a source reads (raw pages, captures, logs) that cannot be read; each error
/// names the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl FileError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Opens a plain or gzip text file (gzip told by its magic bytes, several members
/// allowed) for reading lines; also says whether it was gzip.
pub fn open_text(path: &Path) -> Result<(Box<dyn BufRead>, bool), FileError> {
    let file = std::fs::File::open(path).map_err(|e| FileError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let gz = reader
        .fill_buf()
        .map_err(|e| FileError::io(path, e))?
        .starts_with(&[0x1f, 0x8b]);
    if gz {
        Ok((
            Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(reader))),
            true,
        ))
    } else {
        Ok((Box::new(reader), false))
    }
}
