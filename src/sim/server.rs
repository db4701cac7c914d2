//! HTTP front of the simulator: `/metrics`, `/health` and `/v1/models` like a vLLM
//! OpenAI-compatible server, and `/dcgm/metrics` like an NVIDIA dcgm-exporter on the same
//! host, on 127.0.0.1 unless told otherwise.
//!
//! The simulated clock runs `speed` times faster than wall time; each response carries it
//! in the `x-kvscope-sim-time` header so a recorder stamps samples with simulated time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{MODEL_NAME, Simulation};
use crate::source::scrape::SIM_TIME_HEADER;

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

struct Shared {
    sim: Mutex<Simulation>,
    started: Instant,
    speed: f64,
}

impl Shared {
    /// Steps the simulation up to the current simulated time.
    fn catch_up(&self) -> std::sync::MutexGuard<'_, Simulation> {
        let t = self.started.elapsed().as_secs_f64() * self.speed;
        let mut sim = self.sim.lock().unwrap_or_else(|p| p.into_inner());
        sim.advance_to(t);
        sim
    }
}

/// A running simulator.
pub struct SimServer {
    pub addr: SocketAddr,
    handle: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// `http://addr` of the server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving.
    pub fn abort(&self) {
        self.handle.abort();
    }
}

/// Unix time now, seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Binds `addr` (port 0 for any) and serves `sim` in the background.
pub async fn spawn(sim: Simulation, addr: &str, speed: f64) -> Result<SimServer, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let shared = Arc::new(Shared {
        sim: Mutex::new(sim),
        started: Instant::now(),
        speed: speed.max(0.001),
    });
    // Keep the model stepping even when nobody scrapes, so each scrape is cheap.
    let ticker = shared.clone();
    tokio::spawn(async move {
        let mut iv = tokio::time::interval(std::time::Duration::from_millis(20));
        loop {
            iv.tick().await;
            let s = ticker.clone();
            let _ = tokio::task::spawn_blocking(move || {
                drop(s.catch_up());
            })
            .await;
            if Arc::strong_count(&ticker) == 1 {
                break;
            }
        }
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/dcgm/metrics", get(dcgm))
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .with_state(shared);
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(SimServer {
        addr: local,
        handle,
    })
}

fn sim_headers(sim: &Simulation) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("{:.6}", sim.unix_now())) {
        h.insert(SIM_TIME_HEADER, v);
    }
    h
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let s2 = s.clone();
    let out = tokio::task::spawn_blocking(move || {
        let sim = s2.catch_up();
        let headers = sim_headers(&sim);
        if sim.is_down() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                headers,
                String::from("restarting\n"),
            );
        }
        (StatusCode::OK, headers, sim.render())
    })
    .await;
    match out {
        Ok((code, mut headers, body)) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            (code, headers, body).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A DCGM exporter's page for the simulated host's GPUs (it answers while vLLM restarts:
/// the GPUs are still there).
async fn dcgm(State(s): State<Arc<Shared>>) -> Response {
    let s2 = s.clone();
    let out = tokio::task::spawn_blocking(move || {
        let sim = s2.catch_up();
        (sim_headers(&sim), sim.render_dcgm())
    })
    .await;
    match out {
        Ok((mut headers, body)) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            (StatusCode::OK, headers, body).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let down = s.catch_up().is_down();
    if down {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

async fn models() -> Response {
    let body = serde_json::json!({
        "object": "list",
        "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "vllm", "root": MODEL_NAME, "max_model_len": 16384}]
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
