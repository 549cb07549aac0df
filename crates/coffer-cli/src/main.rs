//! `coffer`: the command line face of Coffer. Every command a script would
//! use has a non-interactive form and an exit code that tells success from
//! failure. Commands land with the issues that build their engines (server:
//! issue 3; signup, login, sync, status, up: issue 4).

use clap::Parser;

/// Coffer: end-to-end encrypted file sync.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    println!("Coffer {}: end-to-end encrypted file sync. See `coffer --help`.", env!("CARGO_PKG_VERSION"));
    Ok(())
}
