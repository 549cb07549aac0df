//! The workloads. Each new content is made in a staging folder first (not
//! timed, and flushed to the disk before the clock starts) and moved into
//! device A's folder with one `rename`, so the clock starts when the change
//! appears on A whole, and stops when device B's folder holds exactly the
//! expected bytes (size, then BLAKE3).
//!
//! - W1: one new file of random bytes (1 GiB; 64 MiB with `--quick`).
//! - W2: 10,000 files of 1–16 KiB in 100 folders (1,000 in 10).
//! - W3: on the W1 file, synced: (a) one byte changed in place in the
//!   middle; (b) 10 bytes inserted at 100 MiB (16 MiB), saved as editors do
//!   (a new file renamed over the old one).
//! - W4: one small new file, A to B, 20 times (10): each latency.
//! - W5: a tree of 200,000 small files (5,000) synced first, then a rescan
//!   of A with nothing changed, timed, and the client's resident memory.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, RngCore, SeedableRng};

use super::measure::{self, Expect};
use super::report::{Results, Sample};
use super::{Ctx, Peer, Sizes};

const BIG: &str = "big.bin";

/// One timed change: `act` makes it on A; for tools that are not live the
/// tool is run; then B is polled until it holds `expect`.
#[allow(clippy::too_many_arguments)]
fn step(
    peer: &mut dyn Peer,
    results: &mut Results,
    workload: &str,
    rep: usize,
    payload: u64,
    expect: &Expect,
    timeout: Duration,
    poll: Duration,
    act: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let (wa0, wt0) = peer.wire();
    let u0 = peer.usage();
    peer.reset_peak();
    // The staged content (and whatever else the harness wrote) goes to the
    // disk before the clock starts. On one machine, a tool that flushes its
    // whole filesystem (Coffer's receiver, for a group of files) would
    // otherwise write the harness's staging too, which a receiving device
    // on its own disk never holds; and every tool would share the disk
    // with its writeback.
    rustix::fs::sync();
    let t0 = Instant::now();
    act(peer.root_a())?;
    if !peer.live() {
        peer.propagate()?;
    }
    let arrived = measure::wait_for(peer.root_b(), expect, timeout, poll)
        .with_context(|| format!("{workload} on {}", peer.name()))?;
    let wall_s = arrived.saturating_duration_since(t0).as_secs_f64();
    // The harness's own check after the moment it counts (not timed).
    let check_s = arrived.elapsed().as_secs_f64();
    let (wa1, wt1) = peer.wire();
    let u1 = peer.usage();
    results.samples.push(Sample {
        tool: peer.name(),
        workload: workload.to_string(),
        rep,
        wall_s,
        payload_bytes: payload,
        wire_a: wa1 - wa0,
        wire_total: wt1 - wt0,
        cpu_s: (u1.cpu_s - u0.cpu_s).max(0.0),
        peak_kib: u1.peak_kib,
    });
    eprintln!(
        "   {workload:<4} {:>9.3} s  wire {:>12} B  cpu {:>7.2} s  peak {:>7} KiB  (check {:.2} s, not timed)",
        wall_s,
        wt1 - wt0,
        u1.cpu_s - u0.cpu_s,
        u1.peak_kib,
        check_s
    );
    Ok(wall_s)
}

fn stage(ctx: &Ctx, name: &str) -> anyhow::Result<PathBuf> {
    let d = measure::mkdir(ctx.work.join("stage"))?;
    let p = d.join(name);
    if p.is_dir() {
        std::fs::remove_dir_all(&p)?;
    } else if p.exists() {
        std::fs::remove_file(&p)?;
    }
    Ok(p)
}

fn write_random(path: &Path, len: u64, seed: u64) -> anyhow::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Writes `files` files of `min..=max` bytes in `dirs` folders under `top`;
/// returns their paths relative to `top`'s parent and the total size.
fn write_tree(
    top: &Path,
    files: usize,
    dirs: usize,
    min: usize,
    max: usize,
    seed: u64,
) -> anyhow::Result<(Vec<String>, u64)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let name = top.file_name().unwrap().to_string_lossy().into_owned();
    let mut rels = Vec::with_capacity(files);
    let mut total = 0u64;
    let mut buf = vec![0u8; max];
    for i in 0..files {
        let d = i % dirs.max(1);
        let dir = top.join(format!("d{d:03}"));
        if i < dirs {
            std::fs::create_dir_all(&dir)?;
        }
        let len = rng.gen_range(min..=max);
        rng.fill_bytes(&mut buf[..len]);
        let file = format!("f{i:06}.bin");
        std::fs::write(dir.join(&file), &buf[..len])?;
        rels.push(format!("{name}/d{d:03}/{file}"));
        total += len as u64;
    }
    Ok((rels, total))
}

/// A pause (not measured) so that the next change's modification time is
/// in a later second than the last one's.
fn settle() {
    std::thread::sleep(Duration::from_millis(1100));
}

fn expect_one(rel: &str, path: &Path) -> anyhow::Result<Expect> {
    let mut e = Expect::new();
    e.insert(rel.to_string(), measure::hash_file(path)?);
    Ok(e)
}

/// One round of W1, W3, W4 then W2 on a fresh pair of replicas (W4 before
/// W2, so that tools which list the whole folder per run do not list W2's
/// 10,000 files for each of W4's samples).
pub fn round(
    ctx: &Ctx,
    peer: &mut dyn Peer,
    sizes: &Sizes,
    wl: &[String],
    rep: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let want = |w: &str| wl.iter().any(|x| x == w);
    let big_timeout = Duration::from_secs(30 + sizes.w1_bytes / (2 << 20));
    if want("w1") || want("w3") {
        let staged = stage(ctx, BIG)?;
        write_random(&staged, sizes.w1_bytes, 1 + rep as u64)?;
        let expect = expect_one(BIG, &staged)?;
        step(
            peer,
            results,
            "W1",
            rep,
            sizes.w1_bytes,
            &expect,
            big_timeout,
            Duration::from_millis(10),
            |a| std::fs::rename(&staged, a.join(BIG)).context("moving W1's file in"),
        )?;
    }
    if want("w3") {
        // (a) one byte in the middle, in place. Not in the same second as
        // the last write: rclone over SFTP keeps modification times to the
        // second and would, rightly for it, see no change.
        settle();
        let mid = sizes.w1_bytes / 2;
        let a_big = peer.root_a().join(BIG);
        let staged = stage(ctx, "w3a.bin")?;
        std::fs::copy(&a_big, &staged)?;
        let mut byte = [0u8; 1];
        {
            let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&staged)?;
            f.seek(SeekFrom::Start(mid))?;
            f.read_exact(&mut byte)?;
            byte[0] ^= 0xff;
            f.seek(SeekFrom::Start(mid))?;
            f.write_all(&byte)?;
        }
        let expect = expect_one(BIG, &staged)?;
        std::fs::remove_file(&staged)?;
        step(peer, results, "W3a", rep, 1, &expect, big_timeout, Duration::from_millis(10), |a| {
            let mut f = std::fs::OpenOptions::new().write(true).open(a.join(BIG))?;
            f.seek(SeekFrom::Start(mid))?;
            f.write_all(&byte)?;
            Ok(())
        })?;
        // (b) ten bytes inserted, saved through a new file and a rename.
        settle();
        let staged = stage(ctx, "w3b.bin")?;
        {
            let mut src = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&a_big)?);
            let mut dst = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&staged)?);
            std::io::copy(&mut (&mut src).take(sizes.w3_insert_at), &mut dst)?;
            dst.write_all(b"0123456789")?;
            std::io::copy(&mut src, &mut dst)?;
            dst.flush()?;
        }
        let expect = expect_one(BIG, &staged)?;
        step(peer, results, "W3b", rep, 10, &expect, big_timeout, Duration::from_millis(10), |a| {
            std::fs::rename(&staged, a.join(BIG)).context("moving W3's file in")
        })?;
    }
    if want("w4") {
        measure::mkdir(peer.root_a().join("w4"))?;
        // Let the new folder reach B first, so each sample is one file.
        let probe = stage(ctx, "probe.txt")?;
        std::fs::write(&probe, b"probe")?;
        let expect = expect_one("w4/probe.txt", &probe)?;
        std::fs::rename(&probe, peer.root_a().join("w4/probe.txt"))?;
        if !peer.live() {
            peer.propagate()?;
        }
        measure::wait_for(peer.root_b(), &expect, Duration::from_secs(60), Duration::from_millis(5))?;
        for i in 0..sizes.w4_samples {
            let rel = format!("w4/n{i:03}.txt");
            let staged = stage(ctx, "w4.txt")?;
            write_random(&staged, 512, 1000 + i as u64)?;
            let expect = expect_one(&rel, &staged)?;
            step(
                peer,
                results,
                "W4",
                rep,
                512,
                &expect,
                Duration::from_secs(60),
                Duration::from_millis(2),
                |a| std::fs::rename(&staged, a.join(&rel)).context("moving W4's file in"),
            )?;
        }
    }
    if want("w2") {
        let staged = stage(ctx, "w2")?;
        let (rels, total) =
            write_tree(&staged, sizes.w2_files, sizes.w2_dirs, 1024, 16 * 1024, 100 + rep as u64)?;
        let expect = measure::expect_of(staged.parent().unwrap(), &rels)?;
        let timeout = Duration::from_secs(60 + sizes.w2_files as u64 / 10);
        step(peer, results, "W2", rep, total, &expect, timeout, Duration::from_millis(20), |a| {
            std::fs::rename(&staged, a.join("w2")).context("moving W2's tree in")
        })?;
    }
    Ok(())
}

/// W5: a big tree synced (timed, reported as W5-seed), then idle rescans.
pub fn w5(ctx: &Ctx, peer: &mut dyn Peer, sizes: &Sizes, results: &mut Results) -> anyhow::Result<()> {
    let staged = stage(ctx, "w5")?;
    let dirs = (sizes.w5_files / 200).max(1);
    let (rels, total) = write_tree(&staged, sizes.w5_files, dirs, 1, 1024, 5)?;
    let expect = measure::expect_of(staged.parent().unwrap(), &rels)?;
    let timeout = Duration::from_secs(300 + sizes.w5_files as u64 / 20);
    step(peer, results, "W5seed", 0, total, &expect, timeout, Duration::from_millis(200), |a| {
        std::fs::rename(&staged, a.join("w5")).context("moving W5's tree in")
    })?;
    for rep in 0..sizes.reps {
        let (wa0, wt0) = peer.wire();
        let u0 = peer.usage();
        peer.reset_peak();
        let (wall_s, rss_kib) = peer.idle_rescan()?;
        let (wa1, wt1) = peer.wire();
        let u1 = peer.usage();
        eprintln!("   W5   {wall_s:>9.3} s  wire {:>12} B  resident {rss_kib:>7} KiB", wt1 - wt0);
        results.samples.push(Sample {
            tool: peer.name(),
            workload: "W5".to_string(),
            rep,
            wall_s,
            payload_bytes: sizes.w5_files as u64,
            wire_a: wa1 - wa0,
            wire_total: wt1 - wt0,
            cpu_s: (u1.cpu_s - u0.cpu_s).max(0.0),
            peak_kib: rss_kib,
        });
    }
    Ok(())
}
