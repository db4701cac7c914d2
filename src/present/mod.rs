//! Present stage: everything a person reads — timeline and doctor text, fleet tables,
//! JSON documents, the HTML report. The only module that knows output formats.

pub mod dashboard;
pub mod doctor;
pub mod fleet;
pub mod report;
pub mod timeline;

use std::io::IsTerminal;

use crate::store::events::Event;
use crate::vocab::EventName;

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

/// `(baseline 0.048)`, `(threshold 95)`, …: an event's `baseline` field named for what it
/// holds ([`EventName::baseline_label`]); empty without one. `fmt` writes the number.
pub fn baseline_note(e: &Event, fmt: impl Fn(f64) -> String) -> String {
    let Some(b) = e.baseline else {
        return String::new();
    };
    let label = e
        .event
        .as_deref()
        .and_then(|n| n.parse::<EventName>().ok())
        .map_or("baseline", EventName::baseline_label);
    format!(" ({label} {})", fmt(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, baseline: Option<f64>) -> Event {
        Event {
            event: Some(name.to_string()),
            baseline,
            ..Event::default()
        }
    }

    #[test]
    fn baseline_is_named_for_what_it_holds() {
        let note = |name, b| baseline_note(&event(name, b), |v| v.to_string());
        assert_eq!(note("TTFT_SPIKE", Some(0.048)), " (baseline 0.048)");
        assert_eq!(note("KV_SATURATION", Some(95.0)), " (threshold 95)");
        assert_eq!(note("CLIENT_ABORT_SURGE", Some(10.0)), " (threshold 10)");
        assert_eq!(
            note("DECODE_THROUGHPUT_DROP", Some(812.5)),
            " (expected 812.5)"
        );
        assert_eq!(note("SCRAPE_GAP", Some(1.0)), " (median interval 1)");
        // A name from a newer KVScope: its number stays, called a baseline.
        assert_eq!(note("SOMETHING_NEW", Some(2.0)), " (baseline 2)");
        assert_eq!(note("KV_SATURATION", None), "");
    }
}
