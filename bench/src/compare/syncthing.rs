//! Syncthing: two instances, each with its own home and a generated config:
//! loopback listen addresses, no global or local discovery, no relays, no
//! NAT traversal, no usage reporting, no upgrades, not at low priority; one
//! shared folder with the filesystem watcher on and its delay at the minimum
//! (1 s), a long full-rescan interval (the watcher does the work). A dials B
//! through the counting proxy; B knows A as `dynamic`, which with discovery
//! off means B never dials A, so all traffic passes the proxy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::measure::{self, Proc, Usage};
use super::proxy::{free_port, Proxy};
use super::{Ctx, Peer};

const FOLDER: &str = "bench";
const API_KEY: &str = "coffer-bench-api-key";

/// Two Syncthing instances sharing one folder.
#[derive(Debug)]
pub struct Syncthing {
    root_a: PathBuf,
    root_b: PathBuf,
    gui_a: u16,
    a: Proc,
    b: Proc,
    proxy: Proxy,
    http: reqwest::blocking::Client,
}

fn device_id(home: &Path) -> anyhow::Result<String> {
    let out = Command::new("syncthing")
        .args(["generate", "--no-default-folder", "--skip-port-probing", "--home"])
        .arg(home)
        .output()
        .context("syncthing generate")?;
    if !out.status.success() {
        bail!("syncthing generate failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new("syncthing").args(["serve", "--device-id", "--home"]).arg(home).output()?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(id.len() > 50, "unexpected device id {id:?}");
    Ok(id)
}

fn config_version(home: &Path) -> String {
    std::fs::read_to_string(home.join("config.xml"))
        .ok()
        .and_then(|c| {
            let i = c.find("<configuration version=\"")? + 24;
            let j = c[i..].find('"')? + i;
            Some(c[i..j].to_string())
        })
        .unwrap_or_else(|| "37".into())
}

#[allow(clippy::too_many_arguments)]
fn config(
    version: &str,
    root: &Path,
    me: &str,
    other: &str,
    other_addr: &str,
    listen: u16,
    gui: u16,
) -> String {
    format!(
        r#"<configuration version="{version}">
    <folder id="{FOLDER}" label="{FOLDER}" path="{root}" type="sendreceive" rescanIntervalS="3600" fsWatcherEnabled="true" fsWatcherDelayS="1" ignorePerms="false" autoNormalize="true">
        <filesystemType>basic</filesystemType>
        <device id="{me}" introducedBy=""></device>
        <device id="{other}" introducedBy=""></device>
        <minDiskFree unit="%">0</minDiskFree>
        <versioning></versioning>
        <markerName>.stfolder</markerName>
    </folder>
    <device id="{me}" name="self" compression="metadata" introducer="false" skipIntroductionRemovals="false" introducedBy="">
        <address>dynamic</address>
    </device>
    <device id="{other}" name="other" compression="metadata" introducer="false" skipIntroductionRemovals="false" introducedBy="">
        <address>{other_addr}</address>
    </device>
    <gui enabled="true" tls="false" debugging="false">
        <address>127.0.0.1:{gui}</address>
        <apikey>{API_KEY}</apikey>
        <theme>default</theme>
    </gui>
    <options>
        <listenAddress>tcp://127.0.0.1:{listen}</listenAddress>
        <globalAnnounceEnabled>false</globalAnnounceEnabled>
        <localAnnounceEnabled>false</localAnnounceEnabled>
        <relaysEnabled>false</relaysEnabled>
        <natEnabled>false</natEnabled>
        <urAccepted>-1</urAccepted>
        <urSeen>3</urSeen>
        <autoUpgradeIntervalH>0</autoUpgradeIntervalH>
        <startBrowser>false</startBrowser>
        <crashReportingEnabled>false</crashReportingEnabled>
        <setLowPriority>false</setLowPriority>
        <reconnectionIntervalS>1</reconnectionIntervalS>
        <minHomeDiskFree unit="%">0</minHomeDiskFree>
    </options>
</configuration>
"#,
        root = root.display()
    )
}

impl Syncthing {
    /// Generates both configs, starts both instances, waits until they are
    /// connected and a probe file written on A is on B.
    pub fn start(ctx: &Ctx, dir: &Path) -> anyhow::Result<Self> {
        let home_a = measure::mkdir(dir.join("st-a"))?;
        let home_b = measure::mkdir(dir.join("st-b"))?;
        let root_a = measure::mkdir(dir.join("a"))?;
        let root_b = measure::mkdir(dir.join("b"))?;
        measure::mkdir(root_a.join(".stfolder"))?;
        measure::mkdir(root_b.join(".stfolder"))?;
        let id_a = device_id(&home_a)?;
        let id_b = device_id(&home_b)?;
        let (listen_a, listen_b, gui_a, gui_b) = (free_port()?, free_port()?, free_port()?, free_port()?);
        let proxy = Proxy::start(ctx.rt.handle(), ([127, 0, 0, 1], listen_b).into(), ctx.delay)?;
        let v = config_version(&home_a);
        std::fs::write(
            home_a.join("config.xml"),
            config(&v, &root_a, &id_a, &id_b, &format!("tcp://{}", proxy.addr), listen_a, gui_a),
        )?;
        std::fs::write(
            home_b.join("config.xml"),
            config(&v, &root_b, &id_b, &id_a, "dynamic", listen_b, gui_b),
        )?;
        let spawn = |home: &Path, name: &str| {
            Proc::spawn(
                &format!("syncthing {name}"),
                Command::new("syncthing")
                    .args(["serve", "--no-browser", "--no-restart", "--no-upgrade", "--home"])
                    .arg(home)
                    .env("STNODEFAULTFOLDER", "1")
                    .env("STNOUPGRADE", "1")
                    .env("HOME", dir),
                &dir.join(format!("syncthing-{name}.log")),
            )
        };
        let a = spawn(&home_a, "a")?;
        let b = spawn(&home_b, "b")?;
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(600)).build()?;
        let mut me = Self { root_a, root_b, gui_a, a, b, proxy, http };
        // Connected?
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            me.a.check_alive()?;
            me.b.check_alive()?;
            let conn = me
                .http
                .get(format!("http://127.0.0.1:{}/rest/system/connections", me.gui_a))
                .header("X-API-Key", API_KEY)
                .send()
                .and_then(|r| r.text())
                .unwrap_or_default();
            if conn.contains(&format!("\"{id_b}\"")) && conn.contains("\"connected\": true") {
                break;
            }
            anyhow::ensure!(Instant::now() < end, "syncthing instances did not connect: {conn}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = gui_b;
        super::coffer::probe(&me)?;
        Ok(me)
    }
}

impl Peer for Syncthing {
    fn name(&self) -> String {
        "syncthing".into()
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
        let b = self.proxy.bytes();
        (b, b)
    }
    fn usage(&mut self) -> Usage {
        Usage { cpu_s: self.a.cpu_s() + self.b.cpu_s(), peak_kib: self.a.peak_kib().max(self.b.peak_kib()) }
    }
    fn reset_peak(&mut self) {
        self.a.reset_peak();
        self.b.reset_peak();
    }
    fn idle_rescan(&mut self) -> anyhow::Result<(f64, u64)> {
        // The REST call returns when the scan is done.
        let t0 = Instant::now();
        let r = self
            .http
            .post(format!("http://127.0.0.1:{}/rest/db/scan?folder={FOLDER}", self.gui_a))
            .header("X-API-Key", API_KEY)
            .send()?;
        anyhow::ensure!(r.status().is_success(), "syncthing scan: {}", r.status());
        Ok((t0.elapsed().as_secs_f64(), self.a.peak_kib()))
    }
}
