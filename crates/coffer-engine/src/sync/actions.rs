//! What a person asks of a sync root, beyond syncing: version history and
//! restore, conflict resolution, selective sync, the trash. Each is a
//! method on [`Engine`] so that every face (CLI, UI, tray) shares it.

use std::collections::BTreeSet;

use coffer_proto::api::ChangeResult;
use coffer_proto::Revision;
use serde::Serialize;

use super::{Engine, EngineError};
use crate::model::{NodeKind, RelPath};
use crate::plan::{RemoteEntry, RemoteLive};
use crate::remote::Remote;

/// One kept revision of a file, opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Version {
    /// The revision.
    pub revision: Revision,
    /// When the store accepted it (ms since the epoch).
    pub time_ms: u64,
    /// Which device made it.
    pub device: String,
    /// Size in bytes (0 for deletions).
    pub size: u64,
    /// True for a deletion.
    pub deleted: bool,
}

/// How to settle a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// The local version takes the name back; the remote one goes to the
    /// trash (and stays in the store's version history).
    Mine,
    /// The remote version stays; the conflicted copy goes to the trash.
    Theirs,
    /// Both stay.
    Both,
}

/// Errors of these actions.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The request does not fit the state of things.
    #[error("{0}")]
    Refused(String),
}

impl From<crate::index::IndexError> for ActionError {
    fn from(e: crate::index::IndexError) -> Self {
        ActionError::Engine(e.into())
    }
}

impl From<crate::remote::RemoteError> for ActionError {
    fn from(e: crate::remote::RemoteError) -> Self {
        ActionError::Engine(e.into())
    }
}

impl<R: Remote> Engine<R> {
    /// Every kept revision of `path`, newest first.
    pub async fn versions(&self, path: &RelPath) -> Result<Vec<Version>, ActionError> {
        let id = self.keys.path.entry_id(path.as_str());
        let list = self.remote.versions(id).await?;
        let mut out = Vec::new();
        for v in list {
            let (_, e, _) = super::open_entry(&self.keys, &v).map_err(ActionError::Refused)?;
            out.push(Version {
                revision: v.revision,
                time_ms: v.time.0,
                device: e
                    .live
                    .as_ref()
                    .map(|l| l.device_name.clone())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| v.device_id.to_string()),
                size: e.live.as_ref().map_or(0, |l| l.node.size),
                deleted: e.live.is_none(),
            });
        }
        Ok(out)
    }

    /// Makes an old revision of `path` current again (a new revision with
    /// the old content; nothing is uploaded but metadata). Without
    /// `revision`, the newest one that is not a deletion and not current.
    /// The next round downloads it.
    pub async fn restore(&self, path: &RelPath, revision: Option<Revision>) -> Result<Revision, ActionError> {
        let id = self.keys.path.entry_id(path.as_str());
        let list = self.remote.versions(id).await?;
        let current = list.iter().map(|v| v.revision).max().unwrap_or(Revision::ZERO);
        let chosen = match revision {
            Some(r) => list.iter().find(|v| v.revision == r),
            None => list.iter().find(|v| v.revision != current && v.meta.is_some()),
        }
        .ok_or_else(|| ActionError::Refused(format!("no such version of {path} is kept on the store")))?;
        let (_, old) = self.open_resolved(chosen).await?.map_err(ActionError::Refused)?;
        let live = old.live.ok_or_else(|| ActionError::Refused("that version is a deletion".into()))?;
        let (change, pieces) = self.change_for(path, current, &live.node, &live.chunks);
        // A long list's pieces are on the store with the old revision unless
        // the cut changed since; the batcher sends only those it lacks.
        let mut batcher = super::transfer::ChunkBatcher::new(&self.remote);
        for piece in pieces {
            batcher.add(piece).await?;
        }
        batcher.flush().await?;
        let resp = self.remote.commit(&[change]).await?;
        match resp.results.first() {
            Some(ChangeResult::Applied { revision, .. }) => {
                let entry = RemoteEntry {
                    entry_id: id,
                    revision: *revision,
                    live: Some(RemoteLive {
                        device: self.config.device_id,
                        listed: live.chunks.len() > crate::chunklist::INLINE_MAX,
                        ..live
                    }),
                };
                self.index.put_remote(&[(Some(path.clone()), entry)], None)?;
                Ok(*revision)
            }
            _ => Err(ActionError::Refused(format!("{path} changed on another device meanwhile; try again"))),
        }
    }

    /// Settles a recorded conflict on `path` (the newest one).
    pub async fn resolve(&self, path: &RelPath, keep: Keep) -> Result<(), ActionError> {
        let record = self
            .index
            .conflicts()?
            .into_iter()
            .rev()
            .find(|c| &c.path == path || &c.copy_path == path)
            .ok_or_else(|| ActionError::Refused(format!("no unresolved conflict on {path}")))?;
        let copy_abs = self.abs(&record.copy_path);
        let copy_exists = self.fs.exists(&copy_abs).map_err(|e| ActionError::Refused(e.to_string()))?;
        match keep {
            Keep::Both => {}
            Keep::Theirs => {
                if copy_exists {
                    self.trash_node(&record.copy_path).map_err(|e| ActionError::Refused(e.to_string()))?;
                }
            }
            Keep::Mine => {
                if !copy_exists {
                    return Err(ActionError::Refused(format!(
                        "the conflicted copy {} is gone; nothing to keep",
                        record.copy_path
                    )));
                }
                if self.fs.exists(&self.abs(&record.path)).map_err(|e| ActionError::Refused(e.to_string()))? {
                    self.trash_node(&record.path).map_err(|e| ActionError::Refused(e.to_string()))?;
                }
                self.fs
                    .rename(&copy_abs, &self.abs(&record.path))
                    .map_err(|e| ActionError::Refused(format!("cannot move the copy back: {e}")))?;
            }
        }
        self.index.resolve_conflict(record.id)?;
        Ok(())
    }

    /// Stops syncing `folder` to this device. Its local copy is removed only
    /// if every file in it is synced (identical to the store); otherwise
    /// nothing changes and the unsynced paths are named.
    pub fn exclude(&self, folder: &RelPath) -> Result<usize, ActionError> {
        let scan = self.scan()?;
        let synced = self.index.synced()?;
        let mut unsynced = Vec::new();
        let mut inside: Vec<RelPath> = Vec::new();
        for (p, e) in scan.entries.range(folder.clone()..) {
            if !p.starts_with(folder) {
                break;
            }
            inside.push(p.clone());
            if !synced.get(p).is_some_and(|s| s.node.same_content(&e.node)) {
                unsynced.push(p.to_string());
            }
        }
        if let Some(first) = unsynced.first() {
            return Err(ActionError::Refused(format!(
                "{folder} holds {} change(s) not synced yet (e.g. {first}); let sync finish, then exclude it",
                unsynced.len()
            )));
        }
        self.index.set_excluded(folder, true)?;
        // Children first, then their folders.
        inside.sort_by_key(|p| std::cmp::Reverse(p.depth()));
        for p in &inside {
            let abs = self.abs(p);
            let r = match scan.entries.get(p).map(|e| e.node.kind) {
                Some(NodeKind::Dir) => self.fs.remove_dir(&abs),
                _ => self.fs.remove_file(&abs),
            };
            if let Err(e) = r {
                // Left in place (e.g. an ignored file inside): harmless.
                tracing::info!(path = %p, error = %e, "kept while excluding");
                continue;
            }
            self.index.remove_synced(p)?;
        }
        let gone: Vec<RelPath> = inside.clone();
        self.index.update_cache(&[], &gone)?;
        Ok(inside.len())
    }

    /// Syncs `folder` to this device again (the next round downloads it).
    pub fn include(&self, folder: &RelPath) -> Result<(), ActionError> {
        let excluded = self.index.excluded()?;
        if !excluded.contains(folder) {
            return Err(ActionError::Refused(format!("{folder} is not excluded")));
        }
        self.index.set_excluded(folder, false)?;
        Ok(())
    }

    /// Folders excluded from this device.
    pub fn excluded(&self) -> Result<BTreeSet<RelPath>, ActionError> {
        Ok(self.index.excluded()?)
    }

    /// Moves the newest trashed copy of `path` back, if the path is free.
    pub fn restore_from_trash(&self, path: &RelPath) -> Result<(), ActionError> {
        let items = self.trash_items().map_err(|e| ActionError::Refused(e.to_string()))?;
        let item = items
            .into_iter()
            .find(|i| &i.path == path)
            .ok_or_else(|| ActionError::Refused(format!("{path} is not in the trash")))?;
        let dest = self.abs(path);
        if self.fs.exists(&dest).map_err(|e| ActionError::Refused(e.to_string()))? {
            return Err(ActionError::Refused(format!("{path} exists; move it away first")));
        }
        if let Some(parent) = path.parent() {
            let mut chain = vec![];
            let mut p = Some(parent);
            while let Some(a) = p {
                p = a.parent();
                chain.push(a);
            }
            for a in chain.iter().rev() {
                if !self.fs.exists(&self.abs(a)).map_err(|e| ActionError::Refused(e.to_string()))? {
                    self.fs.create_dir(&self.abs(a)).map_err(|e| ActionError::Refused(e.to_string()))?;
                }
            }
        }
        self.fs.rename(&item.location, &dest).map_err(|e| ActionError::Refused(e.to_string()))?;
        Ok(())
    }
}
