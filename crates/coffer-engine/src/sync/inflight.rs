//! Commits in flight. A device that sent a commit but never recorded the
//! answer (killed between the two, or the answer lost on the network and
//! the retry refused as a conflict) learns its own revision from the
//! journal like anyone else's. If the file was edited again meanwhile, the
//! planner would see local and remote both changed since `synced` and make
//! a conflicted copy of the device's newest edit against its own previous
//! upload: no data lost, but a conflict with itself, with the older
//! version keeping the name.
//!
//! So before each commit the uploads it carries are noted in the index
//! (path, the revision each would become, and the node sealed into it);
//! after the next pull, a remote entry at exactly that revision with
//! exactly that node is this device's own commit, and becomes `synced`.
//! The note is cleared once the answer is recorded (but for uploads the
//! store refused as conflicts), and after that check.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{Engine, EngineError};
use crate::model::{Node, RelPath};
use crate::plan::SyncedEntry;
use crate::remote::Remote;

/// The index `meta` key of the note.
const KEY: &str = "commit_in_flight";

#[derive(Serialize, Deserialize)]
struct InFlight {
    path: RelPath,
    revision: u64,
    node: Node,
}

impl<R: Remote> Engine<R> {
    /// Notes the uploads a commit is about to send (beside any still noted
    /// from an earlier batch); returns their paths.
    pub(crate) fn note_in_flight<'a>(
        &self,
        uploads: impl Iterator<Item = (&'a RelPath, &'a SyncedEntry)>,
    ) -> Result<Vec<RelPath>, EngineError> {
        // A path noted twice keeps its last note. By set, not by a scan
        // of the notes per upload: a batch carries hundreds.
        let mut fresh: Vec<InFlight> = Vec::new();
        let mut at: HashMap<RelPath, usize> = HashMap::new();
        for (path, s) in uploads {
            let row = InFlight { path: path.clone(), revision: s.revision.get(), node: s.node.clone() };
            match at.entry(path.clone()) {
                Entry::Occupied(o) => fresh[*o.get()] = row,
                Entry::Vacant(v) => {
                    v.insert(fresh.len());
                    fresh.push(row);
                }
            }
        }
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = self.in_flight()?;
        rows.retain(|r| !at.contains_key(&r.path));
        let noted = fresh.iter().map(|r| r.path.clone()).collect();
        rows.extend(fresh);
        self.write_in_flight(&rows)?;
        Ok(noted)
    }

    /// The answer to a commit of the `noted` uploads is recorded: they are
    /// no longer in flight, but for those `refused` as conflicts, which stay
    /// noted until the next pull: a retry after a lost answer is refused by
    /// the very revision the first attempt made.
    pub(crate) fn settle_in_flight(&self, noted: &[RelPath], refused: &[RelPath]) -> Result<(), EngineError> {
        if noted.is_empty() {
            return Ok(());
        }
        let noted: HashSet<&RelPath> = noted.iter().collect();
        let refused: HashSet<&RelPath> = refused.iter().collect();
        let mut rows = self.in_flight()?;
        rows.retain(|r| !noted.contains(&r.path) || refused.contains(&r.path));
        self.write_in_flight(&rows)
    }

    fn in_flight(&self) -> Result<Vec<InFlight>, EngineError> {
        let text = self.index.get_meta(KEY)?.unwrap_or_default();
        // An unreadable note only costs the conflict it would have spared.
        Ok(if text.is_empty() { Vec::new() } else { serde_json::from_str(&text).unwrap_or_default() })
    }

    fn write_in_flight(&self, rows: &[InFlight]) -> Result<(), EngineError> {
        let text = if rows.is_empty() {
            String::new()
        } else {
            serde_json::to_string(rows).map_err(|e| EngineError::Io {
                what: "noting a commit in flight".into(),
                source: std::io::Error::other(e),
            })?
        };
        Ok(self.index.set_meta(KEY, &text)?)
    }

    /// After a pull: takes this device's own unrecorded commits as synced.
    pub(crate) fn adopt_own_commits(&self) -> Result<(), EngineError> {
        let rows = self.in_flight()?;
        if rows.is_empty() {
            return Ok(());
        }
        let remote = self.index.remote()?;
        let synced = self.index.synced()?;
        for row in rows {
            let Some(entry) = remote.get(&row.path) else { continue };
            let ours = entry.revision.get() == row.revision
                && entry.live.as_ref().is_some_and(|l| l.node == row.node)
                && synced.get(&row.path).is_none_or(|s| s.revision < entry.revision);
            if let (true, Some(s)) = (ours, entry.to_synced()) {
                self.index.put_synced(&row.path, &s)?;
            }
        }
        self.write_in_flight(&[])
    }
}
