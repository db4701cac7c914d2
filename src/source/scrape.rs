//! HTTP scraping of a `/metrics` endpoint: one GET with a timeout, a body-size cap and
//! the `Accept` header that keeps vLLM's exporter on text 0.0.4 (under OpenMetrics
//! negotiation it writes HELP/TYPE as `vllm:` but samples as `vllm_`).

use std::time::{Duration, Instant};

use futures::StreamExt;

/// What the scraper asks for.
pub const ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

/// Largest body accepted; a larger one is a failed scrape, not an out-of-memory.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Response header through which `kvscope simulate` reports its simulated clock
/// (Unix seconds). The recorder stamps samples with it so a sped-up simulation records
/// simulated time.
pub const SIM_TIME_HEADER: &str = "x-kvscope-sim-time";

/// Why a scrape failed. Each becomes a `SCRAPE_GAP` data-quality event.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ScrapeError {
    #[error("connection refused or unreachable: {0}")]
    Connect(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("body is not UTF-8 text")]
    NotText,
    #[error("request failed: {0}")]
    Other(String),
}

/// What kind of failure a recorded `scrape_error` is, read back from its text: the
/// [`ScrapeError`] the recorder wrote, or [`NO_PROMETHEUS_SAMPLE`] from an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing accepted the connection (or the host was unreachable).
    Refused,
    /// Connected, but no answer within the timeout.
    Timeout,
    /// An answer with an HTTP error status.
    HttpStatus,
    /// Prometheus history without a sample at that step.
    NoSample,
    /// Prometheus history whose newest sample at that step is older than the scrape
    /// interval: scrapes stopped without a staleness marker.
    NoFreshSample,
    Other,
}

/// The `scrape_error` of a Prometheus import's step without a sample.
pub const NO_PROMETHEUS_SAMPLE: &str =
    "no sample in Prometheus at this step (target down, or its series went stale)";

/// The `scrape_error` of a Prometheus import's step whose newest sample is older than
/// the scrape interval allows. A query fills such a step with that older sample
/// (Prometheus' 5-minute lookback), which read as live would be a server whose every
/// counter stood still: an engine stall that never was.
pub const NO_FRESH_PROMETHEUS_SAMPLE: &str = "no fresh sample in Prometheus at this step (its newest is older than the scrape interval: scrapes stopped without a staleness marker, e.g. Prometheus itself was down, or the series came by remote write)";

impl FailureKind {
    /// The kind of the failure `reason` describes (a [`ScrapeError`]'s text).
    pub fn of_reason(reason: &str) -> Self {
        // The prefixes of ScrapeError's #[error] texts (a test round-trips each variant).
        if reason.starts_with("connection refused or unreachable") {
            Self::Refused
        } else if reason.starts_with("timed out after") {
            Self::Timeout
        } else if reason.starts_with("HTTP status") {
            Self::HttpStatus
        } else if reason == NO_PROMETHEUS_SAMPLE {
            Self::NoSample
        } else if reason == NO_FRESH_PROMETHEUS_SAMPLE {
            Self::NoFreshSample
        } else {
            Self::Other
        }
    }
}

/// A successful scrape.
#[derive(Debug, Clone)]
pub struct Scraped {
    pub body: String,
    pub elapsed: Duration,
    /// Simulated clock reported by `kvscope simulate`, Unix seconds.
    pub sim_time: Option<f64>,
}

/// Builds the HTTP client used for scraping.
pub fn client(timeout: Duration) -> Result<reqwest::Client, ScrapeError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .gzip(true)
        .user_agent(concat!("kvscope/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ScrapeError::Other(e.to_string()))
}

/// Scrapes `url` once.
pub async fn scrape(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    timeout: Duration,
) -> Result<Scraped, ScrapeError> {
    let started = Instant::now();
    let mut req = client.get(url).header(reqwest::header::ACCEPT, ACCEPT);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let fut = async {
        let resp = req.send().await.map_err(|e| classify(e, timeout))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ScrapeError::Status(status.as_u16()));
        }
        let sim_time = resp
            .headers()
            .get(SIM_TIME_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite());
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| classify(e, timeout))?;
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ScrapeError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let body = String::from_utf8(body).map_err(|_| ScrapeError::NotText)?;
        Ok((body, sim_time))
    };
    // The client timeout covers the request; this covers a body that trickles forever.
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(ScrapeError::Timeout(timeout)),
        Ok(Err(e)) => Err(e),
        Ok(Ok((body, sim_time))) => Ok(Scraped {
            body,
            elapsed: started.elapsed(),
            sim_time,
        }),
    }
}

fn classify(e: reqwest::Error, timeout: Duration) -> ScrapeError {
    if e.is_timeout() {
        ScrapeError::Timeout(timeout)
    } else if e.is_connect() {
        ScrapeError::Connect(redact(&e.to_string()))
    } else {
        ScrapeError::Other(redact(&e.to_string()))
    }
}

/// A reqwest error in words, with its cause chain (reqwest's own text is often just
/// "error sending request"), credentials removed.
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    redact(&text)
}

/// A URL as given on the command line, `http://` assumed when it names no scheme: vLLM
/// prints its address as `host:port`, and `localhost:8000` would otherwise parse as the
/// scheme `localhost` with the path `8000`.
pub fn with_default_scheme(raw: &str) -> std::borrow::Cow<'_, str> {
    if raw.contains("://") {
        std::borrow::Cow::Borrowed(raw)
    } else {
        std::borrow::Cow::Owned(format!("http://{raw}"))
    }
}

/// An HTTP(S) endpoint given on the command line (`--server`, `--gpu-metrics`,
/// Prometheus' URL): [`with_default_scheme`], parsed, any other scheme refused. The
/// error is the reason, for the caller to name the flag.
pub fn http_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(&with_default_scheme(raw)).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("scheme must be http or https".into());
    }
    Ok(url)
}

/// Removes `user:password@` from any URL inside `s`.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find("://") {
        let (head, tail) = rest.split_at(p + 3);
        out.push_str(head);
        let end = tail.find(['/', ' ', ')', '"']).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***@");
                out.push_str(&authority[at + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_credentials() {
        assert_eq!(
            super::redact("error for http://u:p@host:1/metrics here"),
            "error for http://***@host:1/metrics here"
        );
        assert_eq!(super::redact("http://host/x"), "http://host/x");
    }

    #[test]
    fn every_failure_text_reads_back_as_its_kind() {
        use super::{
            FailureKind as K, NO_FRESH_PROMETHEUS_SAMPLE, NO_PROMETHEUS_SAMPLE, ScrapeError as E,
        };
        let cases = [
            (E::Connect("tcp connect error".into()), K::Refused),
            (E::Timeout(std::time::Duration::from_secs(2)), K::Timeout),
            (E::Status(503), K::HttpStatus),
            (E::TooLarge, K::Other),
            (E::NotText, K::Other),
            (E::Other("body error".into()), K::Other),
        ];
        for (error, kind) in cases {
            assert_eq!(K::of_reason(&error.to_string()), kind, "{error}");
        }
        assert_eq!(K::of_reason(NO_PROMETHEUS_SAMPLE), K::NoSample);
        assert_eq!(K::of_reason(NO_FRESH_PROMETHEUS_SAMPLE), K::NoFreshSample);
        assert_eq!(K::of_reason("no sample for 31.0 s"), K::Other);
    }
}
