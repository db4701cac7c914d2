//! Present stage: everything a person reads — timeline and doctor text, fleet tables,
//! JSON documents, the HTML report. The only module that knows output formats.

pub mod dashboard;
pub mod doctor;
pub mod fleet;
pub mod report;
pub mod timeline;

use std::io::IsTerminal;

/// Whether to colour output: only on a terminal, never with `NO_COLOR` set.
pub fn use_color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// Wraps `s` in an ANSI colour when `on`.
pub fn paint(s: &str, code: &str, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// `HH:MM:SS` of an RFC 3339 timestamp (falls back to the input).
pub fn clock(ts: &str) -> String {
    ts.get(11..19).unwrap_or(ts).to_string()
}
