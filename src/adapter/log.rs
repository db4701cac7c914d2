//! vLLM's periodic stats log lines, every wording KVScope knows:
//!
//! - V1 (0.8+): `Engine 000: Avg prompt throughput: 280.0 tokens/s, Avg generation
//!   throughput: 168.2 tokens/s, Running: 2 reqs, Waiting: 0 reqs, GPU KV cache usage:
//!   3.5%, Prefix cache hit rate: 0.0%` — later releases name the device (`XPU KV cache
//!   usage`) or drop it (`KV cache usage`), and may append more fields.
//! - V0 (0.2–0.7): `Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 0.0
//!   tokens/s, Running: 0 reqs, Swapped: 0 reqs, Pending: 0 reqs, GPU KV cache usage:
//!   0.0%, CPU KV cache usage: 0.0%.` (with `GPU prefix cache hit rate` in some releases).
//!
//! Each line starts with vLLM's logger prefix, `INFO 11-23 13:08:12 [loggers.py:310]`
//! (month-day, no year; some deployments log a full `2025-11-23 13:08:12`). Parsed by
//! hand: a fixed handful of `Label: number` fields, and the project builds DataFusion
//! without its regex support.

/// One stats line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogStat {
    /// 1-based line number in its file.
    pub line: usize,
    /// Month, day, hour, minute, second (and the year when the line has one).
    pub year: Option<i32>,
    pub month: u32,
    pub day: u32,
    pub secs_of_day: f64,
    /// `Engine 000` → `"0"`; V0 lines → `"0"`.
    pub engine: String,
    pub prompt_tps: Option<f64>,
    pub generation_tps: Option<f64>,
    pub running: Option<f64>,
    /// `Waiting` (V1) or `Pending` (V0).
    pub waiting: Option<f64>,
    pub swapped: Option<f64>,
    /// The device KV cache usage in percent, as logged (already ×100).
    pub kv_pct: Option<f64>,
    pub prefix_hit_pct: Option<f64>,
}

/// Facts from the start-up banner (`version 0.26.0`, `model   /path`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogBanner {
    pub version: Option<String>,
    pub model: Option<String>,
}

/// Reads one line: a stats line, or None.
pub fn parse_line(line: &str, lineno: usize) -> Option<LogStat> {
    let at = line.find("Avg prompt throughput:")?;
    let (year, month, day, secs_of_day) = timestamp(line.get(..at)?)?;
    let body = line.get(at..)?;
    let engine = line
        .get(..at)
        .and_then(|head| head.rfind("Engine ").map(|i| &head[i + 7..]))
        .map(|e| {
            let digits: String = e.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().map_or("0".into(), |n| n.to_string())
        })
        .unwrap_or_else(|| "0".into());
    Some(LogStat {
        line: lineno,
        year,
        month,
        day,
        secs_of_day,
        engine,
        prompt_tps: number_after(body, "Avg prompt throughput:"),
        generation_tps: number_after(body, "Avg generation throughput:"),
        running: number_after(body, "Running:"),
        waiting: number_after(body, "Waiting:").or_else(|| number_after(body, "Pending:")),
        swapped: number_after(body, "Swapped:"),
        kv_pct: device_kv_usage(body),
        prefix_hit_pct: number_after(body, "Prefix cache hit rate:")
            .or_else(|| number_after(body, "GPU prefix cache hit rate:")),
    })
}

/// Banner facts from one line, if any.
pub fn banner(line: &str, into: &mut LogBanner) {
    for (key, slot) in [("version ", &mut into.version), ("model ", &mut into.model)] {
        if slot.is_some() {
            continue;
        }
        if let Some(i) = line.find(key) {
            let v = line[i + key.len()..].trim();
            let word = v.split_whitespace().next().unwrap_or_default();
            let looks_right = match key {
                "version " => word.starts_with(|c: char| c.is_ascii_digit()) && word.contains('.'),
                _ => line.contains('█') || line.contains('▀') || line.contains('▄'),
            };
            if looks_right && !word.is_empty() {
                *slot = Some(word.to_string());
            }
        }
    }
}

/// The first `KV cache usage: N%` not about the CPU swap space.
fn device_kv_usage(body: &str) -> Option<f64> {
    let key = "KV cache usage:";
    let mut from = 0;
    while let Some(i) = body.get(from..)?.find(key) {
        let at = from + i;
        let before = body.get(..at).unwrap_or_default();
        let device = before.rsplit([',', ':']).next().unwrap_or_default().trim();
        if device != "CPU" {
            return number_after(body.get(at..)?, key);
        }
        from = at + key.len();
    }
    None
}

/// The number right after `key` (spaces skipped).
fn number_after(s: &str, key: &str) -> Option<f64> {
    let rest = s.get(s.find(key)? + key.len()..)?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e' || c == '+'))
        .unwrap_or(rest.len());
    let v: f64 = rest.get(..end)?.trim_end_matches('.').parse().ok()?;
    v.is_finite().then_some(v)
}

/// `MM-DD HH:MM:SS[.fff]` (or `YYYY-MM-DD HH:MM:SS`) somewhere in the logger prefix.
fn timestamp(head: &str) -> Option<(Option<i32>, u32, u32, f64)> {
    let b = head.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let num = |from: usize, len: usize| -> Option<u32> { head.get(from..from + len)?.parse().ok() };
    for i in 0..b.len() {
        // MM-DD HH:MM:SS
        let shape = digit(i)
            && digit(i + 1)
            && b.get(i + 2) == Some(&b'-')
            && digit(i + 3)
            && digit(i + 4)
            && b.get(i + 5) == Some(&b' ')
            && digit(i + 6)
            && digit(i + 7)
            && b.get(i + 8) == Some(&b':')
            && digit(i + 9)
            && digit(i + 10)
            && b.get(i + 11) == Some(&b':')
            && digit(i + 12)
            && digit(i + 13);
        if !shape || (i > 0 && digit(i - 1)) {
            continue;
        }
        let (month, day) = (num(i, 2)?, num(i + 3, 2)?);
        let (h, m, s) = (num(i + 6, 2)?, num(i + 9, 2)?, num(i + 12, 2)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
            continue;
        }
        let mut secs = f64::from(h * 3600 + m * 60 + s);
        if b.get(i + 14) == Some(&b'.') || b.get(i + 14) == Some(&b',') {
            let frac: String = head[i + 15..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(f) = format!("0.{frac}").parse::<f64>() {
                secs += f;
            }
        }
        let year = (i >= 5 && b.get(i - 1) == Some(&b'-'))
            .then(|| head.get(i - 5..i - 1)?.parse::<i32>().ok())
            .flatten();
        return Some((year, month, day, secs));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wording() {
        // vLLM 0.26 (the real capture's log).
        let v1 = "(APIServer pid=493) INFO 11-23 13:08:52 [loggers.py:310] Engine 000: Avg prompt throughput: 2986.2 tokens/s, Avg generation throughput: 1374.8 tokens/s, Running: 64 reqs, Waiting: 192 reqs, GPU KV cache usage: 31.3%, Prefix cache hit rate: 0.0%";
        let s = parse_line(v1, 7).unwrap();
        assert_eq!((s.month, s.day, s.secs_of_day), (11, 23, 47332.0));
        assert_eq!(s.engine, "0");
        assert_eq!(s.prompt_tps, Some(2986.2));
        assert_eq!(s.generation_tps, Some(1374.8));
        assert_eq!((s.running, s.waiting), (Some(64.0), Some(192.0)));
        assert_eq!(s.kv_pct, Some(31.3));
        assert_eq!(s.prefix_hit_pct, Some(0.0));
        // A later release naming its device, a second DP engine, extra fields.
        let xpu = "INFO 03-02 01:02:03 [loggers.py:123] Engine 001: Avg prompt throughput: 1.5 tokens/s, Avg generation throughput: 2.0 tokens/s, Running: 1 reqs, Waiting: 0 reqs, XPU KV cache usage: 12.0%, Prefix cache hit rate: 50.0%, MM cache hit rate: 0.0%";
        let s = parse_line(xpu, 1).unwrap();
        assert_eq!(
            (s.engine.as_str(), s.kv_pct, s.prefix_hit_pct),
            ("1", Some(12.0), Some(50.0))
        );
        // V0, with the CPU swap space after the GPU cache and a trailing period.
        let v0 = "INFO 05-14 10:00:00 metrics.py:341] Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 45.3 tokens/s, Running: 3 reqs, Swapped: 1 reqs, Pending: 4 reqs, GPU KV cache usage: 87.5%, CPU KV cache usage: 2.0%.";
        let s = parse_line(v0, 1).unwrap();
        assert_eq!(
            (s.waiting, s.swapped, s.kv_pct),
            (Some(4.0), Some(1.0), Some(87.5))
        );
        // A full date, milliseconds.
        let dated = "2025-12-31 23:59:58,250 INFO Avg prompt throughput: 1.0 tokens/s, Avg generation throughput: 1.0 tokens/s, Running: 1 reqs, Waiting: 0 reqs, KV cache usage: 1.0%";
        let s = parse_line(dated, 1).unwrap();
        assert_eq!(
            (s.year, s.month, s.day, s.secs_of_day),
            (Some(2025), 12, 31, 86398.25)
        );
        assert_eq!(s.kv_pct, Some(1.0));
        assert!(parse_line("INFO 11-23 13:06:33 [api_utils.py:345] hello", 1).is_none());
        let mut b = LogBanner::default();
        banner(
            "(APIServer pid=493) INFO 11-23 13:06:33 [api_utils.py:345]  ▄▄ ▄█ █     █     █ ▀▄▀ █  version 0.26.0",
            &mut b,
        );
        banner(
            "(APIServer pid=493) INFO 11-23 13:06:33 [api_utils.py:345]   █▄█▀ █     █     █     █  model   /tmp/model",
            &mut b,
        );
        assert_eq!(b.version.as_deref(), Some("0.26.0"));
        assert_eq!(b.model.as_deref(), Some("/tmp/model"));
    }
}
