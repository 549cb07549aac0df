//! `coffer-bench`: benchmarks that print figures, each beside a baseline
//! measured in the same run (these machines are shared and noisy).
//!
//! - `pipeline`: throughput of each ingest stage (chunking, keyed hashing,
//!   sealing) and of the whole pipeline on every core, over a file in the page
//!   cache, next to single-thread BLAKE3 from the `blake3` crate.
//! - `load`: the cloud store under many concurrent committing clients and
//!   thousands of held long-polls (commits/s, latency, errors, polls held).
//! - `chunk-sizes`: the bytes an edit resends, for given chunk sizes, next
//!   to the default sizes.
//! - `compare`: Coffer side by side with Syncthing, rclone and Unison on the
//!   same workloads, on loopback (see `compare/mod.rs`).

mod chunk_sizes;
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
    /// The bytes an edit resends for given chunk sizes, beside the default.
    ChunkSizes(chunk_sizes::Args),
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
        Cmd::ChunkSizes(args) => chunk_sizes::run(&args),
        Cmd::Pipeline(args) => pipeline::run(&args),
        Cmd::Load(args) => load::run(&args),
        Cmd::LoadServer(args) => load::run_server(&args),
    }
}
