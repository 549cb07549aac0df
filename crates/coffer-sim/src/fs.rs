//! [`CrashFs`]: one device's view of the shared simulated disk
//! ([`MemFs`]). Reads pass through; every mutation first spends one effect
//! of the device's [`Crash`] budget (a dead process writes nothing more,
//! so a write cut there leaves exactly what a real crash would: a short
//! temp file, a rename not done) and is checked to fall inside the
//! device's sync root. A mutation outside it is recorded as a violation
//! (and still refused), so "nothing is written outside a sync root" is
//! checked at the moment of writing, not only by looking afterwards.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use coffer_engine::fs::{Fs, MemFs, NonUtf8Name, ReadFile, Stat, WriteFile};

use crate::remote::Crash;

/// A device's fault-injecting, root-confined handle on the shared disk.
#[derive(Debug, Clone)]
pub struct CrashFs {
    inner: Arc<MemFs>,
    root: PathBuf,
    crash: Arc<Crash>,
    violations: Arc<Mutex<Vec<String>>>,
}

/// Whether `COFFER_SIM_TRACE` asks for every effect on stderr (for
/// replaying one seed).
pub fn trace() -> bool {
    std::env::var_os("COFFER_SIM_TRACE").is_some()
}

fn dead() -> io::Error {
    io::Error::other("simulated process crashed")
}

impl CrashFs {
    /// `root`'s device on `inner`.
    pub fn new(inner: Arc<MemFs>, root: PathBuf, crash: Arc<Crash>) -> Self {
        Self { inner, root, crash, violations: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Mutations attempted outside the root.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn effect(&self, what: &str, paths: &[&Path]) -> io::Result<()> {
        for p in paths {
            let inside = p.starts_with(&self.root)
                && !p.components().any(|c| matches!(c, std::path::Component::ParentDir));
            if !inside {
                if let Ok(mut v) = self.violations.lock() {
                    v.push(format!("{what} {}", p.display()));
                }
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, "outside the sync root"));
            }
        }
        let alive = self.crash.spend();
        if trace() {
            let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            eprintln!("  effect {what} {} {}", paths.join(" -> "), if alive { "" } else { "(dead)" });
        }
        if alive {
            Ok(())
        } else {
            Err(dead())
        }
    }
}

struct CrashWriter {
    inner: Box<dyn WriteFile>,
    crash: Arc<Crash>,
}

impl Write for CrashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.crash.spend() {
            return Err(dead());
        }
        // A crash may cut a write in two: write at most half of a long
        // buffer per effect, so later writes (and crashes) see partial data.
        let n = if buf.len() > 64 { buf.len() / 2 } else { buf.len() };
        self.inner.write(&buf[..n])
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl WriteFile for CrashWriter {
    fn sync_all(&mut self) -> io::Result<()> {
        if !self.crash.spend() {
            return Err(dead());
        }
        self.inner.sync_all()
    }

    fn flush_waits(&self) -> bool {
        self.inner.flush_waits()
    }
}

impl Fs for CrashFs {
    fn symlink_metadata(&self, path: &Path) -> io::Result<Stat> {
        self.inner.symlink_metadata(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<Result<String, NonUtf8Name>>> {
        self.inner.read_dir(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        self.inner.open_read(path)
    }

    fn read_link(&self, path: &Path) -> io::Result<String> {
        self.inner.read_link(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        self.effect("create", &[path])?;
        let inner = self.inner.create_new(path)?;
        Ok(Box::new(CrashWriter { inner, crash: self.crash.clone() }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.effect("rename", &[from, to])?;
        self.inner.rename(from, to)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.effect("rename", &[from, to])?;
        self.inner.rename_noreplace(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.effect("remove", &[path])?;
        self.inner.remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.effect("rmdir", &[path])?;
        self.inner.remove_dir(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.effect("mkdir", &[path])?;
        self.inner.create_dir(path)
    }

    fn symlink(&self, target: &str, at: &Path) -> io::Result<()> {
        self.effect("symlink", &[at])?;
        self.inner.symlink(target, at)
    }

    fn set_mtime(&self, path: &Path, mtime_ns: i64) -> io::Result<()> {
        self.effect("set mtime", &[path])?;
        self.inner.set_mtime(path, mtime_ns)
    }

    fn stamp(&self, path: &Path) -> io::Result<i64> {
        self.effect("stamp", &[path])?;
        self.inner.stamp(path)
    }

    fn set_executable(&self, path: &Path, executable: bool) -> io::Result<()> {
        self.effect("chmod", &[path])?;
        self.inner.set_executable(path, executable)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }

    fn sync_files(&self, paths: &[PathBuf]) -> io::Result<()> {
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        self.effect("sync", &refs)?;
        self.inner.sync_files(paths)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
}
