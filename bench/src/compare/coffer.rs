//! Coffer: a real `coffer server` (its own SQLite and chunk folder) and two
//! real clients, each with its own home, each running the live daemon
//! (`coffer sync DIR`: watcher + long-poll). Each client reaches the server
//! through its own counting proxy. Logins use `COFFER_INSECURE_FAST_KDF=1`
//! (cheap Argon2), which changes nothing after login.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use super::measure::{self, Proc, Usage};
use super::proxy::Proxy;
use super::{Ctx, Peer};

const PASSWORD: &str = "bench password, not a secret";

/// A Coffer server and two clients.
#[derive(Debug)]
pub struct Coffer {
    /// `coffer`, or `coffer-base` for the second build of an A/B run.
    name: &'static str,
    bin: PathBuf,
    dir: PathBuf,
    home_a: PathBuf,
    root_a: PathBuf,
    root_b: PathBuf,
    daemon_a: Option<Proc>,
    daemon_b: Proc,
    // Dropped after the daemons (fields drop in order).
    _server: Proc,
    proxy_a: Proxy,
    proxy_b: Proxy,
    one_shot: Usage,
}

/// The log filter of Coffer's processes: `warn`, or `COFFER_BENCH_LOG`
/// (e.g. `coffer_engine=debug`) to see where a round's time goes; the logs
/// are kept in the round's folder (`daemon-a.log`, `server.log`).
fn log_filter() -> String {
    std::env::var("COFFER_BENCH_LOG").unwrap_or_else(|_| "warn".into())
}

fn client(bin: &Path, home: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--home").arg(home).env("COFFER_INSECURE_FAST_KDF", "1").env("RUST_LOG", log_filter());
    c
}

fn run_with_password(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("coffer {what}"))?;
    child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "coffer {what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Coffer {
    /// Starts the server, signs up A, logs in B, starts both daemons, and
    /// waits until a probe file written on A is on B.
    /// `name` is the tool's name in the results, `bin` its binary.
    pub fn start(ctx: &Ctx, dir: &Path, name: &'static str, bin: &Path) -> anyhow::Result<Self> {
        let bin = bin.to_path_buf();
        let data = measure::mkdir(dir.join("server"))?;
        let mut child = Command::new(&bin)
            .args(["server", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .env("RUST_LOG", log_filter())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("server.log"))?)
            .spawn()
            .context("starting coffer server")?;
        let stdout = child.stdout.take().unwrap();
        let server = Proc::from_child("coffer server", child);
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let Some(line) = lines.next() else { bail!("coffer server exited before listening") };
            let line = line?;
            if let Some(i) = line.find("http://") {
                break line[i..].trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let addr: SocketAddr = url.trim_start_matches("http://").trim_end_matches('/').parse()?;
        let proxy_a = Proxy::start(ctx.rt.handle(), addr, ctx.delay)?;
        let proxy_b = Proxy::start(ctx.rt.handle(), addr, ctx.delay)?;
        let home_a = dir.join("home-a");
        let home_b = dir.join("home-b");
        let root_a = measure::mkdir(dir.join("a"))?;
        let root_b = measure::mkdir(dir.join("b"))?;
        let url_a = format!("http://{}", proxy_a.addr);
        let url_b = format!("http://{}", proxy_b.addr);
        let mut signup = client(&bin, &home_a);
        signup
            .args([
                "signup",
                "--server",
                &url_a,
                "--email",
                "bench@example.invalid",
                "--password-stdin",
                "--recovery-key-file",
            ])
            .arg(dir.join("recovery-key.txt"));
        run_with_password(signup, "signup")?;
        let mut login = client(&bin, &home_b);
        login.args(["login", "--server", &url_b, "--email", "bench@example.invalid", "--password-stdin"]);
        run_with_password(login, "login")?;
        for (home, root) in [(&home_a, &root_a), (&home_b, &root_b)] {
            let out = client(&bin, home).arg("sync").arg(root).args(["--once", "--quiet"]).output()?;
            if !out.status.success() {
                bail!("coffer sync --once failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let daemon = |home: &Path, root: &Path, name: &str| {
            Proc::spawn(
                &format!("coffer daemon {name}"),
                client(&bin, home).arg("sync").arg(root).arg("--quiet"),
                &dir.join(format!("daemon-{name}.log")),
            )
        };
        let daemon_a = daemon(&home_a, &root_a, "a")?;
        let daemon_b = daemon(&home_b, &root_b, "b")?;
        let me = Self {
            name,
            bin,
            dir: dir.to_path_buf(),
            home_a,
            root_a,
            root_b,
            daemon_a: Some(daemon_a),
            daemon_b,
            _server: server,
            proxy_a,
            proxy_b,
            one_shot: Usage::default(),
        };
        for root in [&me.root_a, &me.root_b] {
            let pid = root.join(".coffer/daemon.pid");
            let end = std::time::Instant::now() + Duration::from_secs(30);
            while !pid.exists() {
                anyhow::ensure!(
                    std::time::Instant::now() < end,
                    "coffer daemon did not start ({})",
                    pid.display()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        probe(&me)?;
        Ok(me)
    }
}

/// Waits until a file written on A arrives on B: both daemons are up.
pub fn probe(peer: &dyn Peer) -> anyhow::Result<()> {
    let rel = "ready.txt";
    std::fs::write(peer.root_a().join(rel), peer.name())?;
    let mut e = measure::Expect::new();
    e.insert(rel.to_string(), measure::hash_file(&peer.root_a().join(rel))?);
    measure::wait_for(peer.root_b(), &e, Duration::from_secs(60), Duration::from_millis(10))
        .with_context(|| format!("{} did not carry a first file", peer.name()))?;
    Ok(())
}

impl Peer for Coffer {
    fn name(&self) -> String {
        self.name.into()
    }
    fn live(&self) -> bool {
        true
    }
    fn root_a(&self) -> &Path {
        &self.root_a
    }
    fn root_b(&self) -> &Path {
        &self.root_b
    }
    fn propagate(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    fn wire(&self) -> (u64, u64) {
        let a = self.proxy_a.bytes();
        (a, a + self.proxy_b.bytes())
    }
    fn usage(&mut self) -> Usage {
        let mut u = self.one_shot;
        for p in self.daemon_a.iter().chain(std::iter::once(&self.daemon_b)) {
            u.cpu_s += p.cpu_s();
            u.peak_kib = u.peak_kib.max(p.peak_kib());
        }
        u
    }
    fn reset_peak(&mut self) {
        self.one_shot.peak_kib = 0;
        for p in self.daemon_a.iter().chain(std::iter::once(&self.daemon_b)) {
            p.reset_peak();
        }
    }
    fn idle_rescan(&mut self) -> anyhow::Result<(f64, u64)> {
        // The one-shot sync of A (start, pull, scan, plan: nothing to do) is
        // what a rescan costs; A's daemon is stopped so they do not share
        // the folder.
        if let Some(mut d) = self.daemon_a.take() {
            self.one_shot.cpu_s += d.cpu_s();
            d.stop();
        }
        let args: Vec<String> = vec![
            "--home".into(),
            self.home_a.to_string_lossy().into_owned(),
            "sync".into(),
            self.root_a.to_string_lossy().into_owned(),
            "--once".into(),
            "--quiet".into(),
        ];
        let t = measure::run_timed(
            &self.bin.to_string_lossy(),
            &args,
            &[("COFFER_INSECURE_FAST_KDF", "1".into()), ("RUST_LOG", log_filter())],
            &self.dir.join("rescan.log"),
            &[],
        )?;
        self.one_shot.cpu_s += t.cpu_s;
        Ok((t.wall_s, t.peak_kib))
    }
}
