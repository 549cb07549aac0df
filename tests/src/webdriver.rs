//! The desktop app under WebDriver: `tauri-driver` (from crates.io) in
//! front of Debian's `WebKitWebDriver`, which starts the real app binary
//! and drives its window. A few W3C WebDriver calls over the raw HTTP
//! client of [`crate::ui`]; nothing is downloaded.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::Proc;

/// The W3C id of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A running `tauri-driver`.
#[derive(Debug)]
pub struct Driver {
    proc: Proc,
    addr: String,
}

impl Driver {
    /// Starts `tauri-driver` on free loopback ports, with `env` passed on to
    /// the app it will start.
    pub fn start(env: &[(&str, &Path)]) -> Self {
        let port = free_port();
        let native = free_port();
        let bin =
            std::env::var_os("TAURI_DRIVER").map(PathBuf::from).unwrap_or_else(|| "tauri-driver".into());
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &port.to_string(), "--native-port", &native.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start tauri-driver (scripts/test installs it)");
        let addr = format!("127.0.0.1:{port}");
        let driver = Self { proc: Proc::from_child(child), addr };
        // Ready once WebKitWebDriver behind it answers too.
        let start = Instant::now();
        while !driver.ready() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tauri-driver is not ready on {}",
                driver.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    fn ready(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(&self.addr) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = format!("GET /status HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
    }

    /// One request; `None` when the connection closed without an answer.
    fn send(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.addr).ok()?;
        // Starting the app (a new session) can take a while on a busy machine.
        s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        Some((status, if chunked { dechunk(rest) } else { rest.to_string() }))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        // The driver now and then drops a connection unanswered: ask again.
        let mut answer = None;
        for _ in 0..5 {
            answer = self.send(method, path, &body);
            if answer.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let (status, text) = answer.unwrap_or_else(|| panic!("{method} {path}: no answer from tauri-driver"));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text:?}"));
        if status >= 400 {
            panic!("{method} {path} failed ({status}): {}", v["value"]);
        }
        v["value"].clone()
    }

    /// Starts the app at `app` with `args`; returns the session.
    pub fn session(&self, app: &Path, args: &[&str]) -> Session<'_> {
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "wry",
                    "tauri:options": { "application": app, "args": args }
                }
            }
        });
        let v = self.call("POST", "/session", Some(caps));
        let id = v["sessionId"].as_str().expect("a session id").to_string();
        Session { driver: self, id }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.proc.terminate();
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

/// One app instance under WebDriver.
#[derive(Debug)]
pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver.call(method, &format!("/session/{}{path}", self.id), body)
    }

    fn try_find(&self, css: &str) -> Option<String> {
        let v = self.call("POST", "/elements", Some(json!({"using": "css selector", "value": css})));
        v.as_array()?.first()?.get(ELEMENT)?.as_str().map(String::from)
    }

    /// Waits (up to `timeout`) for an element matching `css`.
    #[track_caller]
    pub fn wait(&self, css: &str, timeout: Duration) -> Element<'_> {
        let start = Instant::now();
        loop {
            if let Some(id) = self.try_find(css) {
                return Element { session: self, id };
            }
            if start.elapsed() > timeout {
                let _ = self.screenshot(&failure_shot());
                panic!("no element {css} after {timeout:?}; page text: {}", self.text_of_page());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The element matching `css`, waiting up to 30 s for it.
    #[track_caller]
    pub fn el(&self, css: &str) -> Element<'_> {
        self.wait(css, Duration::from_secs(30))
    }

    /// Whether an element matches `css` now.
    pub fn exists(&self, css: &str) -> bool {
        self.try_find(css).is_some()
    }

    /// Runs `script` in the page and returns its value.
    pub fn script(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({"script": script, "args": []})))
    }

    /// The page's text.
    pub fn text_of_page(&self) -> String {
        self.script("return document.body ? document.body.innerText : ''").as_str().unwrap_or("").to_string()
    }

    /// Waits until the page's text contains `needle`.
    #[track_caller]
    pub fn wait_text(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.text_of_page().contains(needle) {
            if start.elapsed() > timeout {
                let _ = self.screenshot(&failure_shot());
                panic!("the page never said {needle:?}; it says: {}", self.text_of_page());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the window.
    pub fn screenshot(&self, path: &Path) -> std::io::Result<()> {
        let b64 = self.call("GET", "/screenshot", None);
        let png = data_encoding::BASE64
            .decode(b64.as_str().unwrap_or_default().as_bytes())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.driver.call("DELETE", &format!("/session/{}", self.id), None)
        }));
    }
}

/// Where screenshots go: `target/desktop-screenshots/` (CI keeps them).
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/x → target/desktop-screenshots
    exe.ancestors().nth(3).expect("target folder").join("desktop-screenshots")
}

fn failure_shot() -> PathBuf {
    screenshot_dir().join("failure.png")
}

/// An element of the page.
#[derive(Debug)]
pub struct Element<'s> {
    session: &'s Session<'s>,
    id: String,
}

impl Element<'_> {
    /// Clicks it.
    pub fn click(&self) {
        self.session.call("POST", &format!("/element/{}/click", self.id), Some(json!({})));
    }

    /// Replaces its value with `text`.
    pub fn fill(&self, text: &str) {
        self.session.call("POST", &format!("/element/{}/clear", self.id), Some(json!({})));
        self.session.call("POST", &format!("/element/{}/value", self.id), Some(json!({"text": text})));
    }

    /// Its visible text.
    pub fn text(&self) -> String {
        self.session
            .call("GET", &format!("/element/{}/text", self.id), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}
