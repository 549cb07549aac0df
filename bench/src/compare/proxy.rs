//! A counting TCP proxy on loopback: every tool's traffic between its
//! devices (or between a device and its server) goes through one of these,
//! so "bytes over the wire" is measured the same way for every tool,
//! whatever its protocol (HTTP, TLS, unison's own, WebDAV).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; it stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    /// The address to connect to instead of the target.
    pub addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port that forwards to `target`.
    pub fn start(rt: &tokio::runtime::Handle, target: SocketAddr) -> anyhow::Result<Self> {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).context("binding the counting proxy")?;
        let addr = listener.local_addr()?;
        let bytes = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let counter = bytes.clone();
        rt.spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    acc = listener.accept() => {
                        let Ok((inbound, _)) = acc else { continue };
                        let counter = counter.clone();
                        tokio::spawn(async move {
                            if let Ok(outbound) = TcpStream::connect(target).await {
                                let _ = inbound.set_nodelay(true);
                                let _ = outbound.set_nodelay(true);
                                let (ri, wi) = inbound.into_split();
                                let (ro, wo) = outbound.into_split();
                                let up = tokio::spawn(pump(ri, wo, counter.clone()));
                                pump(ro, wi, counter).await;
                                let _ = up.await;
                            }
                        });
                    }
                }
            }
        });
        Ok(Self { addr, bytes, _stop: stop })
    }

    /// Bytes carried so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                counter.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// A free loopback port (bound, then released) for a tool that must be told
/// its port up front.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
