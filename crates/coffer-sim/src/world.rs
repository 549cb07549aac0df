//! The simulated world of one seed: the store, the shared disk and clock,
//! the devices, and the random history of steps (see the crate doc).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use coffer_crypto::MasterKey;
use coffer_engine::chunker::ChunkerParams;
use coffer_engine::fs::{Clock, Fs, MemFs, StatKind};
use coffer_engine::index::Index;
use coffer_engine::model::RelPath;
use coffer_engine::sync::{init_root, Engine, EngineConfig, EngineError, RoundReport};
use coffer_engine::watch::WatchBatch;
use coffer_proto::api::{SessionId, UnixMillis};
use coffer_proto::DeviceId;
use coffer_proto::WrappedKey;
use coffer_server::service::accounts::token_hash;
use coffer_server::store::memory::{MemoryBlobStore, MemoryMetaStore};
use coffer_server::store::{BlobStore, MetaStore, NewAccount, SessionRecord};
use coffer_server::{Caller, Clock as _, ManualClock, Service, ServiceConfig};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use unicode_normalization::UnicodeNormalization;

use crate::check;
use crate::fs::CrashFs;
use crate::remote::{Crash, Hostile, SimRemote, UserEdit};
use crate::{Failure, SimConfig};

/// Where the devices' roots live on the shared disk.
pub const SIM_DIR: &str = "/sim";
/// Rounds one device may run per `sync_until_quiet` in the final phase.
pub const FINAL_ROUNDS: usize = 12;
/// Passes over all devices in the final phase before "planning did not
/// terminate" is declared.
pub const FINAL_PASSES: usize = 8;

/// Names files get: ASCII, case twins, NFC and NFD twins, spaces.
const FILE_NAMES: &[&str] =
    &["a.txt", "A.txt", "b", "notes.md", "caf\u{e9}.txt", "cafe\u{301}.txt", "x y.bin", "\u{3a9}"];
/// Names folders get.
const DIR_NAMES: &[&str] = &["d", "D", "photos", "r\u{e9}sum\u{e9}", "sub"];
/// `.cofferignore` texts a user may write.
const IGNORE_TEXTS: &[&str] = &["", "*.bin\n", "photos/\n", "*.md\n!notes.md\n", "sub/\n*.bin\n"];

/// Chunks small enough that a few KiB make a multi-chunk file.
const SIM_CHUNKER: ChunkerParams = ChunkerParams { min: 64, avg: 256, max: 1024 };

/// Makes each run's index names unique within the process.
static RUN_ID: AtomicU64 = AtomicU64::new(0);

/// What one seed did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Digest of the history and the final state (equal for equal seeds).
    pub digest: String,
    /// Steps taken.
    pub steps: usize,
    /// Sync rounds run (random and final).
    pub rounds: usize,
    /// Rounds cut by a crash.
    pub crashes: usize,
    /// Times a device went offline.
    pub offline_periods: usize,
    /// Versions in the ledger not destroyed by a user, all found recoverable.
    pub ledger: usize,
    /// Conflicted copies made.
    pub conflicts: usize,
    /// Final-phase passes needed to converge.
    pub final_passes: usize,
}

pub(crate) struct Device {
    pub(crate) root: PathBuf,
    pub(crate) fs: Arc<CrashFs>,
    online: Arc<AtomicBool>,
    crash: Arc<Crash>,
    index_uri: String,
    /// Keeps the named in-memory index alive while no engine holds it.
    _keeper: Index,
    pub(crate) engine: Option<Engine<SimRemote>>,
    pub(crate) caller: Caller,
    hostile: Arc<Mutex<Hostile>>,
    mass_delete_threshold: Option<usize>,
    max_chunks_per_file: Option<usize>,
    device_id: DeviceId,
    restarts: u64,
}

/// The simulated world of one seed. [`run`] drives it with random steps;
/// tests can drive it by hand through its public methods.
pub struct World {
    pub(crate) config: SimConfig,
    rng: ChaCha20Rng,
    pub(crate) mem: Arc<MemFs>,
    pub(crate) service: Service,
    blobs: Arc<dyn BlobStore>,
    clock: Arc<ManualClock>,
    pub(crate) master: MasterKey,
    pub(crate) devices: Vec<Device>,
    pub(crate) log: Vec<String>,
    /// blake3 of every content a user wrote.
    pub(crate) written: BTreeSet<[u8; 32]>,
    /// blake3 of every content a user wrote → where it was written first.
    pub(crate) ledger: BTreeMap<[u8; 32], String>,
    /// Contents a user destroyed (overwrote, truncated, deleted, renamed a
    /// file over) since writing them last: the only losses that are not
    /// sync's fault.
    pub(crate) destroyed: BTreeSet<[u8; 32]>,
    writes: u64,
    pub(crate) summary: RunSummary,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("config", &self.config)
            .field("steps", &self.log.len())
            .finish_non_exhaustive()
    }
}

/// Runs one seed: the random steps, the final convergence phase, the
/// checks. Deterministic in `config`.
pub fn run(config: SimConfig) -> Result<RunSummary, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Failure {
        config,
        message: format!("no runtime: {e}"),
        log_tail: vec![],
    })?;
    rt.block_on(async move {
        let mut world =
            World::new(config).await.map_err(|m| Failure { config, message: m, log_tail: vec![] })?;
        let result = world.simulate().await;
        result.map_err(|message| Failure {
            config,
            message,
            log_tail: world.log.iter().rev().take(config.log_lines).rev().cloned().collect(),
        })?;
        Ok(world.summary.clone())
    })
}

fn h(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

impl World {
    /// A world of `config.devices` devices, nothing written yet. Must run
    /// inside a tokio runtime (the store runs its calls on the blocking pool).
    pub async fn new(config: SimConfig) -> Result<Self, String> {
        let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
        let mem = Arc::new(MemFs::new());
        let clock = Arc::new(ManualClock::new(UnixMillis(
            u64::try_from(mem.now_ns() / 1_000_000).unwrap_or_default(),
        )));
        let meta = Arc::new(MemoryMetaStore::new());
        let blobs: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::new());
        let service = Service::new(
            meta.clone(),
            blobs.clone(),
            clock.clone(),
            Box::new(ChaCha20Rng::seed_from_u64(rng.gen())),
            ServiceConfig::default(),
        )
        .await
        .map_err(|e| format!("service: {e}"))?;
        let master = MasterKey::generate(&mut rng);
        let account = meta
            .create_account(NewAccount {
                username: "sim".into(),
                opaque_record: vec![],
                wrapped_key: WrappedKey::from_sealed_bytes(vec![1]),
                settings: None,
                quota_bytes: u64::MAX / 4,
                created_at: clock.now(),
            })
            .map_err(|e| format!("account: {e}"))?;
        let run_id = RUN_ID.fetch_add(1, Ordering::SeqCst);
        let mut devices = Vec::new();
        for i in 0..config.devices.max(1) {
            let device_id = DeviceId::from_bytes([u8::try_from(i + 1).unwrap_or(u8::MAX); 16]);
            let session = SessionId::from_bytes(rng.gen());
            let token = format!("{:064x}", u128::from(rng.gen::<u64>()) + (i as u128));
            meta.create_session(&SessionRecord {
                id: session,
                account,
                device: device_id,
                token_hash: token_hash(&token),
                created_at: clock.now(),
                expires_at: UnixMillis(u64::MAX / 2),
            })
            .map_err(|e| format!("session: {e}"))?;
            let root = PathBuf::from(format!("{SIM_DIR}/dev{i}"));
            let crash = Arc::new(Crash::default());
            mem.create_dir_all(&root).map_err(|e| e.to_string())?;
            let fs = Arc::new(CrashFs::new(mem.clone(), root.clone(), crash.clone()));
            init_root(fs.as_ref(), &root, &format!("sim-root-{i}")).map_err(|e| e.to_string())?;
            let index_uri =
                format!("file:coffer-sim-{}-{run_id}-{i}?mode=memory&cache=shared", std::process::id());
            let keeper = Index::open(Path::new(&index_uri)).map_err(|e| format!("index: {e}"))?;
            devices.push(Device {
                root,
                fs,
                online: Arc::new(AtomicBool::new(true)),
                crash,
                index_uri,
                _keeper: keeper,
                engine: None,
                caller: Caller { account, session, device: device_id },
                hostile: Arc::new(Mutex::new(Hostile::default())),
                mass_delete_threshold: None,
                max_chunks_per_file: None,
                device_id,
                restarts: 0,
            });
        }
        let mut world = Self {
            config,
            rng,
            mem,
            service,
            blobs,
            clock,
            master,
            devices,
            log: Vec::new(),
            written: BTreeSet::new(),
            ledger: BTreeMap::new(),
            destroyed: BTreeSet::new(),
            writes: 0,
            summary: RunSummary::default(),
        };
        world.written.insert(h(b""));
        for d in 0..world.devices.len() {
            world.start(d)?;
        }
        Ok(world)
    }

    /// Starts (or restarts) device `d`'s engine over its disk and index.
    fn start(&mut self, d: usize) -> Result<(), String> {
        let seed = self.config.seed;
        let dev = &mut self.devices[d];
        dev.engine = None;
        dev.restarts += 1;
        let index =
            Index::open(Path::new(&dev.index_uri)).map_err(|e| format!("re-opening the index: {e}"))?;
        let remote = SimRemote::new(
            self.service.clone(),
            self.blobs.clone(),
            dev.caller,
            dev.online.clone(),
            dev.crash.clone(),
        )
        .with_hostile(dev.hostile.clone());
        let mut config = EngineConfig::new(dev.root.clone(), dev.device_id, format!("dev{d}"));
        config.chunker = SIM_CHUNKER;
        config.parallel_downloads = 1;
        if let Some(n) = dev.mass_delete_threshold {
            config.mass_delete_threshold = n;
        }
        if let Some(n) = dev.max_chunks_per_file {
            config.max_chunks_per_file = n;
        }
        let rng_seed = seed ^ ((d as u64) << 48) ^ (dev.restarts << 32);
        dev.engine = Some(Engine::new(
            remote,
            self.master.derive(),
            index,
            dev.fs.clone(),
            self.mem.clone() as Arc<dyn Clock>,
            ChaCha20Rng::seed_from_u64(rng_seed),
            config,
        ));
        // The world reports every change to the tree ([`World::watch`]), as
        // the daemon's watcher does.
        if let Some(engine) = &dev.engine {
            engine.set_watched(true);
        }
        Ok(())
    }

    /// The shared simulated disk (to do what no user op models, e.g. break
    /// an invariant on purpose in a test).
    pub fn disk(&self) -> &MemFs {
        &self.mem
    }

    /// Device `d`'s sync root on the disk.
    pub fn root(&self, d: usize) -> &Path {
        &self.devices[d].root
    }

    /// What the store does to device `d`'s session from now on (a hostile
    /// store: injected entries, a rollback, tampered chunks).
    pub fn hostile(&self, d: usize) -> &Mutex<Hostile> {
        &self.devices[d].hostile
    }

    /// Restarts device `d` with a mass-deletion threshold of `n`.
    pub fn set_mass_delete_threshold(&mut self, d: usize, n: usize) -> Result<(), String> {
        self.devices[d].mass_delete_threshold = Some(n);
        self.start(d)
    }

    /// Restarts device `d` taking files of at most `n` chunks (as if the
    /// store's limit on one change were `n`).
    pub fn set_max_chunks_per_file(&mut self, d: usize, n: usize) -> Result<(), String> {
        self.devices[d].max_chunks_per_file = Some(n);
        self.start(d)
    }

    /// The account's keys (to forge what a hostile store would send).
    pub fn keys(&self) -> coffer_crypto::AccountKeys {
        self.master.derive()
    }

    /// The last problems and round report of device `d`'s engine.
    pub fn problems(&self, d: usize) -> Vec<String> {
        self.devices[d]
            .engine
            .as_ref()
            .map(|e| e.problems().into_iter().map(|p| format!("{}: {}", p.path, p.message)).collect())
            .unwrap_or_default()
    }

    /// Device `d`'s user-visible tree: path → content (`None`: a folder).
    pub fn files(&self, d: usize) -> BTreeMap<String, Option<Vec<u8>>> {
        self.tree(d)
    }

    /// Every path on the whole disk (to check nothing is outside the roots).
    pub fn everything(&self) -> Vec<String> {
        let mut all = BTreeMap::new();
        walk(self.mem.as_ref(), Path::new("/"), "", &mut all, false);
        all.into_keys().collect()
    }

    /// Mutations device `d` attempted outside its root.
    pub fn violations(&self, d: usize) -> Vec<String> {
        self.devices[d].fs.violations()
    }

    /// The log of what happened so far.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    /// A user on device `d` writes `data` to `rel` (the watcher sees it).
    pub fn write(&mut self, d: usize, rel: &str, data: &[u8]) -> Result<(), String> {
        let before = self.tree(d);
        let r = self.write_user(d, rel, data);
        self.note(format!("dev{d} write {rel:?}: {}", ok(&r)));
        self.watch(d, &before);
        r.map_err(|e| e.to_string())
    }

    /// A user on device `d` writes many files at once, as a copy into the
    /// folder would (the watcher sees them in one batch).
    pub fn write_many(&mut self, d: usize, files: &[(String, Vec<u8>)]) -> Result<(), String> {
        let before = self.tree(d);
        let mut result = Ok(());
        for (rel, data) in files {
            let r = self.write_user(d, rel, data);
            self.note(format!("dev{d} write {rel:?}: {}", ok(&r)));
            if let Err(e) = r {
                result = Err(e.to_string());
                break;
            }
        }
        self.watch(d, &before);
        result
    }

    /// A user on device `d` deletes `rel` (and all under it).
    pub fn remove(&mut self, d: usize, rel: &str) -> Result<(), String> {
        let before = self.tree(d);
        let abs = self.devices[d].root.join(rel);
        self.destroy(&abs);
        let r = remove_all(self.mem.as_ref(), &abs);
        self.note(format!("dev{d} delete {rel:?}: {}", ok(&r)));
        self.watch(d, &before);
        r.map_err(|e| e.to_string())
    }

    /// One sync round of device `d`: what it did, or the engine's error,
    /// as a line of the log; `Err` only when an invariant broke.
    pub async fn sync(&mut self, d: usize) -> Result<String, String> {
        let before = self.tree(d);
        let line = self.round(d).await?;
        self.note(format!("dev{d} round: {line}"));
        self.watch(d, &before);
        Ok(line)
    }

    /// One sync round of device `d` during which a user saves `data` to
    /// `rel` after `after` of the round's effects (disk mutations, writes,
    /// store calls).
    pub async fn sync_while_user_writes(
        &mut self,
        d: usize,
        rel: &str,
        data: &[u8],
        after: u32,
    ) -> Result<String, String> {
        let before = self.tree(d);
        let line = self.round_with_edit(d, rel, Some(data.to_vec()), after, "test").await?;
        self.note(format!("dev{d} round with a user write of {rel:?} after {after} effects: {line}"));
        self.watch(d, &before);
        Ok(line)
    }

    async fn round_with_edit(
        &mut self,
        d: usize,
        rel: &str,
        data: Option<Vec<u8>>,
        after: u32,
        when: &str,
    ) -> Result<String, String> {
        if let Some(data) = &data {
            let hash = h(data);
            self.written.insert(hash);
            self.destroyed.remove(&hash);
            self.ledger.entry(hash).or_insert_with(|| format!("dev{d}:{rel} (mid-round write, step {when})"));
        }
        let path = self.devices[d].root.join(rel);
        self.devices[d].crash.plan_edit(UserEdit {
            after,
            disk: self.mem.clone(),
            path,
            data,
            replaced: None,
        });
        let r = self.round(d).await;
        if let Some(edit) = self.devices[d].crash.finish_edit() {
            if let Some(Some(old)) = edit.replaced {
                self.destroyed.insert(h(&old));
            }
        }
        r
    }

    /// The final phase and the final checks (see the crate doc).
    pub async fn converge_and_check(&mut self) -> Result<RunSummary, String> {
        self.final_phase().await?;
        check::final_checks(self).await?;
        self.summary.digest = check::digest(self);
        Ok(self.summary.clone())
    }

    fn note(&mut self, line: String) {
        if crate::fs::trace() {
            eprintln!("{line}");
        }
        self.log.push(line);
    }

    /// Lets `ms` milliseconds pass on the shared disk's and the store's
    /// clocks (files written later get later mtimes; a file older than the
    /// racily-clean window is trusted by its stat).
    pub fn pass_time(&mut self, ms: u64) {
        self.mem.advance(i64::try_from(ms).unwrap_or(0) * 1_000_000);
        self.clock.advance_millis(ms);
        self.note(format!("{ms} ms pass"));
    }

    fn advance_clock(&mut self) {
        // Sometimes no time passes at all: edits inside the racily-clean
        // window must still be seen.
        let ms: u64 = match self.rng.gen_range(0..10) {
            0..=2 => 0,
            3..=7 => self.rng.gen_range(1..3_000),
            _ => self.rng.gen_range(3_000..120_000),
        };
        self.mem.advance(i64::try_from(ms).unwrap_or(0) * 1_000_000);
        self.clock.advance_millis(ms);
    }

    /// Fresh bytes no user wrote before.
    fn fresh(&mut self) -> Vec<u8> {
        self.writes += 1;
        let mut out = format!("seed {} write {}\n", self.config.seed, self.writes).into_bytes();
        let len = match self.rng.gen_range(0..10) {
            0..=5 => self.rng.gen_range(0..200),
            6..=8 => self.rng.gen_range(200..3_000),
            // Up to ~160 chunks of the simulation's 256-byte average: past
            // 64 the chunk list goes into pieces (metadata format 2).
            _ => self.rng.gen_range(3_000..40_000),
        };
        // Repetitive text, so that chunks repeat within and across files.
        let words = ["alpha ", "beta ", "gamma ", "delta\n"];
        while out.len() < len {
            out.extend_from_slice(words.choose(&mut self.rng).unwrap_or(&"x").as_bytes());
        }
        out
    }

    fn write_user(&mut self, d: usize, rel: &str, data: &[u8]) -> std::io::Result<()> {
        let path = self.devices[d].root.join(rel);
        self.destroy(&path);
        let hash = h(data);
        self.written.insert(hash);
        self.destroyed.remove(&hash);
        self.ledger.entry(hash).or_insert_with(|| format!("dev{d}:{rel} (write {})", self.writes));
        self.mem.write_file(&path, data)
    }

    /// Notes that the user is about to destroy whatever files are at or
    /// under `path`.
    fn destroy(&mut self, path: &Path) {
        let mut under = BTreeMap::new();
        match self.mem.symlink_metadata(path).map(|s| s.kind) {
            Ok(StatKind::Dir) => walk(self.mem.as_ref(), path, "", &mut under, false),
            Ok(StatKind::File) => {
                under.insert(String::new(), Some(read(self.mem.as_ref(), path)));
            }
            _ => {}
        }
        for c in under.into_values().flatten() {
            self.destroyed.insert(h(&c));
        }
    }

    /// The user-visible tree of device `d` (no state folder): relative path
    /// → `None` for a folder, the content for a file.
    pub(crate) fn tree(&self, d: usize) -> BTreeMap<String, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        walk(self.mem.as_ref(), &self.devices[d].root, "", &mut out, true);
        out
    }

    fn pick_existing(&mut self, d: usize, want_dir: Option<bool>) -> Option<String> {
        let tree = self.tree(d);
        let items: Vec<&String> = tree
            .iter()
            .filter(|(_, v)| want_dir.is_none_or(|dir| dir == v.is_none()))
            .map(|(k, _)| k)
            .collect();
        items.choose(&mut self.rng).map(|s| (*s).clone())
    }

    /// A folder to put something in ("" is the root).
    fn pick_parent(&mut self, d: usize) -> String {
        if self.rng.gen_bool(0.4) {
            return String::new();
        }
        match self.pick_existing(d, Some(true)) {
            Some(p) if p.matches('/').count() < 2 => p,
            _ => String::new(),
        }
    }

    fn join(parent: &str, name: &str) -> String {
        if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}/{name}")
        }
    }

    /// A name for a rename of `name`: another from the pools, its case
    /// flipped, or its other Unicode form.
    fn rename_target(&mut self, name: &str, is_dir: bool) -> String {
        match self.rng.gen_range(0..4) {
            0 => {
                let flipped: String = name
                    .chars()
                    .map(|c| {
                        if c.is_uppercase() {
                            c.to_lowercase().collect::<String>()
                        } else {
                            c.to_uppercase().collect()
                        }
                    })
                    .collect();
                flipped
            }
            1 => {
                let nfc: String = name.nfc().collect();
                if nfc == name {
                    name.nfd().collect()
                } else {
                    nfc
                }
            }
            _ => {
                let pool = if is_dir { DIR_NAMES } else { FILE_NAMES };
                pool.choose(&mut self.rng).copied().unwrap_or("z").to_owned()
            }
        }
    }

    async fn simulate(&mut self) -> Result<(), String> {
        for step in 0..self.config.steps {
            self.summary.steps = step + 1;
            self.advance_clock();
            let d = self.rng.gen_range(0..self.devices.len());
            let before = self.tree(d);
            self.step(step, d).await?;
            self.watch(d, &before);
        }
        self.converge_and_check().await.map(drop)
    }

    async fn step(&mut self, step: usize, d: usize) -> Result<(), String> {
        let root = self.devices[d].root.clone();
        let abs = |rel: &str| root.join(rel);
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=11 => {
                let parent = self.pick_parent(d);
                let name = FILE_NAMES.choose(&mut self.rng).copied().unwrap_or("f");
                let rel = Self::join(&parent, name);
                let data = self.fresh();
                let r = self.write_user(d, &rel, &data);
                self.note(format!("{step} dev{d} write {rel:?} ({} bytes): {}", data.len(), ok(&r)));
            }
            12..=19 => {
                if let Some(rel) = self.pick_existing(d, Some(false)) {
                    let data = self.fresh();
                    let r = self.write_user(d, &rel, &data);
                    self.note(format!("{step} dev{d} edit {rel:?}: {}", ok(&r)));
                }
            }
            20..=24 => {
                if let Some(rel) = self.pick_existing(d, Some(false)) {
                    let mut data = read(self.mem.as_ref(), &abs(&rel));
                    let more = self.fresh();
                    data.extend_from_slice(&more[..more.len().min(300)]);
                    let r = self.write_user(d, &rel, &data);
                    self.note(format!("{step} dev{d} append {rel:?}: {}", ok(&r)));
                }
            }
            25..=27 => {
                if let Some(rel) = self.pick_existing(d, Some(false)) {
                    let mut data = read(self.mem.as_ref(), &abs(&rel));
                    let keep = self.rng.gen_range(0..=data.len());
                    data.truncate(keep);
                    let r = self.write_user(d, &rel, &data);
                    self.note(format!("{step} dev{d} truncate {rel:?} to {keep}: {}", ok(&r)));
                }
            }
            28..=32 => {
                if let Some(rel) = self.pick_existing(d, None) {
                    self.destroy(&abs(&rel));
                    let r = remove_all(self.mem.as_ref(), &abs(&rel));
                    self.note(format!("{step} dev{d} delete {rel:?}: {}", ok(&r)));
                }
            }
            33..=40 => {
                let tree = self.tree(d);
                if let Some(rel) = self.pick_existing(d, None) {
                    let is_dir = tree.get(&rel).is_some_and(Option::is_none);
                    let name = rel.rsplit('/').next().unwrap_or(&rel).to_owned();
                    let new_name = self.rename_target(&name, is_dir);
                    let parent = if self.rng.gen_bool(0.5) {
                        rel.rsplit_once('/').map(|(p, _)| p.to_owned()).unwrap_or_default()
                    } else {
                        self.pick_parent(d)
                    };
                    let to = Self::join(&parent, &new_name);
                    let r = if to.starts_with(&format!("{rel}/")) || to == rel {
                        Ok(())
                    } else {
                        if !is_dir && tree.get(&to).is_some_and(Option::is_some) {
                            self.destroy(&abs(&to));
                        }
                        self.mem.rename(&abs(&rel), &abs(&to))
                    };
                    self.note(format!("{step} dev{d} move {rel:?} -> {to:?}: {}", ok(&r)));
                }
            }
            41..=43 => {
                let parent = self.pick_parent(d);
                let name = DIR_NAMES.choose(&mut self.rng).copied().unwrap_or("d");
                let rel = Self::join(&parent, name);
                let r = self.mem.create_dir_all(&abs(&rel));
                self.note(format!("{step} dev{d} mkdir {rel:?}: {}", ok(&r)));
            }
            44..=45 => {
                let text = IGNORE_TEXTS.choose(&mut self.rng).copied().unwrap_or("");
                let r = self.write_user(d, ".cofferignore", text.as_bytes());
                self.note(format!("{step} dev{d} ignore {text:?}: {}", ok(&r)));
            }
            46..=48 => {
                let engine = self.devices[d].engine.as_ref().ok_or("no engine")?;
                let excluded = engine.excluded().map_err(|e| e.to_string())?;
                let line = if let Some(folder) = excluded.iter().next().cloned() {
                    format!("include {folder}: {:?}", engine.include(&folder).map_err(|e| e.to_string()))
                } else {
                    let top: Vec<String> = self
                        .tree(d)
                        .into_iter()
                        .filter(|(k, v)| v.is_none() && !k.contains('/'))
                        .map(|(k, _)| k)
                        .collect();
                    match top.choose(&mut self.rng) {
                        Some(f) => {
                            let rel = RelPath::new(f.clone()).map_err(|e| e.to_string())?;
                            let engine = self.devices[d].engine.as_ref().ok_or("no engine")?;
                            format!("exclude {f}: {:?}", engine.exclude(&rel).map_err(|e| e.to_string()))
                        }
                        None => "exclude: no folder".into(),
                    }
                };
                self.note(format!("{step} dev{d} {line}"));
            }
            49..=53 => {
                let online = &self.devices[d].online;
                let now = !online.load(Ordering::SeqCst);
                online.store(now, Ordering::SeqCst);
                if !now {
                    self.summary.offline_periods += 1;
                }
                self.note(format!("{step} dev{d} {}", if now { "online" } else { "offline" }));
            }
            54..=61 => {
                // Most rounds make few effects: small budgets, so that the
                // crash does fire, and now and then a long one.
                let budget =
                    if self.rng.gen_bool(0.7) { self.rng.gen_range(0..8) } else { self.rng.gen_range(8..60) };
                self.devices[d].crash.arm(budget);
                let r = self.round(d).await?;
                let fired = self.devices[d].crash.fired();
                self.devices[d].crash.disarm();
                self.note(format!(
                    "{step} dev{d} round with crash after {budget} effects (fired: {fired}): {r}"
                ));
                self.summary.crashes += usize::from(fired);
                self.start(d)?;
            }
            62 => {
                self.resolve_twins(d, step)?;
            }
            63 => {
                self.start(d)?;
                self.note(format!("{step} dev{d} restart"));
            }
            64..=71 => {
                // A user saves (or deletes) a file while the round runs.
                let rel = match self.pick_existing(d, Some(false)) {
                    Some(p) if self.rng.gen_bool(0.7) => p,
                    _ => Self::join(
                        &self.pick_parent(d),
                        FILE_NAMES.choose(&mut self.rng).copied().unwrap_or("f"),
                    ),
                };
                let data = if self.rng.gen_bool(0.85) { Some(self.fresh()) } else { None };
                let after = self.rng.gen_range(0..30);
                let what = if data.is_some() { "write" } else { "delete" };
                let r = self.round_with_edit(d, &rel, data, after, &step.to_string()).await?;
                self.note(format!(
                    "{step} dev{d} round with a user {what} of {rel:?} after {after} effects: {r}"
                ));
            }
            _ => {
                let r = self.round(d).await?;
                self.note(format!("{step} dev{d} round: {r}"));
            }
        }
        Ok(())
    }

    /// What the file watcher would tell device `d`'s engine: every path
    /// whose state differs from `before`; now and then (5%) a batch that
    /// lost events and asks for a full rescan.
    fn watch(&mut self, d: usize, before: &BTreeMap<String, Option<Vec<u8>>>) {
        let after = self.tree(d);
        let mut paths = BTreeSet::new();
        for (p, v) in before {
            if after.get(p) != Some(v) {
                paths.extend(RelPath::new(p.clone()));
            }
        }
        for p in after.keys().filter(|p| !before.contains_key(*p)) {
            paths.extend(RelPath::new(p.clone()));
        }
        let full_rescan = self.rng.gen_bool(0.05);
        if let Some(engine) = &self.devices[d].engine {
            if full_rescan || !paths.is_empty() {
                engine.note_changes(&WatchBatch { paths, full_rescan });
            }
        }
    }

    /// One sync round of device `d`; checks the per-step invariants.
    async fn round(&mut self, d: usize) -> Result<String, String> {
        let engine = self.devices[d].engine.as_ref().ok_or("no engine")?;
        let result = engine.round().await;
        self.summary.rounds += 1;
        let line = describe(&result);
        if let Ok(report) = &result {
            self.summary.conflicts += report.conflicts;
        }
        check::step_checks(self, d)?;
        Ok(line)
    }

    /// What a user does about the engine's "differ only by case or Unicode
    /// form" problem: renames all but one of each set of twins (the synced
    /// one stays, else the first) to a unique name, shallowest first.
    fn resolve_twins(&mut self, d: usize, step: usize) -> Result<(), String> {
        let synced = match &self.devices[d].engine {
            Some(e) => e.index().synced().map_err(|e| e.to_string())?,
            None => return Ok(()),
        };
        loop {
            let tree = self.tree(d);
            let mut groups: BTreeMap<(usize, String), Vec<String>> = BTreeMap::new();
            for p in tree.keys() {
                if let Ok(rel) = RelPath::new(p.clone()) {
                    groups.entry((rel.depth(), rel.collision_key())).or_default().push(p.clone());
                }
            }
            let Some(mut twins) = groups.into_values().find(|g| g.len() > 1) else { return Ok(()) };
            let keep = twins
                .iter()
                .position(|p| RelPath::new(p.clone()).is_ok_and(|r| synced.contains_key(&r)))
                .unwrap_or(0);
            twins.remove(keep);
            for p in twins {
                self.writes += 1;
                let (parent, name) = p.rsplit_once('/').unwrap_or(("", &p));
                let to = Self::join(parent, &format!("r{} {name}", self.writes));
                let root = &self.devices[d].root;
                let r = self.mem.rename(&root.join(&p), &root.join(&to));
                let when = if step == usize::MAX { "final".to_owned() } else { step.to_string() };
                self.note(format!("{when} dev{d} user renames twin {p:?} -> {to:?}: {}", ok(&r)));
                r.map_err(|e| format!("renaming a twin: {e}"))?;
            }
        }
    }

    /// Everyone online, no crashes, every folder included; then passes of
    /// "sync until quiet" over all devices until one pass finds nothing to
    /// do anywhere.
    async fn final_phase(&mut self) -> Result<(), String> {
        for d in 0..self.devices.len() {
            self.devices[d].online.store(true, Ordering::SeqCst);
            self.devices[d].crash.disarm();
            let engine = self.devices[d].engine.as_ref().ok_or("no engine")?;
            for folder in engine.excluded().map_err(|e| e.to_string())? {
                engine.include(&folder).map_err(|e| e.to_string())?;
            }
        }
        self.note("final: everyone online".into());
        for pass in 0..FINAL_PASSES {
            for d in 0..self.devices.len() {
                let before = self.tree(d);
                self.resolve_twins(d, usize::MAX)?;
                self.watch(d, &before);
            }
            let mut quiet = true;
            for d in 0..self.devices.len() {
                let before = self.tree(d);
                let engine = self.devices[d].engine.as_ref().ok_or("no engine")?;
                let reports = engine
                    .sync_until_quiet(FINAL_ROUNDS)
                    .await
                    .map_err(|e| format!("final sync of dev{d} failed: {e}"))?;
                self.watch(d, &before);
                self.summary.rounds += reports.len();
                let all_quiet = reports.len() == 1 && reports[0].is_quiet();
                for r in &reports {
                    self.summary.conflicts += r.conflicts;
                }
                let line = reports.iter().map(|r| describe(&Ok(r.clone()))).collect::<Vec<_>>().join(" | ");
                self.note(format!("final pass {pass} dev{d}: {line}"));
                if reports.len() == FINAL_ROUNDS && !reports.last().is_some_and(RoundReport::is_quiet) {
                    return Err(format!(
                        "planning did not terminate: dev{d} still had work after {FINAL_ROUNDS} rounds"
                    ));
                }
                check::step_checks(self, d)?;
                quiet &= all_quiet;
            }
            if quiet {
                self.summary.final_passes = pass + 1;
                return Ok(());
            }
        }
        let mut plans = Vec::new();
        for d in 0..self.devices.len() {
            plans.push(check::explain(self, d).await);
        }
        Err(format!(
            "devices did not converge within {FINAL_PASSES} passes of sync-until-quiet; {}",
            plans.join(" | ")
        ))
    }
}

fn ok<T>(r: &std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("error {:?}", e.kind()),
    }
}

fn describe(r: &Result<RoundReport, EngineError>) -> String {
    match r {
        Ok(r) => {
            let mut s = format!(
                "pulled {} planned {} up {} down {} del {} conflicts {} deferred {}",
                r.pulled, r.planned, r.uploaded, r.downloaded, r.deleted, r.conflicts, r.deferred
            );
            for p in &r.problems {
                s.push_str(&format!("; problem {}: {}", p.path, p.message));
            }
            s
        }
        Err(e) => format!("error: {e}"),
    }
}

pub(crate) fn read(fs: &dyn Fs, path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(mut r) = fs.open_read(path) {
        let _ = std::io::Read::read_to_end(&mut r, &mut out);
    }
    out
}

fn remove_all(fs: &dyn Fs, path: &Path) -> std::io::Result<()> {
    let st = fs.symlink_metadata(path)?;
    if st.kind == StatKind::Dir {
        for c in fs.read_dir(path)?.into_iter().flatten() {
            remove_all(fs, &path.join(c))?;
        }
        fs.remove_dir(path)
    } else {
        fs.remove_file(path)
    }
}

/// Walks `dir` into `out` (relative paths under `prefix`); with
/// `skip_state`, the state folder at the top is left out.
pub(crate) fn walk(
    fs: &dyn Fs,
    dir: &Path,
    prefix: &str,
    out: &mut BTreeMap<String, Option<Vec<u8>>>,
    skip_state: bool,
) {
    let Ok(names) = fs.read_dir(dir) else { return };
    for name in names.into_iter().flatten() {
        if skip_state && prefix.is_empty() && name == coffer_engine::model::STATE_DIR {
            continue;
        }
        let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        let abs = dir.join(&name);
        match fs.symlink_metadata(&abs).map(|s| s.kind) {
            Ok(StatKind::Dir) => {
                out.insert(rel.clone(), None);
                walk(fs, &abs, &rel, out, false);
            }
            Ok(_) => {
                out.insert(rel, Some(read(fs, &abs)));
            }
            Err(_) => {}
        }
    }
}
