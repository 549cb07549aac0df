//! `coffer-bench compare`: Coffer side by side with Syncthing, rclone (plain
//! and `crypt`, to a WebDAV remote it serves itself) and Unison, on loopback,
//! the same workloads for each, several rounds interleaved so the machine's
//! noise falls on every tool alike.
//!
//! Words used here:
//! - **device A / device B**: the two replicas. Coffer: two real clients of a
//!   real server; Syncthing: two instances; rclone: A uploads to the served
//!   remote and B downloads from it; Unison: A's client against B's server.
//! - **live** tool: one whose daemon carries a change by itself (Coffer,
//!   Syncthing). For the others, the run of the tool that carries it (rclone
//!   up then down; one Unison run) is part of the measured time.
//! - **wire bytes**: bytes through the counting proxies in front of every
//!   server or peer port (both directions); "A's link" is the part on device
//!   A's connection.
//! - **client CPU / peak memory**: of the device-side processes (not Coffer's
//!   server, nor `rclone serve`, which play the cloud): CPU summed over A and
//!   B, peak resident memory the largest of them.
//!
//! Every figure printed comes from a measurement in the same run.

mod coffer;
mod measure;
mod proxy;
mod rclone;
mod report;
mod syncthing;
mod unison;
mod workloads;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;

pub use measure::Usage;

/// Arguments of `compare`.
#[derive(Debug, Parser)]
pub struct Args {
    /// Small sizes for a fast check (64 MiB, 1,000 files, 5,000-file tree).
    #[arg(long)]
    pub quick: bool,
    /// Rounds of each workload per tool (default: 2 quick, 3 full).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Tools to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "coffer,syncthing,rclone,rclone-crypt,unison")]
    pub tools: Vec<String>,
    /// Workloads to run, comma-separated (w1..w5).
    #[arg(long, value_delimiter = ',', default_value = "w1,w2,w3,w4,w5")]
    pub workloads: Vec<String>,
    /// The `coffer` binary (default: next to this one).
    #[arg(long)]
    pub coffer_bin: Option<PathBuf>,
    /// A second `coffer` build, run as the tool `coffer-base` (name it in
    /// `--tools`): two builds measured side by side in one run, rounds
    /// interleaved, for an A/B comparison. Never counted as a peer.
    #[arg(long)]
    pub coffer_base_bin: Option<PathBuf>,
    /// Milliseconds every proxy holds each byte back, in each direction (a
    /// round trip costs twice this): the tools over a farther network than
    /// loopback. 0 (the default) for the targets' figures.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Where the CSV and chart go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Work folder for the replicas (default: OUT/work; removed after).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Added to the output files' names (compare-full-LABEL.csv, ...), so
    /// separate runs (e.g. W5 alone) do not overwrite each other.
    #[arg(long)]
    pub label: Option<String>,
    /// Summarize the samples of an earlier run's CSV again (no tools run).
    #[arg(long)]
    pub from_csv: Option<PathBuf>,
    /// Override: W1's file size in MiB.
    #[arg(long)]
    pub w1_mib: Option<u64>,
    /// Override: W2's file count.
    #[arg(long)]
    pub w2_files: Option<usize>,
    /// Override: W5's file count.
    #[arg(long)]
    pub w5_files: Option<usize>,
}

/// Sizes of the workloads.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub w1_bytes: u64,
    pub w2_files: usize,
    pub w2_dirs: usize,
    pub w3_insert_at: u64,
    pub w4_samples: usize,
    pub w5_files: usize,
    pub reps: usize,
}

impl Sizes {
    /// About the disk space a run of `tools` on `workloads` needs at its
    /// peak: one round's large files (A's, B's and the store's copies, and
    /// B's new version beside the old during W3), every round's small files
    /// (kept to the end of the run, see [`measure::free_space`]), W5's tree
    /// per tool, and 2 GiB to spare.
    fn disk_needed(&self, tools: usize, workloads: &[String]) -> u64 {
        let has = |w: &str| workloads.iter().any(|x| x == w);
        let runs = (tools * self.reps) as u64;
        let mut need = 2u64 << 30;
        if has("w1") || has("w3") {
            need += 4 * self.w1_bytes;
        }
        if has("w2") {
            need += runs * self.w2_files as u64 * 3 * (12 << 10);
        }
        if has("w5") {
            need += tools as u64 * self.w5_files as u64 * (16 << 10);
        }
        need
    }

    fn from(args: &Args) -> Self {
        let mut s = if args.quick {
            Sizes {
                w1_bytes: 64 << 20,
                w2_files: 1_000,
                w2_dirs: 10,
                w3_insert_at: 16 << 20,
                w4_samples: 10,
                w5_files: 5_000,
                reps: 2,
            }
        } else {
            Sizes {
                w1_bytes: 1 << 30,
                w2_files: 10_000,
                w2_dirs: 100,
                w3_insert_at: 100 << 20,
                w4_samples: 20,
                w5_files: 200_000,
                reps: 3,
            }
        };
        if let Some(m) = args.w1_mib {
            s.w1_bytes = m << 20;
            s.w3_insert_at = s.w3_insert_at.min(s.w1_bytes / 4);
        }
        if let Some(n) = args.w2_files {
            s.w2_files = n;
        }
        if let Some(n) = args.w5_files {
            s.w5_files = n;
        }
        if let Some(r) = args.reps {
            s.reps = r.max(1);
        }
        s
    }
}

/// One tool set up with two replicas, ready for workloads. Dropping it stops
/// its processes.
pub trait Peer {
    /// The tool's name in tables.
    fn name(&self) -> String;
    /// Whether its daemons carry changes by themselves.
    fn live(&self) -> bool;
    /// Device A's folder.
    fn root_a(&self) -> &Path;
    /// Device B's folder.
    fn root_b(&self) -> &Path;
    /// Carries A's changes to B by running the tool (not live tools only).
    fn propagate(&mut self) -> anyhow::Result<()>;
    /// Wire bytes so far: (A's link, all links).
    fn wire(&self) -> (u64, u64);
    /// Device-side CPU so far and peak memory since `reset_peak`.
    fn usage(&mut self) -> Usage;
    /// Starts a new peak-memory window.
    fn reset_peak(&mut self);
    /// W5: a rescan of A with nothing changed: (wall seconds, client
    /// resident KiB).
    fn idle_rescan(&mut self) -> anyhow::Result<(f64, u64)>;
}

/// Shared by the drivers: where things go and what runs.
#[derive(Debug)]
pub struct Ctx {
    pub coffer_bin: PathBuf,
    pub coffer_base_bin: Option<PathBuf>,
    /// Each proxy's one-way delay.
    pub delay: std::time::Duration,
    pub work: PathBuf,
    pub rt: tokio::runtime::Runtime,
}

fn start_peer(ctx: &Ctx, tool: &str, dir: &Path) -> anyhow::Result<Box<dyn Peer>> {
    Ok(match tool {
        "coffer" => Box::new(coffer::Coffer::start(ctx, dir, "coffer", &ctx.coffer_bin)?),
        "coffer-base" => {
            let bin = ctx.coffer_base_bin.as_deref().context("coffer-base needs --coffer-base-bin")?;
            Box::new(coffer::Coffer::start(ctx, dir, "coffer-base", bin)?)
        }
        "syncthing" => Box::new(syncthing::Syncthing::start(ctx, dir)?),
        "rclone" => Box::new(rclone::Rclone::start(ctx, dir, false)?),
        "rclone-crypt" => Box::new(rclone::Rclone::start(ctx, dir, true)?),
        "unison" => Box::new(unison::Unison::start(ctx, dir)?),
        other => {
            anyhow::bail!(
                "unknown tool {other:?} (coffer, coffer-base, syncthing, rclone, rclone-crypt, unison)"
            )
        }
    })
}

/// Copies the tools' logs (`*.log`, `*.time`) of a failed round out of the
/// work folder, which is removed, so the failure can be read later.
fn keep_logs(dir: &Path, to: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let _ = std::fs::create_dir_all(to);
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") || name.ends_with(".time") {
            let _ = std::fs::copy(e.path(), to.join(&name));
        }
    }
    eprintln!("   logs kept in {}", to.display());
}

/// Runs the comparison and writes the CSV and chart.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let sizes = Sizes::from(args);
    if let Some(csv) = &args.from_csv {
        let results = report::read_csv(csv)?;
        return report::finish(&results, &sizes, args, std::time::SystemTime::now());
    }
    let coffer_bin = match &args.coffer_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("coffer"),
    };
    anyhow::ensure!(
        coffer_bin.exists(),
        "{} is missing: build coffer-cli first (scripts/bench does)",
        coffer_bin.display()
    );
    let work = args.work.clone().unwrap_or_else(|| args.out.join("work"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let wl: Vec<String> = args.workloads.iter().map(|w| w.to_lowercase()).collect();
    measure::ensure_free(&work, sizes.disk_needed(args.tools.len(), &wl))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let ctx = Ctx {
        coffer_bin,
        coffer_base_bin: args.coffer_base_bin.clone(),
        delay: std::time::Duration::from_millis(args.delay_ms),
        work: work.canonicalize()?,
        rt,
    };
    let started = std::time::SystemTime::now();
    let mut results = report::Results::default();

    eprintln!(
        "compare: tools {}, workloads {}, {} rounds; W1 {} MiB, W2 {} files, W5 {} files",
        args.tools.join(","),
        wl.join(","),
        sizes.reps,
        sizes.w1_bytes >> 20,
        sizes.w2_files,
        sizes.w5_files
    );
    for rep in 0..sizes.reps {
        for tool in &args.tools {
            if !wl.iter().any(|w| ["w1", "w2", "w3", "w4"].contains(&w.as_str())) {
                break;
            }
            let dir = measure::mkdir(ctx.work.join(format!("{tool}-{rep}")))?;
            eprintln!("== round {} / {}: {tool}", rep + 1, sizes.reps);
            let outcome = (|| -> anyhow::Result<()> {
                let mut peer = start_peer(&ctx, tool, &dir)?;
                workloads::round(&ctx, peer.as_mut(), &sizes, &wl, rep, &mut results)
            })();
            if let Err(e) = outcome {
                eprintln!("   {tool}: round failed: {e:#}");
                results.failures.push(format!("{tool} round {}: {e:#}", rep + 1));
                keep_logs(&dir, &args.out.join(format!("failed-{tool}-{}", rep + 1)));
            } else if std::env::var_os("COFFER_BENCH_LOG").is_some() {
                keep_logs(&dir, &args.out.join(format!("logs-{tool}-{}", rep + 1)));
            }
            // The small files go at the end of the run (see `free_space`).
            if let Err(e) = measure::free_space(&dir) {
                eprintln!("   could not free {}: {e:#}; removing it now", dir.display());
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    if wl.iter().any(|w| w == "w5") {
        for tool in &args.tools {
            let dir = measure::mkdir(ctx.work.join(format!("{tool}-w5")))?;
            eprintln!("== W5: {tool}");
            let outcome = (|| -> anyhow::Result<()> {
                let mut peer = start_peer(&ctx, tool, &dir)?;
                workloads::w5(&ctx, peer.as_mut(), &sizes, &mut results)
            })();
            if let Err(e) = outcome {
                eprintln!("   {tool}: W5 failed: {e:#}");
                results.failures.push(format!("{tool} W5: {e:#}"));
                keep_logs(&dir, &args.out.join(format!("failed-{tool}-w5")));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    report::finish(&results, &sizes, args, started)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(w1_bytes: u64, w2_files: usize, w5_files: usize) -> Sizes {
        Sizes { w1_bytes, w2_files, w2_dirs: 100, w3_insert_at: 0, w4_samples: 20, w5_files, reps: 2 }
    }

    #[test]
    fn the_disk_a_run_needs_grows_with_what_it_runs() {
        let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
        let all: Vec<String> = ["w1", "w2", "w3", "w4"].map(String::from).to_vec();
        let full = sizes(1 << 30, 10_000, 200_000);
        // What filled this machine's disk once: five tools, two rounds.
        let need = gib(full.disk_needed(5, &all));
        assert!((8.0..12.0).contains(&need), "{need}");
        let quick = gib(sizes(64 << 20, 1_000, 5_000).disk_needed(5, &all));
        assert!(quick < 3.0, "{quick}");
        let w5 = gib(full.disk_needed(2, &["w5".to_string()]));
        assert!(w5 > 7.0 && w5 < need, "{w5}");
        assert!(full.disk_needed(1, &["w4".to_string()]) == 2 << 30, "W4 needs only the spare");
    }
}
