//! `GET /v1/sessions`: the account's live device sessions.

use axum::extract::State;
use axum::Json;
use coffer_proto::api::SessionsResponse;

use super::{ApiError, AppState, Auth};

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<SessionsResponse>, ApiError> {
    Ok(Json(SessionsResponse { sessions: s.service.sessions(caller).await? }))
}
