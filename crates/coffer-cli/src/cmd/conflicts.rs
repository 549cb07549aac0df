//! `coffer conflicts` and `coffer resolve PATH --keep mine|theirs|both`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use coffer_engine::home::Home;
use coffer_engine::model::RelPath;
use coffer_engine::sync::actions::Keep;

use super::common::{open_set_up, root_arg, runtime};

/// List unresolved conflicts.
#[derive(Debug, Parser)]
pub struct Args {
    /// The folder (default: the one set up before).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn list(home: &Home, args: Args) -> anyhow::Result<()> {
    let engine = open_set_up(home, &root_arg(home, args.dir)?)?;
    let conflicts = engine.index().conflicts()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&conflicts)?);
    } else if conflicts.is_empty() {
        println!("No conflicts.");
    } else {
        for c in conflicts {
            println!("{}\n    your version: {}\n    other device: {}", c.path, c.copy_path, c.remote_device);
        }
    }
    Ok(())
}

/// Which version to keep.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeepArg {
    /// This device's version.
    Mine,
    /// The other device's version.
    Theirs,
    /// Both (the copy keeps its name).
    Both,
}

/// Settle a conflict.
#[derive(Debug, Parser)]
pub struct ResolveArgs {
    /// The conflicted path (relative to the folder), or its copy.
    pub path: String,
    /// Which version to keep.
    #[arg(long, value_enum)]
    pub keep: KeepArg,
    /// The folder (default: the one set up before).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn resolve(home: &Home, args: ResolveArgs) -> anyhow::Result<()> {
    let engine = open_set_up(home, &root_arg(home, args.dir)?)?;
    let path = RelPath::new(args.path)?;
    let keep = match args.keep {
        KeepArg::Mine => Keep::Mine,
        KeepArg::Theirs => Keep::Theirs,
        KeepArg::Both => Keep::Both,
    };
    runtime()?.block_on(engine.resolve(&path, keep))?;
    println!("Resolved {path}; the next sync round sends the result to your other devices.");
    Ok(())
}
