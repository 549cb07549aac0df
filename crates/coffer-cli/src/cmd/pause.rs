//! `coffer pause` and `coffer resume`: a flag in the folder's index that the
//! running daemon reads before each round.

use std::path::PathBuf;

use clap::Parser;
use coffer_engine::home::Home;

use super::common::{open_set_up, root_arg};

/// Pause or resume syncing a folder.
#[derive(Debug, Parser)]
pub struct Args {
    /// The folder (default: the one set up before).
    pub dir: Option<PathBuf>,
}

pub fn set(home: &Home, args: Args, paused: bool) -> anyhow::Result<()> {
    let engine = open_set_up(home, &root_arg(home, args.dir)?)?;
    engine.index().set_meta("paused", if paused { "1" } else { "0" })?;
    println!("{}", if paused { "Sync paused." } else { "Sync resumed." });
    Ok(())
}
