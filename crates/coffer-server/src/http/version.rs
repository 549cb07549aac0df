//! `GET /v1/entries/{entry_id}/versions/{revision}`: one kept revision (the
//! client restores it by resealing it for the next revision and committing).

use axum::extract::State;
use axum::Json;
use coffer_proto::api::EntryVersion;
use coffer_proto::{EntryId, Revision};

use super::{ApiError, ApiPath, AppState, Auth};

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath((entry, revision)): ApiPath<(EntryId, u64)>,
) -> Result<Json<EntryVersion>, ApiError> {
    Ok(Json(s.service.version(caller, entry, Revision(revision)).await?))
}
