//! `coffer exclude FOLDER` and `coffer include FOLDER`: selective sync.

use std::path::PathBuf;

use clap::Parser;
use coffer_engine::home::Home;
use coffer_engine::model::RelPath;

use super::common::{open_set_up, root_arg};

/// Stop syncing a folder to this device (it stays on the store).
#[derive(Debug, Parser)]
pub struct Args {
    /// The folder, relative to the sync folder.
    pub folder: String,
    /// The sync folder (default: the one set up before).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn exclude(home: &Home, args: Args) -> anyhow::Result<()> {
    let engine = open_set_up(home, &root_arg(home, args.dir)?)?;
    let folder = RelPath::new(args.folder.trim_end_matches('/'))?;
    let removed = engine.exclude(&folder)?;
    println!("{folder} is no longer synced to this device ({removed} local files and folders removed; they stay on the store).");
    Ok(())
}

pub fn include(home: &Home, args: Args) -> anyhow::Result<()> {
    let engine = open_set_up(home, &root_arg(home, args.dir)?)?;
    let folder = RelPath::new(args.folder.trim_end_matches('/'))?;
    engine.include(&folder)?;
    println!("{folder} will be synced to this device again.");
    Ok(())
}
