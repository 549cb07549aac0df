//! Running the store: open the stores (the embedded SQLite + folder, or
//! PostgreSQL and an S3 bucket shared by several instances, see
//! [`open_stores`]), bind, serve (plain HTTP on loopback, HTTPS with rustls
//! otherwise), and run maintenance periodically.
//!
//! Plain HTTP is refused on a non-loopback address unless the operator says
//! `insecure_plain_http` (e.g. behind a TLS-terminating proxy on a private
//! network). The returned [`RunningServer`] stops the server and its
//! maintenance task when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use tokio::task::JoinHandle;

use crate::clock::SystemClock;
use crate::http::{router, HttpConfig};
use crate::service::{Service, ServiceConfig};
use crate::store::disk::DiskBlobStore;
use crate::store::sqlite::SqliteMetaStore;
use crate::store::StoreError;
use crate::ServiceError;

/// Certificate and key files (PEM) for HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key (the path only; the key itself is never logged).
    pub key: PathBuf,
}

/// Where and how to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenConfig {
    /// Address (port 0 picks a free one).
    pub addr: SocketAddr,
    /// HTTPS when set.
    pub tls: Option<TlsFiles>,
    /// Allow plain HTTP on a non-loopback address.
    pub insecure_plain_http: bool,
    /// How often maintenance (retention, GC, expired sessions) runs.
    pub maintenance_every: Duration,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Plain HTTP on a non-loopback address without the explicit override.
    #[error(
        "refusing plain HTTP on non-loopback address {0}: pass --tls-cert and --tls-key, \
         or --insecure-plain-http if a TLS proxy sits in front"
    )]
    PlainHttpRefused(SocketAddr),
    /// Binding or file I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Certificate or key unusable.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Opening a store.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Building the service.
    #[error("service: {0}")]
    Service(#[from] ServiceError),
}

impl ServerError {
    /// Whether trying again may help (only transient I/O).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Service(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Opens the embedded stores under `data_dir` (`coffer.db` and `chunks/`)
/// and builds a service with the system clock and OS randomness.
pub async fn open_embedded(data_dir: &Path, config: ServiceConfig) -> Result<Service, ServerError> {
    std::fs::create_dir_all(data_dir)?;
    let meta = SqliteMetaStore::open(data_dir.join("coffer.db"))?;
    let blobs = DiskBlobStore::open(data_dir.join("chunks"))?;
    Ok(Service::new(
        Arc::new(meta),
        Arc::new(blobs),
        Arc::new(SystemClock),
        Box::new(rand::rngs::OsRng),
        config,
    )
    .await?)
}

/// Where the metadata lives.
#[derive(Clone, PartialEq, Eq)]
pub enum MetaLocation {
    /// A SQLite file (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://user:pass@host:port/db`); needs the
    /// `postgres` feature.
    Postgres(String),
}

impl std::fmt::Debug for MetaLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Self::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
        }
    }
}

/// `scheme://user:****@host/...`: a URL with its password hidden.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:****@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    match path {
        Some(p) => format!("{scheme}://{authority}/{p}"),
        None => format!("{scheme}://{authority}"),
    }
}

/// Where chunk bytes live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobLocation {
    /// A folder (the embedded default).
    Disk(PathBuf),
    /// An S3-compatible bucket; needs the `s3` feature.
    #[cfg(feature = "s3")]
    S3(crate::store::s3::S3Config),
}

/// Opens the stores and builds a service with the system clock and OS
/// randomness. With PostgreSQL, a background thread also listens for
/// commits made through other instances and wakes this one's long-polls; it
/// stops when the service is dropped.
pub async fn open_stores(
    meta: MetaLocation,
    blobs: BlobLocation,
    config: ServiceConfig,
) -> Result<Service, ServerError> {
    let opened = tokio::task::spawn_blocking(move || open_blocking(meta, blobs))
        .await
        .map_err(|e| ServerError::Io(std::io::Error::other(e)))??;
    let service =
        Service::new(opened.meta, opened.blobs, Arc::new(SystemClock), Box::new(rand::rngs::OsRng), config)
            .await?;
    #[cfg(feature = "postgres")]
    if let Some(pg) = opened.postgres {
        wake_across_instances(pg, &service);
    }
    Ok(service)
}

struct Opened {
    meta: Arc<dyn crate::store::MetaStore>,
    blobs: Arc<dyn crate::store::BlobStore>,
    #[cfg(feature = "postgres")]
    postgres: Option<Arc<crate::store::postgres::PostgresMetaStore>>,
}

/// Opening may connect to a database: blocking work, off the async threads.
fn open_blocking(meta: MetaLocation, blobs: BlobLocation) -> Result<Opened, ServerError> {
    #[cfg(feature = "postgres")]
    let mut postgres = None;
    let meta: Arc<dyn crate::store::MetaStore> = match meta {
        MetaLocation::Sqlite(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            Arc::new(SqliteMetaStore::open(path)?)
        }
        #[cfg(feature = "postgres")]
        MetaLocation::Postgres(url) => {
            let store = Arc::new(crate::store::postgres::PostgresMetaStore::open(&url)?);
            postgres = Some(store.clone());
            store
        }
        #[cfg(not(feature = "postgres"))]
        MetaLocation::Postgres(_) => {
            return Err(ServerError::Store(StoreError::Backend(
                "this build has no PostgreSQL support (cargo feature `postgres` of coffer-server)".into(),
            )))
        }
    };
    let blobs: Arc<dyn crate::store::BlobStore> = match blobs {
        BlobLocation::Disk(dir) => Arc::new(DiskBlobStore::open(dir)?),
        #[cfg(feature = "s3")]
        BlobLocation::S3(config) => Arc::new(crate::store::s3::S3BlobStore::open(&config)?),
    };
    Ok(Opened {
        meta,
        blobs,
        #[cfg(feature = "postgres")]
        postgres,
    })
}

/// Feeds commit announcements from PostgreSQL (`LISTEN`) to the service's
/// notifier (and clears its journal tails when any instance pruned), on a thread that ends soon after the service is dropped. After
/// a lost connection it reconnects and re-reads the head of every watched
/// account, since announcements sent meanwhile are gone.
#[cfg(feature = "postgres")]
fn wake_across_instances(store: Arc<crate::store::postgres::PostgresMetaStore>, service: &Service) {
    use crate::store::postgres::Announcement;
    use crate::store::MetaStore;
    let weak = Arc::downgrade(&service.inner);
    let spawned = std::thread::Builder::new().name("coffer-pg-listen".into()).spawn(move || {
        let mut listener = None;
        let mut first = true;
        while weak.strong_count() > 0 {
            let Some(l) = listener.as_mut() else {
                match store.listen() {
                    Ok(l) => {
                        listener = Some(l);
                        if !first {
                            let Some(inner) = weak.upgrade() else { break };
                            for account in inner.notifier.watched() {
                                if let Ok(head) = store.head(account) {
                                    inner.notifier.publish(account, head, Vec::new());
                                }
                            }
                        }
                        first = false;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for other instances' commits; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                continue;
            };
            match l.wait(Duration::from_millis(250)) {
                Ok(notes) if !notes.is_empty() => {
                    let Some(inner) = weak.upgrade() else { break };
                    for note in notes {
                        match note {
                            Announcement::Commit(account, head) => {
                                inner.notifier.publish(account, head, Vec::new());
                            }
                            Announcement::Pruned => inner.notifier.clear_tails(),
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "lost the commit listener; reconnecting");
                    listener = None;
                    first = false;
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the commit listener: long-polls wake only for this instance's commits");
    }
}

/// A server that is accepting connections. Dropping it stops it.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    tls: bool,
    handle: Handle<SocketAddr>,
    serve: Option<JoinHandle<std::io::Result<()>>>,
    maintenance: JoinHandle<()>,
    service: Service,
}

impl RunningServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// The service behind it.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Open connections right now.
    pub fn connection_count(&self) -> usize {
        self.handle.connection_count()
    }

    /// Stops accepting, lets requests in flight finish (up to `grace`), and
    /// waits for the server to stop.
    pub async fn shutdown(mut self, grace: Duration) -> std::io::Result<()> {
        self.handle.graceful_shutdown(Some(grace));
        self.maintenance.abort();
        match self.serve.take() {
            Some(task) => task.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        self.maintenance.abort();
    }
}

/// Binds and serves `service` over HTTP(S).
pub async fn serve(
    service: Service,
    http: HttpConfig,
    listen: ListenConfig,
) -> Result<RunningServer, ServerError> {
    if listen.tls.is_none() && !listen.addr.ip().is_loopback() && !listen.insecure_plain_http {
        return Err(ServerError::PlainHttpRefused(listen.addr));
    }
    let socket = if listen.addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen.addr)?;
    let listener = socket.listen(4096)?.into_std()?;
    let addr = listener.local_addr()?;

    let handle = Handle::new();
    let header_timeout = http.header_timeout;
    let app = router(service.clone(), http).into_make_service_with_connect_info::<SocketAddr>();
    let tls = listen.tls.is_some();
    let serve = match &listen.tls {
        None => {
            let mut server = axum_server::from_tcp(listener)?.handle(handle.clone());
            server.http_builder().http1().header_read_timeout(header_timeout);
            tokio::spawn(server.serve(app))
        }
        Some(files) => {
            let config = RustlsConfig::from_pem_file(&files.cert, &files.key)
                .await
                .map_err(|e| ServerError::Tls(format!("reading {}: {e}", files.cert.display())))?;
            let mut server = axum_server::from_tcp_rustls(listener, config)?.handle(handle.clone());
            server.http_builder().http1().header_read_timeout(header_timeout);
            tokio::spawn(server.serve(app))
        }
    };
    let svc = service.clone();
    let every = listen.maintenance_every;
    let maintenance = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = svc.maintain().await {
                tracing::warn!(error = %e, "maintenance failed");
            }
        }
    });
    tracing::info!(%addr, tls, "coffer server listening");
    Ok(RunningServer { addr, tls, handle, serve: Some(serve), maintenance, service })
}
