//! The sync root's trash: `.coffer/trash/<unix-ms>-<n>/<path>`. Every node
//! that sync removes or replaces on disk lands here first (same filesystem,
//! so it is a rename, not a copy) and stays for `trash_days` (30 by
//! default). `coffer trash` lists it; restoring is moving a file back.

use std::io;
use std::path::PathBuf;

use super::Engine;
use crate::fs::StatKind;
use crate::model::RelPath;
use crate::remote::Remote;

/// One item in the trash.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TrashItem {
    /// Where it was.
    pub path: RelPath,
    /// When it was moved here (ms since the epoch).
    pub trashed_ms: i64,
    /// Where it is now (absolute).
    pub location: PathBuf,
}

impl<R: Remote> Engine<R> {
    fn trash_dir(&self) -> PathBuf {
        self.state_dir().join("trash")
    }

    /// Moves the node at `path` into a fresh trash slot.
    pub(crate) fn trash_node(&self, path: &RelPath) -> io::Result<()> {
        let ms = self.now_ns() / 1_000_000;
        // The first free slot of this millisecond: never one that already
        // holds something (after a restart, or a clock set back, a counter
        // would start again and rename over a trashed file), and the same
        // names for the same history (the simulation replays by seed).
        let mut n = 0u64;
        let slot = loop {
            let slot = self.trash_dir().join(format!("{ms}-{n}"));
            if !self.fs.exists(&slot)? {
                break slot;
            }
            n += 1;
        };
        let dest = slot.join(path.as_str());
        let mut dirs = vec![];
        let mut d = dest.parent().map(PathBuf::from);
        while let Some(p) = d {
            if p == self.state_dir() {
                break;
            }
            d = p.parent().map(PathBuf::from);
            dirs.push(p);
        }
        for dir in dirs.iter().rev() {
            if !self.fs.exists(dir)? {
                self.fs.create_dir(dir)?;
            }
        }
        self.fs.rename(&self.abs(path), &dest)
    }

    /// Everything in the trash, newest first.
    pub fn trash_items(&self) -> io::Result<Vec<TrashItem>> {
        let mut out = Vec::new();
        let dir = self.trash_dir();
        if !self.fs.exists(&dir)? {
            return Ok(out);
        }
        for slot in self.fs.read_dir(&dir)?.into_iter().flatten() {
            let ms: i64 = slot.split('-').next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let base = dir.join(&slot);
            let mut stack = vec![(base.clone(), String::new())];
            while let Some((abs, rel)) = stack.pop() {
                let stat = self.fs.symlink_metadata(&abs)?;
                if stat.kind == StatKind::Dir {
                    let children = self.fs.read_dir(&abs)?;
                    if children.is_empty() && !rel.is_empty() {
                        if let Ok(path) = RelPath::new(rel.clone()) {
                            out.push(TrashItem { path, trashed_ms: ms, location: abs.clone() });
                        }
                    }
                    for c in children.into_iter().flatten() {
                        let r = if rel.is_empty() { c.clone() } else { format!("{rel}/{c}") };
                        stack.push((abs.join(&c), r));
                    }
                } else if let Ok(path) = RelPath::new(rel) {
                    out.push(TrashItem { path, trashed_ms: ms, location: abs });
                }
            }
        }
        out.sort_by(|a, b| b.trashed_ms.cmp(&a.trashed_ms).then_with(|| a.path.cmp(&b.path)));
        Ok(out)
    }

    /// Removes trash slots older than `trash_days`. Failures are logged,
    /// never fatal: the trash only ever holds copies.
    pub(crate) fn trash_purge(&self) {
        let cutoff = self.now_ns() / 1_000_000 - i64::from(self.config.trash_days) * 86_400_000;
        let dir = self.trash_dir();
        let Ok(slots) = self.fs.read_dir(&dir) else { return };
        for slot in slots.into_iter().flatten() {
            let ms: i64 = slot.split('-').next().and_then(|s| s.parse().ok()).unwrap_or(i64::MAX);
            if ms < cutoff {
                if let Err(e) = self.remove_tree(&dir.join(&slot)) {
                    tracing::warn!(slot, error = %e, "could not purge an old trash slot");
                }
            }
        }
    }

    fn remove_tree(&self, path: &std::path::Path) -> io::Result<()> {
        if self.fs.symlink_metadata(path)?.kind == StatKind::Dir {
            for c in self.fs.read_dir(path)?.into_iter().flatten() {
                self.remove_tree(&path.join(c))?;
            }
            self.fs.remove_dir(path)
        } else {
            self.fs.remove_file(path)
        }
    }
}
