//! `POST /v1/commit`: a batch of entry changes, each applied or answered
//! `conflict` on its own.

use axum::extract::State;
use axum::Json;
use coffer_proto::api::{CommitRequest, CommitResponse};

use super::{ApiError, ApiJson, AppState, Auth};

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<CommitRequest>,
) -> Result<Json<CommitResponse>, ApiError> {
    Ok(Json(s.service.commit(caller, req.changes).await?))
}
