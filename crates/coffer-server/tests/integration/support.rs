//! A test server and helpers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coffer_crypto::login::KsfParams;
use coffer_crypto::MasterKey;
use coffer_engine::remote::{Accounts, LoggedIn};
use coffer_proto::api::{Change, UnixMillis};
use coffer_proto::{ChunkId, DeviceId, EntryId, Revision, SealedChunk, SealedMeta};
use coffer_server::http::HttpConfig;
use coffer_server::server::{serve, ListenConfig, RunningServer};
use coffer_server::store::disk::DiskBlobStore;
use coffer_server::store::sqlite::SqliteMetaStore;
use coffer_server::{ManualClock, Service, ServiceConfig};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

pub const KSF: KsfParams = KsfParams::INSECURE_FAST;
pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestServer {
    pub server: RunningServer,
    pub clock: Arc<ManualClock>,
    pub accounts: Accounts,
    pub rng: ChaCha20Rng,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(ServiceConfig::default(), HttpConfig::default()).await
    }

    pub async fn start_with(config: ServiceConfig, http: HttpConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMetaStore::open(dir.path().join("coffer.db")).unwrap();
        let blobs = DiskBlobStore::open(dir.path().join("chunks")).unwrap();
        let clock = Arc::new(ManualClock::new(UnixMillis(1_800_000_000_000)));
        let service = Service::new(
            Arc::new(meta),
            Arc::new(blobs),
            clock.clone(),
            Box::new(ChaCha20Rng::seed_from_u64(1)),
            config,
        )
        .await
        .unwrap();
        let listen = ListenConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            insecure_plain_http: false,
            maintenance_every: Duration::from_secs(3600),
        };
        let server = serve(service, http, listen).await.unwrap();
        let accounts = Accounts::new(&server.base_url()).unwrap();
        Self { server, clock, accounts, rng: ChaCha20Rng::seed_from_u64(2), _dir: dir }
    }

    pub fn service(&self) -> &Service {
        self.server.service()
    }

    /// Signs `name` up and logs one device in.
    pub async fn user(&mut self, name: &str) -> LoggedIn {
        let master = MasterKey::generate(&mut self.rng);
        let settings = coffer_engine::settings::AccountSettings::for_new_account();
        self.accounts.signup(&mut self.rng, name, PASSWORD, &master, &settings, &KSF).await.unwrap();
        self.login(name, 1).await
    }

    pub async fn login(&mut self, name: &str, device: u8) -> LoggedIn {
        self.accounts
            .login(&mut self.rng, name, PASSWORD, DeviceId::from_bytes([device; 16]), &KSF)
            .await
            .unwrap()
    }
}

/// A "sealed" chunk: any bytes, named by their BLAKE3 hash.
pub fn chunk(data: &[u8]) -> SealedChunk {
    SealedChunk::from_parts(ChunkId::from_bytes(*blake3::hash(data).as_bytes()), data.to_vec())
}

pub fn entry(n: u8) -> EntryId {
    EntryId::from_bytes([n; 32])
}

pub fn put(e: EntryId, base: u64, meta: &[u8], chunks: &[&SealedChunk]) -> Change {
    Change {
        entry_id: e,
        base_revision: Revision(base),
        meta: Some(SealedMeta::from_sealed_bytes(meta.to_vec())),
        chunks: chunks.iter().map(|c| c.id()).collect(),
        delta: None,
    }
}

pub fn del(e: EntryId, base: u64) -> Change {
    Change { entry_id: e, base_revision: Revision(base), meta: None, chunks: vec![], delta: None }
}
