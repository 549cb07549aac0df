//! `coffer-bench`: benchmarks that print figures, each beside a baseline
//! measured in the same run (these machines are shared and noisy).
//!
//! - `pipeline`: throughput of each ingest stage (chunking, keyed hashing,
//!   sealing) and of the whole pipeline on every core, over a file in the page
//!   cache, next to single-thread BLAKE3 from the `blake3` crate.
//! - `load`: the cloud store under many concurrent committing clients and
//!   thousands of held long-polls (commits/s, latency, errors, polls held).
//! - `compare`: Coffer side by side with Syncthing, rclone and Unison on the
//!   same workloads, on loopback (see `compare/mod.rs`).

mod compare;
mod load;
mod pipeline;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "coffer-bench", about = "Coffer's benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Coffer against Syncthing, rclone and Unison, side by side.
    Compare(compare::Args),
    /// Ingest pipeline throughput, stage by stage, against plain BLAKE3.
    Pipeline(pipeline::Args),
    /// Cloud store load: concurrent commits and held long-polls.
    Load(load::Args),
    /// The server side of `load` (started by it as a child process).
    #[command(hide = true)]
    LoadServer(load::ServerArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Compare(args) => compare::run(&args),
        Cmd::Pipeline(args) => pipeline::run(&args),
        Cmd::Load(args) => load::run(&args),
        Cmd::LoadServer(args) => load::run_server(&args),
    }
}
