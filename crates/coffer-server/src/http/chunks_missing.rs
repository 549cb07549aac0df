//! `POST /v1/chunks/missing`: which of these chunk ids the store lacks.

use axum::extract::State;
use axum::Json;
use coffer_proto::api::{MissingChunksRequest, MissingChunksResponse};

use super::{ApiError, ApiJson, AppState, Auth};

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<MissingChunksRequest>,
) -> Result<Json<MissingChunksResponse>, ApiError> {
    Ok(Json(MissingChunksResponse { missing: s.service.missing_chunks(caller, req.ids).await? }))
}
