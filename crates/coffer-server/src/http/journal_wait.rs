//! `GET /v1/journal/wait?after=C&timeout_ms=T&limit=N`: long-poll. Answers
//! as soon as the journal passes `after`, or with an empty page after the
//! timeout (default 30 s, capped by the server).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use coffer_proto::api::{JournalPage, JournalQuery};

use super::{ApiError, ApiQuery, AppState, Auth};

const DEFAULT_WAIT_MS: u64 = 30_000;

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<JournalQuery>,
) -> Result<Json<JournalPage>, ApiError> {
    let wait = Duration::from_millis(q.timeout_ms.unwrap_or(DEFAULT_WAIT_MS));
    Ok(Json(s.service.wait_journal(caller, q.after, q.limit, wait).await?))
}
