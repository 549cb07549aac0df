//! Chunks: which are missing, batch upload, download.
//!
//! An upload is checked whole before anything is written: every chunk must
//! hash (BLAKE3) to its id, or the batch is refused with
//! `chunk_hash_mismatch` and nothing is stored. Uploads are idempotent:
//! chunks the account already has are not written again, but their upload
//! time is refreshed, which restarts their garbage-collection grace period
//! (see [`super::gc`]).

use axum::body::Bytes;
use coffer_proto::api::{chunk_batch, UploadChunksResponse, MAX_BATCH_ANSWER_BYTES, MAX_IDS_PER_REQUEST};
use coffer_proto::{ChunkId, SealedChunk};

use super::{Caller, Service};
use crate::metrics::Metrics;
use crate::ServiceError;

fn check_count(n: usize) -> Result<(), ServiceError> {
    if n > MAX_IDS_PER_REQUEST {
        return Err(ServiceError::BadRequest(format!("at most {MAX_IDS_PER_REQUEST} ids per request")));
    }
    Ok(())
}

impl Service {
    /// The subset of `ids` the account lacks, in request order.
    pub async fn missing_chunks(
        &self,
        caller: Caller,
        ids: Vec<ChunkId>,
    ) -> Result<Vec<ChunkId>, ServiceError> {
        check_count(ids.len())?;
        crate::metrics::Metrics::add(&self.inner.metrics.chunk_ids_named, ids.len() as u64);
        self.meta(move |m| m.missing_chunks(caller.account, &ids)).await
    }

    /// Stores a batch of chunks from a [`chunk_batch`] body; each chunk
    /// stays a slice of `body` (no copy).
    pub async fn upload_chunks(
        &self,
        caller: Caller,
        body: Bytes,
    ) -> Result<UploadChunksResponse, ServiceError> {
        let ranges =
            chunk_batch::decode_ranges(&body).map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        check_count(ranges.len())?;
        let chunks = ranges.into_iter().map(|(id, range)| (id, body.slice(range))).collect();
        self.store_uploaded(caller, chunks).await
    }

    /// Stores already decoded chunks (the in-process path).
    pub async fn upload_sealed(
        &self,
        caller: Caller,
        chunks: Vec<SealedChunk>,
    ) -> Result<UploadChunksResponse, ServiceError> {
        let chunks = chunks.into_iter().map(|c| (c.id(), c.into_shared())).collect();
        self.store_uploaded(caller, chunks).await
    }

    /// Checks every chunk against its id, then writes those the account
    /// lacks and records them all.
    async fn store_uploaded(
        &self,
        caller: Caller,
        chunks: Vec<(ChunkId, Bytes)>,
    ) -> Result<UploadChunksResponse, ServiceError> {
        for (id, bytes) in &chunks {
            if *blake3::hash(bytes).as_bytes() != *id.as_bytes() {
                return Err(ServiceError::ChunkHashMismatch(*id));
            }
        }
        let m = &self.inner.metrics;
        Metrics::add(&m.chunk_uploads, 1);
        Metrics::add(&m.chunk_bytes_received, chunks.iter().map(|(_, b)| b.len() as u64).sum());
        let ids: Vec<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
        let missing = self.meta(move |m| m.missing_chunks(caller.account, &ids)).await?;
        let sizes: Vec<(ChunkId, u64)> = chunks.iter().map(|(id, b)| (*id, b.len() as u64)).collect();
        let to_write: Vec<(ChunkId, Bytes)> =
            chunks.into_iter().filter(|(id, _)| missing.contains(id)).collect();
        let stored = u32::try_from(to_write.len()).unwrap_or(u32::MAX);
        let already_present = u32::try_from(sizes.len()).unwrap_or(u32::MAX).saturating_sub(stored);
        let mut written = Vec::new();
        if !to_write.is_empty() {
            Metrics::add(&m.chunks_stored, to_write.len() as u64);
            Metrics::add(&m.chunk_bytes_stored, to_write.iter().map(|(_, b)| b.len() as u64).sum());
            written = self
                .blobs(move |b| {
                    let blobs: Vec<(ChunkId, &[u8])> =
                        to_write.iter().map(|(id, b)| (*id, b.as_ref())).collect();
                    b.put_many(caller.account, &blobs)?;
                    Ok(to_write)
                })
                .await?;
        }
        let now = self.now();
        self.meta(move |m| m.record_chunks(caller.account, &sizes, now)).await?;
        if !written.is_empty() {
            // A collection may have deleted a blob between its write and its
            // record: it marked the chunk before `missing` (so the chunk was
            // sent), deleted it after the write and forgot its row before
            // the record, which then found nothing marked. Recorded now, the
            // chunks cannot be marked again within the grace period, so a
            // blob found gone is written once more and stays.
            self.blobs(move |b| {
                let lost =
                    b.lacking(caller.account, &written.iter().map(|(id, _)| *id).collect::<Vec<_>>())?;
                if lost.is_empty() {
                    return Ok(());
                }
                tracing::info!(
                    chunks = lost.len(),
                    "a collection removed chunks while they were uploaded; writing them again"
                );
                let lost: std::collections::HashSet<ChunkId> = lost.into_iter().collect();
                let again: Vec<(ChunkId, &[u8])> = written
                    .iter()
                    .filter(|(id, _)| lost.contains(id))
                    .map(|(id, b)| (*id, b.as_ref()))
                    .collect();
                b.put_many(caller.account, &again)
            })
            .await?;
        }
        Ok(UploadChunksResponse { stored, already_present })
    }

    /// The sealed bytes of those of `ids` the account has, in request
    /// order (see [`coffer_proto::api::GetChunksRequest`]).
    pub async fn download_chunks(
        &self,
        caller: Caller,
        ids: Vec<ChunkId>,
    ) -> Result<Vec<SealedChunk>, ServiceError> {
        check_count(ids.len())?;
        Metrics::add(&self.inner.metrics.chunk_requests, 1);
        let chunks = self
            .blobs(move |b| {
                let Some(blobs) = b.get_many(caller.account, &ids, MAX_BATCH_ANSWER_BYTES)? else {
                    return Ok(None);
                };
                Ok(Some(
                    ids.into_iter()
                        .zip(blobs)
                        .filter_map(|(id, bytes)| Some(SealedChunk::from_parts(id, bytes?)))
                        .collect::<Vec<_>>(),
                ))
            })
            .await?
            .ok_or_else(|| {
                ServiceError::BadRequest(format!(
                    "the chunks asked for exceed {MAX_BATCH_ANSWER_BYTES} bytes; ask for fewer"
                ))
            })?;
        Metrics::add(&self.inner.metrics.chunk_bytes_served, chunks.iter().map(|c| c.len() as u64).sum());
        Ok(chunks)
    }

    /// One chunk's sealed bytes.
    pub async fn download_chunk(&self, caller: Caller, id: ChunkId) -> Result<SealedChunk, ServiceError> {
        Metrics::add(&self.inner.metrics.chunk_requests, 1);
        let bytes =
            self.blobs(move |b| b.get(caller.account, id)).await?.ok_or(ServiceError::NotFound("chunk"))?;
        Metrics::add(&self.inner.metrics.chunk_bytes_served, bytes.len() as u64);
        Ok(SealedChunk::from_parts(id, bytes))
    }
}
