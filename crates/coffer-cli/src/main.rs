//! `coffer`: the command line face of Coffer. Every command a script would
//! use has a non-interactive form and an exit code that tells success from
//! failure. One file per command under `cmd/`; each command has an `Args`
//! (clap) and a `run`.

mod cmd;

use clap::{Parser, Subcommand};

/// Coffer: end-to-end encrypted file sync.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the cloud store that devices sync against.
    Server(Box<cmd::server::Args>),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Server(args) => cmd::server::run(*args),
    }
}
