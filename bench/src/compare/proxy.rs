//! A counting TCP proxy on loopback: every tool's traffic between its
//! devices (or between a device and its server) goes through one of these,
//! so "bytes over the wire" is measured the same way for every tool,
//! whatever its protocol (HTTP, TLS, unison's own, WebDAV). It can also
//! hold every byte back for a fixed time in each direction (`--delay-ms`),
//! so the tools can be compared over a network farther than loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    /// Starts a proxy on a free loopback port that forwards to `target`,
    /// each byte `delay` later than it came (in both directions).
    pub fn start(rt: &tokio::runtime::Handle, target: SocketAddr, delay: Duration) -> anyhow::Result<Self> {
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
                                if delay.is_zero() && !copy_through_user_space() {
                                    splice_both_ways(inbound, outbound, counter);
                                    return;
                                }
                                let (ri, wi) = inbound.into_split();
                                let (ro, wo) = outbound.into_split();
                                let up = tokio::spawn(pump(ri, wo, counter.clone(), delay));
                                pump(ro, wi, counter, delay).await;
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

/// `COFFER_BENCH_PROXY=copy`: the undelayed proxy copies through a buffer
/// as the delayed one does, instead of splicing (to measure what the
/// splicing saves).
fn copy_through_user_space() -> bool {
    std::env::var_os("COFFER_BENCH_PROXY").is_some_and(|v| v == "copy")
}

/// The undelayed proxy: each direction on its own thread, moved from socket
/// to socket through a pipe with splice(2), so the bytes are never copied
/// into this process (on loopback, the kernel moves the pages). It takes
/// about half the CPU a GiB of copying them through a buffer (0.10–0.31
/// against 0.19–0.63 CPU-s here, three rounds side by side): CPU taken from
/// the two cores the tools share, and paid twice by a tool whose traffic
/// takes two hops, a device to its server and the server to the other
/// device (docs/benchmarks.md, sixteenth pass).
fn splice_both_ways(inbound: TcpStream, outbound: TcpStream, counter: Arc<AtomicU64>) {
    let blocking = |s: TcpStream| -> std::io::Result<std::net::TcpStream> {
        let s = s.into_std()?;
        s.set_nonblocking(false)?;
        Ok(s)
    };
    // Dropped here, both sockets close: the tool sees the connection end.
    let (Ok(inbound), Ok(outbound)) = (blocking(inbound), blocking(outbound)) else { return };
    for (from, to, name) in [(&inbound, &outbound, "proxy-up"), (&outbound, &inbound, "proxy-down")] {
        let counter = counter.clone();
        let started = from.try_clone().and_then(|from| {
            let to = to.try_clone()?;
            std::thread::Builder::new().name(name.into()).spawn(move || splice_pump(&from, &to, &counter))
        });
        if started.is_err() {
            // One direction alone would leave the tool waiting: end the
            // connection (the other direction's thread, if any, sees it).
            let _ = inbound.shutdown(std::net::Shutdown::Both);
            let _ = outbound.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Moves everything `from` sends to `to` through a pipe, counted; at the
/// end of the stream (or an error) shuts `to`'s sending side, as the copying
/// pump does.
fn splice_pump(from: &std::net::TcpStream, to: &std::net::TcpStream, counter: &AtomicU64) {
    use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
    const MAX: usize = 1 << 20;
    let _ = (|| {
        let (out_of_pipe, into_pipe) = pipe_with(PipeFlags::CLOEXEC)?;
        // A larger pipe: fewer system calls a megabyte (the default holds 64 KiB).
        let _ = fcntl_setpipe_size(&into_pipe, MAX);
        loop {
            let n = splice(from, None, &into_pipe, None, MAX, SpliceFlags::MOVE)?;
            if n == 0 {
                return Ok::<_, rustix::io::Errno>(());
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
            let mut left = n;
            while left > 0 {
                match splice(&out_of_pipe, None, to, None, left, SpliceFlags::MOVE)? {
                    0 => return Ok(()),
                    m => left -= m,
                }
            }
        }
    })();
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// One read into `buf`, counted; `None` at the end of the stream or on an
/// error (either ends the pump).
async fn read_counted(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut [u8],
    counter: &AtomicU64,
) -> Option<usize> {
    match from.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            counter.fetch_add(n as u64, Ordering::Relaxed);
            Some(n)
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<AtomicU64>,
    delay: Duration,
) {
    if delay.is_zero() {
        let mut buf = vec![0u8; 256 * 1024];
        while let Some(n) = read_counted(&mut from, &mut buf, &counter).await {
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
        return;
    }
    // Reads go on while earlier bytes wait out their delay: a fixed latency,
    // not a lower throughput (up to 256 reads of 64 KiB in flight).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(256);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Some(n) = read_counted(&mut from, &mut buf, &counter).await {
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    });
    while let Some((due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&bytes).await.is_err() {
            break;
        }
    }
    drop(rx);
    let _ = reader.await;
    let _ = to.shutdown().await;
}

/// A free loopback port (bound, then released) for a tool that must be told
/// its port up front.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Instant;

    use super::*;

    /// An echo server on loopback; its address.
    fn echo() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 65536];
            loop {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => c.write_all(&buf[..n]).unwrap(),
                }
            }
        });
        addr
    }

    /// Both pumps (splicing without a delay, copying with one) carry the
    /// bytes whole and in order, counted both ways; a round trip takes
    /// twice the delay.
    #[test]
    fn a_delayed_proxy_keeps_the_bytes_and_adds_its_delay() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        for delay in [Duration::ZERO, Duration::from_millis(40)] {
            let proxy = Proxy::start(rt.handle(), echo(), delay).unwrap();
            let mut c = std::net::TcpStream::connect(proxy.addr).unwrap();
            let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let started = Instant::now();
            let writer = {
                let mut c = c.try_clone().unwrap();
                let sent = sent.clone();
                std::thread::spawn(move || c.write_all(&sent).unwrap())
            };
            let mut back = vec![0u8; sent.len()];
            c.read_exact(&mut back).unwrap();
            let took = started.elapsed();
            writer.join().unwrap();
            assert!(back == sent, "bytes changed on the way");
            assert!(took >= delay * 2, "{took:?} for a round trip through a {delay:?} proxy");
            assert_eq!(proxy.bytes(), 2 * sent.len() as u64);
        }
    }
}
