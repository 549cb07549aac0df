//! Long chunk lists kept in chunks of their own (metadata format 2).
//!
//! A file's metadata lists its chunks. For a 1 GiB file that is thousands
//! of entries, and every edit, however small, would reseal and resend all
//! of them, to the store and to every other device. So a list longer than
//! [`INLINE_MAX`] is cut into *pieces*; each piece (a run of the list in a
//! compact binary form) is sealed and stored exactly like a data chunk, and
//! the metadata lists the pieces instead. An edit then sends the changed data
//! chunks, the one or two pieces that name them, and short metadata.
//!
//! Where the list is cut depends only on the entries themselves (after an
//! entry whose keyed content hash ends a piece, like content-defined
//! chunking one level up), so inserting or changing a chunk changes only
//! the piece around it, and every other piece keeps its bytes, hence its
//! sealed form and its store id. A device that already holds the previous
//! list rebuilds those pieces itself ([`pieces`]) and fetches only the rest.
//! The cut uses the keyed hash, never the store id, so the store learns
//! nothing from where pieces end.
//!
//! A piece is `N × (store id (32) || content hash (32) || length (u32 LE))`.

use coffer_crypto::{AccountKeys, ContentHash};
use coffer_proto::{ChunkId, SealedChunk};

use crate::chunker::RawChunk;
use crate::ingest::seal_chunk;
use crate::model::ChunkRef;

/// Lists up to this long stay in the metadata (format 1).
pub const INLINE_MAX: usize = 64;
/// One entry's size in a piece.
const ENTRY: usize = 32 + 32 + 4;
/// A piece ends after an entry whose content hash, read as a number, is a
/// multiple of this (so pieces average about this many entries)...
const CUT_EVERY: u16 = 128;
/// ...once it holds at least this many...
const PIECE_MIN: usize = 16;
/// ...and always at this many (69,632 bytes).
const PIECE_MAX: usize = 1024;

/// One piece of a long list: its reference (for the metadata), its sealed
/// form (for the store) and its plaintext.
#[derive(Clone, Debug)]
pub struct Piece {
    /// What the metadata lists.
    pub r: ChunkRef,
    /// What the store keeps.
    pub sealed: SealedChunk,
    /// The encoded entries.
    pub plain: Vec<u8>,
}

/// Cuts `list` into sealed pieces; empty when the list stays inline.
pub fn pieces(keys: &AccountKeys, list: &[ChunkRef]) -> Vec<Piece> {
    if list.len() <= INLINE_MAX {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in list.iter().enumerate() {
        let len = i + 1 - start;
        let cut = i + 1 == list.len() || len >= PIECE_MAX || (len >= PIECE_MIN && ends_piece(&c.content));
        if cut {
            let plain = encode(&list[start..=i]);
            let s = seal_chunk(keys, &RawChunk::new(0, plain.clone()));
            out.push(Piece {
                r: ChunkRef { id: s.sealed.id(), content: s.content, len: s.len },
                sealed: s.sealed,
                plain,
            });
            start = i + 1;
        }
    }
    out
}

fn ends_piece(content: &ContentHash) -> bool {
    let b = content.as_bytes();
    u16::from_le_bytes([b[0], b[1]]) % CUT_EVERY == 0
}

/// Every id the store keeps for a revision with `list`: its data chunks
/// and, when its metadata keeps the list in pieces (`listed`; a revision
/// from before format 2 kept even a long list inline), those pieces.
/// Sorted, deduplicated.
pub fn store_ids(keys: &AccountKeys, list: &[ChunkRef], listed: bool) -> Vec<ChunkId> {
    let mut ids: Vec<ChunkId> = list.iter().map(|c| c.id).collect();
    if listed {
        ids.extend(pieces(keys, list).iter().map(|p| p.r.id));
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The binary form of a run of entries.
pub fn encode(list: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len() * ENTRY);
    for c in list {
        out.extend_from_slice(c.id.as_bytes());
        out.extend_from_slice(c.content.as_bytes());
        out.extend_from_slice(&c.len.to_le_bytes());
    }
    out
}

/// A list in the binary form, base64 (metadata format 3, the index); an
/// empty list is the empty string.
pub fn to_base64(list: &[ChunkRef]) -> String {
    if list.is_empty() {
        return String::new();
    }
    data_encoding::BASE64.encode(&encode(list))
}

/// Reads [`to_base64`]'s form back, checked as [`decode_refs`] checks.
pub fn from_base64(text: &str) -> Result<Vec<ChunkRef>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = data_encoding::BASE64
        .decode(text.as_bytes())
        .map_err(|_| "a chunk list is not base64".to_string())?;
    decode_refs(&bytes)
}

/// Reads a piece back. Refuses an empty piece, a torn entry, a piece
/// longer than [`PIECE_MAX`] entries and a zero-length chunk (no chunk is
/// empty: an empty file has no chunks).
pub fn decode(bytes: &[u8]) -> Result<Vec<ChunkRef>, String> {
    if bytes.len() / ENTRY > PIECE_MAX {
        return Err(format!("a chunk list piece of {} bytes is malformed", bytes.len()));
    }
    decode_refs(bytes)
}

/// Reads entries in the binary form of a piece, as many as there are (the
/// lists of metadata format 3). Refuses an empty run, a torn entry and a
/// zero-length chunk.
pub fn decode_refs(bytes: &[u8]) -> Result<Vec<ChunkRef>, String> {
    if bytes.is_empty() || bytes.len() % ENTRY != 0 {
        return Err(format!("a chunk list piece of {} bytes is malformed", bytes.len()));
    }
    bytes
        .chunks_exact(ENTRY)
        .map(|e| {
            let mut id = [0u8; 32];
            id.copy_from_slice(&e[..32]);
            let mut content = [0u8; 32];
            content.copy_from_slice(&e[32..64]);
            let len = u32::from_le_bytes([e[64], e[65], e[66], e[67]]);
            if len == 0 {
                return Err("a chunk list piece names an empty chunk".to_string());
            }
            Ok(ChunkRef { id: ChunkId::from_bytes(id), content: ContentHash::from_bytes(content), len })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use coffer_crypto::MasterKey;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn keys() -> AccountKeys {
        MasterKey::from_bytes([5; 32]).derive()
    }

    fn list(n: usize, seed: u64) -> Vec<ChunkRef> {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| ChunkRef {
                id: ChunkId::from_bytes(rng.gen()),
                content: ContentHash::from_bytes(rng.gen()),
                len: rng.gen_range(1..=1 << 20),
            })
            .collect()
    }

    #[test]
    fn short_lists_stay_inline() {
        assert!(pieces(&keys(), &list(INLINE_MAX, 1)).is_empty());
        assert_eq!(pieces(&keys(), &list(INLINE_MAX + 1, 1)).len(), 1);
        let l = list(10, 2);
        let mut ids: Vec<ChunkId> = l.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        assert_eq!(store_ids(&keys(), &l, true), ids);
    }

    #[test]
    fn pieces_round_trip_and_bound_their_size() {
        let l = list(10_000, 3);
        let p = pieces(&keys(), &l);
        let back: Vec<ChunkRef> = p.iter().flat_map(|p| decode(&p.plain).unwrap()).collect();
        assert_eq!(back, l);
        for piece in &p[..p.len() - 1] {
            let n = piece.plain.len() / ENTRY;
            assert!((PIECE_MIN..=PIECE_MAX).contains(&n), "{n} entries");
        }
        // About CUT_EVERY entries each on average (plus the minimum run).
        let avg = l.len() / p.len();
        assert!((64..=256).contains(&avg), "{avg} entries per piece on average");
        // Each piece is sealed like a chunk: its id is its sealed bytes' hash.
        for piece in &p {
            assert_eq!(piece.r.id, ChunkId::from_bytes(*blake3::hash(piece.sealed.as_bytes()).as_bytes()));
            let k = keys();
            let opened = k.chunk.open(&k.chunk_id, piece.r.id, &piece.r.content, piece.sealed.as_bytes());
            assert_eq!(opened.unwrap(), piece.plain);
        }
        assert_eq!(store_ids(&keys(), &l, true).len(), l.len() + p.len());
        assert_eq!(store_ids(&keys(), &l, false).len(), l.len(), "an inline list has no pieces on the store");
    }

    /// One changed entry, one inserted entry: every other piece keeps its
    /// id, so an edit sends one or two pieces whatever the file's size.
    #[test]
    fn an_edit_changes_only_the_pieces_around_it() {
        let l = list(8_192, 4);
        let before: Vec<ChunkId> = pieces(&keys(), &l).iter().map(|p| p.r.id).collect();
        let mut changed = l.clone();
        changed[4_000] = list(1, 99)[0];
        let mut inserted = l.clone();
        inserted.insert(6_000, list(1, 98)[0]);
        for edited in [changed, inserted] {
            let after: Vec<ChunkId> = pieces(&keys(), &edited).iter().map(|p| p.r.id).collect();
            let new = after.iter().filter(|id| !before.contains(id)).count();
            assert!((1..=2).contains(&new), "{new} new pieces of {}", after.len());
        }
    }

    #[test]
    fn decode_refuses_malformed_pieces() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0; ENTRY + 1]).is_err());
        assert!(decode(&[0; ENTRY]).is_err(), "an empty chunk");
        assert!(decode(&vec![1; ENTRY * (PIECE_MAX + 1)]).is_err());
        assert_eq!(decode(&encode(&list(3, 5))).unwrap(), list(3, 5));
    }
}
