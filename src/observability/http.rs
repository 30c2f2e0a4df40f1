//! The HTTP endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz`.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::health::Telemetry;

/// Serves the endpoint until the runtime stops.
pub async fn serve(address: SocketAddr, telemetry: Telemetry) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "Serving /metrics, /healthz and /readyz.");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(telemetry);
    axum::serve(listener, app).await
}

async fn metrics(State(telemetry): State<Telemetry>) -> impl IntoResponse {
    match telemetry.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "cannot encode metrics\n".to_string(),
        ),
    }
}

async fn ready(State(telemetry): State<Telemetry>) -> impl IntoResponse {
    match telemetry.health.readiness(&telemetry.metrics) {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
