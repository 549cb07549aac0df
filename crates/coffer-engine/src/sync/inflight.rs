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
//! The note is cleared once the answer is recorded, and after that check.

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
    /// Notes the uploads a commit is about to send.
    pub(crate) fn note_in_flight<'a>(
        &self,
        uploads: impl Iterator<Item = (&'a RelPath, &'a SyncedEntry)>,
    ) -> Result<(), EngineError> {
        let rows: Vec<InFlight> = uploads
            .map(|(path, s)| InFlight {
                path: path.clone(),
                revision: s.revision.get(),
                node: s.node.clone(),
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let text = serde_json::to_string(&rows).map_err(|e| EngineError::Io {
            what: "noting a commit in flight".into(),
            source: std::io::Error::other(e),
        })?;
        Ok(self.index.set_meta(KEY, &text)?)
    }

    /// The commit's answer is recorded: nothing is in flight.
    pub(crate) fn clear_in_flight(&self) -> Result<(), EngineError> {
        Ok(self.index.set_meta(KEY, "")?)
    }

    /// After a pull: takes this device's own unrecorded commits as synced.
    pub(crate) fn adopt_own_commits(&self) -> Result<(), EngineError> {
        let Some(text) = self.index.get_meta(KEY)?.filter(|t| !t.is_empty()) else { return Ok(()) };
        let rows: Vec<InFlight> = serde_json::from_str(&text).unwrap_or_default();
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
        self.clear_in_flight()
    }
}
