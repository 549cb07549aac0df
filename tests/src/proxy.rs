//! A fault-injecting HTTP proxy between a client and the server, in this
//! process, on tokio: the network a laptop on a train has.
//!
//! Each request is read whole from the client and then, decided by a
//! seeded RNG in the order requests arrive, one of:
//!
//! - passed through;
//! - **reset**: the connection is reset (RST) before the server sees it;
//! - **500 before**: answered `500` without reaching the server;
//! - **500 after** (an answer lost): sent to the server, which applies it,
//!   and the client gets `500` instead of the answer;
//! - **truncated**: sent to the server, and the client gets half of the
//!   answer before the connection is reset;
//! - **stalled**: held for [`Faults::stall`] before going on;
//! - **duplicated**: sent to the server twice in a row (a replay); the client
//!   gets the second answer.
//!
//! One request per connection (`Connection: close` both ways), so a fault
//! never leaks into the next request. Bodies are read by `Content-Length`
//! (the client sends no chunked requests; one would be counted as
//! `unsupported` and answered 501, which a test can assert never happens).
//!
//! A test can also script faults ([`FaultProxy::script`]): the next
//! requests whose request line contains a pattern get a given fault,
//! whether random faults are on or not.
//!
//! The fault sequence replays from its seed; which request of a sync
//! arrives n-th can vary with the client's concurrency (parallel downloads),
//! so a failing seed replays its faults, not always onto the same requests.
//! The proxy's log ([`FaultProxy::log`]) lists every fault with its request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How often each fault is injected (probabilities per request; their sum
/// must stay at most 1), and how long a stall lasts.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Connection reset before the server sees the request.
    pub reset: f64,
    /// 500 without reaching the server.
    pub error_before: f64,
    /// Applied by the server, answered 500.
    pub error_after: f64,
    /// Half the answer, then a reset.
    pub truncate: f64,
    /// Held for `stall` first.
    pub stall_rate: f64,
    /// Sent twice.
    pub duplicate: f64,
    /// How long a stalled request is held.
    pub stall: Duration,
}

impl Faults {
    /// No random faults; scripted stalls ([`FaultProxy::script`]) last
    /// `stall`.
    pub fn scripted(stall: Duration) -> Self {
        Self {
            reset: 0.0,
            error_before: 0.0,
            error_after: 0.0,
            truncate: 0.0,
            stall_rate: 0.0,
            duplicate: 0.0,
            stall,
        }
    }

    /// About one request in three faulted, spread over every kind.
    pub fn mix() -> Self {
        Self {
            reset: 0.06,
            error_before: 0.05,
            error_after: 0.05,
            truncate: 0.06,
            stall_rate: 0.03,
            duplicate: 0.07,
            stall: Duration::from_millis(1500),
        }
    }
}

/// What the proxy did, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FaultCounts {
    /// Requests received from the client.
    pub requests: u64,
    /// Connections reset before forwarding.
    pub resets: u64,
    /// 500s without forwarding.
    pub errors_before: u64,
    /// 500s after the server applied the request.
    pub errors_after: u64,
    /// Answers cut in half.
    pub truncated: u64,
    /// Requests held for a while.
    pub stalls: u64,
    /// Requests sent to the server twice.
    pub duplicated: u64,
    /// Requests the proxy could not handle (chunked bodies, bad heads).
    pub unsupported: u64,
}

impl FaultCounts {
    /// Faults injected, all kinds together.
    pub fn injected(&self) -> u64 {
        self.resets + self.errors_before + self.errors_after + self.truncated + self.stalls + self.duplicated
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passed through.
    None,
    /// Connection reset before the server sees it.
    Reset,
    /// 500 without reaching the server.
    ErrorBefore,
    /// Applied by the server, answered 500 (the answer lost).
    ErrorAfter,
    /// Half the answer, then a reset.
    Truncate,
    /// Held for [`Faults::stall`] first.
    Stall,
    /// Sent to the server twice; the client gets the second answer.
    Duplicate,
}

/// A scripted fault: the next `times` requests whose line contains
/// `pattern`.
#[derive(Debug)]
struct Rule {
    pattern: String,
    fault: Fault,
    times: u32,
}

struct Shared {
    upstream: String,
    faults: Faults,
    enabled: AtomicBool,
    rng: Mutex<rand_chacha::ChaCha8Rng>,
    counts: Mutex<FaultCounts>,
    log: Mutex<Vec<String>>,
    /// Scripted faults, in order: only the first applies, until spent.
    rules: Mutex<std::collections::VecDeque<Rule>>,
}

impl Shared {
    fn decide(&self, line: &str) -> (u64, Fault) {
        let mut counts = self.counts.lock().expect("counts");
        counts.requests += 1;
        let n = counts.requests;
        let scripted = {
            let mut rules = self.rules.lock().expect("rules");
            match rules.front_mut() {
                Some(rule) if line.contains(&rule.pattern) => {
                    rule.times -= 1;
                    let fault = rule.fault;
                    if rule.times == 0 {
                        rules.pop_front();
                    }
                    Some(fault)
                }
                _ => None,
            }
        };
        let kind = match scripted {
            Some(fault) => fault,
            None if !self.enabled.load(Ordering::SeqCst) => Fault::None,
            None => self.draw(),
        };
        match kind {
            Fault::Reset => counts.resets += 1,
            Fault::ErrorBefore => counts.errors_before += 1,
            Fault::ErrorAfter => counts.errors_after += 1,
            Fault::Truncate => counts.truncated += 1,
            Fault::Stall => counts.stalls += 1,
            Fault::Duplicate => counts.duplicated += 1,
            Fault::None => {}
        }
        (n, kind)
    }

    /// A random fault (or none) from the seeded stream.
    fn draw(&self) -> Fault {
        let f = &self.faults;
        let x: f64 = self.rng.lock().expect("rng").gen();
        let kinds = [
            (f.reset, Fault::Reset),
            (f.error_before, Fault::ErrorBefore),
            (f.error_after, Fault::ErrorAfter),
            (f.truncate, Fault::Truncate),
            (f.stall_rate, Fault::Stall),
            (f.duplicate, Fault::Duplicate),
        ];
        let mut edge = 0.0;
        for (p, kind) in kinds {
            edge += p;
            if x < edge {
                return kind;
            }
        }
        Fault::None
    }
}

/// The proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// Its base URL: give it to clients instead of the server's.
    pub url: String,
    /// The seed of its fault sequence.
    pub seed: u64,
    shared: Arc<Shared>,
    _rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("upstream", &self.upstream).finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `upstream`
    /// (`http://127.0.0.1:port`), injecting `faults` from `seed`. It starts
    /// disabled (everything passes) until [`FaultProxy::set_enabled`].
    pub fn start(upstream: &str, seed: u64, faults: Faults) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let shared = Arc::new(Shared {
            upstream,
            faults,
            enabled: AtomicBool::new(false),
            rng: Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed)),
            counts: Mutex::new(FaultCounts::default()),
            log: Mutex::new(Vec::new()),
            rules: Mutex::new(std::collections::VecDeque::new()),
        });
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let s = shared.clone();
        rt.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(s.clone(), conn));
            }
        });
        Self { url, seed, shared, _rt: rt }
    }

    /// Turns fault injection on or off (off: a plain proxy).
    pub fn set_enabled(&self, on: bool) {
        self.shared.enabled.store(on, Ordering::SeqCst);
    }

    /// Queues a scripted fault: the next `times` requests whose request
    /// line (`POST /v1/commit HTTP/1.1`) contains `pattern` get `fault`.
    /// Scripted faults apply one after another, in the order queued.
    pub fn script(&self, pattern: &str, fault: Fault, times: u32) {
        if times > 0 {
            self.shared.rules.lock().expect("rules").push_back(Rule {
                pattern: pattern.to_string(),
                fault,
                times,
            });
        }
    }

    /// What it did so far.
    pub fn counts(&self) -> FaultCounts {
        self.shared.counts.lock().expect("counts").clone()
    }

    /// Every fault injected: request number, fault, request line.
    pub fn log(&self) -> Vec<String> {
        self.shared.log.lock().expect("log").clone()
    }
}

/// One request, whole.
struct Request {
    /// The head, rewritten to close the connection after the answer.
    head: Vec<u8>,
    body: Vec<u8>,
    line: String,
}

async fn serve(s: Arc<Shared>, mut conn: TcpStream) {
    let req = match read_request(&mut conn).await {
        Ok(Some(r)) => r,
        Ok(None) => return, // the client closed an idle connection
        Err(why) => {
            s.counts.lock().expect("counts").unsupported += 1;
            s.log.lock().expect("log").push(format!("unsupported request: {why}"));
            let _ = conn.write_all(&plain_answer(501, "the fault proxy cannot handle this request")).await;
            return;
        }
    };
    let (n, fault) = s.decide(&req.line);
    if !matches!(fault, Fault::None) {
        s.log.lock().expect("log").push(format!("#{n} {fault:?}: {}", req.line));
    }
    let answer = match fault {
        Fault::Reset => {
            reset(conn);
            return;
        }
        Fault::ErrorBefore => plain_answer(500, "injected by the fault proxy"),
        Fault::ErrorAfter => {
            let _ = forward(&s.upstream, &req).await;
            plain_answer(500, "injected by the fault proxy (the server applied the request)")
        }
        Fault::Stall => {
            tokio::time::sleep(s.faults.stall).await;
            forward(&s.upstream, &req).await
        }
        Fault::Duplicate => {
            let _ = forward(&s.upstream, &req).await;
            forward(&s.upstream, &req).await
        }
        Fault::None | Fault::Truncate => forward(&s.upstream, &req).await,
    };
    if matches!(fault, Fault::Truncate) {
        let _ = conn.write_all(&answer[..answer.len() / 2]).await;
        let _ = conn.flush().await;
        reset(conn);
        return;
    }
    let _ = conn.write_all(&answer).await;
    let _ = conn.shutdown().await;
}

/// Closes with RST rather than FIN. (`set_linger` is deprecated because a
/// non-zero linger blocks the thread in `drop`; a zero one does not wait.)
#[allow(deprecated)]
fn reset(conn: TcpStream) {
    let _ = conn.set_linger(Some(Duration::ZERO));
    drop(conn);
}

fn plain_answer(status: u16, text: &str) -> Vec<u8> {
    let reason = if status == 500 { "Internal Server Error" } else { "Not Implemented" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
}

/// Sends `req` on a fresh connection and returns the whole answer (the
/// server closes after it); a failure becomes a 502.
async fn forward(upstream: &str, req: &Request) -> Vec<u8> {
    let attempt = async {
        let mut up = TcpStream::connect(upstream).await?;
        up.write_all(&req.head).await?;
        up.write_all(&req.body).await?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match attempt.await {
        Ok(a) if !a.is_empty() => close_after(a),
        Ok(_) => plain_answer(500, "the server closed without answering"),
        Err(e) => plain_answer(500, &format!("the proxy could not reach the server: {e}")),
    }
}

/// Rewrites an answer's head to say `Connection: close`.
fn close_after(answer: Vec<u8>) -> Vec<u8> {
    let Some(end) = find(&answer, b"\r\n\r\n") else { return answer };
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let mut out = rewrite_head(&head).into_bytes();
    out.extend_from_slice(&answer[end + 4..]);
    out
}

/// Drops hop-by-hop connection headers and adds `Connection: close`.
fn rewrite_head(head: &str) -> String {
    let mut out = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if i > 0 && (name == "connection" || name == "keep-alive") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn read_request(conn: &mut TcpStream) -> Result<Option<Request>, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let end = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break end;
        }
        let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err("closed inside the head".into()) };
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end].to_vec()).map_err(|_| "a head that is not UTF-8".to_string())?;
    let mut len = 0usize;
    for line in head.split("\r\n").skip(1) {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => len = value.trim().parse().map_err(|_| format!("bad length {value}"))?,
            "transfer-encoding" => return Err(format!("transfer-encoding {value}")),
            _ => {}
        }
    }
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed inside the body".into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    let line = head.lines().next().unwrap_or("").to_string();
    Ok(Some(Request { head: rewrite_head(&head).into_bytes(), body, line }))
}
