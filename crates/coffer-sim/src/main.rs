//! `coffer-sim`: runs the deterministic simulation over many seeds, or
//! replays one. A failing seed prints the command that replays it.

use std::time::Instant;

use clap::Parser;
use coffer_sim::{run_catching, SimConfig, DEFAULT_DEVICES, DEFAULT_STEPS};

/// Deterministic simulation of Coffer's sync.
#[derive(Debug, Parser)]
#[command(name = "coffer-sim")]
struct Args {
    /// How many seeds to run (from --first-seed), when --seed is not given.
    #[arg(long, default_value_t = 2000)]
    seeds: u64,
    /// The first seed of a multi-seed run.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Replay exactly this seed (a failure prints its whole history).
    #[arg(long)]
    seed: Option<u64>,
    /// Random steps per seed.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    steps: usize,
    /// Devices per seed.
    #[arg(long, default_value_t = DEFAULT_DEVICES)]
    devices: usize,
    /// Worker threads for a multi-seed run (each seed is single-threaded).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(seed) = args.seed {
        let config = SimConfig { seed, steps: args.steps, devices: args.devices, log_lines: usize::MAX };
        let summary = run_catching(config).map_err(|f| anyhow::anyhow!("{f}"))?;
        println!("seed {seed}: ok {summary:?}");
        return Ok(());
    }
    let started = Instant::now();
    let next = std::sync::atomic::AtomicU64::new(args.first_seed);
    let end = args.first_seed + args.seeds;
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..args.jobs.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if seed >= end {
                    break;
                }
                let config = SimConfig { seed, steps: args.steps, devices: args.devices, log_lines: 25 };
                if let Err(f) = run_catching(config) {
                    eprintln!("{f}\n");
                    if let Ok(mut v) = failures.lock() {
                        v.push(seed);
                    }
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let failed = failures.into_inner().unwrap_or_default();
    println!(
        "{} seeds ({} steps, {} devices) in {secs:.1} s: {:.0} seeds/minute with {} job(s); {} failed",
        args.seeds,
        args.steps,
        args.devices,
        args.seeds as f64 * 60.0 / secs.max(1e-9),
        args.jobs,
        failed.len()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("failing seeds: {failed:?}")
    }
}
