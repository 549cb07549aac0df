//! `POST /v1/chunks`: a batch of sealed chunks in the binary framing of
//! `coffer_proto::api::chunk_batch`. Each must hash to its id.

use axum::extract::State;
use axum::Json;
use coffer_proto::api::UploadChunksResponse;

use super::{ApiBytes, ApiError, AppState, Auth};

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiBytes(body): ApiBytes,
) -> Result<Json<UploadChunksResponse>, ApiError> {
    Ok(Json(s.service.upload_chunks(caller, body).await?))
}
