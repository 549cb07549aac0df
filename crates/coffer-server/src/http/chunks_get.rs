//! `POST /v1/chunks/get`: several chunks' sealed bytes in one
//! `application/octet-stream` answer (a chunk batch; chunks the store lacks
//! left out).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use coffer_proto::api::{chunk_batch, GetChunksRequest};

use super::{ApiError, ApiJson, AppState, Auth};

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<GetChunksRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let chunks = s.service.download_chunks(caller, req.ids).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], chunk_batch::encode(&chunks)))
}
