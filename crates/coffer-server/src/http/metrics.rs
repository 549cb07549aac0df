//! `GET /metrics`: the process's operational counters, Prometheus text.
//! Volumes only (see `crate::metrics`); no authentication, like most
//! exporters: put it behind the same network policy as the rest.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

pub(super) async fn handle(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.service.metrics().to_prometheus())
}
