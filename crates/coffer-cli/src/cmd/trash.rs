//! `coffer trash [--restore PATH]`: what sync moved aside on this device.

use std::path::PathBuf;

use clap::Parser;
use coffer_engine::home::Home;
use coffer_engine::model::RelPath;

use super::common::{open_set_up, root_arg};

/// List the folder's trash, or restore a file from it.
#[derive(Debug, Parser)]
pub struct Args {
    /// Move the newest trashed copy of this path back into place.
    #[arg(long)]
    pub restore: Option<String>,
    /// The sync folder (default: the one set up before).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<()> {
    let engine = open_set_up(home, &root_arg(home, args.dir)?)?;
    if let Some(p) = args.restore {
        let path = RelPath::new(p)?;
        engine.restore_from_trash(&path)?;
        println!("Restored {path} from the trash; the next sync round uploads it.");
        return Ok(());
    }
    let items = engine.trash_items()?;
    if items.is_empty() {
        println!("The trash is empty.");
    }
    for i in items {
        println!("{}  (trashed at {} ms)", i.path, i.trashed_ms);
    }
    Ok(())
}
