//! Helpers for the web UI's tests: a daemon serving the UI (`coffer sync
//! --ui`) and a minimal HTTP/1.1 client over a raw socket, so the tests can
//! send exactly the headers an attacker would (a wrong `Host`, a foreign
//! `Origin`) without a client library rewriting them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use crate::{Client, Proc};

/// A daemon serving the web UI.
#[derive(Debug)]
pub struct UiDaemon {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The one-time login link it printed.
    pub login: String,
}

impl Client {
    /// Starts the daemon on this device's folder with the web UI on a free
    /// port; returns once it printed the UI's address.
    pub fn ui_daemon(&self) -> UiDaemon {
        let mut child = self
            .command()
            .args(["sync", self.root.to_str().expect("utf-8"), "--quiet", "--rescan-secs", "5", "--ui"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn daemon");
        let stdout = child.stdout.take().expect("stdout");
        let proc = Proc { child };
        let mut lines = BufReader::new(stdout).lines();
        let line = loop {
            let line = lines.next().expect("daemon exited before serving the UI").expect("read stdout");
            if line.starts_with("Web UI: ") {
                break line;
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let url = line["Web UI: ".len()..].split_whitespace().next().expect("url").to_string();
        let login = line.rsplit(' ').next().expect("link").trim_end_matches(')').to_string();
        let host = url.trim_start_matches("http://").trim_end_matches('/').to_string();
        UiDaemon { proc, url, host, login }
    }

    /// The per-install UI token.
    pub fn ui_token(&self) -> String {
        std::fs::read_to_string(self.home.join("ui-token")).expect("ui-token").trim().to_string()
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Header lines, lowercased names.
    pub headers: Vec<(String, String)>,
    /// The body (as read; not de-chunked).
    pub body: String,
}

impl HttpAnswer {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Sends one request to `addr` (`127.0.0.1:PORT`) with exactly these
/// headers (plus `Connection: close` and a `Content-Length` for a body).
/// With `stop_at`, stops reading once the answer contains it (for streams).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    stop_at: Option<&str>,
) -> HttpAnswer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if stop_at.is_some_and(|m| String::from_utf8_lossy(&raw).contains(m)) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpAnswer { status, headers, body: body.to_string() }
}
