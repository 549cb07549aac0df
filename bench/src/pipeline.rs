//! The ingest pipeline benchmark. Each stage runs over the same file, which
//! is read once beforehand so that it sits in the page cache; each figure is
//! the best of `--runs` runs, and the plain BLAKE3 baseline is measured in the
//! same runs, interleaved, so that noise hits both alike.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use coffer_crypto::{AccountKeys, MasterKey};
use coffer_engine::chunker::{ChunkerParams, StreamChunker};
use coffer_engine::ingest::{ingest, seal_chunk};
use rand::{RngCore, SeedableRng};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the test file in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Runs of each stage; the best is reported.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Worker threads for the whole pipeline (default: every core).
    #[arg(long)]
    workers: Option<usize>,
    /// Chunk sizes in KiB: min,avg,max.
    #[arg(long, default_value = "256,1024,4096", value_parser = ChunkerParams::parse_kib)]
    chunk_kib: ChunkerParams,
}

fn make_file(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut w = BufWriter::with_capacity(8 << 20, File::create(path)?);
    let mut buf = vec![0u8; 8 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64))?;
        rng.fill_bytes(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// Reads the whole file through `f` in 1 MiB blocks.
fn stream(path: &Path, mut f: impl FnMut(&[u8])) -> anyhow::Result<()> {
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        f(&buf[..n]);
    }
}

fn chunks(
    path: &Path,
    keys: &AccountKeys,
    p: ChunkerParams,
    mut f: impl FnMut(&[u8]),
) -> anyhow::Result<u64> {
    let mut n = 0;
    for c in StreamChunker::new(File::open(path)?, p, &keys.chunker_seed) {
        f(&c?.data);
        n += 1;
    }
    Ok(n)
}

struct Stage {
    name: &'static str,
    threads: String,
    best: Duration,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("input.bin");
    let bytes = args.size_mib << 20;
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let keys = MasterKey::from_bytes([0x42; 32]).derive();
    let p = args.chunk_kib;
    eprintln!("writing {} MiB of random bytes to {} ...", args.size_mib, path.display());
    make_file(&path, bytes).context("writing the test file")?;
    stream(&path, |_| {})?; // warm the page cache

    type Job<'a> = Box<dyn Fn() -> anyhow::Result<()> + 'a>;
    let jobs: Vec<(&str, String, Job)> = vec![
        (
            "read (page cache)",
            "1".into(),
            Box::new(|| {
                stream(&path, |b| {
                    std::hint::black_box(b);
                })
            }),
        ),
        (
            "baseline: blake3::hash",
            "1".into(),
            Box::new(|| {
                let mut h = blake3::Hasher::new();
                stream(&path, |b| {
                    h.update(b);
                })?;
                std::hint::black_box(h.finalize());
                Ok(())
            }),
        ),
        (
            "chunking (FastCDC)",
            "1".into(),
            Box::new(|| {
                chunks(&path, &keys, p, |c| {
                    std::hint::black_box(c);
                })
                .map(drop)
            }),
        ),
        (
            "chunk + keyed hash",
            "1".into(),
            Box::new(|| {
                chunks(&path, &keys, p, |c| {
                    std::hint::black_box(keys.chunk_id.content_hash(c));
                })
                .map(drop)
            }),
        ),
        (
            "chunk + hash + seal + id",
            "1".into(),
            Box::new(|| {
                let mut offset = 0;
                chunks(&path, &keys, p, |c| {
                    let raw = coffer_engine::chunker::RawChunk::new(offset, c.to_vec());
                    offset += c.len() as u64;
                    std::hint::black_box(seal_chunk(&keys, &raw));
                })
                .map(drop)
            }),
        ),
        (
            "whole pipeline",
            format!("1+{workers}"),
            Box::new(|| {
                let mut sealed = 0u64;
                let s = ingest(File::open(&path)?, &keys, p, workers, |c| {
                    sealed += c.sealed.len() as u64;
                    Ok(())
                })?;
                anyhow::ensure!(s.bytes == bytes, "pipeline read {} of {bytes} bytes", s.bytes);
                std::hint::black_box(sealed);
                Ok(())
            }),
        ),
    ];
    let mut stages: Vec<Stage> =
        jobs.iter().map(|(n, t, _)| Stage { name: n, threads: t.clone(), best: Duration::MAX }).collect();
    for run in 1..=args.runs {
        for (stage, (_, _, job)) in stages.iter_mut().zip(&jobs) {
            let t = Instant::now();
            job()?;
            stage.best = stage.best.min(t.elapsed());
        }
        eprintln!("run {run}/{} done", args.runs);
    }
    let n_chunks = chunks(&path, &keys, p, |_| {})?;

    let gbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    let baseline = gbps(stages[1].best);
    println!("Ingest pipeline, {} MiB file in page cache, chunks {}/{}/{} KiB (min/avg/max), {} chunks, best of {} runs, {} cores",
        args.size_mib, p.min >> 10, p.avg >> 10, p.max >> 10, n_chunks, args.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!();
    println!("| stage | threads | best time | throughput | vs blake3 1-thread |");
    println!("|---|---|---|---|---|");
    for s in &stages {
        println!(
            "| {} | {} | {:.3} s | {:.2} GB/s | {:.2}x |",
            s.name,
            s.threads,
            s.best.as_secs_f64(),
            gbps(s.best),
            gbps(s.best) / baseline
        );
    }
    Ok(())
}
