//! `coffer versions PATH` and `coffer restore PATH [--version N]`.

use std::path::PathBuf;

use clap::Parser;
use coffer_engine::home::Home;
use coffer_engine::model::RelPath;
use coffer_proto::Revision;

use super::common::{open_set_up, root_arg, runtime};

/// List the kept versions of a file.
#[derive(Debug, Parser)]
pub struct Args {
    /// The file, relative to the sync folder.
    pub path: String,
    /// The sync folder (default: the one set up before).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn list(home: &Home, args: Args) -> anyhow::Result<()> {
    let engine = open_set_up(home, &root_arg(home, args.dir)?)?;
    let path = RelPath::new(args.path)?;
    let versions = runtime()?.block_on(engine.versions(&path))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(());
    }
    if versions.is_empty() {
        println!("No versions of {path} are kept.");
    }
    for v in versions {
        let (y, mo, d, h, mi) =
            coffer_engine::sync::names::civil(i64::try_from(v.time_ms).unwrap_or(0) * 1_000_000);
        let what = if v.deleted { "deleted".to_string() } else { indicatif::HumanBytes(v.size).to_string() };
        println!(
            "{:>5}  {y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC  {what:>12}  from {}",
            v.revision, v.device
        );
    }
    Ok(())
}

/// Make an old version of a file current again.
#[derive(Debug, Parser)]
pub struct RestoreArgs {
    /// The file, relative to the sync folder.
    pub path: String,
    /// The version (see `coffer versions`); default: the one before the current.
    #[arg(long)]
    pub version: Option<u64>,
    /// The sync folder (default: the one set up before).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn restore(home: &Home, args: RestoreArgs) -> anyhow::Result<()> {
    let engine = open_set_up(home, &root_arg(home, args.dir)?)?;
    let path = RelPath::new(args.path)?;
    let rev = runtime()?.block_on(engine.restore(&path, args.version.map(Revision)))?;
    println!("Restored {path} as version {rev}; `coffer sync` brings it to this folder.");
    Ok(())
}
