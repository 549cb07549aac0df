//! `GET /v1/snapshot?after=ENTRY&limit=N`: a page of live entries, for a
//! new device.

use axum::extract::State;
use axum::Json;
use coffer_proto::api::{SnapshotPage, SnapshotQuery};

use super::{ApiError, ApiQuery, AppState, Auth};

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<SnapshotQuery>,
) -> Result<Json<SnapshotPage>, ApiError> {
    Ok(Json(s.service.snapshot(caller, q.after, q.limit).await?))
}
