//! `POST /v1/accounts/register/start`: OPAQUE registration, first message.

use axum::extract::State;
use axum::Json;
use coffer_proto::api::{RegisterStartRequest, RegisterStartResponse};

use super::{ApiError, ApiJson, AppState};

pub(super) async fn handle(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<RegisterStartRequest>,
) -> Result<Json<RegisterStartResponse>, ApiError> {
    Ok(Json(s.service.register_start(req).await?))
}
