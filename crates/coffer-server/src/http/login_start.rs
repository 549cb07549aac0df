//! `POST /v1/accounts/login/start`: OPAQUE KE1 → KE2, rate limited per
//! account name and per client address.

use axum::extract::State;
use axum::Json;
use coffer_proto::api::{LoginStartRequest, LoginStartResponse};

use super::{ApiError, ApiJson, AppState, ClientAddr};

pub(super) async fn handle(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<LoginStartRequest>,
) -> Result<Json<LoginStartResponse>, ApiError> {
    Ok(Json(s.service.login_start(req, addr).await?))
}
