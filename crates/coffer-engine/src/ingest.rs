//! The ingest pipeline: reader → chunks → (content hash, seal, store id),
//! using every core, delivering results in file order with bounded memory.
//!
//! One thread reads and chunks (FastCDC is sequential by nature); `workers`
//! threads each take whole chunks and hash, seal and id them; the calling
//! thread puts results back in order and hands them to a sink (the uploader,
//! or the benchmark). Channels are bounded, so at most about
//! `2 × workers + 2` chunks are in flight whatever the file size.

use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, SeekFrom};

use coffer_crypto::{AccountKeys, ContentHash};
use coffer_proto::SealedChunk;
use crossbeam_channel::bounded;

use crate::chunker::{ChunkerParams, Hints, RawChunk, StreamChunker};
use crate::fs::ReadFile;
use crate::model::ChunkRef;

/// One chunk after ingest.
#[derive(Debug, Clone)]
pub struct IngestedChunk {
    /// Offset of the chunk in the file.
    pub offset: u64,
    /// Plaintext length.
    pub len: u32,
    /// Keyed hash of the plaintext (goes into sealed metadata).
    pub content: ContentHash,
    /// The sealed bytes and their store id.
    pub sealed: SealedChunk,
}

/// What went wrong while ingesting.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Reading the source failed.
    #[error("reading the file failed: {0}")]
    Read(#[from] std::io::Error),
    /// The sink refused a chunk (its message says why).
    #[error("{0}")]
    Sink(String),
    /// The file no longer holds what its chunk list says: it changed.
    #[error("the file changed while it was read")]
    Changed,
}

/// Totals of one ingest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestSummary {
    /// Plaintext bytes read.
    pub bytes: u64,
    /// Chunks produced.
    pub chunks: u64,
}

/// Hashes and seals one chunk. The single place that defines what a chunk's
/// identity is, shared by the pipeline and by callers with one chunk at hand.
pub fn seal_chunk(keys: &AccountKeys, chunk: &RawChunk) -> IngestedChunk {
    seal_hashed(keys, chunk, chunk.content_hash(&keys.chunk_id))
}

/// [`seal_chunk`] with the content hash already computed.
fn seal_hashed(keys: &AccountKeys, chunk: &RawChunk, content: ContentHash) -> IngestedChunk {
    let sealed = keys.chunk.seal(&content, &chunk.data);
    IngestedChunk {
        offset: chunk.offset,
        len: u32::try_from(chunk.data.len()).expect("chunks are at most 16 MiB"),
        content,
        sealed,
    }
}

/// Ingests `reader` on `workers` threads (at least one), calling `sink` with
/// each chunk in file order. Stops at the first read or sink error; no more
/// chunks reach the sink after an error.
pub fn ingest<R, F>(
    reader: R,
    keys: &AccountKeys,
    params: ChunkerParams,
    workers: usize,
    sink: F,
) -> Result<IngestSummary, IngestError>
where
    R: Read + Send,
    F: FnMut(IngestedChunk) -> Result<(), String>,
{
    run(reader, keys, params, None, workers, |c| seal_chunk(keys, c), |c| c.len, sink)
}

/// A chunk of [`ingest_skipping`].
#[derive(Debug, Clone)]
pub enum Ingested {
    /// A chunk to send: hashed and sealed.
    Sealed(IngestedChunk),
    /// A chunk the caller named as already held (same content hash and
    /// length): hashed, not sealed (its store id is the one given).
    Known(ChunkRef),
}

/// The chunks of a file's base revision (the one an edit builds on, which
/// the store keeps), in order and by content hash: what an edit need not
/// seal or send again.
#[derive(Debug)]
pub struct BaseChunks {
    list: Vec<ChunkRef>,
    by_content: HashMap<ContentHash, ChunkRef>,
}

impl BaseChunks {
    /// `list` in file order (empty for a new file).
    pub fn new(list: Vec<ChunkRef>) -> Self {
        let by_content = list.iter().map(|c| (c.content, *c)).collect();
        Self { list, by_content }
    }

    /// The base's chunk with this content hash and length, if any.
    pub fn get(&self, content: &ContentHash, len: u32) -> Option<ChunkRef> {
        self.by_content.get(content).filter(|r| r.len == len).copied()
    }

    /// True when most of the bytes `scanned` lists are base chunks:
    /// [`ingest_changed`] then reads much less than the whole file.
    pub fn cover_most(&self, scanned: &[(ContentHash, u32)]) -> bool {
        let (mut total, mut old) = (0u64, 0u64);
        for (content, len) in scanned {
            total += u64::from(*len);
            if self.get(content, *len).is_some() {
                old += u64::from(*len);
            }
        }
        old * 2 >= total
    }
}

/// Like [`ingest`], but for a file whose previous chunks were `base` (none
/// for a new file), and which a scan may just have chunked (`scanned`):
/// that list, or else `base`, guides the chunker (no FastCDC over what did
/// not change, see [`Hints`]), and a chunk whose content hash and length
/// match one of `base` is not sealed. An edit of a large file seals only
/// what changed.
#[allow(clippy::too_many_arguments)]
pub fn ingest_skipping<R, F>(
    reader: R,
    keys: &AccountKeys,
    params: ChunkerParams,
    workers: usize,
    base: &BaseChunks,
    scanned: Option<Vec<(ContentHash, u32)>>,
    sink: F,
) -> Result<IngestSummary, IngestError>
where
    R: Read + Send,
    F: FnMut(Ingested) -> Result<(), String>,
{
    let hints = Hints::new(
        &keys.chunk_id,
        scanned.unwrap_or_else(|| base.list.iter().map(|c| (c.content, c.len)).collect()),
    );
    let work = |c: &RawChunk| {
        let content = c.content_hash(&keys.chunk_id);
        match u32::try_from(c.data.len()).ok().and_then(|len| base.get(&content, len)) {
            Some(r) => Ingested::Known(r),
            None => Ingested::Sealed(seal_hashed(keys, c, content)),
        }
    };
    let len = |i: &Ingested| match i {
        Ingested::Sealed(c) => c.len,
        Ingested::Known(r) => r.len,
    };
    run(reader, keys, params, Some(hints), workers, work, len, sink)
}

/// For a file the scan has just chunked (`scanned`, taken at the stat the
/// caller still sees) whose chunks are mostly `base`'s
/// ([`BaseChunks::cover_most`]): those (same content hash and length) are
/// named, neither read nor sealed, and the reader
/// seeks past them. Each other chunk is read where the list puts it,
/// checked against the content hash the scan found, and sealed; one that
/// no longer matches, or ends early, is [`IngestError::Changed`]. (A change
/// in what is not read again, as in its length, is for the caller's stat
/// check after reading to see, as for the scan's own stat cache.) An edit
/// of a large file is read once by the scan and then only where it
/// changed, not a second time in full.
pub fn ingest_changed<F>(
    reader: &mut dyn ReadFile,
    keys: &AccountKeys,
    base: &BaseChunks,
    scanned: &[(ContentHash, u32)],
    mut sink: F,
) -> Result<IngestSummary, IngestError>
where
    F: FnMut(Ingested) -> Result<(), String>,
{
    let mut summary = IngestSummary::default();
    let (mut offset, mut at) = (0u64, 0u64);
    for &(content, len) in scanned {
        let item = match base.get(&content, len) {
            Some(r) => Ingested::Known(r),
            None => {
                if at != offset {
                    reader.seek(SeekFrom::Start(offset))?;
                }
                let mut data = vec![0u8; len as usize];
                match reader.read_exact(&mut data) {
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Err(IngestError::Changed),
                    r => r?,
                }
                at = offset + u64::from(len);
                summary.bytes += u64::from(len);
                let chunk = RawChunk::new(offset, data);
                if chunk.content_hash(&keys.chunk_id) != content {
                    return Err(IngestError::Changed);
                }
                Ingested::Sealed(seal_hashed(keys, &chunk, content))
            }
        };
        offset += u64::from(len);
        summary.chunks += 1;
        sink(item).map_err(IngestError::Sink)?;
    }
    Ok(summary)
}

/// The pipeline: chunks on this thread's helper (with `hints`, if any),
/// `work` on `workers` threads, `sink` in file order.
#[allow(clippy::too_many_arguments)]
fn run<R, T, W, L, F>(
    reader: R,
    keys: &AccountKeys,
    params: ChunkerParams,
    hints: Option<Hints>,
    workers: usize,
    work: W,
    len: L,
    mut sink: F,
) -> Result<IngestSummary, IngestError>
where
    R: Read + Send,
    T: Send,
    W: Fn(&RawChunk) -> T + Sync,
    L: Fn(&T) -> u32,
    F: FnMut(T) -> Result<(), String>,
{
    let workers = workers.max(1);
    let (raw_tx, raw_rx) = bounded::<(u64, RawChunk)>(workers + 1);
    let (out_tx, out_rx) = bounded::<(u64, T)>(workers + 1);
    std::thread::scope(|s| {
        let reader_thread = s.spawn(move || -> Result<(), std::io::Error> {
            let chunker = StreamChunker::new(reader, params, &keys.chunker_seed).with_hints(hints);
            for (i, chunk) in chunker.enumerate() {
                if raw_tx.send((i as u64, chunk?)).is_err() {
                    break; // the consumer stopped: an error downstream
                }
            }
            Ok(())
        });
        for _ in 0..workers {
            let (rx, tx, work) = (raw_rx.clone(), out_tx.clone(), &work);
            s.spawn(move || {
                for (i, chunk) in rx {
                    if tx.send((i, work(&chunk))).is_err() {
                        break;
                    }
                }
            });
        }
        drop((raw_rx, out_tx));

        let mut summary = IngestSummary::default();
        let mut pending = BTreeMap::new();
        let mut sink_error = None;
        for (i, done) in &out_rx {
            pending.insert(i, done);
            while let Some(done) = pending.remove(&summary.chunks) {
                summary.chunks += 1;
                summary.bytes += u64::from(len(&done));
                if let Err(e) = sink(done) {
                    sink_error = Some(e);
                    break;
                }
            }
            if sink_error.is_some() {
                break;
            }
        }
        drop(out_rx); // unblocks the workers, then the reader, on error
        let read_result = reader_thread.join().expect("the chunker thread does not panic");
        if let Some(e) = sink_error {
            return Err(IngestError::Sink(e));
        }
        read_result?;
        Ok(summary)
    })
}

#[cfg(test)]
mod tests {
    use std::io;

    use coffer_crypto::MasterKey;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn data(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        ChaCha8Rng::seed_from_u64(5).fill_bytes(&mut v);
        v
    }

    const SMALL: ChunkerParams = ChunkerParams { min: 4096, avg: 16384, max: 65536 };

    /// The chunks of `input`, cut and sealed one after another.
    fn sealed_serially(keys: &AccountKeys, input: &[u8]) -> Vec<IngestedChunk> {
        StreamChunker::new(input, SMALL, &keys.chunker_seed).map(|c| seal_chunk(keys, &c.unwrap())).collect()
    }

    #[test]
    fn in_order_and_identical_to_serial() {
        let keys = MasterKey::from_bytes([1; 32]).derive();
        let input = data(4 << 20);
        let serial = sealed_serially(&keys, &input);
        for workers in [1, 2, 4] {
            let mut got = Vec::new();
            let summary = ingest(&input[..], &keys, SMALL, workers, |c| {
                got.push(c);
                Ok(())
            })
            .unwrap();
            assert_eq!(summary.bytes, input.len() as u64);
            assert_eq!(summary.chunks as usize, serial.len());
            let ids: Vec<_> = got.iter().map(|c| (c.offset, c.sealed.id())).collect();
            let want: Vec<_> = serial.iter().map(|c| (c.offset, c.sealed.id())).collect();
            assert_eq!(ids, want, "{workers} workers");
        }
        // And every sealed chunk opens back to its plaintext.
        let mut rebuilt = Vec::new();
        for c in &serial {
            rebuilt.extend(
                keys.chunk.open(&keys.chunk_id, c.sealed.id(), &c.content, c.sealed.as_bytes()).unwrap(),
            );
        }
        assert_eq!(rebuilt, input);
    }

    /// A scan's list of the file (or a wrong one) only spares FastCDC: the
    /// chunks are those of a plain ingest, and none is skipped without a base.
    #[test]
    fn a_scanned_list_gives_the_same_chunks() {
        let keys = MasterKey::from_bytes([1; 32]).derive();
        let input = data(4 << 20);
        let plain = sealed_serially(&keys, &input);
        let scanned: Vec<(ContentHash, u32)> = plain.iter().map(|c| (c.content, c.len)).collect();
        let mut wrong = scanned.clone();
        wrong.iter_mut().step_by(3).for_each(|(_, len)| *len += 2);
        for list in [scanned, wrong] {
            let mut got = Vec::new();
            ingest_skipping(&input[..], &keys, SMALL, 2, &BaseChunks::new(Vec::new()), Some(list), |c| {
                match c {
                    Ingested::Sealed(c) => got.push((c.offset, c.sealed.id())),
                    Ingested::Known(_) => panic!("nothing is known without a base"),
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(got, plain.iter().map(|c| (c.offset, c.sealed.id())).collect::<Vec<_>>());
        }
    }

    #[test]
    fn sink_error_stops_the_pipeline() {
        let keys = MasterKey::from_bytes([1; 32]).derive();
        let input = data(4 << 20);
        let mut seen = 0;
        let err = ingest(&input[..], &keys, SMALL, 2, |_| {
            seen += 1;
            if seen == 3 {
                Err("store full".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(seen, 3);
        assert!(matches!(err, IngestError::Sink(m) if m == "store full"));
    }

    /// A reader that counts the bytes it hands out.
    struct Counting {
        inner: io::Cursor<Vec<u8>>,
        read: u64,
    }

    impl Read for Counting {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(out)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl io::Seek for Counting {
        fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }

    /// The list of `input` as the scan gives it, and as a base revision has it.
    fn lists(keys: &AccountKeys, input: &[u8]) -> (Vec<(ContentHash, u32)>, Vec<ChunkRef>) {
        let sealed = sealed_serially(keys, input);
        let scanned = sealed.iter().map(|c| (c.content, c.len)).collect();
        let base =
            sealed.iter().map(|c| ChunkRef { id: c.sealed.id(), content: c.content, len: c.len }).collect();
        (scanned, base)
    }

    /// A 4 MiB file (the base revision's list) edited at byte `at`: the
    /// new bytes and the list the scan gives for them.
    struct Edit {
        keys: AccountKeys,
        old: Vec<u8>,
        base: BaseChunks,
        new: Vec<u8>,
        scanned: Vec<(ContentHash, u32)>,
    }

    fn edited(at: usize) -> Edit {
        let keys = MasterKey::from_bytes([1; 32]).derive();
        let old = data(4 << 20);
        let (_, base) = lists(&keys, &old);
        let mut new = old.clone();
        new[at] ^= 1;
        let (scanned, _) = lists(&keys, &new);
        Edit { keys, old, base: BaseChunks::new(base), new, scanned }
    }

    #[test]
    fn an_edit_is_read_only_where_it_changed() {
        let Edit { keys, old, base, new, scanned } = edited(2 << 20);
        assert!(base.cover_most(&scanned));
        let mut reader = Counting { inner: io::Cursor::new(new.clone()), read: 0 };
        let mut got = Vec::new();
        let summary = ingest_changed(&mut reader, &keys, &base, &scanned, |c| {
            got.push(c);
            Ok(())
        })
        .unwrap();
        // The same sealed chunks as ingesting the whole new file.
        let serial = sealed_serially(&keys, &new);
        assert_eq!(got.len(), serial.len());
        let mut sealed_bytes = 0;
        for (g, s) in got.iter().zip(&serial) {
            match g {
                Ingested::Known(r) => assert_eq!((r.content, r.len), (s.content, s.len)),
                Ingested::Sealed(c) => {
                    assert_eq!((c.offset, c.content, c.sealed.id()), (s.offset, s.content, s.sealed.id()));
                    sealed_bytes += u64::from(c.len);
                }
            }
        }
        assert!(sealed_bytes > 0 && sealed_bytes <= 2 * SMALL.max as u64, "{sealed_bytes}");
        assert_eq!(reader.read, sealed_bytes, "read only the changed chunks");
        assert_eq!(summary.bytes, sealed_bytes);
        // Another file shares nothing with the old one's list.
        let other: Vec<u8> = old.iter().rev().copied().collect();
        assert!(!base.cover_most(&lists(&keys, &other).0));
    }

    #[test]
    fn a_file_that_no_longer_matches_the_scan_is_changed() {
        let Edit { keys, base, new, scanned, .. } = edited(1 << 20);
        // Changed again after the scan, in the chunk it found changed...
        let mut later = new.clone();
        later[1 << 20] ^= 2;
        let r = ingest_changed(&mut io::Cursor::new(later), &keys, &base, &scanned, |_| Ok(()));
        assert!(matches!(r, Err(IngestError::Changed)), "{r:?}");
        // ...or cut short in it.
        let r =
            ingest_changed(&mut io::Cursor::new(new[..1 << 20].to_vec()), &keys, &base, &scanned, |_| Ok(()));
        assert!(matches!(r, Err(IngestError::Changed)), "{r:?}");
    }

    #[test]
    fn read_error_is_reported() {
        struct FailAfter(usize);
        impl Read for FailAfter {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("I/O error on the device"));
                }
                let n = out.len().min(self.0);
                out[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let keys = MasterKey::from_bytes([1; 32]).derive();
        let err = ingest(FailAfter(1 << 20), &keys, SMALL, 2, |_| Ok(())).unwrap_err();
        assert!(matches!(err, IngestError::Read(_)), "{err}");
    }
}
