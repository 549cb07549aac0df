//! Pulling the store's changes into the index.
//!
//! A new device does not replay history: it pages through the store's
//! current state (a snapshot, taken at a cursor) and then follows the
//! journal from that cursor. Every entry is checked before it is believed:
//!
//! - its sealed metadata must open under this account's key, bound to the
//!   entry id and revision the store claims (so the store cannot move
//!   metadata between entries or replay an old revision as a new one);
//! - the path inside must be valid ([`RelPath`]: no `..`, `/`-escapes, NUL,
//!   absolute paths, or the state folder) and must hash to the entry id;
//! - revisions only move forward: an older one than already seen is old
//!   news and ignored, and a journal whose cursor goes backwards is refused
//!   as a rollback.
//!
//! Refused entries are reported as problems and skipped; nothing is written.

use std::sync::Arc;
use std::time::Duration;

use coffer_proto::api::EntryVersion;
use coffer_proto::Cursor;

use super::{Engine, EngineError, Problem};
use crate::model::{EntryMeta, RelPath};
use crate::plan::{RemoteEntry, RemoteLive};
use crate::remote::Remote;

const PAGE: u32 = 1000;

impl<R: Remote> Engine<R> {
    /// Opens and checks one journal or snapshot entry.
    pub(crate) fn open_entry(&self, v: &EntryVersion) -> Result<(Option<RelPath>, RemoteEntry), String> {
        let live = match &v.meta {
            None => None,
            Some(sealed) => {
                let plain = self
                    .keys
                    .meta
                    .open(&v.entry_id, v.revision, sealed)
                    .map_err(|e| format!("metadata of revision {} refused: {e}", v.revision))?;
                let meta = EntryMeta::from_bytes(&plain)?;
                if self.keys.path.entry_id(meta.path.as_str()) != v.entry_id {
                    return Err(format!("metadata names {:?}, which is not this entry", meta.path.as_str()));
                }
                let live = RemoteLive {
                    node: meta.node,
                    chunks: meta.chunks,
                    device: v.device_id,
                    device_name: meta.device_name,
                };
                Some((meta.path, live))
            }
        };
        let path = live.as_ref().map(|(p, _)| p.clone());
        Ok((path, RemoteEntry { entry_id: v.entry_id, revision: v.revision, live: live.map(|(_, l)| l) }))
    }

    /// Checks and records a batch of entries, then the cursor.
    fn record_pulled(
        &self,
        versions: &[EntryVersion],
        cursor: Option<Cursor>,
        problems: &mut Vec<Problem>,
    ) -> Result<usize, EngineError> {
        let mut accepted = Vec::new();
        for v in versions {
            if let Some((known, _)) = self.index.remote_entry(&v.entry_id)? {
                if known >= v.revision {
                    continue; // old news (our own commit, or a replay)
                }
            }
            match self.open_entry(v) {
                Ok(e) => accepted.push(e),
                Err(message) => {
                    tracing::warn!(entry = %v.entry_id, %message, "refused an entry from the store");
                    problems.push(Problem { path: format!("entry {}", v.entry_id), message });
                }
            }
        }
        self.index.put_remote(&accepted, cursor)?;
        Ok(accepted.len())
    }

    /// Pulls every change the store has past our cursor. Returns how many
    /// entries changed.
    pub async fn pull(&self, problems: &mut Vec<Problem>) -> Result<usize, EngineError> {
        let mut cursor = self.index.cursor()?;
        let mut changed = 0;
        if self.index.get_meta("bootstrapped")?.is_none() {
            let mut after = None;
            let mut at = None;
            loop {
                let page = self.remote.snapshot(after, Some(PAGE)).await?;
                let taken = *at.get_or_insert(page.cursor);
                changed += self.record_pulled(&page.entries, None, problems)?;
                match page.next {
                    Some(n) => after = Some(n),
                    None => {
                        self.index.put_remote(&[], Some(taken))?;
                        self.index.set_meta("bootstrapped", "1")?;
                        cursor = taken;
                        break;
                    }
                }
            }
        }
        loop {
            let page = self.remote.journal(cursor, Some(PAGE)).await?;
            if page.cursor < cursor {
                return Err(EngineError::Rollback(format!(
                    "its journal is at {} but this device already saw {}",
                    page.cursor, cursor
                )));
            }
            changed += self.record_pulled(&page.changes, Some(page.cursor), problems)?;
            cursor = page.cursor;
            if !page.more {
                break;
            }
        }
        Ok(changed)
    }
}

/// Holds a long-poll on the journal and pokes `wake` whenever the store has
/// something past our cursor; backs off while the store is unreachable.
pub(crate) async fn long_poll_loop<R: Remote + 'static>(
    engine: Arc<Engine<R>>,
    wake: tokio::sync::mpsc::Sender<()>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let cursor = match engine.index.cursor() {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        match engine.remote.wait_journal(cursor, Duration::from_secs(30)).await {
            Ok(page) => {
                backoff = Duration::from_millis(500);
                if !page.changes.is_empty() || page.cursor > cursor {
                    // A full channel already holds a wake-up: fine.
                    let _ = wake.try_send(());
                    // Poll again only once the round has pulled past this
                    // page (or after a while, if it cannot).
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                    while tokio::time::Instant::now() < deadline
                        && engine.index.cursor().is_ok_and(|c| c < page.cursor)
                    {
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                }
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
