//! `POST /v1/accounts/register/finish`: stores the OPAQUE record and the
//! wrapped master key; `already_exists` if the name is taken.

use axum::extract::State;
use axum::Json;
use coffer_proto::api::{RegisterFinishRequest, RegisterFinishResponse};

use super::{ApiError, ApiJson, AppState};

pub(super) async fn handle(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<RegisterFinishRequest>,
) -> Result<Json<RegisterFinishResponse>, ApiError> {
    Ok(Json(s.service.register_finish(req).await?))
}
