//! `POST /v1/previews` keeps a sealed preview of a large upload under way
//! for the account's other devices; `GET /v1/previews/wait?after=N&timeout_ms=T`
//! long-polls for theirs (see [`crate::previews`]).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use coffer_proto::api::{PostPreview, PreviewPage, PreviewQuery};

use super::{ApiError, ApiJson, ApiQuery, AppState, Auth};

const DEFAULT_WAIT_MS: u64 = 30_000;

pub(super) async fn post(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<PostPreview>,
) -> Result<StatusCode, ApiError> {
    s.service.post_preview(caller, req.sealed)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn wait(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> Json<PreviewPage> {
    let wait = Duration::from_millis(q.timeout_ms.unwrap_or(DEFAULT_WAIT_MS));
    Json(s.service.wait_previews(caller, q.after, wait).await)
}
