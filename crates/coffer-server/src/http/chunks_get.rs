//! `POST /v1/chunks/get`: several chunks' sealed bytes in one
//! `application/octet-stream` answer (a chunk batch; chunks the store lacks
//! left out).
//!
//! A large chunk is not copied into the answer: it goes out as it was read
//! from the blob store, after its frame's head, with the body's length
//! known up front. For a large download that is one copy of every byte
//! less on the store, and no second buffer of the batch's size to fault
//! in. Small chunks (and the heads) are still copied into shared buffers:
//! as frames of their own, thousands of them cost more in polls and
//! system calls than the copy.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use coffer_proto::api::{chunk_batch, GetChunksRequest};
use coffer_proto::SealedChunk;

use super::{ApiError, ApiJson, AppState, Auth};

pub(super) async fn handle(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(req): ApiJson<GetChunksRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let chunks = s.service.download_chunks(caller, req.ids).await?;
    let len: usize = chunks.iter().map(|c| chunk_batch::HEAD + c.len()).sum();
    let body = Body::from_stream(futures::stream::iter(
        frames(chunks).into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    ))
}

/// Chunks of this many bytes or more go out as frames of their own.
const OWN_FRAME: usize = 64 * 1024;

/// The answer's body in frames: the heads and small chunks copied into one
/// buffer, sized once, and sent as slices of it between the large chunks,
/// which go as they are.
fn frames(chunks: Vec<SealedChunk>) -> Vec<Bytes> {
    let copied = |c: &SealedChunk| chunk_batch::HEAD + if c.len() < OWN_FRAME { c.len() } else { 0 };
    let mut buf = Vec::with_capacity(chunks.iter().map(copied).sum());
    // Each large chunk, with where the copied run before it ends.
    let mut large = Vec::new();
    for c in chunks {
        buf.extend_from_slice(&chunk_batch::head(&c));
        if c.len() < OWN_FRAME {
            buf.extend_from_slice(c.as_bytes());
        } else {
            large.push((buf.len(), Bytes::from(c.into_bytes())));
        }
    }
    let buf = Bytes::from(buf);
    let mut frames = Vec::with_capacity(2 * large.len() + 1);
    let mut start = 0;
    for (end, chunk) in large {
        frames.push(buf.slice(start..end));
        frames.push(chunk);
        start = end;
    }
    if start < buf.len() {
        frames.push(buf.slice(start..));
    }
    frames
}

#[cfg(test)]
mod tests {
    use coffer_proto::{ChunkId, SealedChunk};

    use super::*;

    fn chunk(n: u8, len: usize) -> SealedChunk {
        SealedChunk::from_parts(ChunkId::from_bytes([n; 32]), vec![n; len])
    }

    #[test]
    fn the_frames_are_the_encoded_batch_with_large_chunks_uncopied() {
        let chunks = vec![
            chunk(1, 10),
            chunk(2, OWN_FRAME),
            chunk(3, 0),
            chunk(4, OWN_FRAME - 1),
            chunk(5, 3 * OWN_FRAME),
            chunk(6, 7),
        ];
        let expected = chunk_batch::encode(&chunks);
        let framed = frames(chunks);
        let lens: Vec<usize> = framed.iter().map(Bytes::len).collect();
        let h = chunk_batch::HEAD;
        assert_eq!(lens, [h + 10 + h, OWN_FRAME, h + h + OWN_FRAME - 1 + h, 3 * OWN_FRAME, h + 7]);
        assert_eq!(framed.concat(), expected);
        assert!(frames(Vec::new()).is_empty());
    }
}
