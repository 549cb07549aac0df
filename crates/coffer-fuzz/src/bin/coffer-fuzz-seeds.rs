//! Writes every fuzz target's seeds into `DIR/<target>/seed-<n>` (what
//! `scripts/fuzz` starts each cargo-fuzz corpus from). Existing corpus files
//! are kept.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: coffer-fuzz-seeds DIR");
        std::process::exit(2);
    };
    for t in coffer_fuzz::TARGETS {
        let d = dir.join(t.name);
        std::fs::create_dir_all(&d)?;
        for (i, s) in (t.seeds)().iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), s)?;
        }
    }
    Ok(())
}
