//! Running the store: open the embedded stores, bind, serve (plain HTTP on
//! loopback, HTTPS with rustls otherwise), and run maintenance periodically.
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
