//! Prometheus text exposition parser (format 0.0.4, OpenMetrics tolerated).
//!
//! Written in-house because no published crate handles real vLLM output (see
//! `reference/rust-stack.md`: colon names dropped, whole-scrape failure on one odd line,
//! no timestamps). This module is vLLM-agnostic: it knows the exposition format and
//! nothing about metric meanings.
//!
//! Guarantees: [`parse`] never panics and never fails; a line it cannot read is skipped and
//! reported in [`Exposition::skipped`] with its 1-based line number. Samples are grouped
//! into families by the most recent `# TYPE` (classification is by `# TYPE`, never by
//! suffix: `vllm:iteration_tokens_total` is a histogram when its TYPE says so).

use smallvec::SmallVec;
use std::borrow::Cow;

/// Family name → index in [`Exposition::families`].
type FamilyIndex<'a> = std::collections::HashMap<&'a str, usize, foldhash::fast::RandomState>;

/// A metric family's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Info,
    StateSet,
    GaugeHistogram,
    Untyped,
}

impl MetricType {
    fn from_word(w: &str) -> Option<Self> {
        Some(match w {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "summary" => Self::Summary,
            "info" => Self::Info,
            "stateset" => Self::StateSet,
            "gaugehistogram" => Self::GaugeHistogram,
            "untyped" | "unknown" => Self::Untyped,
            _ => return None,
        })
    }

    /// Sample-name suffixes this type allows after the family name.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Self::Counter => &["_total", "_created"],
            Self::Histogram => &["_bucket", "_sum", "_count", "_created"],
            Self::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            Self::Summary => &["_sum", "_count", "_created"],
            Self::Info => &["_info"],
            _ => &[],
        }
    }
}

/// A sample's labels: borrowed from the page (a value is copied only when it has an
/// escape), inline up to four (vLLM's samples carry `model_name`, `engine` and `le` or
/// one more), so a sample costs no allocation.
pub type Labels<'a> = SmallVec<[(&'a str, Cow<'a, str>); 4]>;

/// One sample line, borrowing from the page text.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample<'a> {
    /// Full sample name as exposed (e.g. `vllm:ttft_seconds_bucket`).
    pub name: &'a str,
    /// Labels in exposition order (order is not meaningful).
    pub labels: Labels<'a>,
    pub value: f64,
    /// Optional timestamp in milliseconds.
    pub timestamp_ms: Option<i64>,
}

impl PromSample<'_> {
    /// Value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_ref())
    }
}

/// A metric family: its declared name, type, help text and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family<'a> {
    pub name: &'a str,
    pub kind: MetricType,
    /// The HELP text as exposed (escapes not decoded: see [`Family::help_text`]).
    pub help: Option<&'a str>,
    pub samples: Vec<PromSample<'a>>,
}

impl Family<'_> {
    /// The HELP text with its escapes (`\n`, `\\`) decoded. Decoded on demand: the
    /// adapter never reads help, and a page's help is most of its text.
    pub fn help_text(&self) -> Option<Cow<'_, str>> {
        self.help.map(unescape_help)
    }
}

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedLine {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
    /// The line's text, cut to 120 characters.
    pub text: String,
}

/// The result of parsing one `/metrics` body: borrows the body (parsing copies nothing
/// but escaped text; a page is parsed and adapted before the next one is read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition<'a> {
    pub families: Vec<Family<'a>>,
    pub skipped: Vec<SkippedLine>,
    /// True when an OpenMetrics `# EOF` marker was seen.
    pub saw_eof: bool,
}

impl<'a> Exposition<'a> {
    /// Total number of samples across families.
    pub fn sample_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    /// The family named `name`, if any.
    pub fn family(&self, name: &str) -> Option<&Family<'a>> {
        self.families.iter().find(|f| f.name == name)
    }
}

/// Parses an exposition body tolerantly. Never panics.
pub fn parse(text: &str) -> Exposition<'_> {
    let mut out = Exposition::default();
    let mut index = FamilyIndex::default();
    // The previous sample's name and family: samples of a family are consecutive, so
    // most lines need no hash lookup.
    let mut last: Option<(&str, usize)> = None;
    // Lines found with the `memchr` crate's vectorized search (std's `split` scans a
    // word at a time: 8 % of parsing a page).
    let ends = memchr::memchr_iter(b'\n', text.as_bytes()).chain(std::iter::once(text.len()));
    let mut from = 0usize;
    for (i, end) in ends.enumerate() {
        let lineno = i + 1;
        let raw = text.get(from..end).unwrap_or_default();
        from = end + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            // A HELP/TYPE line may declare the family the next sample name belongs to.
            last = None;
            if handle_comment(rest, &mut out, &mut index) {
                out.saw_eof = true;
                break;
            }
            continue;
        }
        match parse_sample(line) {
            Ok((name, labels, value, timestamp_ms)) => {
                let fi = match last {
                    Some((n, fi)) if n == name => fi,
                    _ => {
                        let fi = family_for(name, &mut out, &mut index);
                        last = Some((name, fi));
                        fi
                    }
                };
                if let Some(f) = out.families.get_mut(fi) {
                    f.samples.push(PromSample {
                        name,
                        labels,
                        value,
                        timestamp_ms,
                    });
                }
            }
            Err(reason) => out.skipped.push(SkippedLine {
                line: lineno,
                reason: reason.to_string(),
                text: line.chars().take(120).collect(),
            }),
        }
    }
    out
}

/// Handles a `#` line; returns true on `# EOF`.
fn handle_comment<'a>(
    rest: &'a str,
    out: &mut Exposition<'a>,
    index: &mut FamilyIndex<'a>,
) -> bool {
    let rest = rest.trim_start();
    if rest == "EOF" {
        return true;
    }
    let (word, tail) = split_word(rest);
    match word {
        "TYPE" => {
            let (name, tail) = split_word(tail);
            let kind = MetricType::from_word(tail.trim()).unwrap_or(MetricType::Untyped);
            if !name.is_empty() {
                let fi = declare(name, out, index);
                if let Some(f) = out.families.get_mut(fi) {
                    f.kind = kind;
                }
            }
        }
        "HELP" => {
            let (name, tail) = split_word(tail);
            if !name.is_empty() {
                let fi = declare(name, out, index);
                if let Some(f) = out.families.get_mut(fi) {
                    f.help = Some(tail);
                }
            }
        }
        _ => {}
    }
    false
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.bytes().position(|b| b == b' ' || b == b'\t') {
        Some(p) => (&s[..p], s[p + 1..].trim_start()),
        None => (s, ""),
    }
}

fn unescape_help(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Finds or creates the family declared as `name` (HELP/TYPE lines).
fn declare<'a>(name: &'a str, out: &mut Exposition<'a>, index: &mut FamilyIndex<'a>) -> usize {
    if let Some(&i) = index.get(name) {
        return i;
    }
    out.families.push(Family {
        name,
        kind: MetricType::Untyped,
        help: None,
        samples: Vec::new(),
    });
    let i = out.families.len() - 1;
    index.insert(name, i);
    i
}

/// Finds the family a sample belongs to: an exact name match, else a declared family whose
/// type allows the sample's suffix, else a new untyped family.
fn family_for<'a>(name: &'a str, out: &mut Exposition<'a>, index: &mut FamilyIndex<'a>) -> usize {
    if let Some(&i) = index.get(name) {
        return i;
    }
    for suffix in [
        "_bucket", "_sum", "_count", "_created", "_total", "_info", "_gsum", "_gcount",
    ] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(&i) = index.get(base)
            && out
                .families
                .get(i)
                .is_some_and(|f| f.kind.suffixes().contains(&suffix))
        {
            return i;
        }
    }
    declare(name, out, index)
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// A sample line's parts: name, labels, value, timestamp (ms).
type SampleParts<'a> = (&'a str, Labels<'a>, f64, Option<i64>);

/// Parses `name{labels} value [timestamp] [# exemplar]`.
fn parse_sample(line: &str) -> Result<SampleParts<'_>, &'static str> {
    let bytes = line.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() && (bytes[pos] == b' ' || bytes[pos] == b'\t') {
        pos += 1;
    }
    let start = pos;
    if !bytes.get(pos).copied().is_some_and(is_name_start) {
        return Err("not a sample line: expected a metric name");
    }
    while pos < bytes.len() && is_name_char(bytes[pos]) {
        pos += 1;
    }
    let name = &line[start..pos];
    let mut labels = Labels::new();
    if bytes.get(pos) == Some(&b'{') {
        pos = parse_labels(line, pos + 1, &mut labels)?;
    }
    let rest = &line[pos..];
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a space before the value");
    }
    // An OpenMetrics exemplar follows " # " (looked for only where a '#' is).
    let rest = match rest
        .as_bytes()
        .contains(&b'#')
        .then(|| rest.find(" # "))
        .flatten()
    {
        Some(p) => &rest[..p],
        None => rest,
    };
    // The exposition format separates with spaces and tabs only (no Unicode whitespace).
    let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
    let value = parse_value(words.next().ok_or("missing value")?)?;
    let timestamp_ms = match words.next() {
        None => None,
        Some(ts) => Some(parse_timestamp(ts)?),
    };
    if words.next().is_some() {
        return Err("unexpected text after the timestamp");
    }
    Ok((name, labels, value, timestamp_ms))
}

/// Parses labels after `{`; returns the byte position after `}`.
fn parse_labels<'a>(
    line: &'a str,
    mut pos: usize,
    labels: &mut Labels<'a>,
) -> Result<usize, &'static str> {
    let bytes = line.as_bytes();
    loop {
        while pos < bytes.len() && (bytes[pos] == b' ' || bytes[pos] == b'\t') {
            pos += 1;
        }
        match bytes.get(pos) {
            None => return Err("unterminated label set"),
            Some(b'}') => return Ok(pos + 1),
            Some(&b) if is_name_start(b) => {}
            Some(_) => return Err("bad label name"),
        }
        let kstart = pos;
        while pos < bytes.len() && is_name_char(bytes[pos]) {
            pos += 1;
        }
        let key = &line[kstart..pos];
        while pos < bytes.len() && bytes[pos] == b' ' {
            pos += 1;
        }
        if bytes.get(pos) != Some(&b'=') {
            return Err("expected '=' after label name");
        }
        pos += 1;
        while pos < bytes.len() && bytes[pos] == b' ' {
            pos += 1;
        }
        if bytes.get(pos) != Some(&b'"') {
            return Err("expected '\"' to open a label value");
        }
        pos += 1;
        // Borrowed up to the first escape; copied from there on.
        let mut value: Cow<'a, str> = Cow::Borrowed("");
        let mut seg_start = pos;
        loop {
            match bytes.get(pos) {
                None => return Err("unterminated label value"),
                Some(b'"') => {
                    match &mut value {
                        Cow::Owned(v) => v.push_str(&line[seg_start..pos]),
                        Cow::Borrowed(_) => value = Cow::Borrowed(&line[seg_start..pos]),
                    }
                    pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let v = value.to_mut();
                    v.push_str(&line[seg_start..pos]);
                    match bytes.get(pos + 1) {
                        Some(b'n') => v.push('\n'),
                        Some(b'\\') => v.push('\\'),
                        Some(b'"') => v.push('"'),
                        Some(_) => v.push('\\'),
                        None => return Err("unterminated label value"),
                    }
                    pos += if bytes.get(pos + 1).is_some_and(|b| b"n\\\"".contains(b)) {
                        2
                    } else {
                        1
                    };
                    seg_start = pos;
                }
                Some(_) => pos += 1,
            }
        }
        labels.push((key, value));
        while pos < bytes.len() && bytes[pos] == b' ' {
            pos += 1;
        }
        match bytes.get(pos) {
            Some(b',') => pos += 1,
            Some(b'}') => return Ok(pos + 1),
            _ => return Err("expected ',' or '}' after a label"),
        }
    }
}

fn parse_value(s: &str) -> Result<f64, &'static str> {
    match s {
        "NaN" | "nan" => Ok(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse::<f64>().map_err(|_| "value is not a number"),
    }
}

fn parse_timestamp(s: &str) -> Result<i64, &'static str> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    // OpenMetrics timestamps are seconds with a fraction.
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs.abs() < 1e15 => Ok((secs * 1000.0).round() as i64),
        _ => Err("timestamp is not a number"),
    }
}

/// Parses a Prometheus `le` label into a bucket bound.
pub fn parse_le(s: &str) -> Option<f64> {
    parse_value(s).ok().filter(|v| !v.is_nan())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_labels_and_escapes() {
        let text = "# HELP a_total A counter.\n# TYPE a_total counter\na_total{x=\"q\\\"uo\\\\te\\n\",y=\"2\"} 3.5 1700000000000\n";
        let e = parse(text);
        assert!(e.skipped.is_empty());
        let f = e.family("a_total").unwrap();
        assert_eq!(f.kind, MetricType::Counter);
        assert_eq!(f.help_text().as_deref(), Some("A counter."));
        assert_eq!(f.samples[0].label("x"), Some("q\"uo\\te\n"));
        // Only the escaped value is copied; the rest borrows the page.
        assert!(matches!(f.samples[0].labels[0].1, Cow::Owned(_)));
        assert!(matches!(f.samples[0].labels[1].1, Cow::Borrowed("2")));
        assert_eq!(f.samples[0].value, 3.5);
        assert_eq!(f.samples[0].timestamp_ms, Some(1_700_000_000_000));
    }

    #[test]
    fn histogram_named_total_is_grouped_by_type() {
        let text = "# TYPE vllm:iteration_tokens_total histogram\nvllm:iteration_tokens_total_bucket{le=\"1.0\"} 2.0\nvllm:iteration_tokens_total_bucket{le=\"+Inf\"} 3.0\nvllm:iteration_tokens_total_count 3.0\nvllm:iteration_tokens_total_sum 9.0\n";
        let e = parse(text);
        assert_eq!(e.families.len(), 1);
        let f = &e.families[0];
        assert_eq!(f.kind, MetricType::Histogram);
        assert_eq!(f.samples.len(), 4);
    }

    #[test]
    fn openmetrics_counter_and_eof_and_exemplar() {
        let text = "# TYPE c counter\nc_total 1.0 # {trace_id=\"a\"} 1.0\nc_created 1.7e9\n# EOF\nafter 1\n";
        let e = parse(text);
        assert!(e.saw_eof);
        assert_eq!(e.families.len(), 1);
        assert_eq!(e.families[0].samples.len(), 2);
        assert_eq!(e.families[0].samples[0].value, 1.0);
    }

    #[test]
    fn special_values_and_no_trailing_newline() {
        let e = parse("g NaN\nh +Inf\ni -Inf");
        assert!(e.family("g").unwrap().samples[0].value.is_nan());
        assert_eq!(e.family("h").unwrap().samples[0].value, f64::INFINITY);
        assert_eq!(e.family("i").unwrap().samples[0].value, f64::NEG_INFINITY);
    }

    #[test]
    fn bad_lines_are_skipped_with_line_numbers() {
        let e = parse("a 1\n...\nb{x=\"1\" 2\nc 3\n");
        let lines: Vec<usize> = e.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![2, 3]);
        assert_eq!(e.sample_count(), 2);
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "",
            "{",
            "a{",
            "a{b",
            "a{b=",
            "a{b=\"",
            "a{b=\"\\",
            "a{b=\"x\"}",
            "a{b=\"x\"} ",
            "# TYPE",
            "# HELP",
            "# TYPE x",
            "a 1 2 3",
            "\u{0}",
            "é 1",
            "a{é=\"1\"} 1",
            "a{b=\"é\\",
        ] {
            let _ = parse(s);
        }
    }
}
