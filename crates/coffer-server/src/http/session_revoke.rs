//! `DELETE /v1/sessions/{id}`: revokes one of the account's sessions.

use axum::extract::State;
use axum::http::StatusCode;
use coffer_proto::api::SessionId;

use super::{ApiError, ApiPath, AppState, Auth};

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<SessionId>,
) -> Result<StatusCode, ApiError> {
    s.service.revoke_session(caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
