//! Source stage: bytes in. The exposition parser ([`prom`]) and the HTTP scraper
//! ([`scrape`]). Knows nothing of vLLM metric names; hands parsed
//! [`prom::Exposition`]s to the adapter.

pub mod prom;
pub mod scrape;
