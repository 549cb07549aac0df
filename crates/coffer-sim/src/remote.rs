//! [`SimRemote`]: the engine's [`Remote`] over the in-process
//! [`coffer_server::Service`] with in-memory stores (no HTTP), plus the two
//! faults the simulation injects at this seam:
//!
//! - **offline**: while a device's network switch is off, every call fails
//!   with a retryable transport error, as an unreachable store would;
//! - **crash**: a shared [`Crash`] budget counts every effect a device has
//!   on the world (each store call that changes it here, each disk mutation in
//!   [`crate::fs::CrashFs`]); when it runs out, every later effect fails, as
//!   if the process had died there. The harness then drops the engine and
//!   starts a new one over the same disk and index;
//! - **a user edit mid-round**: a planned [`UserEdit`] lands between two
//!   effects, as a user saving a file while sync runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_engine::fs::{Fs, MemFs};

use coffer_engine::remote::{Remote, RemoteError};
use coffer_proto::api::{
    Change, CommitResponse, EntryVersion, JournalPage, SessionId, SessionInfo, SnapshotPage,
    UploadChunksResponse, Usage,
};
use coffer_proto::{ChunkId, Cursor, EntryId, Revision, SealedChunk};
use coffer_server::{BlobStore, Caller, Service, ServiceError};

/// What happens at a device's effects: a countdown after which the
/// simulated process is dead (negative: no crash planned), and a user edit
/// that lands between two effects of a round (the user does not wait for
/// sync to finish).
#[derive(Debug)]
pub struct Crash {
    budget: AtomicI64,
    edit: Mutex<Option<UserEdit>>,
}

/// A user's write (or, with `data` `None`, deletion) of one file, due
/// after `after` more effects.
#[derive(Debug)]
pub struct UserEdit {
    /// Effects to let pass first.
    pub after: u32,
    /// The disk.
    pub disk: Arc<MemFs>,
    /// The file.
    pub path: PathBuf,
    /// New content, or `None` to delete it.
    pub data: Option<Vec<u8>>,
    /// Once done: the content the file had before (`None`: no file).
    pub replaced: Option<Option<Vec<u8>>>,
}

impl UserEdit {
    fn apply(&mut self) {
        let old = self.disk.open_read(&self.path).ok().map(|mut r| {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut r, &mut v);
            v
        });
        let _ = match &self.data {
            Some(d) => self.disk.write_file(&self.path, d),
            None => self.disk.remove_file(&self.path),
        };
        if crate::fs::trace() {
            eprintln!(
                "  USER EDIT {} ({})",
                self.path.display(),
                if self.data.is_some() { "write" } else { "delete" }
            );
        }
        self.replaced = Some(old);
    }
}

impl Default for Crash {
    fn default() -> Self {
        Self { budget: AtomicI64::new(-1), edit: Mutex::new(None) }
    }
}

impl Crash {
    /// Lets `n` more effects happen, then fails every later one.
    pub fn arm(&self, n: i64) {
        self.budget.store(n.max(0), Ordering::SeqCst);
    }

    /// No crash planned.
    pub fn disarm(&self) {
        self.budget.store(-1, Ordering::SeqCst);
    }

    /// Whether the budget ran out (the process is dead).
    pub fn fired(&self) -> bool {
        self.budget.load(Ordering::SeqCst) == 0
    }

    /// Plans a user edit during the coming round.
    pub fn plan_edit(&self, edit: UserEdit) {
        if let Ok(mut e) = self.edit.lock() {
            *e = Some(edit);
        }
    }

    /// Takes the planned edit back, doing it now if it is still due.
    pub fn finish_edit(&self) -> Option<UserEdit> {
        let mut edit = self.edit.lock().ok()?.take()?;
        if edit.replaced.is_none() {
            edit.apply();
        }
        Some(edit)
    }

    /// Counts one step towards the planned user edit, doing it when due.
    pub fn tick_edit(&self) {
        if let Ok(mut guard) = self.edit.lock() {
            if let Some(e) = guard.as_mut().filter(|e| e.replaced.is_none()) {
                if e.after == 0 {
                    e.apply();
                } else {
                    e.after -= 1;
                }
            }
        }
    }

    /// Spends one effect; false if the process is already dead.
    pub fn spend(&self) -> bool {
        self.tick_edit();
        let mut cur = self.budget.load(Ordering::SeqCst);
        loop {
            if cur < 0 {
                return true;
            }
            if cur == 0 {
                return false;
            }
            match self.budget.compare_exchange(cur, cur - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }
}

/// What a hostile store does to one device's session (a test double of
/// the real protocol: it answers with the real wire types).
#[derive(Debug, Default)]
pub struct Hostile {
    /// Entries appended to the next journal page, as if the store had them.
    pub inject: Vec<EntryVersion>,
    /// Answer journal calls with this cursor (a store gone back in time).
    pub rollback_to: Option<Cursor>,
    /// Flip a byte of every chunk served.
    pub tamper_chunks: bool,
    /// Not an attack: how many changes journal pages have carried to this
    /// session so far (what a test reads to see what a device pulls).
    pub sent_changes: usize,
    /// Not an attack either: how many chunks this session has uploaded.
    pub uploaded_chunks: usize,
    /// Nor this: how many chunks this session has downloaded.
    pub downloaded_chunks: usize,
    /// Not an attack: a connection that drops. Journal calls fail once
    /// this many more have been answered.
    pub journal_fails_after: Option<usize>,
}

/// One device's session with the in-process store.
#[derive(Clone, Debug)]
pub struct SimRemote {
    service: Service,
    blobs: Arc<dyn BlobStore>,
    caller: Caller,
    online: Arc<AtomicBool>,
    crash: Arc<Crash>,
    calls: Arc<AtomicI64>,
    hostile: Arc<Mutex<Hostile>>,
}

fn api(e: ServiceError) -> RemoteError {
    let body = e.body();
    RemoteError::Api { status: body.code.http_status(), body }
}

impl SimRemote {
    /// A session of `caller` on `service` (whose blob store is `blobs`),
    /// online while `online` is set, dead once `crash` fires.
    pub fn new(
        service: Service,
        blobs: Arc<dyn BlobStore>,
        caller: Caller,
        online: Arc<AtomicBool>,
        crash: Arc<Crash>,
    ) -> Self {
        Self {
            service,
            blobs,
            caller,
            online,
            crash,
            calls: Arc::new(AtomicI64::new(0)),
            hostile: Arc::new(Mutex::new(Hostile::default())),
        }
    }

    /// Makes this session answer as `hostile` says.
    pub fn with_hostile(mut self, hostile: Arc<Mutex<Hostile>>) -> Self {
        self.hostile = hostile;
        self
    }

    /// Store calls made so far (attempted, online or not).
    pub fn calls(&self) -> i64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Every call fails while offline; calls that change the store also
    /// spend one effect and fail once the process is dead. Reads spend none:
    /// they change nothing. Reads fail once the process is dead too, except
    /// chunk fetches: a download fetches up to `FETCH_AHEAD` batches of chunks
    /// concurrently, and how many of them have started when the crash fires
    /// (at a write of the same download) depends on when blocking-pool
    /// threads finish opening the earlier ones. A fetch that saw the crash
    /// failed the whole round ("cannot reach the store"), one that did not
    /// left the write to fail the file alone: two histories for one seed.
    /// A dead process's fetch changes nothing, and its next effect fails
    /// anyway.
    fn gate(&self, what: &str) -> Result<(), RemoteError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if crate::fs::trace() {
            eprintln!("  store {what}");
        }
        if !self.online.load(Ordering::SeqCst) {
            return Err(RemoteError::Transport("simulated network is down".into()));
        }
        let mutates = matches!(what, "upload_chunks" | "commit" | "revoke_session");
        let alive = if mutates {
            self.crash.spend()
        } else if what == "download_chunk" {
            // Neither a save moment nor a crash check: how many fetches run
            // before a given write depends on blocking-pool timing.
            true
        } else {
            // Reads may still be the moment a user's save lands.
            self.crash.tick_edit();
            !self.crash.fired()
        };
        if !alive {
            return Err(RemoteError::Transport("simulated process crashed".into()));
        }
        Ok(())
    }
}

impl Remote for SimRemote {
    async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError> {
        self.gate("missing_chunks")?;
        self.service.missing_chunks(self.caller, ids.to_vec()).await.map_err(api)
    }

    async fn upload_chunks(&self, chunks: &[SealedChunk]) -> Result<UploadChunksResponse, RemoteError> {
        self.gate("upload_chunks")?;
        if let Ok(mut h) = self.hostile.lock() {
            h.uploaded_chunks += chunks.len();
        }
        self.service.upload_sealed(self.caller, chunks.to_vec()).await.map_err(api)
    }

    async fn download_chunk(&self, id: ChunkId) -> Result<SealedChunk, RemoteError> {
        self.gate("download_chunk")?;
        // Read from the blob store here rather than through the service,
        // which runs it on tokio's blocking pool: the engine fetches chunks
        // and files concurrently (buffer_unordered), and completions racing
        // on pool threads would reorder the round's effects from run to run.
        // What the service adds to a read is only this not-found mapping.
        let bytes = self
            .blobs
            .get(self.caller.account, id)
            .map_err(|e| api(e.into()))?
            .ok_or_else(|| api(ServiceError::NotFound("chunk")))?;
        let mut bytes = bytes;
        if let Ok(mut h) = self.hostile.lock() {
            h.downloaded_chunks += 1;
            if h.tamper_chunks {
                if let Some(b) = bytes.last_mut() {
                    *b ^= 1;
                }
            }
        }
        let c = SealedChunk::from_parts(id, bytes);
        if blake3::hash(c.as_bytes()).as_bytes() != id.as_bytes() {
            return Err(RemoteError::CorruptChunk(id));
        }
        Ok(c)
    }

    async fn commit(&self, changes: &[Change]) -> Result<CommitResponse, RemoteError> {
        self.gate("commit")?;
        self.service.commit(self.caller, changes.to_vec()).await.map_err(api)
    }

    async fn journal(&self, after: Cursor, limit: Option<u32>) -> Result<JournalPage, RemoteError> {
        self.gate("journal")?;
        if let Ok(mut h) = self.hostile.lock() {
            match h.journal_fails_after.as_mut() {
                Some(0) => return Err(RemoteError::Transport("simulated connection dropped".into())),
                Some(n) => *n -= 1,
                None => {}
            }
        }
        let mut page = self.service.journal(self.caller, after, limit).await.map_err(api)?;
        if let Ok(mut h) = self.hostile.lock() {
            page.changes.append(&mut h.inject);
            if let Some(c) = h.rollback_to {
                page.cursor = c;
            }
            h.sent_changes += page.changes.len();
        }
        Ok(page)
    }

    async fn wait_journal(&self, after: Cursor, _timeout: Duration) -> Result<JournalPage, RemoteError> {
        // Simulated time does not pass while waiting: answer at once.
        self.gate("wait_journal")?;
        let page = self.service.journal(self.caller, after, None).await.map_err(api)?;
        if let Ok(mut h) = self.hostile.lock() {
            h.sent_changes += page.changes.len();
        }
        Ok(page)
    }

    async fn snapshot(
        &self,
        after: Option<EntryId>,
        limit: Option<u32>,
    ) -> Result<SnapshotPage, RemoteError> {
        self.gate("snapshot")?;
        self.service.snapshot(self.caller, after, limit).await.map_err(api)
    }

    async fn versions(&self, entry: EntryId) -> Result<Vec<EntryVersion>, RemoteError> {
        self.gate("versions")?;
        Ok(self.service.versions(self.caller, entry).await.map_err(api)?.versions)
    }

    async fn version(&self, entry: EntryId, revision: Revision) -> Result<EntryVersion, RemoteError> {
        self.gate("version")?;
        self.service.version(self.caller, entry, revision).await.map_err(api)
    }

    async fn usage(&self) -> Result<Usage, RemoteError> {
        self.gate("usage")?;
        self.service.usage(self.caller).await.map_err(api)
    }

    async fn sessions(&self) -> Result<Vec<SessionInfo>, RemoteError> {
        self.gate("sessions")?;
        self.service.sessions(self.caller).await.map_err(api)
    }

    async fn revoke_session(&self, id: SessionId) -> Result<(), RemoteError> {
        self.gate("revoke_session")?;
        self.service.revoke_session(self.caller, id).await.map_err(api)
    }
}
