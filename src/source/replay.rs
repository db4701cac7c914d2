//! `kvscope replay`: serves recorded raw pages (a session recorded with `--raw`, or a real
//! capture) as a live `/metrics` endpoint, time-aligned, so the real recorder can record
//! them at any interval and speed.
//!
//! At wall time `w` after start the replay stands at capture time `t0 + w × speed` and
//! answers with the latest page taken at or before it. A failed scrape in the capture is
//! replayed as a failure (HTTP 503). Every answer carries the page's own capture time in
//! the simulator's [`SIM_TIME_HEADER`], so a sped-up replay records with the capture's
//! timestamps. Past the end the replay answers 503 (`capture ended`), or starts over
//! with `--loop` (times keep increasing: each lap is shifted by the capture's length).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::raw::RawPage;
use super::scrape::SIM_TIME_HEADER;

/// Errors starting a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the capture holds no pages{0}")]
    Empty(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Pages of one server in time order, and how to play them.
#[derive(Debug, Clone)]
pub struct Replay {
    pages: Vec<RawPage>,
    speed: f64,
    looped: bool,
}

impl Replay {
    /// Keeps the pages of `server` (or of the first server seen when `None`; pages
    /// without a server label belong to every server), sorted by time.
    pub fn new(
        mut pages: Vec<RawPage>,
        server: Option<&str>,
        speed: f64,
        looped: bool,
    ) -> Result<Self, ReplayError> {
        let chosen = server
            .map(str::to_string)
            .or_else(|| pages.iter().find_map(|p| p.server.clone()));
        pages.retain(|p| match (&p.server, &chosen) {
            (Some(s), Some(c)) => s == c,
            _ => true,
        });
        if pages.is_empty() {
            let which = chosen
                .map(|c| format!(" for server {c}"))
                .unwrap_or_default();
            return Err(ReplayError::Empty(which));
        }
        pages.sort_by(|a, b| a.ts.total_cmp(&b.ts));
        Ok(Self {
            pages,
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
            looped,
        })
    }

    /// Capture seconds from the first page to the last.
    pub fn span_s(&self) -> f64 {
        match (self.pages.first(), self.pages.last()) {
            (Some(a), Some(b)) => b.ts - a.ts,
            _ => 0.0,
        }
    }

    /// Number of pages.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether there are no pages (never, once built).
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The page to serve `elapsed_s` wall seconds after start, with the capture time to
    /// report; `None` once the capture has ended (without `--loop`).
    pub fn at(&self, elapsed_s: f64) -> Option<(&RawPage, f64)> {
        let first = self.pages.first()?;
        let span = self.span_s();
        // One lap is the capture plus one median-ish step, so the first page of the next
        // lap comes after the last one.
        let step = if self.pages.len() > 1 {
            span / (self.pages.len() - 1) as f64
        } else {
            1.0
        };
        let lap = span + step;
        let mut offset = elapsed_s.max(0.0) * self.speed;
        let mut shift = 0.0;
        if offset > span + step {
            if !self.looped {
                return None;
            }
            let laps = (offset / lap).floor();
            shift = laps * lap;
            offset -= shift;
        }
        let t = first.ts + offset;
        let idx = self.pages.partition_point(|p| p.ts <= t).saturating_sub(1);
        let page = self.pages.get(idx)?;
        Some((page, page.ts + shift))
    }
}

/// A running replay.
pub struct ReplayServer {
    pub addr: SocketAddr,
    handle: tokio::task::JoinHandle<()>,
}

impl ReplayServer {
    /// `http://addr` of the server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving.
    pub fn abort(&self) {
        self.handle.abort();
    }
}

struct Shared {
    replay: Replay,
    started: Instant,
}

/// Binds `addr` (port 0 for any) and serves the replay in the background.
pub async fn spawn(replay: Replay, addr: &str) -> Result<ReplayServer, ReplayError> {
    let bind = |source| ReplayError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let shared = Arc::new(Shared {
        replay,
        started: Instant::now(),
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { StatusCode::OK }))
        .with_state(shared);
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(ReplayServer {
        addr: local,
        handle,
    })
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let Some((page, ts)) = s.replay.at(s.started.elapsed().as_secs_f64()) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "capture ended\n").into_response();
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("{ts:.6}")) {
        headers.insert(SIM_TIME_HEADER, v);
    }
    match (&page.text, page.ok()) {
        (Some(text), true) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            (StatusCode::OK, headers, text.clone()).into_response()
        }
        _ => {
            let why = page
                .error
                .clone()
                .unwrap_or_else(|| format!("captured scrape failed (status {:?})", page.status));
            (StatusCode::SERVICE_UNAVAILABLE, headers, why).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ts: f64, ok: bool) -> RawPage {
        RawPage {
            ts,
            status: Some(if ok { 200 } else { 503 }),
            text: ok.then(|| "x 1\n".to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn serves_the_latest_page_at_capture_time() {
        let pages = vec![page(10.0, true), page(10.5, false), page(11.0, true)];
        let r = Replay::new(pages.clone(), None, 2.0, false).unwrap();
        // 0.2 s wall at ×2 is capture 10.4: the page of 10.0.
        assert_eq!(r.at(0.2).map(|p| p.1), Some(10.0));
        assert_eq!(r.at(0.3).map(|p| (p.0.ok(), p.1)), Some((false, 10.5)));
        assert_eq!(r.at(0.5).map(|p| p.1), Some(11.0));
        assert!(r.at(5.0).is_none());
        let looped = Replay::new(pages, None, 1.0, true).unwrap();
        // One lap is 1.5 s: at 1.6 s the second lap's first page, shifted by 1.5 s.
        assert_eq!(looped.at(1.6).map(|p| p.1), Some(11.5));
    }
}
