//! The chunk-size benchmark: what an edit costs on the wire for given
//! chunk sizes, next to the default sizes in the same run.
//!
//! An edit resends the chunks it changes (on both links). Over random bytes
//! (like W1 and W3's file), for each set of sizes this measures:
//! - the mean chunk size (the store's objects and requests per byte);
//! - the bytes of new chunks after a one-byte change and after ten bytes
//!   inserted, at random places (W3a and W3b): median, mean, 90th percentile;
//! - the same after a change to the first byte of a chunk, the rare worst
//!   case: that byte decides where the chunk before it ends, so its cut
//!   moves and the chunks after it can shift too, until the cuts line up.
//!
//! The real chunker ([`StreamChunker`]) with an account's seed does the
//! cutting; each edit is cut again from an old cut point at least 1 MiB
//! before it to at least 3 MiB after it (FastCDC starts afresh at every
//! cut, so up to the edit the chunks are the whole file's), and the last
//! chunk, cut by the window's end, is not counted.

use std::collections::HashSet;

use anyhow::Context;
use coffer_crypto::ChunkerSeed;
use coffer_engine::chunker::{ChunkerParams, StreamChunker};
use rand::{Rng, RngCore, SeedableRng};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the random file in MiB.
    #[arg(long, default_value_t = 64)]
    size_mib: usize,
    /// Edits of each kind per set of sizes.
    #[arg(long, default_value_t = 300)]
    edits: usize,
    /// Sets of sizes to measure beside the default (32,128,512 is that of
    /// accounts older than account settings), in KiB, each
    /// min,avg,max; separated by spaces or semicolons.
    #[arg(long, default_value = "32,128,512 24,96,384 16,80,320 16,64,256", value_parser = parse_list)]
    sizes: SizeList,
}

#[derive(Clone, Debug)]
struct SizeList(Vec<ChunkerParams>);

fn parse_list(s: &str) -> Result<SizeList, String> {
    s.split([' ', ';'])
        .filter(|x| !x.is_empty())
        .map(ChunkerParams::parse_kib)
        .collect::<Result<_, _>>()
        .map(SizeList)
}

/// How far before an edit cutting starts again, and after it stops, at
/// least: with large chunks, more (see `margins`).
const BEFORE: usize = 1 << 20;
const AFTER: usize = 3 << 20;

/// (before, after) for chunks of at most `max` bytes: room for a few
/// whole chunks on each side, the moved ones included.
fn margins(max: usize) -> (usize, usize) {
    (BEFORE.max(2 * max), AFTER.max(6 * max))
}

/// The kinds of edit, as the table names them.
const KINDS: [&str; 3] = ["1 byte changed", "10 bytes inserted", "first byte of a chunk"];

pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.size_mib >= 8, "--size-mib must be at least 8");
    anyhow::ensure!(args.edits >= 10, "--edits must be at least 10");
    let mut data = vec![0u8; args.size_mib << 20];
    rand_chacha::ChaCha8Rng::seed_from_u64(2026).fill_bytes(&mut data);
    let seed = ChunkerSeed::from_u64(0x5eed_c0ff);
    let mut all = vec![ChunkerParams::default()];
    all.extend(args.sizes.0.iter().filter(|p| **p != ChunkerParams::default()));

    println!("Chunk sizes: {} MiB of random bytes, {} edits of each kind\n", args.size_mib, args.edits);
    println!("| sizes (KiB) | mean chunk | chunks per GiB | edit | new chunks' KiB: median | mean | p90 | most chunks changed |");
    println!("|---|---|---|---|---|---|---|---|");
    for p in all {
        let name = format!(
            "{}/{}/{}{}",
            p.min >> 10,
            p.avg >> 10,
            p.max >> 10,
            if p == ChunkerParams::default() { " (default)" } else { "" }
        );
        let (before, after) = margins(p.max);
        anyhow::ensure!(
            data.len() > before + after + p.max + 64,
            "--size-mib is too small for {} KiB chunks",
            p.max >> 10
        );
        let cuts = cut(&data, p, &seed).context("chunking the file")?;
        let mean = data.len() as f64 / cuts.len() as f64;
        let old: HashSet<&[u8]> = cuts.iter().map(|&(o, l)| &data[o..o + l]).collect();
        let starts: Vec<usize> = cuts.iter().map(|&(o, _)| o).collect();
        for (kind, label) in KINDS.iter().enumerate() {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7 + kind as u64);
            let mut bytes = Vec::with_capacity(args.edits);
            let mut most = 0;
            for _ in 0..args.edits {
                // Room after `at` for the move to the next cut (at most `max`).
                let mut at = rng.gen_range(before + 64..data.len() - after - p.max);
                if kind == 2 {
                    // The next cut: the first byte of the chunk after it.
                    at = starts.get(starts.partition_point(|&o| o < at)).copied().unwrap_or(at);
                }
                // Cutting starts again at the last old cut well before the edit
                // (the first chunk starts at 0, which is well before).
                let start = starts[starts.partition_point(|&o| o + before <= at).saturating_sub(1)];
                let mut window = data[start..at + after].to_vec();
                match kind {
                    1 => drop(window.splice(at - start..at - start, *b"0123456789")),
                    _ => window[at - start] ^= 1,
                }
                let new = cut(&window, p, &seed)?;
                // The last chunk is cut by the window's end, not by content.
                let changed: Vec<usize> = new[..new.len() - 1]
                    .iter()
                    .filter(|&&(o, l)| !old.contains(&window[o..o + l]))
                    .map(|&(_, l)| l)
                    .collect();
                most = most.max(changed.len());
                bytes.push(changed.iter().sum::<usize>());
            }
            bytes.sort_unstable();
            let kib = |b: usize| b as f64 / 1024.0;
            println!(
                "| {name} | {:.0} KiB | {:.0} | {label} | {:.0} | {:.0} | {:.0} | {most} |",
                mean / 1024.0,
                (1u64 << 30) as f64 / mean,
                kib(bytes[bytes.len() / 2]),
                kib(bytes.iter().sum::<usize>()) / bytes.len() as f64,
                kib(bytes[bytes.len() * 9 / 10]),
            );
        }
    }
    println!(
        "\nAn edit sends its new chunks on both links, plus about 50 KB for a 1 GiB file: its metadata \
         (7 KB, with the commit and in the journal to each device) and the piece of its chunk list \
         that names the new chunk (about 14 KB, on both links)."
    );
    Ok(())
}

/// Cuts `data`: (offset, length) of each chunk.
fn cut(data: &[u8], p: ChunkerParams, seed: &ChunkerSeed) -> anyhow::Result<Vec<(usize, usize)>> {
    StreamChunker::new(data, p, seed)
        .map(|c| {
            let c = c?;
            Ok((usize::try_from(c.offset)?, c.data.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_sizes_parses_and_bad_sizes_do_not() {
        let l = parse_list("32,112,512; 16,64,256").unwrap();
        assert_eq!(l.0[1], ChunkerParams { min: 16 << 10, avg: 64 << 10, max: 256 << 10 });
        assert_eq!(l.0.len(), 2);
        assert!(parse_list("64,32,512").is_err());
        assert!(parse_list("32,112").is_err());
    }
}
