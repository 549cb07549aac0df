//! `GET /v1/journal?after=C&limit=N`: a page of the change journal.

use axum::extract::State;
use axum::Json;
use coffer_proto::api::{JournalPage, JournalQuery};

use super::{ApiError, ApiQuery, AppState, Auth};

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<JournalQuery>,
) -> Result<Json<JournalPage>, ApiError> {
    Ok(Json(s.service.journal(caller, q.after, q.limit).await?))
}
