//! rclone: `rclone serve sftp` on loopback plays the cloud (a plain folder
//! behind SFTP: WebDAV served by rclone 1.60 does not keep modification
//! times, which `rclone sync` needs to see a same-size change). Device A runs
//! `rclone sync A remote:` and device B `rclone sync remote: B`, one after
//! the other, since rclone has no push; both runs are in the measured time.
//! Each device reaches the server through its own counting proxy. The
//! `crypt` variant puts rclone's encryption layer over the same remote, for
//! the comparison with an end-to-end encrypted tool. rclone's defaults
//! otherwise (4 transfers, 8 checkers, size + modification time).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::measure::{self, Proc, Timed, Usage};
use super::proxy::{free_port, Proxy};
use super::{Ctx, Peer};

/// An rclone SFTP server and the two devices' rclone runs.
#[derive(Debug)]
pub struct Rclone {
    dir: PathBuf,
    crypt: bool,
    root_a: PathBuf,
    root_b: PathBuf,
    conf: PathBuf,
    _server: Proc,
    proxy_a: Proxy,
    proxy_b: Proxy,
    one_shot: Usage,
}

fn obscure(s: &str) -> anyhow::Result<String> {
    let out = Command::new("rclone").args(["obscure", s]).output().context("rclone obscure")?;
    anyhow::ensure!(out.status.success(), "rclone obscure failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Rclone {
    /// Starts the SFTP server and writes the client config.
    pub fn start(ctx: &Ctx, dir: &Path, crypt: bool) -> anyhow::Result<Self> {
        let root_a = measure::mkdir(dir.join("a"))?;
        let root_b = measure::mkdir(dir.join("b"))?;
        let remote = measure::mkdir(dir.join("remote"))?;
        let port = free_port()?;
        let server = Proc::spawn(
            "rclone serve sftp",
            Command::new("rclone")
                .args(["serve", "sftp"])
                .arg(&remote)
                .args([
                    "--addr",
                    &format!("127.0.0.1:{port}"),
                    "--user",
                    "bench",
                    "--pass",
                    "bench",
                    "--config",
                    "/dev/null",
                ])
                .env("HOME", dir),
            &dir.join("rclone-serve.log"),
        )?;
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < end, "rclone serve sftp did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let proxy_a = Proxy::start(ctx.rt.handle(), ([127, 0, 0, 1], port).into(), ctx.delay)?;
        let proxy_b = Proxy::start(ctx.rt.handle(), ([127, 0, 0, 1], port).into(), ctx.delay)?;
        let pass = obscure("bench")?;
        let crypt_pass = obscure("bench crypt password")?;
        let crypt_salt = obscure("bench crypt salt")?;
        let mut conf = String::new();
        for (name, p) in [("sa", &proxy_a), ("sb", &proxy_b)] {
            conf.push_str(&format!(
                "[{name}]\ntype = sftp\nhost = 127.0.0.1\nport = {}\nuser = bench\npass = {pass}\n\n",
                p.addr.port()
            ));
        }
        for (name, under) in [("ca", "sa"), ("cb", "sb")] {
            conf.push_str(&format!(
                "[{name}]\ntype = crypt\nremote = {under}:enc\npassword = {crypt_pass}\npassword2 = {crypt_salt}\n\n"
            ));
        }
        let conf_path = dir.join("rclone.conf");
        std::fs::write(&conf_path, conf)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            crypt,
            root_a,
            root_b,
            conf: conf_path,
            _server: server,
            proxy_a,
            proxy_b,
            one_shot: Usage::default(),
        })
    }

    fn remote(&self, device: &str) -> String {
        if self.crypt {
            format!("c{device}:")
        } else {
            format!("s{device}:plain")
        }
    }

    fn rclone(&mut self, from: String, to: String) -> anyhow::Result<Timed> {
        let args = vec!["--config".into(), self.conf.to_string_lossy().into_owned(), "sync".into(), from, to];
        let t = measure::run_timed(
            "rclone",
            &args,
            &[("HOME", self.dir.to_string_lossy().into_owned())],
            &self.dir.join("rclone.log"),
            &[],
        )?;
        self.one_shot.cpu_s += t.cpu_s;
        self.one_shot.peak_kib = self.one_shot.peak_kib.max(t.peak_kib);
        Ok(t)
    }
}

impl Peer for Rclone {
    fn name(&self) -> String {
        if self.crypt { "rclone-crypt" } else { "rclone" }.into()
    }
    fn live(&self) -> bool {
        false
    }
    fn root_a(&self) -> &Path {
        &self.root_a
    }
    fn root_b(&self) -> &Path {
        &self.root_b
    }
    fn propagate(&mut self) -> anyhow::Result<()> {
        let a = self.root_a.to_string_lossy().into_owned();
        let b = self.root_b.to_string_lossy().into_owned();
        let (ra, rb) = (self.remote("a"), self.remote("b"));
        self.rclone(a, ra)?;
        self.rclone(rb, b)?;
        Ok(())
    }
    fn wire(&self) -> (u64, u64) {
        let a = self.proxy_a.bytes();
        (a, a + self.proxy_b.bytes())
    }
    fn usage(&mut self) -> Usage {
        self.one_shot
    }
    fn reset_peak(&mut self) {
        self.one_shot.peak_kib = 0;
    }
    fn idle_rescan(&mut self) -> anyhow::Result<(f64, u64)> {
        let a = self.root_a.to_string_lossy().into_owned();
        let ra = self.remote("a");
        let t = self.rclone(a, ra)?;
        Ok((t.wall_s, t.peak_kib))
    }
}
