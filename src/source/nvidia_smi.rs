//! `nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,memory.total --format=csv
//! -lms 500` logs: one row per GPU per poll, e.g.
//! `2026/11/23 13:06:10.189, 0 %, 0 MiB, 81559 MiB`. Columns are found by their header
//! names (any order, more columns allowed); rows of one poll (same timestamp, one per GPU)
//! are combined: utilization averaged, memory summed. Timestamps are the host's local
//! time without a zone; the caller gives the offset.

use std::io::BufRead;
use std::path::Path;

use super::FileError;

/// One poll, all GPUs combined.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuPoll {
    /// UTC µs.
    pub ts_us: i64,
    pub util_pct: Option<f64>,
    pub mem_used_pct: Option<f64>,
    /// GPUs in the poll.
    pub gpus: usize,
}

/// Reads a log file, plain or gzip; `utc_offset_h` is the host clock's offset from UTC.
/// Polls come back in time order.
pub fn read_file(path: &Path, utc_offset_h: f64) -> Result<Vec<GpuPoll>, FileError> {
    let (r, _) = super::open_text(path)?;
    let mut polls = read(r, path, utc_offset_h)?;
    polls.sort_by_key(|p| p.ts_us);
    Ok(polls)
}

/// Reads a log from `r` (`path` names it in errors).
pub fn read(r: impl BufRead, path: &Path, utc_offset_h: f64) -> Result<Vec<GpuPoll>, FileError> {
    let line_err = |line: usize, message: String| FileError::Line {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut lines = r.lines().enumerate();
    let header = match lines.next() {
        Some((_, Ok(h))) => h,
        Some((_, Err(e))) => {
            return Err(FileError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
        None => return Err(line_err(1, "empty file".into())),
    };
    let names: Vec<String> = header.split(',').map(|h| h.trim().to_string()).collect();
    let col = |prefix: &str| names.iter().position(|n| n.starts_with(prefix));
    let (Some(c_ts), Some(c_util)) = (col("timestamp"), col("utilization.gpu")) else {
        return Err(line_err(
            1,
            format!(
                "header `{header}` lacks `timestamp` and `utilization.gpu` (use --query-gpu=timestamp,utilization.gpu,memory.used,memory.total --format=csv)"
            ),
        ));
    };
    let (c_used, c_total) = (col("memory.used"), col("memory.total"));
    let mut out: Vec<GpuPoll> = Vec::new();
    // Running sums for the current poll: (util sum, util n, used, total).
    let mut acc: Option<(i64, f64, usize, f64, f64, usize)> = None;
    let flush = |acc: &mut Option<(i64, f64, usize, f64, f64, usize)>, out: &mut Vec<GpuPoll>| {
        if let Some((ts, us, un, used, total, gpus)) = acc.take() {
            out.push(GpuPoll {
                ts_us: ts,
                util_pct: (un > 0).then(|| us / un as f64),
                mem_used_pct: (total > 0.0).then(|| used / total * 100.0),
                gpus,
            });
        }
    };
    for (i, line) in lines {
        let line = line.map_err(|e| FileError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let cell = |c: usize| cells.get(c).copied().unwrap_or_default();
        let ts = parse_ts(cell(c_ts), utc_offset_h).ok_or_else(|| {
            line_err(
                i + 1,
                format!(
                    "`{}` is not a timestamp like 2026/11/23 13:06:10.189",
                    cell(c_ts)
                ),
            )
        })?;
        let num = |c: Option<usize>| -> Option<f64> {
            let v = cell(c?).split_whitespace().next()?;
            v.parse::<f64>().ok().filter(|v| v.is_finite())
        };
        let util = num(Some(c_util));
        let (used, total) = (num(c_used), num(c_total));
        if acc.as_ref().is_some_and(|a| a.0 != ts) {
            flush(&mut acc, &mut out);
        }
        let a = acc.get_or_insert((ts, 0.0, 0, 0.0, 0.0, 0));
        if let Some(u) = util {
            a.1 += u;
            a.2 += 1;
        }
        if let (Some(u), Some(t)) = (used, total) {
            a.3 += u;
            a.4 += t;
        }
        a.5 += 1;
    }
    flush(&mut acc, &mut out);
    Ok(out)
}

/// `YYYY/MM/DD HH:MM:SS.fff` in local time → UTC µs.
fn parse_ts(s: &str, utc_offset_h: f64) -> Option<i64> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y/%m/%d %H:%M:%S%.f").ok()?;
    Some(t.and_utc().timestamp_micros() - (utc_offset_h * 3600e6) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_combine_gpus_and_errors_name_the_line() {
        let text = "timestamp, utilization.gpu [%], memory.used [MiB], memory.total [MiB]\n\
2026/11/23 13:06:10.189, 40 %, 1000 MiB, 4000 MiB\n\
2026/11/23 13:06:10.189, 60 %, 3000 MiB, 4000 MiB\n\
2026/11/23 13:06:10.694, 0 %, 0 MiB, 4000 MiB\n";
        let p = read(text.as_bytes(), Path::new("x.csv"), 0.0).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].util_pct, Some(50.0));
        assert_eq!(p[0].mem_used_pct, Some(50.0));
        assert_eq!(p[0].gpus, 2);
        assert_eq!(
            crate::record::rfc3339(p[1].ts_us),
            "2026-11-23T13:06:10.694Z"
        );
        let bad = "timestamp, utilization.gpu [%]\nyesterday, 5 %\n";
        let e = read(bad.as_bytes(), Path::new("x.csv"), 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.csv:2:"), "{e}");
        let e = read("a,b\n".as_bytes(), Path::new("y.csv"), 0.0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("y.csv:1:") && e.contains("utilization.gpu"),
            "{e}"
        );
    }
}
