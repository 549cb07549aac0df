//! `POST /v1/chunks/get`: several chunks' sealed bytes in one
//! `application/octet-stream` answer (a chunk batch; chunks the store lacks
//! left out).
//!
//! A large chunk is not copied into the answer: it goes out as it was read
//! from the blob store, after its frame's head, with the body's length
//! known up front ([`chunk_batch::frames`]). For a large download that is
//! one copy of every byte less on the store, and no second buffer of the
//! batch's size to fault in.

use axum::body::Body;
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
    let len: usize = chunks.iter().map(|c| chunk_batch::HEAD + c.len()).sum();
    let body = Body::from_stream(futures::stream::iter(
        chunk_batch::frames(&chunks).into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    ))
}
