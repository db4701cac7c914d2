//! Prometheus's HTTP query API (`/api/v1/series`, `/api/v1/query`,
//! `/api/v1/query_range`): the client `kvscope import prometheus` reads history through.
//! vLLM-agnostic: it takes selectors and returns series with their label sets and
//! points. Works with Prometheus 2.x and 3.x (3.x writes `le` as floats, `"1.0"`; its
//! range selectors are left-open — neither matters to a client that keeps label values
//! as text and takes points as they come).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Prometheus refuses a range query with more than this many points per series.
pub const MAX_POINTS_PER_SERIES: u64 = 11_000;

/// Errors of the Prometheus client. Each names the URL (credentials removed).
#[derive(Debug, thiserror::Error)]
pub enum PromApiError {
    #[error("invalid Prometheus URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach Prometheus at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Prometheus at {url} rejected the query `{query}`: {message}")]
    Rejected {
        url: String,
        query: String,
        message: String,
    },
    #[error("Prometheus at {url} answered {what} that is not its API's JSON: {reason}")]
    BadAnswer {
        url: String,
        what: String,
        reason: String,
    },
}

/// One series of a range or range-vector result: its labels (with `__name__`) and its
/// points as (Unix seconds, value as Prometheus wrote it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Series {
    pub metric: BTreeMap<String, String>,
    #[serde(default)]
    pub values: Vec<(f64, String)>,
}

impl Series {
    pub fn name(&self) -> &str {
        self.metric.get("__name__").map_or("", String::as_str)
    }
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "T: serde::de::DeserializeOwned"))]
struct Envelope<T> {
    status: String,
    #[serde(default = "none")]
    data: Option<T>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

fn none<T>() -> Option<T> {
    None
}

#[derive(Deserialize)]
struct Matrix {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Series>,
}

/// A Prometheus server.
#[derive(Clone)]
pub struct Prometheus {
    client: reqwest::Client,
    base: url::Url,
    /// Basic-auth credentials taken out of the URL.
    basic: Option<(String, String)>,
    bearer: Option<String>,
}

impl Prometheus {
    /// `url` is the server's base URL (`http://host:9090`, optionally with a path prefix
    /// and `user:password@` for basic auth); `bearer` is a token for a proxy in front.
    pub fn new(url: &str, bearer: Option<String>, timeout: Duration) -> Result<Self, PromApiError> {
        let bad = |reason: String| PromApiError::BadUrl {
            url: crate::source::scrape::redact(url),
            reason,
        };
        let mut base = crate::source::scrape::http_url(url).map_err(bad)?;
        let basic = (!base.username().is_empty()).then(|| {
            (
                base.username().to_string(),
                base.password().unwrap_or_default().to_string(),
            )
        });
        let _ = base.set_username("");
        let _ = base.set_password(None);
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .gzip(true)
            .user_agent(concat!("kvscope/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            client,
            base,
            basic,
            bearer,
        })
    }

    /// The base URL without credentials (for metadata and messages).
    pub fn url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &str,
        params: &[(&str, String)],
    ) -> Result<T, PromApiError> {
        let url = self.base.join(path).map_err(|e| PromApiError::BadUrl {
            url: self.url(),
            reason: e.to_string(),
        })?;
        let mut req = self.client.post(url).form(params);
        if let Some((u, p)) = &self.basic {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| PromApiError::Unreachable {
            url: self.url(),
            reason: crate::source::scrape::describe(&e),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| PromApiError::Unreachable {
            url: self.url(),
            reason: e.to_string(),
        })?;
        let env: Envelope<T> = match serde_json::from_slice(&bytes) {
            Ok(env) => env,
            Err(e) => {
                return Err(PromApiError::BadAnswer {
                    url: self.url(),
                    what: format!("HTTP {status} to {path}"),
                    reason: format!(
                        "{e}: {}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    ),
                });
            }
        };
        match (env.status.as_str(), env.data) {
            ("success", Some(data)) => Ok(data),
            _ => Err(PromApiError::Rejected {
                url: self.url(),
                query: query.to_string(),
                message: format!(
                    "{}{}",
                    env.error_type.map(|t| format!("{t}: ")).unwrap_or_default(),
                    env.error.unwrap_or_else(|| format!("HTTP {status}"))
                ),
            }),
        }
    }

    /// Label sets of the series matching `selector` in `[start, end]` (Unix seconds).
    pub async fn series(
        &self,
        selector: &str,
        start: f64,
        end: f64,
    ) -> Result<Vec<BTreeMap<String, String>>, PromApiError> {
        self.get(
            "api/v1/series",
            selector,
            &[
                ("match[]", selector.to_string()),
                ("start", fmt_ts(start)),
                ("end", fmt_ts(end)),
            ],
        )
        .await
    }

    /// An instant query whose result is a range vector (`sel[10m]`): raw samples.
    pub async fn raw_range(&self, query: &str, at: f64) -> Result<Vec<Series>, PromApiError> {
        let m: Matrix = self
            .get(
                "api/v1/query",
                query,
                &[("query", query.to_string()), ("time", fmt_ts(at))],
            )
            .await?;
        self.matrix(m, query)
    }

    /// `query_range` over `[start, end]` at `step` seconds. The caller keeps
    /// `(end - start) / step` under [`MAX_POINTS_PER_SERIES`].
    pub async fn query_range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Series>, PromApiError> {
        let m: Matrix = self
            .get(
                "api/v1/query_range",
                query,
                &[
                    ("query", query.to_string()),
                    ("start", fmt_ts(start)),
                    ("end", fmt_ts(end)),
                    ("step", format!("{step}")),
                ],
            )
            .await?;
        self.matrix(m, query)
    }

    fn matrix(&self, m: Matrix, query: &str) -> Result<Vec<Series>, PromApiError> {
        if m.result_type != "matrix" {
            return Err(PromApiError::BadAnswer {
                url: self.url(),
                what: format!("a `{}` result to `{query}`", m.result_type),
                reason: "expected a matrix".into(),
            });
        }
        Ok(m.result)
    }
}

/// Unix seconds as Prometheus takes them (millisecond precision).
fn fmt_ts(t: f64) -> String {
    format!("{t:.3}")
}

/// A selector: `{__name__=~"NAMES", <the user's matchers>, <extra>}`. `user` is a
/// selector such as `{job="vllm"}` (braces optional, may be empty).
pub fn selector(names_regex: &str, user: &str, extra: &[(&str, &str)]) -> String {
    let inner = user
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim();
    let mut parts = vec![format!("__name__=~{}", quote(names_regex))];
    if !inner.is_empty() {
        parts.push(inner.to_string());
    }
    for (k, v) in extra {
        parts.push(format!("{k}={}", quote(v)));
    }
    format!("{{{}}}", parts.join(", "))
}

/// A PromQL string literal.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_combine_the_users_matchers() {
        assert_eq!(
            selector("vllm:.+", r#"{job="vllm"}"#, &[("instance", "a:8000")]),
            r#"{__name__=~"vllm:.+", job="vllm", instance="a:8000"}"#
        );
        assert_eq!(selector("x", "", &[]), r#"{__name__=~"x"}"#);
    }

    #[test]
    fn a_prometheus_3_matrix_reads() {
        // Prometheus 3.x: `le` as a float string, values as strings, +Inf spelled out.
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
          {"metric":{"__name__":"vllm:time_to_first_token_seconds_bucket","le":"1.0","instance":"a"},
           "values":[[1700000000,"3"],[1700000001.5,"5"]]},
          {"metric":{"__name__":"vllm:time_to_first_token_seconds_bucket","le":"+Inf","instance":"a"},
           "values":[[1700000000,"4"]]}]}}"#;
        let env: Envelope<Matrix> = serde_json::from_str(body).unwrap();
        let m = env.data.unwrap();
        assert_eq!(m.result.len(), 2);
        assert_eq!(m.result[0].metric["le"], "1.0");
        assert_eq!(m.result[0].values[1], (1700000001.5, "5".to_string()));
        assert_eq!(
            m.result[0].name(),
            "vllm:time_to_first_token_seconds_bucket"
        );
    }
}
