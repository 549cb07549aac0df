//! Streaming content-defined chunking (FastCDC 2020) over any reader, with
//! bounded memory: one buffer of `4 × max` bytes, whatever the file size.
//!
//! Boundaries depend only on content (and on the account's gear seed), so an
//! insertion changes only the chunks around it. Cut points are exactly those
//! that FastCDC finds over the whole file in memory: the buffer always holds at
//! least `max` bytes past the current position unless the reader is exhausted.
//!
//! The gear table is XORed with the account's [`ChunkerSeed`], so chunk sizes
//! (which the store sees) do not fingerprint well-known files.
//!
//! A file cut before can be cut again faster with [`StreamChunker::with_hints`]:
//! given the old version's chunk list, a stretch that still holds an old
//! chunk's bytes is taken as that chunk after checking its content hash and
//! that FastCDC would cut exactly there, without running FastCDC over it.
//! The cuts are the same as without hints (see [`Hints`]).

use std::borrow::Cow;
use std::io::{self, Read};

use coffer_crypto::{ChunkIdKey, ChunkerSeed, ContentHash};
use fastcdc::v2020::{cut_gear, get_gear_with_seed, select_masks, Normalization};

/// How tightly chunk sizes gather around the average (FastCDC's normalized
/// chunking). Level 2 rather than 1: an edit resends the chunk it falls in,
/// which is more often a large one (a byte is likelier to lie in a large
/// chunk than in a small one), so a narrower spread sends fewer bytes per
/// edit for the same average (the W3 benchmark).
const NORMALIZATION: Normalization = Normalization::Level2;

/// Chunk size bounds in bytes. The benchmark tunes the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    /// No chunk is smaller, except the last one of a file.
    pub min: usize,
    /// The target average.
    pub avg: usize,
    /// No chunk is larger.
    pub max: usize,
}

impl Default for ChunkerParams {
    /// 24 KiB / 80 KiB / 320 KiB: the sizes a new account gets (its
    /// settings keep them; see [`crate::settings`]), tuned with the
    /// side-by-side benchmark and `coffer-bench chunk-sizes`
    /// (docs/benchmarks.md, seventh pass). A one-byte edit resends the
    /// chunk it falls in on both links: with these sizes that chunk has a
    /// median of 90 KiB and a 90th percentile of 120 KiB (32/128/512: 147
    /// and 193), so an edit of a 1 GiB file costs 230–360 KB on the wire
    /// instead of 330–540. The price is the number of chunks: 12,000 a
    /// GiB instead of 7,200, which W1 pays (about 10 % in A/B).
    fn default() -> Self {
        Self { min: 24 << 10, avg: 80 << 10, max: 320 << 10 }
    }
}

impl ChunkerParams {
    /// 32 KiB / 128 KiB / 512 KiB: the sizes of every account made before
    /// the sizes were a setting of the account. With them the chunk a
    /// one-byte edit falls in has a median of 147 KiB.
    pub const LEGACY: Self = Self { min: 32 << 10, avg: 128 << 10, max: 512 << 10 };

    /// Parses `MIN,AVG,MAX` in KiB (as `COFFER_CHUNK_KIB` and the
    /// benchmark take them) and checks the bounds.
    pub fn parse_kib(text: &str) -> Result<Self, String> {
        let kib: Vec<usize> = text
            .split(',')
            .map(|n| n.trim().parse::<usize>().map(|k| k << 10))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("expected three sizes in KiB, like 24,80,320: {e}"))?;
        let [min, avg, max] = kib[..] else {
            return Err("expected three sizes in KiB (min, average, max)".into());
        };
        let params = Self { min, avg, max };
        params.validate().map(|()| params).map_err(str::to_string)
    }

    /// Checks the bounds against what FastCDC supports.
    pub fn validate(&self) -> Result<(), &'static str> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max
            && self.min % 2 == 0
            && self.avg % 2 == 0
            && self.max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err("chunk sizes must be even, ordered min <= avg <= max, and within FastCDC's limits")
        }
    }
}

/// One chunk of a stream: where it starts and its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct RawChunk {
    /// Offset of the first byte in the stream.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// Its keyed content hash, when the chunker already computed it (a
    /// chunk matched to a hint); `None` otherwise.
    pub hash: Option<ContentHash>,
}

impl RawChunk {
    /// A chunk whose hash is not known yet.
    pub fn new(offset: u64, data: Vec<u8>) -> Self {
        Self { offset, data, hash: None }
    }

    /// Its keyed content hash: the one the chunker computed, or computed now.
    pub fn content_hash(&self, key: &ChunkIdKey) -> ContentHash {
        self.hash.unwrap_or_else(|| key.content_hash(&self.data))
    }
}

/// A file's previous chunk list, which lets [`StreamChunker`] skip FastCDC
/// over what did not change.
///
/// At each cut the chunker tries the old chunk that should start there
/// (following the shift of the last old chunk it matched, so an insertion
/// or deletion does not throw it off): if the next bytes have that chunk's
/// length and keyed content hash, and FastCDC's cut condition holds at its
/// end, the chunk is taken as is. That is the cut FastCDC makes: its
/// decision for a chunk depends only on the chunk's bytes (no earlier
/// candidate point fired, as the old chunk's own cut shows) and on the
/// gear hash at the cut itself, which the check recomputes from the 64
/// bytes before it. The old list's last chunk, cut by the end of the
/// file, is never taken. Where nothing matches, FastCDC runs as usual.
///
/// This holds when the old list was cut with the same parameters and seed,
/// as every list of the account is; with any other list the chunks are
/// still exactly the file's bytes, only perhaps not where FastCDC cuts.
#[derive(Clone)]
pub struct Hints {
    key: ChunkIdKey,
    /// (content hash, length) of the old chunks, in file order.
    chunks: Vec<(ContentHash, u32)>,
    /// Where each old chunk started in the old file.
    starts: Vec<u64>,
    /// New offset minus old offset of the last chunk matched.
    shift: i128,
}

impl std::fmt::Debug for Hints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hints").field("chunks", &self.chunks.len()).field("shift", &self.shift).finish()
    }
}

impl Hints {
    /// Hints from a file's previous chunks (content hash and length, in
    /// order), hashed with the account's chunk id key.
    pub fn new(key: &ChunkIdKey, chunks: Vec<(ContentHash, u32)>) -> Self {
        let mut at = 0u64;
        let starts = chunks
            .iter()
            .map(|(_, len)| {
                let start = at;
                at += u64::from(*len);
                start
            })
            .collect();
        Self { key: key.clone(), chunks, starts, shift: 0 }
    }

    /// The old chunk to take at `offset`, if one fits `avail` (the bytes
    /// from `offset` on, at least `max` of them unless the file ends):
    /// its hash and length.
    fn take(&mut self, offset: u64, avail: &[u8], c: &Cutter<'_>) -> Option<(ContentHash, usize)> {
        let n = self.chunks.len();
        let old = i128::from(offset) - self.shift;
        let next = self.starts.partition_point(|s| i128::from(*s) < old);
        // Aligned with an old cut: that chunk. Otherwise the old chunk the
        // offset falls in (after an insertion) and the next (after a deletion).
        let aligned = next < n && i128::from(self.starts[next]) == old;
        let candidates = if aligned { [Some(next), None] } else { [next.checked_sub(1), Some(next)] };
        for j in candidates.into_iter().flatten() {
            // The last old chunk was cut by the end of the file, not by FastCDC.
            if j + 1 >= n {
                continue;
            }
            let (hash, len) = self.chunks[j];
            let len = len as usize;
            if !c.cuts_at(avail, len) {
                continue;
            }
            if self.key.content_hash(&avail[..len]) == hash {
                self.shift = i128::from(offset) - i128::from(self.starts[j]);
                return Some((hash, len));
            }
        }
        None
    }
}

/// FastCDC's parameters, masks and gear tables for one chunker.
struct Cutter<'a> {
    params: ChunkerParams,
    masks: (u64, u64),
    gear: &'a [u64],
}

impl Cutter<'_> {
    /// Whether FastCDC, started at the beginning of `avail`, would cut it
    /// after exactly `len` bytes, given that it found no earlier cut in
    /// them (which a chunk cut before with the same bytes guarantees).
    fn cuts_at(&self, avail: &[u8], len: usize) -> bool {
        let ChunkerParams { min, avg, max } = self.params;
        if len < min || len > max || len > avail.len() {
            return false;
        }
        // FastCDC looks at no more than `max` bytes, and tests candidate
        // points in pairs, so with an odd count the last one is not tested.
        let remaining = avail.len().min(max);
        if len == max {
            // Cut by the size limit: no candidate fired before it.
            return remaining == max;
        }
        if len >= remaining / 2 * 2 {
            return false;
        }
        // The gear hash at the candidate point `len` (the byte that makes
        // FastCDC cut there is the first of the next chunk): it accumulates
        // from `min`, each step shifting left, so only the last 64 bytes count.
        let mut hash: u64 = 0;
        for &b in &avail[min.max(len.saturating_sub(63))..=len] {
            hash = (hash << 1).wrapping_add(self.gear[usize::from(b)]);
        }
        let (mask_s, mask_l) = self.masks;
        let mask = if len < avg { mask_s } else { mask_l };
        // FastCDC tests even points on the hash shifted left by one, with
        // the mask shifted too (its `_ls` tables and masks).
        if len % 2 == 0 {
            (hash << 1) & (mask << 1) == 0
        } else {
            hash & mask == 0
        }
    }
}

impl std::fmt::Debug for RawChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawChunk {{ offset: {}, len: {} }}", self.offset, self.data.len())
    }
}

/// An iterator of [`RawChunk`]s over a reader.
pub struct StreamChunker<R> {
    reader: R,
    params: ChunkerParams,
    masks: (u64, u64),
    gear: (Cow<'static, [u64]>, Cow<'static, [u64]>),
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    offset: u64,
    failed: bool,
    hints: Option<Hints>,
}

impl<R> std::fmt::Debug for StreamChunker<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamChunker").field("params", &self.params).field("offset", &self.offset).finish()
    }
}

impl<R: Read> StreamChunker<R> {
    /// Chunks `reader` with `params` and the account's gear `seed`.
    ///
    /// # Panics
    /// If `params` fails [`ChunkerParams::validate`] (a programming error:
    /// parameters are constants or validated config).
    pub fn new(reader: R, params: ChunkerParams, seed: &ChunkerSeed) -> Self {
        if let Err(e) = params.validate() {
            panic!("invalid chunker parameters {params:?}: {e}");
        }
        Self {
            reader,
            params,
            masks: select_masks(params.avg, NORMALIZATION),
            gear: get_gear_with_seed(seed.expose_secret()),
            buf: vec![0; params.max * 4],
            start: 0,
            end: 0,
            eof: false,
            offset: 0,
            failed: false,
            hints: None,
        }
    }

    /// Uses a previous version's chunk list to skip FastCDC where the file
    /// did not change (same cuts; see [`Hints`]). Hinted chunks come with
    /// their content hash.
    pub fn with_hints(mut self, hints: Option<Hints>) -> Self {
        self.hints = hints.filter(|h| h.chunks.len() > 1);
        self
    }

    /// Refills so that at least `max` bytes follow `start`, or the reader is
    /// exhausted.
    fn fill(&mut self) -> io::Result<()> {
        if self.end - self.start >= self.params.max || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Finds the next chunk: its length and, when a hint gave it, its
    /// content hash. Its bytes are `buf[start..start + len]`; [`Self::consume`]
    /// moves past them.
    fn next_span(&mut self) -> io::Result<Option<(usize, Option<ContentHash>)>> {
        self.fill()?;
        let avail = &self.buf[self.start..self.end];
        if avail.is_empty() {
            return Ok(None);
        }
        if let Some(hints) = self.hints.as_mut() {
            let cutter = Cutter { params: self.params, masks: self.masks, gear: &self.gear.0 };
            if let Some((hash, len)) = hints.take(self.offset, avail, &cutter) {
                return Ok(Some((len, Some(hash))));
            }
        }
        let (mask_s, mask_l) = self.masks;
        let (_, len) = cut_gear(
            avail,
            self.params.min,
            self.params.avg,
            self.params.max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &self.gear.0,
            &self.gear.1,
        );
        Ok(Some((len, None)))
    }

    fn consume(&mut self, len: usize) {
        self.start += len;
        self.offset += len as u64;
    }

    fn next_chunk(&mut self) -> io::Result<Option<RawChunk>> {
        let Some((len, hash)) = self.next_span()? else { return Ok(None) };
        let chunk =
            RawChunk { offset: self.offset, data: self.buf[self.start..self.start + len].to_vec(), hash };
        self.consume(len);
        Ok(Some(chunk))
    }

    /// The next chunk's keyed content hash and length, hashed where it lies
    /// in the buffer: for a caller that needs no more (the scan), this
    /// spares copying every byte of the file out.
    pub fn next_hash(&mut self, key: &ChunkIdKey) -> io::Result<Option<(ContentHash, u32)>> {
        let Some((len, hash)) = self.next_span()? else { return Ok(None) };
        let hash = hash.unwrap_or_else(|| key.content_hash(&self.buf[self.start..self.start + len]));
        self.consume(len);
        // A chunk is at most `max` bytes, which FastCDC caps far below 4 GiB.
        Ok(Some((hash, len as u32)))
    }
}

impl<R: Read> Iterator for StreamChunker<R> {
    type Item = io::Result<RawChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_chunk() {
            Ok(c) => c.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    fn chunk_all(data: &[u8], params: ChunkerParams, seed: u64) -> Vec<RawChunk> {
        StreamChunker::new(data, params, &ChunkerSeed::from_u64(seed)).map(|c| c.unwrap()).collect()
    }

    /// The cuts are part of every account's data (a file's hash is that of
    /// its chunk list), so they are frozen for both sets of sizes in use:
    /// a change in FastCDC, the normalization or the seeding that moves a
    /// cut breaks this test, not the users' sync.
    #[test]
    fn cut_points_are_frozen_for_the_sizes_in_use() {
        let data = random(8 << 20, 2026);
        for (params, frozen) in [
            (ChunkerParams::LEGACY, FROZEN_LEGACY_CUTS),
            (ChunkerParams { min: 24 << 10, avg: 80 << 10, max: 320 << 10 }, FROZEN_CUTS),
        ] {
            let ends: Vec<u64> =
                chunk_all(&data, params, 77).iter().map(|c| c.offset + c.data.len() as u64).collect();
            let mut h = blake3::Hasher::new();
            for e in &ends {
                h.update(&e.to_le_bytes());
            }
            let got = format!("{} cuts {}", ends.len(), &h.finalize().to_hex()[..16]);
            assert_eq!(got, frozen, "{params:?}");
        }
        assert_eq!(ChunkerParams::default(), ChunkerParams { min: 24 << 10, avg: 80 << 10, max: 320 << 10 });
    }

    #[test]
    fn sizes_parse_from_kib() {
        assert_eq!(ChunkerParams::parse_kib(" 24, 80,320").unwrap(), ChunkerParams::default());
        assert!(ChunkerParams::parse_kib("24,80").unwrap_err().contains("three sizes"));
        assert!(ChunkerParams::parse_kib("24,eighty,320").unwrap_err().contains("three sizes"));
        assert!(ChunkerParams::parse_kib("320,80,24").unwrap_err().contains("ordered"));
    }

    const FROZEN_LEGACY_CUTS: &str = "60 cuts 545012924e209c77";
    const FROZEN_CUTS: &str = "94 cuts e678323f922a9ab3";

    /// A reader that returns at most `step` bytes a call, to exercise refills.
    struct Dribble<'a>(&'a [u8], usize);
    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn set(chunks: &[RawChunk]) -> HashSet<Vec<u8>> {
        chunks.iter().map(|c| c.data.clone()).collect()
    }

    #[test]
    fn covers_the_input_and_respects_bounds() {
        let p = ChunkerParams::default();
        let data = random(24 << 20, 1);
        let chunks = chunk_all(&data, p, 7);
        let mut off = 0u64;
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.offset, off);
            assert!(c.data.len() <= p.max);
            if i + 1 < chunks.len() {
                assert!(c.data.len() >= p.min);
            }
            off += c.data.len() as u64;
        }
        assert_eq!(off, data.len() as u64);
        assert_eq!(chunks.iter().flat_map(|c| c.data.iter().copied()).collect::<Vec<_>>(), data);
        // Average near the target (random data): between avg/2 and 2*avg.
        let avg = data.len() / chunks.len();
        assert!(avg > p.avg / 2 && avg < p.avg * 2, "average {avg}");
    }

    #[test]
    fn same_cuts_as_fastcdc_in_memory_whatever_the_read_size() {
        let p = ChunkerParams { min: 4096, avg: 16384, max: 65536 };
        let data = random(3 << 20, 2);
        let reference: Vec<usize> =
            fastcdc::v2020::FastCDC::with_level_and_seed(&data, 4096, 16384, 65536, NORMALIZATION, 99)
                .map(|c| c.length)
                .collect();
        for step in [1 << 20, 65536, 4097, 1000] {
            let got: Vec<usize> = StreamChunker::new(Dribble(&data, step), p, &ChunkerSeed::from_u64(99))
                .map(|c| c.unwrap().data.len())
                .collect();
            assert_eq!(got, reference, "read size {step}");
        }
    }

    #[test]
    fn seed_changes_boundaries() {
        let p = ChunkerParams { min: 4096, avg: 16384, max: 65536 };
        let data = random(1 << 20, 3);
        let a: Vec<u64> = chunk_all(&data, p, 1).iter().map(|c| c.offset).collect();
        let b: Vec<u64> = chunk_all(&data, p, 2).iter().map(|c| c.offset).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn empty_and_tiny_inputs() {
        assert!(chunk_all(&[], ChunkerParams::default(), 1).is_empty());
        let one = chunk_all(b"x", ChunkerParams::default(), 1);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].data, b"x");
    }

    #[test]
    fn read_errors_surface_once() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut it = StreamChunker::new(Broken, ChunkerParams::default(), &ChunkerSeed::from_u64(1));
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }

    /// The property the issue asks for, at the default sizes over 64 MiB:
    /// 10 bytes inserted in the middle change at most 3 chunks; one flipped
    /// byte changes exactly one.
    #[test]
    fn edits_change_few_chunks_64mib() {
        let p = ChunkerParams::default();
        for seed in 0..3u64 {
            let data = random(64 << 20, 100 + seed);
            let before = chunk_all(&data, p, seed + 1);
            let old = set(&before);

            let mid = data.len() / 2 + usize::try_from(seed).unwrap() * 12345;
            let mut inserted = data.clone();
            inserted.splice(mid..mid, *b"0123456789");
            let after = chunk_all(&inserted, p, seed + 1);
            let new_chunks = after.iter().filter(|c| !old.contains(&c.data)).count();
            assert!(new_chunks <= 3, "insert changed {new_chunks} chunks");

            let mut flipped = data.clone();
            flipped[mid] ^= 0x5a;
            let after = chunk_all(&flipped, p, seed + 1);
            let new_chunks = after.iter().filter(|c| !old.contains(&c.data)).count();
            assert_eq!(new_chunks, 1, "one flipped byte");
            assert_eq!(after.len(), before.len());
        }
    }

    const SMALL: ChunkerParams = ChunkerParams { min: 1024, avg: 4096, max: 16384 };

    fn key() -> ChunkIdKey {
        ChunkIdKey::from_bytes([7; 32])
    }

    fn hints_of(chunks: &[RawChunk]) -> Hints {
        Hints::new(
            &key(),
            chunks.iter().map(|c| (key().content_hash(&c.data), c.data.len() as u32)).collect(),
        )
    }

    fn chunk_hinted(data: &[u8], params: ChunkerParams, seed: u64, hints: Hints) -> Vec<RawChunk> {
        StreamChunker::new(data, params, &ChunkerSeed::from_u64(seed))
            .with_hints(Some(hints))
            .map(|c| c.unwrap())
            .collect()
    }

    /// Every chunk FastCDC cuts (but the last) passes the hint's cut check,
    /// and a point one byte off does not.
    #[test]
    fn cut_check_agrees_with_fastcdc() {
        for (params, seed) in [(SMALL, 3u64), (ChunkerParams::default(), 5)] {
            let data = random(8 << 20, seed);
            let chunks = chunk_all(&data, params, seed);
            let gear = get_gear_with_seed(ChunkerSeed::from_u64(seed).expose_secret());
            let cutter = Cutter { params, masks: select_masks(params.avg, NORMALIZATION), gear: &gear.0 };
            let mut off_by_one = 0;
            for c in &chunks[..chunks.len() - 1] {
                let avail = &data[c.offset as usize..];
                assert!(cutter.cuts_at(avail, c.data.len()), "chunk at {}", c.offset);
                off_by_one += usize::from(cutter.cuts_at(avail, c.data.len() + 1));
            }
            assert!(off_by_one * 100 < chunks.len(), "{off_by_one} of {}", chunks.len());
        }
    }

    /// A one-byte change in a large file: the same chunks as without hints,
    /// all but one or two taken from the hints.
    #[test]
    fn hints_skip_what_did_not_change() {
        let p = ChunkerParams::default();
        let data = random(32 << 20, 11);
        let before = chunk_all(&data, p, 4);
        for edit in 0..4 {
            let mut edited = data.clone();
            match edit {
                0 => edited[data.len() / 2] ^= 1,
                1 => drop(edited.splice(10 << 20..10 << 20, *b"0123456789")),
                2 => drop(edited.drain(20 << 20..(20 << 20) + 777)),
                // The byte that made FastCDC cut chunk 100 (the next one's
                // first): chunk 100's bytes are unchanged, its cut is not.
                _ => edited[before[101].offset as usize] ^= 0x80,
            }
            let plain = chunk_all(&edited, p, 4);
            let hinted = chunk_hinted(&edited, p, 4, hints_of(&before));
            assert_eq!(
                hinted,
                plain
                    .iter()
                    .map(|c| RawChunk { hash: hinted_hash(&hinted, c), ..c.clone() })
                    .collect::<Vec<_>>()
            );
            let taken = hinted.iter().filter(|c| c.hash.is_some()).count();
            assert!(taken + 4 >= hinted.len(), "edit {edit}: {taken} of {} from hints", hinted.len());
            for c in &hinted {
                if let Some(h) = c.hash {
                    assert_eq!(h, key().content_hash(&c.data));
                }
            }
        }
    }

    /// `next_hash` gives the iterator's chunks' hashes and lengths, with
    /// hints and without, and stops at the end.
    #[test]
    fn next_hash_matches_the_chunks() {
        let p = ChunkerParams::default();
        let data = random(8 << 20, 5);
        let before = chunk_all(&data, p, 4);
        let mut edited = data.clone();
        edited.splice(3 << 20..3 << 20, *b"0123456789");
        let want: Vec<(ContentHash, u32)> = chunk_all(&edited, p, 4)
            .iter()
            .map(|c| (key().content_hash(&c.data), c.data.len() as u32))
            .collect();
        for hints in [None, Some(hints_of(&before))] {
            let mut chunker = StreamChunker::new(&edited[..], p, &ChunkerSeed::from_u64(4)).with_hints(hints);
            let mut got = Vec::new();
            while let Some(c) = chunker.next_hash(&key()).unwrap() {
                got.push(c);
            }
            assert_eq!(got, want);
            assert!(chunker.next_hash(&key()).unwrap().is_none());
        }
    }

    /// The hash a hinted run gave the chunk at `c`'s offset, for comparing.
    fn hinted_hash(hinted: &[RawChunk], c: &RawChunk) -> Option<ContentHash> {
        hinted.iter().find(|h| h.offset == c.offset).and_then(|h| h.hash)
    }

    /// Cuts of the hinted chunker: offsets and lengths.
    fn cuts(chunks: &[RawChunk]) -> Vec<(u64, usize)> {
        chunks.iter().map(|c| (c.offset, c.data.len())).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xC0FFE),
            ..ProptestConfig::default()
        })]
        /// Whatever the edits (insertions, deletions, overwrites, at the
        /// ends too) and whatever the hints (the old version's, or another
        /// file's, or nonsense lengths), the cuts are FastCDC's.
        #[test]
        fn hinted_cuts_are_fastcdc_cuts(
            seed in any::<u64>(),
            edits in proptest::collection::vec((0.0f64..1.0, 0usize..3000, 0usize..3000), 0..4),
            hint_kind in 0u8..3,
        ) {
            let data = random(300 << 10, seed);
            let mut edited = data.clone();
            for (pos, del, ins) in edits {
                let at = (pos * edited.len() as f64) as usize;
                let end = (at + del).min(edited.len());
                edited.splice(at..end, random(ins, seed ^ at as u64));
            }
            let hints = match hint_kind {
                0 => hints_of(&chunk_all(&data, SMALL, seed | 1)),
                1 => hints_of(&chunk_all(&random(300 << 10, !seed), SMALL, seed | 1)),
                _ => Hints::new(&key(), (0..40).map(|i| (key().content_hash(&[i]), 1000 + i as u32 * 97)).collect()),
            };
            let plain = chunk_all(&edited, SMALL, seed | 1);
            let hinted = chunk_hinted(&edited, SMALL, seed | 1, hints);
            prop_assert_eq!(cuts(&hinted), cuts(&plain));
            for c in &hinted {
                prop_assert!(c.hash.is_none_or(|h| h == key().content_hash(&c.data)));
            }
        }
    }

    proptest! {
        // A fixed seed: the same cases on every run, so CI cannot flake.
        #![proptest_config(ProptestConfig {
            cases: 24,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xC0FFE),
            ..ProptestConfig::default()
        })]
        /// Small sizes so that a case covers many chunks quickly.
        #[test]
        fn insertion_changes_at_most_three_chunks(
            seed in any::<u64>(), pos in 0.0f64..1.0, insert in proptest::collection::vec(any::<u8>(), 1..=10)
        ) {
            let p = ChunkerParams { min: 1024, avg: 4096, max: 16384 };
            let data = random(512 << 10, seed);
            let old = set(&chunk_all(&data, p, seed | 1));
            let at = (pos * data.len() as f64) as usize;
            let mut edited = data.clone();
            edited.splice(at..at, insert);
            let changed = chunk_all(&edited, p, seed | 1).iter().filter(|c| !old.contains(&c.data)).count();
            prop_assert!(changed <= 3, "changed {}", changed);
        }

        #[test]
        fn flip_changes_exactly_one_chunk(seed in any::<u64>(), pos in 0.0f64..1.0, bit in 0u8..8) {
            let p = ChunkerParams { min: 1024, avg: 4096, max: 16384 };
            let data = random(512 << 10, seed);
            let old = set(&chunk_all(&data, p, seed | 1));
            let at = ((pos * data.len() as f64) as usize).min(data.len() - 1);
            let mut edited = data.clone();
            edited[at] ^= 1 << bit;
            let changed = chunk_all(&edited, p, seed | 1).iter().filter(|c| !old.contains(&c.data)).count();
            // One, unless the flip made or removed a cut point nearby (the
            // gear hash sees 64 bytes), which splits or merges a chunk.
            prop_assert!((1..=2).contains(&changed), "changed {}", changed);
        }
    }
}
