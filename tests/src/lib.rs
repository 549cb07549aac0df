//! End-to-end tests: a real `coffer server` on a free loopback port, real
//! `coffer` clients on temp folders (each with its own `--home`), and later a
//! real browser for the UI. This library holds the helpers that start those
//! processes and stop them by their pid (never by name); the tests are in
//! `tests/`.
//!
//! The `coffer` binary is taken from the cargo target folder this test
//! binary lives in (`scripts/test` builds it first), or from `COFFER_BIN`.
//! The crash tests use `coffer-failpoints` beside it (the same binary built
//! with `--features failpoints`, see [`failpoints_bin`]), or
//! `COFFER_FAILPOINTS_BIN`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};

pub mod hostile;
pub mod proxy;
pub mod ui;
pub mod webdriver;

/// The `coffer` binary under test.
pub fn coffer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("COFFER_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/coffer_e2e-… → target/<profile>/coffer
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = profile_dir.join("coffer");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p coffer-cli`, which scripts/test does) or set COFFER_BIN",
        bin.display()
    );
    bin
}

/// The `coffer` binary built with the engine's failpoints compiled in
/// (`scripts/build-failpoints` makes it; `scripts/test` runs that).
pub fn failpoints_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("COFFER_FAILPOINTS_BIN") {
        return PathBuf::from(p);
    }
    let bin = coffer_bin().with_file_name("coffer-failpoints");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`scripts/build-failpoints`, which scripts/test runs) or set COFFER_FAILPOINTS_BIN",
        bin.display()
    );
    bin
}

/// Waits for `cond` with a deadline; panics with `what` when it runs out.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A running process, killed (by pid) when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Takes charge of a started process.
    pub fn from_child(child: Child) -> Self {
        Self { child }
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (up to 10 s, then SIGKILL).
    pub fn terminate(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `coffer server` with its data in a temp folder.
#[derive(Debug)]
pub struct Server {
    /// Its base URL.
    pub url: String,
    proc: Proc,
    /// The data folder.
    pub data: tempfile::TempDir,
}

impl Server {
    /// Starts a server on a free loopback port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra flags.
    pub fn start_with(extra: &[&str]) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let (url, proc) = spawn_server(data.path(), "127.0.0.1:0", extra);
        Self { url, proc, data }
    }

    /// Starts the stopped server again, on the same address and data.
    pub fn restart(&mut self) {
        let addr = self.url.trim_start_matches("http://").to_string();
        let (url, proc) = spawn_server(self.data.path(), &addr, &[]);
        assert_eq!(url, self.url);
        self.proc = proc;
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        self.proc.terminate();
    }

    /// Kills the server with SIGKILL (a crash or power cut of the store's
    /// process, without the chance to finish anything).
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// One counter from the server's `GET /metrics` (Prometheus text).
    pub fn metric(&self, name: &str) -> u64 {
        use std::io::Read;
        let addr = self.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the server");
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("read /metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in /metrics: {body}"))
    }
}

fn spawn_server(data: &Path, listen: &str, extra: &[&str]) -> (String, Proc) {
    let mut child = Command::new(coffer_bin())
        .args(["server", "--listen", listen, "--data"])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn coffer server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("server exited before listening").expect("read stdout");
        if let Some(i) = line.find("http://") {
            break line[i..].trim().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (url, Proc { child })
}

/// One device: a home folder and a sync folder.
#[derive(Debug)]
pub struct Client {
    /// Its home (keys, device id).
    pub home: PathBuf,
    /// Its sync folder.
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

/// What a command printed and how it exited.
#[derive(Debug)]
pub struct Ran {
    /// Exit code (-1 if killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ran {
    /// Panics unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

impl From<Output> for Ran {
    fn from(o: Output) -> Self {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Password of every test account.
pub const PASSWORD: &str = "correct horse battery staple";

impl Client {
    /// A new device with empty folders.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let root = dir.path().join("Coffer");
        Self { home, root, _dir: dir }
    }

    /// A new device whose sync folder is `root` (on a disk a test set up);
    /// its home is in a temp folder of its own.
    pub fn with_root(root: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        Self { home, root, _dir: dir }
    }

    /// A `coffer` command for this device.
    pub fn command(&self) -> Command {
        self.command_of(&coffer_bin())
    }

    /// A command of the `coffer` binary `bin` for this device.
    pub fn command_of(&self, bin: &Path) -> Command {
        let mut c = Command::new(bin);
        c.arg("--home").arg(&self.home).env("COFFER_INSECURE_FAST_KDF", "1").env("RUST_LOG", "warn");
        c
    }

    /// Runs `coffer ARGS` with `stdin` as input.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Ran {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn coffer");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("wait").into()
    }

    /// Runs `coffer ARGS`.
    pub fn run(&self, args: &[&str]) -> Ran {
        self.command().args(args).stdin(Stdio::null()).output().expect("run coffer").into()
    }

    /// Signs up `email` on `server` (this device logged in).
    pub fn signup(&self, server: &Server, email: &str) {
        self.signup_at(&server.url, email);
    }

    /// Signs up `email` on the store at `url` (a server, or a proxy in
    /// front of one).
    pub fn signup_at(&self, url: &str, email: &str) {
        let rk = self.home.with_file_name("recovery-key.txt");
        self.run_with_stdin(
            &["signup", "--server", url, "--email", email, "--password-stdin", "--recovery-key-file"]
                .into_iter()
                .chain([rk.to_str().expect("utf-8 path")])
                .collect::<Vec<_>>(),
            &format!("{PASSWORD}\n"),
        )
        .ok();
    }

    /// Logs this device in to `email` on `server`.
    pub fn login(&self, server: &Server, email: &str) {
        self.login_at(&server.url, email);
    }

    /// Logs this device in to `email` on the store at `url`.
    pub fn login_at(&self, url: &str, email: &str) {
        self.run_with_stdin(
            &["login", "--server", url, "--email", email, "--password-stdin"],
            &format!("{PASSWORD}\n"),
        )
        .ok();
    }

    /// `coffer sync ROOT --once`, which must succeed.
    #[track_caller]
    pub fn sync(&self) -> Ran {
        self.run(&["sync", self.root.to_str().expect("utf-8"), "--once", "--quiet"]).ok()
    }

    /// `coffer sync ROOT --once` with the failpoints build, told to SIGKILL
    /// itself at `failpoint` (`name` or `name@N`, see
    /// `coffer_engine::failpoints`). Panics unless it died exactly so: a
    /// failpoint that is never reached fails the test.
    #[track_caller]
    pub fn sync_killed_at(&self, failpoint: &str) {
        let err = tempfile::NamedTempFile::new().expect("temp file");
        let mut child = self
            .command_of(&failpoints_bin())
            .args(["sync", self.root.to_str().expect("utf-8"), "--once", "--quiet"])
            .env("COFFER_KILL_AT", failpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err.reopen().expect("reopen"))
            .spawn()
            .expect("spawn coffer-failpoints");
        let end = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("coffer sync with COFFER_KILL_AT={failpoint} still running after 2 minutes");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "COFFER_KILL_AT={failpoint}: the process was not killed there ({status}), so the failpoint was not reached; stderr: {}",
            std::fs::read_to_string(err.path()).unwrap_or_default()
        );
    }

    /// Starts the daemon on this device's folder, its standard error (its
    /// warnings) going to `stderr`.
    pub fn daemon_logging_to(&self, stderr: std::fs::File) -> Proc {
        let child = self
            .command()
            .args(["sync", self.root.to_str().expect("utf-8"), "--quiet", "--rescan-secs", "5"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn daemon");
        Proc { child }
    }

    /// Starts the daemon on this device's folder.
    pub fn daemon(&self) -> Proc {
        let child = self
            .command()
            .args(["sync", self.root.to_str().expect("utf-8"), "--quiet", "--rescan-secs", "5"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn daemon");
        Proc { child }
    }

    /// Absolute path of a file in the sync folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes a file (creating parents).
    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    }

    /// Reads a file.
    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    /// The synced tree: path → description, without `.coffer`.
    pub fn tree(&self) -> BTreeMap<String, String> {
        tree(&self.root)
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

/// path → "dir" | "link -> target" | "file <len> <blake-ish digest> [x]".
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
            if rel == ".coffer" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).expect("lstat");
            let desc = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).expect("readlink").display())
            } else if meta.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                let data = std::fs::read(&p).expect("read");
                let exec = if meta.permissions().mode() & 0o100 != 0 { " x" } else { "" };
                format!("file {} {:016x}{exec}", data.len(), fnv(&data))
            };
            out.insert(rel, desc);
        }
    }
    out
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// The inode of a path (to tell a rename from a rewrite).
pub fn inode(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).map(|m| m.ino()).unwrap_or(0)
}
