//! `coffer-bench`: benchmarks that print figures, each beside a baseline
//! measured in the same run (these machines are shared and noisy).
//!
//! - `pipeline`: throughput of each ingest stage (chunking, keyed hashing,
//!   sealing) and of the whole pipeline on every core, over a file in the page
//!   cache, next to single-thread BLAKE3 from the `blake3` crate.

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
    /// Ingest pipeline throughput, stage by stage, against plain BLAKE3.
    Pipeline(pipeline::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Pipeline(args) => pipeline::run(&args),
    }
}
