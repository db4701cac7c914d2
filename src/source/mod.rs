//! Source stage: bytes in. The exposition parser ([`prom`]), the HTTP scraper
//! ([`scrape`]), raw pages as recorded or captured ([`raw`]) and their replay as a live
//! endpoint ([`replay`]), and Prometheus's query API for history ([`promapi`]). Knows nothing of vLLM metric names; hands parsed
//! [`prom::Exposition`]s to the adapter.

pub mod nvidia_smi;
pub mod prom;
pub mod promapi;
pub mod raw;
pub mod replay;
pub mod scrape;
