//! The cloud store's business logic, free of any transport: the HTTP layer
//! ([`crate::http`]) is a thin shell over it, and the sync simulation drives
//! it in-process with the in-memory stores.
//!
//! A [`Service`] holds the two stores, an injected [`Clock`] and random
//! source, the OPAQUE server setup (persisted through
//! [`MetaStore::server_secret`] so every restart and instance agrees), the
//! logins in progress, the long-poll [`Notifier`] and the login rate
//! limiters. Store calls are blocking; they run on tokio's blocking pool.
//!
//! Operations live one area per file: [`accounts`] (registration, login,
//! sessions), [`chunks`], [`entries`] (commit, journal, snapshot, versions),
//! [`previews`] (of large uploads under way) and [`gc`] (retention and
//! garbage collection).

pub mod accounts;
pub mod chunks;
pub mod entries;
pub mod gc;
pub mod previews;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_crypto::login::Suite;
use coffer_proto::api::{LoginId, SessionId};
use coffer_proto::DeviceId;
use opaque_ke::{ServerLogin, ServerSetup};
use rand_core::{CryptoRng, RngCore};

use crate::clock::Clock;
use crate::notify::Notifier;
use crate::ratelimit::{RateLimit, RateLimiter};
use crate::store::{AccountId, BlobStore, MetaStore};
use crate::ServiceError;

/// Settings of the service (not of the transport).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Quota of a new account, bytes.
    pub default_quota_bytes: u64,
    /// How long a session lasts.
    pub session_ttl: Duration,
    /// How long superseded revisions and deletions are kept.
    pub version_retention: Duration,
    /// How long an unreferenced chunk is kept after its last upload, so that
    /// an upload and its commit are never split by a collection.
    pub gc_grace: Duration,
    /// Longest long-poll the service holds.
    pub max_long_poll: Duration,
    /// Most items in one journal or snapshot page.
    pub max_page: u32,
    /// Login attempts per account name.
    pub login_limit_per_account: RateLimit,
    /// Login attempts per client address.
    pub login_limit_per_address: RateLimit,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            default_quota_bytes: 50_000_000_000,
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            version_retention: Duration::from_secs(30 * 24 * 3600),
            gc_grace: Duration::from_secs(3600),
            max_long_poll: Duration::from_secs(60),
            max_page: 1000,
            login_limit_per_account: RateLimit { burst: 10, per_minute: 10 },
            login_limit_per_address: RateLimit { burst: 30, per_minute: 60 },
        }
    }
}

/// A cryptographically secure random source the service can own.
pub trait ServiceRng: RngCore + CryptoRng + Send + 'static {}
impl<T: RngCore + CryptoRng + Send + 'static> ServiceRng for T {}

/// An authenticated caller: one device session of one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The account.
    pub account: AccountId,
    /// The session.
    pub session: SessionId,
    /// The device.
    pub device: DeviceId,
}

pub(crate) struct PendingLogin {
    account: Option<AccountId>,
    state: ServerLogin<Suite>,
    expires: coffer_proto::api::UnixMillis,
}

pub(crate) struct Inner {
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: Mutex<Box<dyn ServiceRng>>,
    pub(crate) config: ServiceConfig,
    pub(crate) setup: ServerSetup<Suite>,
    pub(crate) logins: Mutex<HashMap<LoginId, PendingLogin>>,
    pub(crate) session_cache: Mutex<accounts::SessionCache>,
    pub(crate) notifier: Notifier,
    /// Previews of large uploads under way, in memory only.
    pub(crate) previews: crate::previews::PreviewBoards,
    pub(crate) per_account: RateLimiter,
    pub(crate) per_address: RateLimiter,
    /// Bounds store calls in flight, so a burst of requests queues here
    /// instead of spawning hundreds of blocking threads.
    pub(crate) store_slots: tokio::sync::Semaphore,
    /// Operational counters (`GET /metrics`).
    pub(crate) metrics: crate::metrics::Metrics,
}

/// The cloud store's logic. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Service {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("meta", &self.inner.meta)
            .field("blobs", &self.inner.blobs)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

const SETUP_SECRET: &str = "opaque_server_setup_v1";
/// Store calls in flight at once.
const STORE_SLOTS: usize = 16;

impl Service {
    /// The process's operational counters.
    pub fn metrics(&self) -> crate::metrics::MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Builds a service over its stores. Loads (or makes and stores) the
    /// OPAQUE server setup.
    pub async fn new(
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        clock: Arc<dyn Clock>,
        mut rng: Box<dyn ServiceRng>,
        config: ServiceConfig,
    ) -> Result<Self, ServiceError> {
        let fresh = ServerSetup::<Suite>::new(&mut rng).serialize().to_vec();
        let m = meta.clone();
        let stored = blocking(move || m.server_secret(SETUP_SECRET, &fresh)).await??;
        let setup = ServerSetup::<Suite>::deserialize(&stored)
            .map_err(|_| ServiceError::Internal("stored OPAQUE server setup does not parse".into()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                meta,
                blobs,
                clock,
                rng: Mutex::new(rng),
                per_account: RateLimiter::new(config.login_limit_per_account),
                per_address: RateLimiter::new(config.login_limit_per_address),
                config,
                setup,
                logins: Mutex::new(HashMap::new()),
                session_cache: Mutex::new(accounts::SessionCache::default()),
                notifier: Notifier::default(),
                previews: crate::previews::PreviewBoards::default(),
                store_slots: tokio::sync::Semaphore::new(STORE_SLOTS),
                metrics: crate::metrics::Metrics::default(),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    pub(crate) fn now(&self) -> coffer_proto::api::UnixMillis {
        self.inner.clock.now()
    }

    pub(crate) fn random<const N: usize>(&self) -> [u8; N] {
        let mut out = [0u8; N];
        self.inner.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fill_bytes(&mut out);
        out
    }

    /// Runs a blocking store call on the blocking pool.
    pub(crate) async fn meta<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn MetaStore) -> crate::store::StoreResult<T> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let _slot =
            self.inner.store_slots.acquire().await.map_err(|_| ServiceError::Internal("closed".into()))?;
        let meta = self.inner.meta.clone();
        Ok(blocking(move || f(&*meta)).await??)
    }

    /// Runs a blocking blob call on the blocking pool.
    pub(crate) async fn blobs<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn BlobStore) -> crate::store::StoreResult<T> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let _slot =
            self.inner.store_slots.acquire().await.map_err(|_| ServiceError::Internal("closed".into()))?;
        let blobs = self.inner.blobs.clone();
        Ok(blocking(move || f(&*blobs)).await??)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal(format!("blocking task failed: {e}")))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
