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
//! They are remembered (entry and revision, in the index's `refused_entries`
//! meta key) and fetched again on later rounds, and reported each round
//! until they open (a store that tampered once and behaves again), are
//! superseded by a newer revision, or the store no longer has them. So a
//! refusal neither loses the entry for good nor goes unreported after one
//! round.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use coffer_crypto::AccountKeys;
use coffer_proto::api::EntryVersion;
use coffer_proto::api::ErrorCode;
use coffer_proto::{ChunkId, Cursor, EntryId, Revision};

use super::transfer::TransferError;
use super::{Engine, EngineError, Problem};
use crate::chunklist;
use crate::model::{ChunkRef, EntryMeta, Node, RelPath};
use crate::plan::{RemoteEntry, RemoteLive};
use crate::remote::Remote;

const PAGE: u32 = 1000;

/// Index meta key of the refused entries (JSON: entry id → revision).
const REFUSED: &str = "refused_entries";

/// Most refused entries fetched again per round (a store could forge many).
const REFETCH_PER_ROUND: usize = 100;

/// Opens and checks one journal or snapshot entry against the account's
/// keys: the metadata must open for this entry id and revision, parse, name a
/// valid path, and that path must hash to the entry id. Pure (no I/O), so it
/// is also what the `entry_version` fuzz target runs. A file whose chunk list
/// is in pieces (metadata format 2) comes back without chunks and with the
/// pieces in the third field: [`Engine::open_resolved`] reads and checks them.
pub fn open_entry(
    keys: &AccountKeys,
    v: &EntryVersion,
) -> Result<(Option<RelPath>, RemoteEntry, Vec<ChunkRef>), String> {
    let mut list = Vec::new();
    let live = match &v.meta {
        None => None,
        Some(sealed) => {
            let plain = keys
                .meta
                .open(&v.entry_id, v.revision, sealed)
                .map_err(|e| format!("metadata of revision {} refused: {e}", v.revision))?;
            let meta = EntryMeta::from_bytes(&plain)?;
            if keys.path.entry_id(meta.path.as_str()) != v.entry_id {
                return Err(format!("metadata names {:?}, which is not this entry", meta.path.as_str()));
            }
            list = meta.list;
            let live = RemoteLive {
                node: meta.node,
                chunks: meta.chunks,
                device: v.device_id,
                device_name: meta.device_name,
                listed: !list.is_empty(),
            };
            Some((meta.path, live))
        }
    };
    let path = live.as_ref().map(|(p, _)| p.clone());
    Ok((path, RemoteEntry { entry_id: v.entry_id, revision: v.revision, live: live.map(|(_, l)| l) }, list))
}

impl<R: Remote> Engine<R> {
    /// Opens and checks one journal or snapshot entry ([`open_entry`]), then
    /// reads a long chunk list from its pieces ([`crate::chunklist`]): those
    /// the last list known for the entry also has are rebuilt here, the rest
    /// fetched; the list must add up to the file's size and hash. `Ok(Err)`:
    /// refused, like a bad entry; `Err`: the store could not be reached.
    pub(crate) async fn open_resolved(
        &self,
        v: &EntryVersion,
    ) -> Result<Result<(Option<RelPath>, RemoteEntry), String>, EngineError> {
        let (path, mut entry, list) = match open_entry(&self.keys, v) {
            Ok(opened) => opened,
            Err(message) => return Ok(Err(message)),
        };
        if let Some(live) = entry.live.as_mut().filter(|_| !list.is_empty()) {
            match self.read_list(&v.entry_id, &live.node, &list).await? {
                Ok(chunks) => live.chunks = chunks,
                Err(m) => return Ok(Err(format!("chunk list of revision {} refused: {m}", v.revision))),
            }
        }
        Ok(Ok((path, entry)))
    }

    /// The chunk list held in `pieces` (see [`Engine::open_resolved`]).
    async fn read_list(
        &self,
        entry_id: &EntryId,
        node: &Node,
        pieces: &[ChunkRef],
    ) -> Result<Result<Vec<ChunkRef>, String>, EngineError> {
        let previous = self.index.remote_chunks(entry_id)?;
        let known: HashMap<ChunkId, chunklist::Piece> =
            chunklist::pieces(&self.keys, &previous).into_iter().map(|p| (p.r.id, p)).collect();
        let mut chunks = Vec::new();
        for r in pieces {
            let plain = match known.get(&r.id).filter(|p| p.r == *r) {
                Some(p) => p.plain.clone(),
                None => match self.fetch_verified(r).await {
                    Ok(plain) => plain,
                    Err(TransferError::Remote(e)) if e.code() != Some(ErrorCode::NotFound) => {
                        return Err(e.into())
                    }
                    Err(e) => return Ok(Err(e.to_string())),
                },
            };
            match chunklist::decode(&plain) {
                Ok(mut run) => chunks.append(&mut run),
                Err(m) => return Ok(Err(m)),
            }
        }
        Ok(EntryMeta::check_chunks(node, &chunks).map(|()| chunks))
    }

    /// Checks and records a batch of entries, then the cursor. A revision
    /// no newer than the index's, or than one accepted earlier in the
    /// batch, is old news (this device's own commit, or a replay) and
    /// skipped before anything else is looked at.
    async fn record_pulled(
        &self,
        versions: &[EntryVersion],
        cursor: Option<Cursor>,
        problems: &mut Vec<Problem>,
        refused: &mut BTreeMap<EntryId, Revision>,
    ) -> Result<usize, EngineError> {
        let mut accepted = Vec::new();
        let mut known =
            self.index.remote_revisions(&versions.iter().map(|v| &v.entry_id).collect::<Vec<_>>())?;
        for v in versions {
            if known.get(&v.entry_id).is_some_and(|k| *k >= v.revision) {
                continue; // old news (our own commit, or a replay)
            }
            match self.open_resolved(v).await? {
                Ok(e) => {
                    if refused.get(&v.entry_id).is_some_and(|r| *r <= v.revision) {
                        refused.remove(&v.entry_id);
                    }
                    known.insert(v.entry_id, v.revision);
                    accepted.push(e);
                }
                Err(message) => {
                    tracing::warn!(entry = %v.entry_id, %message, "refused an entry from the store");
                    problems.push(Problem { path: format!("entry {}", v.entry_id), message });
                    let r = refused.entry(v.entry_id).or_insert(v.revision);
                    *r = (*r).max(v.revision);
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
        let earlier = self.refused()?;
        let mut refused = earlier.clone();
        if self.index.get_meta("bootstrapped")?.is_none() {
            let mut after = None;
            let mut at = None;
            loop {
                let page = self.remote.snapshot(after, Some(PAGE)).await?;
                let taken = *at.get_or_insert(page.cursor);
                changed += self.record_pulled(&page.entries, None, problems, &mut refused).await?;
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
        // The next page is asked for while this one is checked and
        // recorded: its position is known as soon as this one arrives, and
        // opening a page of metadata and writing it to the index takes
        // longer than the store takes to send the next one. Pages are
        // still recorded one after the other, in order.
        let pull_started = std::time::Instant::now();
        let mut page = self.remote.journal(cursor, Some(PAGE)).await?;
        let first_fetch = pull_started.elapsed();
        let mut pages = 1;
        loop {
            if page.cursor < cursor {
                return Err(EngineError::Rollback(format!(
                    "its journal is at {} but this device already saw {}",
                    page.cursor, cursor
                )));
            }
            let next = async {
                if page.more {
                    Some(self.remote.journal(page.cursor, Some(PAGE)).await)
                } else {
                    None
                }
            };
            let recording = self.record_pulled(&page.changes, Some(page.cursor), problems, &mut refused);
            let (recorded, next) = futures::future::join(recording, next).await;
            changed += recorded?;
            cursor = page.cursor;
            let Some(next) = next else { break };
            page = next?;
            pages += 1;
        }
        tracing::debug!(
            first_fetch_ms = first_fetch.as_millis() as u64,
            pages,
            total_ms = pull_started.elapsed().as_millis() as u64,
            changed,
            "pulled"
        );
        // Entries refused in an earlier round: fetch them again.
        let mut again = Vec::new();
        for (id, rev) in earlier.iter().take(REFETCH_PER_ROUND) {
            if refused.get(id) != Some(rev) {
                continue; // settled by this round's pages
            }
            match self.remote.version(*id, *rev).await {
                Ok(v) if v.entry_id == *id && v.revision == *rev => again.push(v),
                Ok(_) => problems.push(Problem {
                    path: format!("entry {id}"),
                    message: format!("the store answered another entry or revision for revision {rev}"),
                }),
                Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                    refused.remove(id);
                }
                Err(e) => return Err(e.into()),
            }
        }
        changed += self.record_pulled(&again, None, problems, &mut refused).await?;
        if refused != earlier {
            // Hex ids and integers: this cannot fail to serialise.
            self.index.set_meta(REFUSED, &serde_json::to_string(&refused).unwrap_or_default())?;
        }
        Ok(changed)
    }

    /// The entries refused so far, by revision.
    fn refused(&self) -> Result<BTreeMap<EntryId, Revision>, EngineError> {
        Ok(self.index.get_meta(REFUSED)?.and_then(|j| serde_json::from_str(&j).ok()).unwrap_or_default())
    }
}

/// Holds a long-poll on the journal and pokes `wake` whenever the store has
/// something past our cursor; backs off while the store is unreachable.
pub(crate) async fn long_poll_loop<R: Remote + 'static>(
    engine: Arc<Engine<R>>,
    wake: tokio::sync::mpsc::Sender<()>,
    heard: Arc<std::sync::atomic::AtomicU64>,
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
                    // Before the wake-up, so that whoever takes it sees
                    // this position (see `Engine::run`).
                    heard.fetch_max(page.cursor.get(), std::sync::atomic::Ordering::SeqCst);
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
