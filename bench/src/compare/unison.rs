//! Unison: device B runs `unison -socket` on loopback (its server mode), and
//! device A runs the `unison` client against it, through the counting proxy,
//! once per change (Unison has no daemon without `unison-fsmonitor`, which
//! Debian does not package, so the run that carries a change is timed).
//! Default settings plus what batch use needs: `-batch -auto -silent
//! -times`, and `-perms 0` so both sides keep their own permissions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::measure::{self, Proc, Usage};
use super::proxy::{free_port, Proxy};
use super::{Ctx, Peer};

/// A Unison server (B) and the client runs from A.
#[derive(Debug)]
pub struct Unison {
    dir: PathBuf,
    root_a: PathBuf,
    root_b: PathBuf,
    server: Proc,
    proxy: Proxy,
    one_shot: Usage,
}

impl Unison {
    /// Starts B's server and runs a first (empty) sync so both archives exist.
    pub fn start(ctx: &Ctx, dir: &Path) -> anyhow::Result<Self> {
        let root_a = measure::mkdir(dir.join("a"))?;
        let root_b = measure::mkdir(dir.join("b"))?;
        let state_b = measure::mkdir(dir.join("unison-b"))?;
        measure::mkdir(dir.join("unison-a"))?;
        let port = free_port()?;
        let server = Proc::spawn(
            "unison server",
            Command::new("unison")
                .args(["-socket", &port.to_string(), "-listen", "127.0.0.1"])
                .env("UNISON", &state_b)
                .env("HOME", dir)
                .current_dir(dir),
            &dir.join("unison-server.log"),
        )?;
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < end, "unison -socket did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let proxy = Proxy::start(ctx.rt.handle(), ([127, 0, 0, 1], port).into(), ctx.delay)?;
        let mut me =
            Self { dir: dir.to_path_buf(), root_a, root_b, server, proxy, one_shot: Usage::default() };
        me.propagate().context("unison's first sync")?;
        Ok(me)
    }

    fn run(&mut self) -> anyhow::Result<measure::Timed> {
        self.server.check_alive()?;
        let args: Vec<String> = vec![
            self.root_a.to_string_lossy().into_owned(),
            format!("socket://{}/{}", self.proxy.addr, self.root_b.display()),
            "-batch".into(),
            "-auto".into(),
            "-silent".into(),
            "-times".into(),
            "-perms".into(),
            "0".into(),
            "-confirmbigdel=false".into(),
            "-ui".into(),
            "text".into(),
        ];
        let t = measure::run_timed(
            "unison",
            &args,
            &[
                ("UNISON", self.dir.join("unison-a").to_string_lossy().into_owned()),
                ("HOME", self.dir.to_string_lossy().into_owned()),
            ],
            &self.dir.join("unison-client.log"),
            &[],
        )?;
        self.one_shot.cpu_s += t.cpu_s;
        self.one_shot.peak_kib = self.one_shot.peak_kib.max(t.peak_kib);
        Ok(t)
    }
}

impl Peer for Unison {
    fn name(&self) -> String {
        "unison".into()
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
        self.run().map(|_| ())
    }
    fn wire(&self) -> (u64, u64) {
        let b = self.proxy.bytes();
        (b, b)
    }
    fn usage(&mut self) -> Usage {
        Usage {
            cpu_s: self.one_shot.cpu_s + self.server.cpu_s(),
            peak_kib: self.one_shot.peak_kib.max(self.server.peak_kib()),
        }
    }
    fn reset_peak(&mut self) {
        self.one_shot.peak_kib = 0;
        self.server.reset_peak();
    }
    fn idle_rescan(&mut self) -> anyhow::Result<(f64, u64)> {
        let t = self.run()?;
        Ok((t.wall_s, t.peak_kib))
    }
}
