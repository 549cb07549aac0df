//! Measuring the tools' processes the same way for all of them: CPU time and
//! peak resident memory from `/proc` for daemons (peak reset through
//! `clear_refs` before each measured step), and from GNU `time` for one-shot
//! commands; and waiting, with a tight poll, until a folder holds what was
//! written on the other device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// CPU seconds and peak resident memory of a tool's device-side processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU seconds, cumulative.
    pub cpu_s: f64,
    /// Peak resident set (KiB) since the last reset.
    pub peak_kib: u64,
}

/// A child process killed by its pid when dropped.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages.
    pub what: String,
    child: Child,
}

impl Proc {
    /// Spawns `cmd` (stdin closed, stdout/stderr to `log`).
    pub fn spawn(what: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self { what: what.to_string(), child })
    }

    /// Wraps an already spawned child.
    pub fn from_child(what: &str, child: Child) -> Self {
        Self { what: what.to_string(), child }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited early: {st}", self.what);
        }
        Ok(())
    }

    /// CPU seconds so far (user + system) of it and its descendants,
    /// reaped ones included, from `/proc/PID/stat` (Syncthing, for one,
    /// runs its work in a child of the process started).
    pub fn cpu_s(&self) -> f64 {
        family(self.pid()).into_iter().map(proc_cpu_s).sum()
    }

    /// Peak resident set since start or the last reset (VmHWM), KiB: the
    /// largest of it and its descendants.
    pub fn peak_kib(&self) -> u64 {
        family(self.pid()).into_iter().map(|p| proc_status_kib(p, "VmHWM:")).max().unwrap_or(0)
    }

    /// Resets the peak resident set to the current one (it and descendants).
    pub fn reset_peak(&self) {
        for p in family(self.pid()) {
            let _ = std::fs::write(format!("/proc/{p}/clear_refs"), "5");
        }
    }

    /// SIGTERM, a short grace, then SIGKILL; reaps it.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `pid` and its live descendants.
fn family(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Some(pp) = stat_fields(p).and_then(|f| f.get(1).and_then(|x| x.parse::<u32>().ok())) {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let me = out[i];
        out.extend(parent_of.iter().filter(|(_, pp)| *pp == me).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces): index 0 is the state, 1 the parent pid.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn proc_cpu_s(pid: u32) -> f64 {
    let Some(f) = stat_fields(pid) else { return 0.0 };
    // utime, stime, cutime, cstime are fields 14 to 17 of the line, 11 to
    // 14 here.
    let ticks: u64 = (11..=14).map(|i| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)).sum();
    ticks as f64 / clk_tck()
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0 };
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What one command run under GNU `time` cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timed {
    /// Wall seconds, measured here.
    pub wall_s: f64,
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Peak resident set, KiB.
    pub peak_kib: u64,
}

/// Runs `program args` under `/usr/bin/time`, fails unless it exits 0 (or
/// with a code in `ok_codes`); stdout and stderr go to `log` (appended).
pub fn run_timed(
    program: &str,
    args: &[String],
    envs: &[(&str, String)],
    log: &Path,
    ok_codes: &[i32],
) -> anyhow::Result<Timed> {
    let times = log.with_extension("time");
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f").arg("%U %S %M").arg("-o").arg(&times).arg(program).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .with_context(|| format!("running {program}"))?;
    let wall_s = start.elapsed().as_secs_f64();
    let code = status.code().unwrap_or(-1);
    if code != 0 && !ok_codes.contains(&code) {
        bail!("{program} {} exited with {code}; see {}", args.join(" "), log.display());
    }
    let t = std::fs::read_to_string(&times)?;
    let last = t.lines().last().unwrap_or("");
    let f: Vec<&str> = last.split_whitespace().collect();
    if f.len() < 3 {
        bail!("could not read GNU time's output {last:?}");
    }
    let cpu_s = f[0].parse::<f64>().unwrap_or(0.0) + f[1].parse::<f64>().unwrap_or(0.0);
    Ok(Timed { wall_s, cpu_s, peak_kib: f[2].parse().unwrap_or(0) })
}

/// What a folder should hold when a workload has arrived: relative path →
/// BLAKE3 of the content.
pub type Expect = BTreeMap<String, (u64, blake3::Hash)>;

/// Hashes files in `dir` under their path relative to `base`.
pub fn expect_of(base: &Path, rels: &[String]) -> anyhow::Result<Expect> {
    let mut e = Expect::new();
    for rel in rels {
        let (len, h) = hash_file(&base.join(rel))?;
        e.insert(rel.clone(), (len, h));
    }
    Ok(e)
}

/// Size and BLAKE3 of a file.
///
/// The read buffer is kept per thread: the harness hashes each of W2's
/// 10,000 files while the tools run, and a fresh zeroed 1 MiB buffer per
/// file cost it a `memset` of 10 GiB a round (a third of the harness's CPU
/// in the timed window, on the two cores the tools share).
pub fn hash_file(p: &Path) -> anyhow::Result<(u64, blake3::Hash)> {
    use std::io::Read;
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut f = std::fs::File::open(p)?;
    BUF.with_borrow_mut(|buf| {
        buf.resize(1 << 20, 0);
        let mut h = blake3::Hasher::new();
        let mut len = 0u64;
        loop {
            let n = f.read(buf)?;
            if n == 0 {
                return Ok((len, h.finalize()));
            }
            len += n as u64;
            h.update(&buf[..n]);
        }
    })
}

/// Polls `root` until every expected file is there with the expected size,
/// then checks contents (and goes on polling if one differs: a tool may
/// still be writing in place). Returns when all match, with the moment the
/// last of them was seen in its final state; fails at `deadline`.
///
/// That moment is the stat taken just before a file's content is hashed,
/// when the stat is the same after the hash: the content was final then,
/// and the hash (about 0.25 s for 1 GiB here, the same for every tool) is
/// the harness's own check, not the tool's time. A tool still writing in
/// place changes the stat while it is hashed; then the file is polled again.
/// With many files, the moment is when the last one in order was seen, so
/// it still holds the check of the files after the last to arrive.
pub fn wait_for(root: &Path, expect: &Expect, deadline: Duration, poll: Duration) -> anyhow::Result<Instant> {
    use std::os::unix::fs::MetadataExt;
    let end = Instant::now() + deadline;
    let keys: Vec<&String> = expect.keys().collect();
    // Files are checked in order; `done` of them have arrived, the last
    // one seen at `seen`.
    let mut done = 0;
    let mut seen = Instant::now();
    // A file whose content did not match, by its stat: it is hashed again
    // only once its stat changes (a 1 GiB hash per poll would be slow).
    let mut mismatched: BTreeMap<&String, (u64, i64, i64, u64)> = BTreeMap::new();
    let stat =
        |path: &Path| std::fs::metadata(path).ok().map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()));
    loop {
        while done < keys.len() {
            let rel = keys[done];
            let want = expect[rel];
            let path = root.join(rel);
            let Some(st) = stat(&path) else { break };
            let at = Instant::now();
            if st.0 != want.0 || mismatched.get(rel) == Some(&st) {
                break;
            }
            if hash_file(&path).map(|(_, h)| h == want.1).unwrap_or(false) {
                if stat(&path) != Some(st) {
                    // Changed while it was read: look again.
                    break;
                }
                done += 1;
                seen = at;
            } else {
                mismatched.insert(rel, st);
                break;
            }
        }
        if done == keys.len() {
            return Ok(seen);
        }
        if Instant::now() >= end {
            bail!(
                "{} of {} files not on {} after {:?} (first: {})",
                keys.len() - done,
                keys.len(),
                root.display(),
                deadline,
                keys[done]
            );
        }
        std::thread::sleep(poll);
    }
}

/// A path under the work folder, created.
pub fn mkdir(p: PathBuf) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(p)
}

/// Files this large or larger are removed as soon as their round ends
/// ([`free_space`]); smaller ones stay until the end of the run.
pub const BIG_FILE: u64 = 1 << 20;

/// Bytes free for an unprivileged user on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let st =
        rustix::fs::statvfs(dir).with_context(|| format!("reading the free space of {}", dir.display()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Fails, saying how much is missing, unless the file system holding `dir`
/// has `need` bytes free: a disk that fills up mid-run stops the tools in
/// ways that measure the disk, not the tools (and can leave the machine
/// unusable until the run's folder is removed).
pub fn ensure_free(dir: &Path, need: u64) -> anyhow::Result<()> {
    let free = free_bytes(dir)?;
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    anyhow::ensure!(
        free >= need,
        "only {:.1} GiB free on the disk holding {}; this run needs about {:.1} GiB. \
         Free some space, choose fewer tools, rounds or workloads, or point --work at a larger disk",
        gib(free),
        dir.display(),
        gib(need)
    );
    Ok(())
}

/// Frees a finished round's disk space without freeing its many inodes
/// yet: files of [`BIG_FILE`] bytes or more under `dir` are removed now;
/// the rest of the tree is left for the end of the run.
///
/// Why: on an ext4 without a journal (as on the machines this benchmark was
/// measured on), the inode allocator steps over every free inode deleted in
/// the last 5 seconds, or the last 5 minutes while its inode-table block is
/// dirty (`recently_deleted` in the kernel's `fs/ext4/ialloc.c`), with a
/// buffer lookup each. After a round removed its tens of thousands of small
/// files, every file the next round created paid for walking past them: one
/// W2 run had 30 % of all the machine's CPU samples there, and a tool's
/// figures depended on which tool had run before it.
pub fn free_space(dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            free_space(&entry.path())?;
        } else if kind.is_file() && entry.metadata()?.len() >= BIG_FILE {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_needing_more_than_the_disk_has_is_refused_before_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        ensure_free(dir.path(), 1).unwrap();
        let e = ensure_free(dir.path(), free.saturating_mul(4).max(1 << 50)).unwrap_err();
        assert!(e.to_string().contains("GiB free on the disk holding"), "{e}");
    }

    #[test]
    fn free_space_removes_big_files_and_keeps_the_small_ones() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("big"), vec![0u8; BIG_FILE as usize]).unwrap();
        std::fs::write(sub.join("small"), b"x").unwrap();
        std::fs::write(dir.path().join("top-big"), vec![0u8; BIG_FILE as usize + 1]).unwrap();
        free_space(dir.path()).unwrap();
        assert!(!sub.join("big").exists() && !dir.path().join("top-big").exists());
        assert!(sub.join("small").exists());
        free_space(&dir.path().join("no-such-folder")).unwrap();
    }

    #[test]
    fn wait_for_gives_the_moment_the_final_content_was_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (want, wrong, staged) =
            (dir.path().join("want"), dir.path().join("f"), dir.path().join("staged"));
        std::fs::write(&want, b"the right bytes").unwrap();
        let expect: Expect = [("f".to_string(), hash_file(&want).unwrap())].into();
        // First the wrong bytes (same size), then the right ones renamed in.
        std::fs::write(&wrong, b"the wrong bytes").unwrap();
        let placer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            let at = Instant::now();
            std::fs::rename(&want, &staged).and_then(|()| std::fs::rename(&staged, &wrong)).unwrap();
            at
        });
        let seen = wait_for(dir.path(), &expect, Duration::from_secs(10), Duration::from_millis(5)).unwrap();
        let placed = placer.join().unwrap();
        assert!(seen >= placed, "seen before the right bytes were there");
        assert!(seen <= Instant::now());

        let e =
            wait_for(dir.path(), &[("nope".to_string(), expect["f"])].into(), Duration::ZERO, Duration::ZERO);
        assert!(e.unwrap_err().to_string().contains("1 of 1 files not on"));
    }
}
