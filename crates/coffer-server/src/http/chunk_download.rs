//! `GET /v1/chunks/{id}`: one chunk's sealed bytes
//! (`application/octet-stream`).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use coffer_proto::ChunkId;

use super::{ApiError, ApiPath, AppState, Auth};

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<ChunkId>,
) -> Result<impl IntoResponse, ApiError> {
    let chunk = s.service.download_chunk(caller, id).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], chunk.into_shared()))
}
