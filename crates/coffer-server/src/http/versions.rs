//! `GET /v1/entries/{entry_id}/versions`: every kept revision, newest first.

use axum::extract::State;
use axum::Json;
use coffer_proto::api::VersionsResponse;
use coffer_proto::EntryId;

use super::{ApiError, ApiPath, AppState, Auth};

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(entry): ApiPath<EntryId>,
) -> Result<Json<VersionsResponse>, ApiError> {
    Ok(Json(s.service.versions(caller, entry).await?))
}
