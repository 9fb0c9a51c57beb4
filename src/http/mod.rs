//! The HTTP server (127.0.0.1:8001 by default). Endpoints:
//!
//! - `GET /metrics`: every metric in the Prometheus text format (version 0.0.4).
//! - `GET /healthz`: `200 ok` while the process serves HTTP.
//! - `GET /readyz`: `200 ready` when every sink has connected at least once and every twin
//!   actor runs; otherwise `503` with the reasons, one per line.
//! - `/api/v1/...`: the inspection API ([`api`]), documented in `src/http/openapi.json`
//!   (served at `/api/v1/openapi.json`).
//! - `/api/v1/faults`: the fault-injection API ([`crate::faults::http`]): 404 unless
//!   `[faults] enabled`, then every request needs the bearer token.
//!
//! Handlers read shared state (metrics, registry, sink handles, the actor directory); the
//! only message to an actor is a liveness ping bounded by a deadline.

pub mod api;
pub mod page;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

use crate::actors::Directory;
use crate::config::Secret;
use crate::faults::FaultEngine;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::sinks::SinkSet;

#[derive(Clone)]
pub struct AppState {
    pub metrics: Metrics,
    pub registry: Arc<Registry>,
    pub sinks: SinkSet,
    pub directory: Arc<Directory>,
    pub expected_twins: usize,
    pub faults: Arc<FaultEngine>,
    /// The fault API's bearer token; None: the fault API is disabled.
    pub faults_token: Option<Secret>,
    /// Largest request body accepted (`http.max_body_bytes`).
    pub max_body_bytes: usize,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/actors", get(api::actors))
        .route("/api/v1/actors/{*path}", get(api::actor))
        .route("/api/v1/twins", get(api::twins))
        .route("/api/v1/twins.geojson", get(api::twins_geojson))
        .route("/api/v1/twins/{id}", get(api::twin))
        .route("/api/v1/sinks", get(api::sinks))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/faults", get(crate::faults::http::list).post(crate::faults::http::create))
        .route("/api/v1/faults/{id}", get(crate::faults::http::get_one).delete(crate::faults::http::delete))
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::app_js))
        .route("/assets/style.css", get(page::style_css))
        .route("/api/v1/geo/outline.geojson", get(page::outline))
        .route("/api/v1/geo/communes.geojson", get(page::communes))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let mut reasons = Vec::new();
    for h in s.sinks.handles() {
        if !h.stats.ever_connected.load(std::sync::atomic::Ordering::Relaxed) {
            let err = h.stats.last_error().map(|e| format!(": {}", e.0)).unwrap_or_default();
            reasons.push(format!("sink {} ({}) has not connected yet{err}", h.name, h.target));
        }
    }
    let running = s.metrics.twins_running.get();
    if (running as usize) < s.expected_twins {
        reasons.push(format!("{running} of {} twin actors running", s.expected_twins));
    }
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready:\n{}\n", reasons.join("\n")))
    }
}

async fn not_found() -> api::ApiError {
    api::ApiError::not_found("no such endpoint: see /api/v1/openapi.json")
}
