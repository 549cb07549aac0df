//! `GET /v1/usage`: bytes used by live files, and the quota.

use axum::extract::State;
use axum::Json;
use coffer_proto::api::Usage;

use super::{ApiError, AppState, Auth};

pub(super) async fn handle(State(s): State<AppState>, Auth(caller): Auth) -> Result<Json<Usage>, ApiError> {
    Ok(Json(s.service.usage(caller).await?))
}
