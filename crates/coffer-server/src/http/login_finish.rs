//! `POST /v1/accounts/login/finish`: OPAQUE KE3; on success a new device
//! session and the wrapped master key. A replayed or late message is
//! `unauthorized`.

use axum::extract::State;
use axum::Json;
use coffer_proto::api::{LoginFinishRequest, LoginFinishResponse};

use super::{ApiError, ApiJson, AppState};

pub(super) async fn handle(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<LoginFinishRequest>,
) -> Result<Json<LoginFinishResponse>, ApiError> {
    Ok(Json(s.service.login_finish(req).await?))
}
