//! The filesystem seam: exactly the operations the scanner and the apply
//! step need, behind one narrow, object-safe trait, so that the engine can
//! run on the real disk ([`RealFs`]) or on a deterministic in-memory tree
//! ([`MemFs`], for tests and the simulation of issue 5).
//!
//! Invariants every implementation keeps (and the shared suite in this
//! module's tests checks):
//!
//! - Paths are absolute. Nothing here follows a symlink in the *last*
//!   component except [`Fs::open_read`] and [`Fs::read_dir`] (as `open(2)` and
//!   `opendir(3)` do); [`Fs::symlink_metadata`], [`Fs::read_link`],
//!   [`Fs::set_mtime`], [`Fs::set_executable`], [`Fs::remove_file`] and
//!   [`Fs::exists`] look at the link itself.
//! - [`Fs::read_dir`] lists a directory completely or fails: a listing is
//!   never silently partial, because a missing name would look like a
//!   deletion. Names are sorted; a name that is not UTF-8 is an error *item*
//!   ([`NonUtf8Name`]), not a failure of the listing.
//! - [`Fs::rename`] atomically replaces a file at the destination (same
//!   filesystem); the inode travels with the renamed node.
//! - A [`Stat`] is the identity the scanner trusts: (kind, size, mtime,
//!   inode). `size` is the byte length for files and the target length for
//!   symlinks, and 0 for directories and other kinds, whatever the platform
//!   reports.
//!
//! Time: mtimes are nanoseconds since the Unix epoch (`i64`, so dates before
//! 1970 are representable). A [`Clock`] gives "now" on the same scale;
//! [`MemFs`] is its own clock, so tests move time explicitly.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::NodeKind;

/// [`Fs::sync_files`] on the real disk fsyncs fewer files than this one by
/// one, and more with one `syncfs`.
const SYNCFS_MIN_FILES: usize = 16;

/// What kind of thing a [`Stat`] describes. `Other` covers sockets, FIFOs
/// and devices, which are never synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// A socket, FIFO, or device.
    Other,
}

impl StatKind {
    /// The node kind this is synced as, or `None` for [`StatKind::Other`].
    pub fn node_kind(self) -> Option<NodeKind> {
        match self {
            StatKind::File => Some(NodeKind::File),
            StatKind::Dir => Some(NodeKind::Dir),
            StatKind::Symlink => Some(NodeKind::Symlink),
            StatKind::Other => None,
        }
    }
}

impl From<NodeKind> for StatKind {
    fn from(k: NodeKind) -> Self {
        match k {
            NodeKind::File => StatKind::File,
            NodeKind::Dir => StatKind::Dir,
            NodeKind::Symlink => StatKind::Symlink,
        }
    }
}

/// What `lstat(2)` says about a path (see the module doc for `size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// File, directory, symlink, or something else.
    pub kind: StatKind,
    /// Bytes (files), target length (symlinks), 0 otherwise.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Inode number (changes when a file is replaced by a rename).
    pub inode: u64,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
}

impl Stat {
    /// True when `self` and `other` describe the same unchanged node, as far
    /// as the scanner can tell without reading it: same kind, size, mtime and
    /// inode. Permission bits are not part of it (they are cheap to re-read).
    pub fn same_identity(&self, other: &Stat) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.inode == other.inode
    }

    /// The owner-executable bit.
    pub fn is_executable(&self) -> bool {
        self.mode & 0o100 != 0
    }
}

/// A directory entry whose name is not valid UTF-8 (Coffer syncs only UTF-8
/// names). `lossy` replaces the bad bytes with U+FFFD, for reporting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the name {lossy:?} is not valid UTF-8; rename it to sync it")]
pub struct NonUtf8Name {
    /// The name with invalid bytes replaced, for display.
    pub lossy: String,
}

/// A file being read, from [`Fs::open_read`]: forward, or from any offset.
pub trait ReadFile: Read + Seek + Send {}

impl<T: Read + Seek + Send> ReadFile for T {}

/// A file being written by [`Fs::create_new`]. [`Write::flush`] also
/// reports an error met writing earlier data out to the disk (see
/// `RealWriteFile`): a caller that makes the file durable by its path
/// ([`Fs::sync_files`]) flushes it first.
pub trait WriteFile: Write + Send {
    /// Flushes data and metadata to stable storage (`fsync`).
    fn sync_all(&mut self) -> io::Result<()>;

    /// Whether [`Write::flush`] may wait on the disk (data is being written
    /// out early): then it belongs on a blocking thread. Otherwise it
    /// returns at once.
    fn flush_waits(&self) -> bool {
        false
    }
}

impl WriteFile for std::fs::File {
    fn sync_all(&mut self) -> io::Result<()> {
        std::fs::File::sync_all(self)
    }
}

/// A large new file on the real disk starts going to the disk once it holds
/// this many bytes, while the rest is still being written.
const WRITEBACK_START: u64 = 32 << 20;
/// ... and again after each further this many bytes.
const WRITEBACK_STEP: u64 = 32 << 20;

/// A new file on the real disk ([`RealFs::create_new`]). Once it holds
/// [`WRITEBACK_START`] bytes, a helper thread writes its data out to the
/// disk (`fdatasync` on a clone of the descriptor) after every
/// [`WRITEBACK_STEP`] more, so the disk works while the file is still being
/// written and the fsync that makes it durable finds little left to do:
/// for a 1 GiB download that fsync took about 0.3 s here.
///
/// After each write-out the helper also tells the kernel that the pages it
/// made clean may leave the page cache ([`drop_cached`]), so a large file
/// streams through pages the kernel reuses instead of taking a fresh page
/// of memory for each 4 KiB. On the benchmark machine, a VM whose free
/// memory the host takes back, a fresh page is dear (touching 1 GiB of new
/// memory took 1–1.8 s) and two 1 GiB files written at once took 0.6–0.9
/// s this way against 2.6–3.7 s; on any machine, a large download no
/// longer pushes the user's working set out of the cache. The cost: the
/// first read of such a file after it lands comes from the disk
/// (docs/benchmarks.md, sixteenth pass).
///
/// An error the helper meets is returned by the next [`Write::flush`] or
/// [`WriteFile::sync_all`], which wait for it. It must not be dropped: the
/// kernel reports a writeback error once per open file, so after the
/// helper has seen it, a later fsync of the same file would succeed. A
/// caller that makes the file durable some other way (by path, with
/// [`Fs::sync_files`]) flushes it first.
struct RealWriteFile {
    file: std::fs::File,
    written: u64,
    /// `written` when the helper was last asked to write out.
    asked_at: u64,
    start: u64,
    step: u64,
    writeback: Option<Writeback>,
    /// What the helper runs; `None` for a plain `fdatasync` of a clone.
    sync: Option<Box<dyn FnMut() -> io::Result<()> + Send>>,
}

/// The helper thread of a [`RealWriteFile`].
struct Writeback {
    more: mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl RealWriteFile {
    fn new(file: std::fs::File) -> Self {
        Self {
            file,
            written: 0,
            asked_at: 0,
            start: WRITEBACK_START,
            step: WRITEBACK_STEP,
            writeback: None,
            sync: None,
        }
    }

    /// Asks the helper (started now if need be) to write out what is there.
    fn ask_writeback(&mut self) {
        self.asked_at = self.written;
        if self.writeback.is_none() {
            let mut sync = match self.sync.take() {
                Some(sync) => sync,
                None => match self.file.try_clone() {
                    Ok(clone) => Box::new(move || {
                        // The disk failing a write-out (an error test, not a crash point).
                        fail::fail_point!("writeback-error", |_| Err(io::Error::other(
                            "writing the file out to the disk failed (injected)"
                        )));
                        clone.sync_data()?;
                        drop_cached(&clone);
                        Ok(())
                    }),
                    // No early writeback, then: the final fsync does it all.
                    Err(_) => return,
                },
            };
            // One pending request at most: while the helper writes out, more
            // requests fold into the one it takes next.
            let (more, requests) = mpsc::sync_channel::<()>(1);
            let thread = std::thread::Builder::new().name("coffer-writeback".into()).spawn(move || {
                // Ends when the file is flushed or dropped (the sender goes).
                for () in requests {
                    sync()?;
                }
                Ok(())
            });
            match thread {
                Ok(thread) => self.writeback = Some(Writeback { more, thread }),
                Err(_) => return,
            }
        }
        if let Some(w) = &self.writeback {
            // Full: a request is pending already. Disconnected: the helper
            // stopped at an error, which `finish_writeback` returns.
            let _ = w.more.try_send(());
        }
    }

    /// Stops the helper, after the write-outs it was asked for (the one it
    /// is doing and at most one more); its error if any. A file dropped
    /// without this leaves the helper to end on its own after those.
    fn finish_writeback(&mut self) -> io::Result<()> {
        let Some(Writeback { more, thread }) = self.writeback.take() else { return Ok(()) };
        drop(more);
        thread.join().unwrap_or_else(|_| Err(io::Error::other("the writeback thread panicked")))
    }
}

impl Write for RealWriteFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written >= self.start && self.written >= self.asked_at + self.step {
            self.ask_writeback();
        }
        Ok(n)
    }

    /// Also waits for the early writeback, and returns its error.
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.finish_writeback()
    }
}

impl WriteFile for RealWriteFile {
    fn sync_all(&mut self) -> io::Result<()> {
        self.finish_writeback()?;
        self.file.sync_all()
    }

    fn flush_waits(&self) -> bool {
        self.writeback.is_some()
    }
}

/// Tells the kernel that `file`'s clean pages in the page cache will not be
/// read again soon, so it may free them now (`POSIX_FADV_DONTNEED`). Dirty
/// pages stay: the hint never loses data. Only a hint, so its error (none is
/// expected on a regular file) is ignored.
fn drop_cached(file: &std::fs::File) {
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
}

/// The filesystem operations the engine uses (see the module doc).
pub trait Fs: Send + Sync + fmt::Debug {
    /// Stats `path` without following a final symlink.
    fn symlink_metadata(&self, path: &Path) -> io::Result<Stat>;
    /// Lists a directory, sorted by name (see the module doc).
    fn read_dir(&self, path: &Path) -> io::Result<Vec<Result<String, NonUtf8Name>>>;
    /// Opens a file for reading.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>>;
    /// A symlink's target, as stored in the link. Not UTF-8 → `InvalidData`.
    fn read_link(&self, path: &Path) -> io::Result<String>;
    /// Creates a new, empty file for writing, without executable bits (as
    /// open(2) with mode 0666 makes one, whatever the umask); fails if
    /// anything exists there.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;
    /// Renames `from` to `to`, atomically replacing a file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Moves the file or symlink `from` to `to` only if nothing is at `to`
    /// (`AlreadyExists` otherwise): a file a user saves there meanwhile is
    /// never replaced. [`RealFs`] does it atomically; this default (a check,
    /// then a rename) serves fakes that nothing races, like [`MemFs`].
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.exists(to)? {
            return Err(err(io::ErrorKind::AlreadyExists, "already exists"));
        }
        self.rename(from, to)
    }
    /// Removes a file or symlink (never a directory).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory; its parent must exist.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Creates a symlink at `at` pointing to `target`.
    fn symlink(&self, target: &str, at: &Path) -> io::Result<()>;
    /// Sets the modification time of `path` itself (a symlink is not followed).
    fn set_mtime(&self, path: &Path, mtime_ns: i64) -> io::Result<()>;
    /// Sets the modification time of the regular file `path` (created
    /// empty if missing) to the file system's "now", and returns that
    /// time as the file system stored it: its own clock, at its own
    /// granularity, as any later write to any file on it will be stamped
    /// no earlier (the racily-clean rule's horizon, see
    /// [`crate::scan::is_racy`]).
    fn stamp(&self, path: &Path) -> io::Result<i64>;
    /// Sets or clears the executable bits of a regular file (`x` wherever
    /// `r` is set, like `chmod +x` under a 022 umask). Anything else than a
    /// regular file → `InvalidInput`.
    fn set_executable(&self, path: &Path, executable: bool) -> io::Result<()>;
    /// Makes the entries of a directory durable (fsync on the directory), so
    /// that a rename into it survives a crash.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes the data and metadata of these regular files durable, as an
    /// fsync of each would (a group of downloads before it is renamed into
    /// place).
    fn sync_files(&self, paths: &[PathBuf]) -> io::Result<()>;
    /// Whether anything (even a dangling symlink) is at `path`. Errors other
    /// than "not found" are errors, not `false`: an unreadable path is not an
    /// absent one.
    fn exists(&self, path: &Path) -> io::Result<bool>;
}

/// The current time on the scale of mtimes.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Nanoseconds since the Unix epoch.
    fn now_ns(&self) -> i64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_nanos()).map(|n| -n).unwrap_or(i64::MIN),
        }
    }
}

fn split_ns(ns: i64) -> (i64, u32) {
    // rem_euclid of a positive divisor is in 0..1e9, which fits a u32.
    (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32)
}

/// The real disk, through `std::fs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl RealFs {
    fn stat_of(meta: &std::fs::Metadata) -> Stat {
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            StatKind::File
        } else if ft.is_dir() {
            StatKind::Dir
        } else if ft.is_symlink() {
            StatKind::Symlink
        } else {
            StatKind::Other
        };
        let size = match kind {
            StatKind::File | StatKind::Symlink => meta.len(),
            StatKind::Dir | StatKind::Other => 0,
        };
        let mtime_ns = meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec());
        Stat { kind, size, mtime_ns, inode: meta.ino(), mode: meta.mode() & 0o7777 }
    }
}

impl Fs for RealFs {
    fn symlink_metadata(&self, path: &Path) -> io::Result<Stat> {
        std::fs::symlink_metadata(path).map(|m| Self::stat_of(&m))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<Result<String, NonUtf8Name>>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name());
        }
        names.sort();
        Ok(names
            .into_iter()
            .map(|n: OsString| {
                n.into_string().map_err(|n| NonUtf8Name { lossy: n.to_string_lossy().into_owned() })
            })
            .collect())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        // Non-blocking open: a FIFO swapped in since the last stat must not
        // hang the scanner (for a regular file the flag changes nothing).
        let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
        let ft = f.metadata()?.file_type();
        if ft.is_dir() {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory"));
        }
        if !ft.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        Ok(Box::new(f))
    }

    fn read_link(&self, path: &Path) -> io::Result<String> {
        std::fs::read_link(path)?
            .into_os_string()
            .into_string()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "symlink target is not valid UTF-8"))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let f = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Box::new(RealWriteFile::new(f)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        // renameat2(RENAME_NOREPLACE): one atomic no-clobber move. Where the
        // filesystem lacks it, link(2), which fails as well if `to` exists;
        // where it lacks hard links too, a check.
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            from,
            rustix::fs::CWD,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => return Ok(()),
            Err(e)
                if ![rustix::io::Errno::INVAL, rustix::io::Errno::NOSYS, rustix::io::Errno::OPNOTSUPP]
                    .contains(&e) =>
            {
                return Err(e.into())
            }
            Err(_) => {}
        }
        match std::fs::hard_link(from, to) {
            Ok(()) => std::fs::remove_file(from),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
            Err(_) => {
                if std::fs::symlink_metadata(to).is_ok() {
                    return Err(err(io::ErrorKind::AlreadyExists, "already exists"));
                }
                std::fs::rename(from, to)
            }
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn symlink(&self, target: &str, at: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, at)
    }

    fn set_mtime(&self, path: &Path, mtime_ns: i64) -> io::Result<()> {
        let (s, n) = split_ns(mtime_ns);
        let times = rustix::fs::Timestamps {
            // The access time stays as it is.
            last_access: rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT },
            last_modification: rustix::fs::Timespec { tv_sec: s, tv_nsec: n.into() },
        };
        rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io::Error::from)
    }

    fn stamp(&self, path: &Path) -> io::Result<i64> {
        // No O_TRUNC: the file stays empty, and a stamp is one inode update.
        // Not through a link, and never waiting on a FIFO put there.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
            .open(path)?;
        let now = rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW };
        // The kernel takes the time, as it does for a write (`current_time`).
        rustix::fs::futimens(&file, &rustix::fs::Timestamps { last_access: now, last_modification: now })?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        Ok(Self::stat_of(&meta).mtime_ns)
    }

    fn set_executable(&self, path: &Path, executable: bool) -> io::Result<()> {
        // chmod follows symlinks: check first that this is a regular file.
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.file_type().is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        let mode = exec_mode(meta.mode() & 0o7777, executable);
        if mode == meta.mode() & 0o7777 {
            return Ok(());
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }

    /// A few files: an fsync each. More: one `syncfs` per filesystem they
    /// are on, which writes them all out with one cache flush instead of
    /// one per file (it also writes whatever else is dirty there).
    fn sync_files(&self, paths: &[PathBuf]) -> io::Result<()> {
        if paths.len() < SYNCFS_MIN_FILES {
            return paths.iter().try_for_each(|p| std::fs::File::open(p)?.sync_all());
        }
        // A stat of each (a file gone is an error here, as an fsync's would
        // be), and one handle opened per filesystem.
        let mut filesystems = BTreeMap::new();
        for p in paths {
            let dev = std::fs::metadata(p)?.dev();
            if let std::collections::btree_map::Entry::Vacant(v) = filesystems.entry(dev) {
                v.insert(std::fs::File::open(p)?);
            }
        }
        filesystems.values().try_for_each(|file| rustix::fs::syncfs(file).map_err(io::Error::from))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// `mode` with the executable bits set (where read is set) or cleared.
fn exec_mode(mode: u32, executable: bool) -> u32 {
    if executable {
        mode | 0o100 | ((mode & 0o044) >> 2)
    } else {
        mode & !0o111
    }
}

/// A deterministic in-memory filesystem.
///
/// - Inodes come from a counter; mtimes from the filesystem's own clock
///   ([`MemFs::set_now`], [`MemFs::advance`]; it implements [`Clock`]), set
///   on every write, create, remove and rename (also on the parent dir).
/// - Intermediate symlinks are resolved (at most 40 hops), like the kernel.
/// - Faults can be injected: [`MemFs::deny`] makes reads of a path fail
///   with `PermissionDenied` (tests run as root, where real permission bits
///   do not stop reads).
/// - Readers see the content as it was when opened.
#[derive(Debug, Clone)]
pub struct MemFs {
    state: Arc<Mutex<MemState>>,
    clock: Arc<AtomicI64>,
}

#[derive(Debug)]
struct MemState {
    nodes: BTreeMap<PathBuf, MemNode>,
    next_inode: u64,
    denied: HashSet<PathBuf>,
}

#[derive(Debug)]
struct MemNode {
    inode: u64,
    mode: u32,
    mtime_ns: i64,
    kind: MemKind,
}

#[derive(Debug)]
enum MemKind {
    /// Shared with open writers, which update bytes and mtime.
    File(Arc<Mutex<FileBody>>),
    Dir,
    Symlink(String),
    Other,
}

#[derive(Debug)]
struct FileBody {
    data: Vec<u8>,
    mtime_ns: i64,
}

fn err(kind: io::ErrorKind, msg: &str) -> io::Error {
    io::Error::new(kind, msg.to_string())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps half-updated in a
    // way later calls would misread, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for MemFs {
    fn default() -> Self {
        Self::new()
    }
}

impl MemFs {
    /// An empty filesystem holding only `/`, with the clock at
    /// 2026-11-26T00:00:00Z.
    pub fn new() -> Self {
        let now = 1_795_651_200_000_000_000;
        let mut nodes = BTreeMap::new();
        nodes
            .insert(PathBuf::from("/"), MemNode { inode: 1, mode: 0o755, mtime_ns: now, kind: MemKind::Dir });
        Self {
            state: Arc::new(Mutex::new(MemState { nodes, next_inode: 2, denied: HashSet::new() })),
            clock: Arc::new(AtomicI64::new(now)),
        }
    }

    /// Sets the clock.
    pub fn set_now(&self, ns: i64) {
        self.clock.store(ns, Ordering::SeqCst);
    }

    /// Moves the clock forward by `ns`.
    pub fn advance(&self, ns: i64) {
        self.clock.fetch_add(ns, Ordering::SeqCst);
    }

    /// Makes reads (`open_read`, `read_dir`, `read_link`) of exactly `path`
    /// fail with `PermissionDenied`, or lifts that.
    pub fn deny(&self, path: &Path, denied: bool) {
        let mut st = lock(&self.state);
        if denied {
            st.denied.insert(path.to_path_buf());
        } else {
            st.denied.remove(path);
        }
    }

    /// Creates `path` and missing parents as directories.
    pub fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut cur = PathBuf::from("/");
        for c in normalize(path)?.components().skip(1) {
            cur.push(c);
            match self.symlink_metadata(&cur) {
                Ok(s) if s.kind == StatKind::Dir => {}
                Ok(_) => return Err(err(io::ErrorKind::NotADirectory, "not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.create_dir(&cur)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes `data` to `path` in place: creates the file (and its parents)
    /// or truncates and rewrites it keeping its inode, like `echo > path`.
    pub fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            self.create_dir_all(parent)?;
        }
        let now = self.now_ns();
        let mut st = lock(&self.state);
        let p = st.resolve(path, true)?;
        match st.nodes.get(&p).map(|n| &n.kind) {
            Some(MemKind::File(body)) => {
                let mut b = lock(body);
                b.data = data.to_vec();
                b.mtime_ns = now;
                Ok(())
            }
            Some(_) => Err(err(io::ErrorKind::InvalidInput, "not a regular file")),
            None => st.insert(
                &p,
                MemKind::File(Arc::new(Mutex::new(FileBody { data: data.to_vec(), mtime_ns: now }))),
                0o644,
                now,
            ),
        }
    }

    /// Creates a node of kind [`StatKind::Other`] (a stand-in for a FIFO,
    /// socket or device).
    pub fn make_special(&self, path: &Path) -> io::Result<()> {
        let now = self.now_ns();
        let mut st = lock(&self.state);
        let p = st.resolve(path, false)?;
        if st.nodes.contains_key(&p) {
            return Err(err(io::ErrorKind::AlreadyExists, "already exists"));
        }
        st.insert(&p, MemKind::Other, 0o644, now)
    }
}

/// Absolute, without `.`; `..` is refused (MemFs paths come from code that
/// joins validated names).
fn normalize(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(err(io::ErrorKind::InvalidInput, "`..` in a MemFs path"))
            }
        }
    }
    if !out.has_root() {
        return Err(err(io::ErrorKind::InvalidInput, "MemFs paths are absolute"));
    }
    Ok(out)
}

impl MemState {
    /// The path with every symlink in a non-final component resolved (and
    /// the final one too if `follow_last`). The result need not exist, but
    /// its parent does and is a directory.
    fn resolve(&self, path: &Path, follow_last: bool) -> io::Result<PathBuf> {
        let mut hops = 0;
        self.resolve_inner(&normalize(path)?, follow_last, &mut hops)
    }

    fn resolve_inner(&self, path: &Path, follow_last: bool, hops: &mut u32) -> io::Result<PathBuf> {
        let comps: Vec<_> = path.components().skip(1).collect();
        let mut cur = PathBuf::from("/");
        for (i, c) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let next = cur.join(c);
            match self.nodes.get(&next).map(|n| &n.kind) {
                Some(MemKind::Symlink(t)) if !last || follow_last => {
                    *hops += 1;
                    if *hops > 40 {
                        return Err(err(io::ErrorKind::Other, "too many levels of symbolic links"));
                    }
                    let target = if t.starts_with('/') { PathBuf::from(t) } else { cur.join(t) };
                    let target = self.resolve_lexical(&target)?;
                    cur = self.resolve_inner(&target, true, hops)?;
                }
                Some(MemKind::Dir) => cur = next,
                Some(_) if !last => return Err(err(io::ErrorKind::NotADirectory, "not a directory")),
                None if !last => return Err(err(io::ErrorKind::NotFound, "no such file or directory")),
                _ => cur = next,
            }
        }
        Ok(cur)
    }

    /// Resolves `..` in a symlink target lexically (the target's prefix was
    /// already resolved, so this matches the kernel for our uses).
    fn resolve_lexical(&self, path: &Path) -> io::Result<PathBuf> {
        let mut out = PathBuf::from("/");
        for c in path.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(n) => out.push(n),
                _ => {}
            }
        }
        Ok(out)
    }

    fn parent_dir_of(&self, p: &Path) -> io::Result<PathBuf> {
        let parent = p.parent().ok_or_else(|| err(io::ErrorKind::InvalidInput, "the root has no parent"))?;
        match self.nodes.get(parent).map(|n| &n.kind) {
            Some(MemKind::Dir) => Ok(parent.to_path_buf()),
            Some(_) => Err(err(io::ErrorKind::NotADirectory, "not a directory")),
            None => Err(err(io::ErrorKind::NotFound, "no such file or directory")),
        }
    }

    fn touch(&mut self, dir: &Path, now: i64) {
        if let Some(n) = self.nodes.get_mut(dir) {
            n.mtime_ns = now;
        }
    }

    fn insert(&mut self, p: &Path, kind: MemKind, mode: u32, now: i64) -> io::Result<()> {
        let parent = self.parent_dir_of(p)?;
        let inode = self.next_inode;
        self.next_inode += 1;
        self.nodes.insert(p.to_path_buf(), MemNode { inode, mode, mtime_ns: now, kind });
        self.touch(&parent, now);
        Ok(())
    }

    fn has_children(&self, dir: &Path) -> bool {
        self.nodes.range(dir.to_path_buf()..).nth(1).is_some_and(|(k, _)| k.starts_with(dir))
    }

    fn check_denied(&self, p: &Path) -> io::Result<()> {
        if self.denied.contains(p) {
            return Err(err(io::ErrorKind::PermissionDenied, "permission denied"));
        }
        Ok(())
    }
}

impl Clock for MemFs {
    fn now_ns(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }
}

struct MemWriter {
    body: Arc<Mutex<FileBody>>,
    clock: Arc<AtomicI64>,
}

impl Write for MemWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut b = lock(&self.body);
        b.data.extend_from_slice(buf);
        b.mtime_ns = self.clock.load(Ordering::SeqCst);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WriteFile for MemWriter {
    fn sync_all(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Fs for MemFs {
    fn symlink_metadata(&self, path: &Path) -> io::Result<Stat> {
        let st = lock(&self.state);
        let p = st.resolve(path, false)?;
        let n = st.nodes.get(&p).ok_or_else(|| err(io::ErrorKind::NotFound, "no such file or directory"))?;
        let (kind, size, mtime_ns) = match &n.kind {
            MemKind::File(b) => {
                let b = lock(b);
                (StatKind::File, b.data.len() as u64, b.mtime_ns)
            }
            MemKind::Dir => (StatKind::Dir, 0, n.mtime_ns),
            MemKind::Symlink(t) => (StatKind::Symlink, t.len() as u64, n.mtime_ns),
            MemKind::Other => (StatKind::Other, 0, n.mtime_ns),
        };
        Ok(Stat { kind, size, mtime_ns, inode: n.inode, mode: n.mode })
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<Result<String, NonUtf8Name>>> {
        let st = lock(&self.state);
        let p = st.resolve(path, true)?;
        match st.nodes.get(&p).map(|n| &n.kind) {
            Some(MemKind::Dir) => {}
            Some(_) => return Err(err(io::ErrorKind::NotADirectory, "not a directory")),
            None => return Err(err(io::ErrorKind::NotFound, "no such file or directory")),
        }
        st.check_denied(&p)?;
        let mut names: Vec<OsString> = st
            .nodes
            .range(p.clone()..)
            .skip(1)
            .take_while(|(k, _)| k.starts_with(&p))
            .filter(|(k, _)| k.parent() == Some(p.as_path()))
            .filter_map(|(k, _)| k.file_name().map(|n| n.to_os_string()))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|n| n.into_string().map_err(|n| NonUtf8Name { lossy: n.to_string_lossy().into_owned() }))
            .collect())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        let st = lock(&self.state);
        let p = st.resolve(path, true)?;
        match st.nodes.get(&p).map(|n| &n.kind) {
            Some(MemKind::File(b)) => {
                st.check_denied(&p)?;
                let data = lock(b).data.clone();
                Ok(Box::new(io::Cursor::new(data)))
            }
            Some(MemKind::Dir) => Err(err(io::ErrorKind::IsADirectory, "is a directory")),
            Some(_) => Err(err(io::ErrorKind::InvalidInput, "not a regular file")),
            None => Err(err(io::ErrorKind::NotFound, "no such file or directory")),
        }
    }

    fn read_link(&self, path: &Path) -> io::Result<String> {
        let st = lock(&self.state);
        let p = st.resolve(path, false)?;
        match st.nodes.get(&p).map(|n| &n.kind) {
            Some(MemKind::Symlink(t)) => {
                st.check_denied(&p)?;
                Ok(t.clone())
            }
            Some(_) => Err(err(io::ErrorKind::InvalidInput, "not a symlink")),
            None => Err(err(io::ErrorKind::NotFound, "no such file or directory")),
        }
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let now = self.now_ns();
        let mut st = lock(&self.state);
        let p = st.resolve(path, false)?;
        if st.nodes.contains_key(&p) {
            return Err(err(io::ErrorKind::AlreadyExists, "already exists"));
        }
        let body = Arc::new(Mutex::new(FileBody { data: Vec::new(), mtime_ns: now }));
        st.insert(&p, MemKind::File(body.clone()), 0o644, now)?;
        Ok(Box::new(MemWriter { body, clock: self.clock.clone() }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let now = self.now_ns();
        let mut st = lock(&self.state);
        let from = st.resolve(from, false)?;
        let to = st.resolve(to, false)?;
        let from_dir = matches!(
            st.nodes
                .get(&from)
                .ok_or_else(|| err(io::ErrorKind::NotFound, "no such file or directory"))?
                .kind,
            MemKind::Dir
        );
        let to_parent = st.parent_dir_of(&to)?;
        if from == to {
            return Ok(());
        }
        if to.starts_with(&from) {
            return Err(err(io::ErrorKind::InvalidInput, "cannot move a directory into itself"));
        }
        if let Some(existing) = st.nodes.get(&to) {
            match (&existing.kind, from_dir) {
                (MemKind::Dir, true) if st.has_children(&to) => {
                    return Err(err(io::ErrorKind::DirectoryNotEmpty, "directory not empty"))
                }
                (MemKind::Dir, false) => return Err(err(io::ErrorKind::IsADirectory, "is a directory")),
                (k, true) if !matches!(k, MemKind::Dir) => {
                    return Err(err(io::ErrorKind::NotADirectory, "not a directory"))
                }
                _ => {}
            }
            st.nodes.remove(&to);
        }
        let moved: Vec<PathBuf> = st
            .nodes
            .range(from.clone()..)
            .map(|(k, _)| k.clone())
            .take_while(|k| k.starts_with(&from))
            .collect();
        for old in moved {
            if let Some(node) = st.nodes.remove(&old) {
                let rest = old.strip_prefix(&from).map_err(|_| err(io::ErrorKind::Other, "MemFs prefix"))?;
                let new = if rest.as_os_str().is_empty() { to.clone() } else { to.join(rest) };
                st.nodes.insert(new, node);
            }
        }
        if let Some(fp) = from.parent() {
            st.touch(fp, now);
        }
        st.touch(&to_parent, now);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let now = self.now_ns();
        let mut st = lock(&self.state);
        let p = st.resolve(path, false)?;
        match st.nodes.get(&p).map(|n| &n.kind) {
            Some(MemKind::Dir) => Err(err(io::ErrorKind::IsADirectory, "is a directory")),
            Some(_) => {
                st.nodes.remove(&p);
                if let Some(parent) = p.parent() {
                    st.touch(parent, now);
                }
                Ok(())
            }
            None => Err(err(io::ErrorKind::NotFound, "no such file or directory")),
        }
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let now = self.now_ns();
        let mut st = lock(&self.state);
        let p = st.resolve(path, false)?;
        match st.nodes.get(&p).map(|n| &n.kind) {
            Some(MemKind::Dir) if p.parent().is_none() => {
                Err(err(io::ErrorKind::InvalidInput, "cannot remove the root"))
            }
            Some(MemKind::Dir) if st.has_children(&p) => {
                Err(err(io::ErrorKind::DirectoryNotEmpty, "directory not empty"))
            }
            Some(MemKind::Dir) => {
                st.nodes.remove(&p);
                if let Some(parent) = p.parent() {
                    st.touch(parent, now);
                }
                Ok(())
            }
            Some(_) => Err(err(io::ErrorKind::NotADirectory, "not a directory")),
            None => Err(err(io::ErrorKind::NotFound, "no such file or directory")),
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let now = self.now_ns();
        let mut st = lock(&self.state);
        let p = st.resolve(path, false)?;
        if st.nodes.contains_key(&p) {
            return Err(err(io::ErrorKind::AlreadyExists, "already exists"));
        }
        st.insert(&p, MemKind::Dir, 0o755, now)
    }

    fn symlink(&self, target: &str, at: &Path) -> io::Result<()> {
        let now = self.now_ns();
        let mut st = lock(&self.state);
        let p = st.resolve(at, false)?;
        if st.nodes.contains_key(&p) {
            return Err(err(io::ErrorKind::AlreadyExists, "already exists"));
        }
        st.insert(&p, MemKind::Symlink(target.to_string()), 0o777, now)
    }

    fn set_mtime(&self, path: &Path, mtime_ns: i64) -> io::Result<()> {
        let mut st = lock(&self.state);
        let p = st.resolve(path, false)?;
        let n =
            st.nodes.get_mut(&p).ok_or_else(|| err(io::ErrorKind::NotFound, "no such file or directory"))?;
        match &n.kind {
            MemKind::File(b) => lock(b).mtime_ns = mtime_ns,
            _ => n.mtime_ns = mtime_ns,
        }
        Ok(())
    }

    fn stamp(&self, path: &Path) -> io::Result<i64> {
        let now = self.now_ns();
        let mut st = lock(&self.state);
        let p = st.resolve(path, false)?;
        match st.nodes.get(&p).map(|n| &n.kind) {
            Some(MemKind::File(body)) => {
                lock(body).mtime_ns = now;
                Ok(now)
            }
            Some(_) => Err(err(io::ErrorKind::InvalidInput, "not a regular file")),
            None => {
                st.insert(
                    &p,
                    MemKind::File(Arc::new(Mutex::new(FileBody { data: Vec::new(), mtime_ns: now }))),
                    0o600,
                    now,
                )?;
                Ok(now)
            }
        }
    }

    fn set_executable(&self, path: &Path, executable: bool) -> io::Result<()> {
        let mut st = lock(&self.state);
        let p = st.resolve(path, false)?;
        let n =
            st.nodes.get_mut(&p).ok_or_else(|| err(io::ErrorKind::NotFound, "no such file or directory"))?;
        if !matches!(n.kind, MemKind::File(_)) {
            return Err(err(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        n.mode = exec_mode(n.mode, executable);
        Ok(())
    }

    fn sync_files(&self, paths: &[PathBuf]) -> io::Result<()> {
        paths.iter().try_for_each(|p| match self.symlink_metadata(p)?.kind {
            StatKind::File => Ok(()),
            _ => Err(err(io::ErrorKind::InvalidInput, "not a regular file")),
        })
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let st = lock(&self.state);
        let p = st.resolve(path, true)?;
        match st.nodes.get(&p).map(|n| &n.kind) {
            Some(MemKind::Dir) => Ok(()),
            Some(_) => Err(err(io::ErrorKind::NotADirectory, "not a directory")),
            None => Err(err(io::ErrorKind::NotFound, "no such file or directory")),
        }
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        match self.symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A path's bytes as a display string (lossy), for messages.
pub fn display_path(path: &Path) -> String {
    String::from_utf8_lossy(path.as_os_str().as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    fn write(fs: &dyn Fs, p: &Path, data: &[u8]) {
        let mut w = fs.create_new(p).unwrap();
        w.write_all(data).unwrap();
        w.sync_all().unwrap();
    }

    fn read(fs: &dyn Fs, p: &Path) -> Vec<u8> {
        let mut v = Vec::new();
        fs.open_read(p).unwrap().read_to_end(&mut v).unwrap();
        v
    }

    fn names(fs: &dyn Fs, p: &Path) -> Vec<String> {
        fs.read_dir(p).unwrap().into_iter().map(|n| n.unwrap_or_else(|e| e.lossy)).collect()
    }

    /// The behaviour every `Fs` must show; `root` is an empty directory.
    fn conformance(fs: &dyn Fs, root: &Path) {
        let f = root.join("f.txt");
        write(fs, &f, b"hello");
        let s = fs.symlink_metadata(&f).unwrap();
        assert_eq!((s.kind, s.size), (StatKind::File, 5));
        assert_eq!(s.mode & 0o111, 0, "a new file is not executable");
        assert_eq!(read(fs, &f), b"hello");
        assert_eq!(fs.create_new(&f).err().unwrap().kind(), io::ErrorKind::AlreadyExists);
        assert!(fs.exists(&f).unwrap());
        assert!(!fs.exists(&root.join("nope")).unwrap());
        assert_eq!(fs.symlink_metadata(&root.join("nope")).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(fs.open_read(&root.join("nope")).err().unwrap().kind(), io::ErrorKind::NotFound);

        // A stamp creates its file empty, keeps a file's bytes, reports the
        // mtime a stat then shows, never goes back, and is no later than
        // the mtime of a file written after it. Not on a folder or a link.
        let m = root.join("stamp");
        let first = fs.stamp(&m).unwrap();
        let s = fs.symlink_metadata(&m).unwrap();
        assert_eq!((s.kind, s.size, s.mtime_ns), (StatKind::File, 0, first));
        assert_eq!(s.mode & 0o111, 0);
        let second = fs.stamp(&f).unwrap();
        assert_eq!((read(fs, &f), fs.symlink_metadata(&f).unwrap().mtime_ns), (b"hello".to_vec(), second));
        assert!(second >= first);
        let after = root.join("after.txt");
        write(fs, &after, b"later");
        assert!(fs.symlink_metadata(&after).unwrap().mtime_ns >= second);
        fs.remove_file(&after).unwrap();
        assert!(fs.stamp(root).is_err());
        fs.symlink("f.txt", &root.join("stamp-link")).unwrap();
        assert!(fs.stamp(&root.join("stamp-link")).is_err());
        assert_eq!(fs.symlink_metadata(&root.join("stamp-link")).unwrap().kind, StatKind::Symlink);
        fs.remove_file(&root.join("stamp-link")).unwrap();
        fs.remove_file(&m).unwrap();

        // A no-clobber move never replaces what is there.
        let g = root.join("g.txt");
        write(fs, &g, b"mine");
        let t = root.join("t.tmp");
        write(fs, &t, b"theirs");
        assert_eq!(fs.rename_noreplace(&t, &g).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!((read(fs, &g), read(fs, &t)), (b"mine".to_vec(), b"theirs".to_vec()));
        fs.remove_file(&g).unwrap();
        fs.rename_noreplace(&t, &g).unwrap();
        assert_eq!(read(fs, &g), b"theirs");
        assert!(!fs.exists(&t).unwrap());
        fs.remove_file(&g).unwrap();

        // Directories.
        let d = root.join("d");
        fs.create_dir(&d).unwrap();
        assert_eq!(fs.symlink_metadata(&d).unwrap().kind, StatKind::Dir);
        assert_eq!(fs.symlink_metadata(&d).unwrap().size, 0);
        assert!(fs.open_read(&d).is_err());
        assert_eq!(fs.create_dir(&d).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert!(fs.create_dir(&root.join("x/y")).is_err());
        write(fs, &d.join("b"), b"");
        write(fs, &d.join("a"), b"");
        assert_eq!(names(fs, &d), ["a", "b"]);
        assert!(fs.remove_dir(&d).is_err(), "non-empty dir removed");
        assert!(fs.remove_file(&d).is_err(), "remove_file removed a dir");
        fs.remove_file(&d.join("a")).unwrap();
        fs.remove_file(&d.join("b")).unwrap();
        assert!(names(fs, &d).is_empty());
        fs.sync_dir(&d).unwrap();
        fs.remove_dir(&d).unwrap();
        assert!(!fs.exists(&d).unwrap());

        // Non-UTF-8 names are error items, not failures.
        let bad = root.join(OsStr::from_bytes(b"bad\xffname"));
        write(fs, &bad, b"x");
        let listed = fs.read_dir(root).unwrap();
        assert!(listed.contains(&Err(NonUtf8Name { lossy: "bad\u{fffd}name".into() })), "{listed:?}");
        assert!(listed.contains(&Ok("f.txt".into())));
        fs.remove_file(&bad).unwrap();

        // Symlinks are not followed by stat, and can dangle.
        let l = root.join("link");
        fs.symlink("f.txt", &l).unwrap();
        let ls = fs.symlink_metadata(&l).unwrap();
        assert_eq!((ls.kind, ls.size), (StatKind::Symlink, 5));
        assert_eq!(fs.read_link(&l).unwrap(), "f.txt");
        assert_eq!(read(fs, &l), b"hello", "open_read follows a final link");
        assert!(fs.set_executable(&l, true).is_err(), "chmod through a link");
        assert!(!fs.symlink_metadata(&f).unwrap().is_executable());
        let dangling = root.join("dangling");
        fs.symlink("nowhere", &dangling).unwrap();
        assert!(fs.exists(&dangling).unwrap());
        assert!(fs.read_link(&f).is_err());
        // Nor over a dangling link.
        let t = root.join("t.tmp");
        write(fs, &t, b"theirs");
        assert_eq!(fs.rename_noreplace(&t, &dangling).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs.read_link(&dangling).unwrap(), "nowhere");
        fs.remove_file(&t).unwrap();

        // mtimes: set exactly, on a link without touching its target.
        let t = 1_600_000_000_123_456_789;
        fs.set_mtime(&f, t).unwrap();
        assert_eq!(fs.symlink_metadata(&f).unwrap().mtime_ns, t);
        fs.set_mtime(&l, t + 1_000).unwrap();
        assert_eq!(fs.symlink_metadata(&l).unwrap().mtime_ns, t + 1_000);
        assert_eq!(fs.symlink_metadata(&f).unwrap().mtime_ns, t);
        fs.set_mtime(&f, -1_500_000_000).unwrap();
        assert_eq!(fs.symlink_metadata(&f).unwrap().mtime_ns, -1_500_000_000);

        // Executable bit (clearing bits that are not set changes nothing).
        let before = fs.symlink_metadata(&f).unwrap();
        fs.set_executable(&f, false).unwrap();
        assert_eq!(fs.symlink_metadata(&f).unwrap().mode, before.mode);
        fs.set_executable(&f, true).unwrap();
        assert!(fs.symlink_metadata(&f).unwrap().is_executable());
        fs.set_executable(&f, false).unwrap();
        assert_eq!(fs.symlink_metadata(&f).unwrap().mode & 0o111, 0);

        // Rename replaces atomically; the inode travels with the file.
        let g = root.join("g.txt");
        write(fs, &g, b"new content");
        let g_ino = fs.symlink_metadata(&g).unwrap().inode;
        assert_ne!(g_ino, fs.symlink_metadata(&f).unwrap().inode);
        fs.rename(&g, &f).unwrap();
        assert!(!fs.exists(&g).unwrap());
        assert_eq!(read(fs, &f), b"new content");
        assert_eq!(fs.symlink_metadata(&f).unwrap().inode, g_ino);

        // Rename of a directory moves its subtree.
        let d1 = root.join("d1");
        fs.create_dir(&d1).unwrap();
        fs.create_dir(&d1.join("sub")).unwrap();
        write(fs, &d1.join("sub/x"), b"x");
        let d2 = root.join("d2");
        fs.rename(&d1, &d2).unwrap();
        assert_eq!(read(fs, &d2.join("sub/x")), b"x");
        assert!(!fs.exists(&d1).unwrap());
        assert!(fs.rename(&d2, &d2.join("sub/inside")).is_err());
        assert!(fs.rename(&f, &d2).is_err(), "a file replaced a directory");

        // Making files durable: a few (an fsync each on disk), many (one
        // syncfs), and a missing one is an error.
        let many: Vec<PathBuf> = (0..20)
            .map(|i| {
                let p = root.join(format!("durable-{i}"));
                write(fs, &p, b"bytes");
                p
            })
            .collect();
        fs.sync_files(&many[..2]).unwrap();
        fs.sync_files(&many).unwrap();
        fs.sync_files(&[]).unwrap();
        let mut missing = many.clone();
        missing.push(root.join("never-written"));
        assert_eq!(fs.sync_files(&missing).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(fs.sync_files(&missing[18..]).unwrap_err().kind(), io::ErrorKind::NotFound);

        // Paths through a symlinked directory resolve.
        fs.symlink("d2", &root.join("d2link")).unwrap();
        assert_eq!(read(fs, &root.join("d2link/sub/x")), b"x");
        assert_eq!(names(fs, &root.join("d2link")), ["sub"]);
    }

    #[test]
    fn real_fs_conformance() {
        let dir = tempfile::tempdir().unwrap();
        conformance(&RealFs, dir.path());
    }

    #[test]
    fn mem_fs_conformance() {
        let fs = MemFs::new();
        fs.create_dir_all(Path::new("/root")).unwrap();
        conformance(&fs, Path::new("/root"));
    }

    #[test]
    fn mem_fs_clock_inodes_and_faults() {
        let fs = MemFs::new();
        fs.set_now(1_000);
        fs.write_file(Path::new("/a/b"), b"one").unwrap();
        let s1 = fs.symlink_metadata(Path::new("/a/b")).unwrap();
        assert_eq!(s1.mtime_ns, 1_000);
        assert_eq!(fs.symlink_metadata(Path::new("/a")).unwrap().mtime_ns, 1_000);
        fs.advance(500);
        fs.write_file(Path::new("/a/b"), b"two!").unwrap();
        let s2 = fs.symlink_metadata(Path::new("/a/b")).unwrap();
        assert_eq!((s2.mtime_ns, s2.size, s2.inode), (1_500, 4, s1.inode), "in-place write keeps the inode");
        // Writes through an open handle update size and mtime as they happen.
        fs.advance(1);
        let mut w = fs.create_new(Path::new("/a/c")).unwrap();
        fs.advance(1);
        w.write_all(b"xyz").unwrap();
        let s = fs.symlink_metadata(Path::new("/a/c")).unwrap();
        assert_eq!((s.size, s.mtime_ns), (3, 1_502));
        // Injected EACCES.
        fs.deny(Path::new("/a"), true);
        assert_eq!(fs.read_dir(Path::new("/a")).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        fs.deny(Path::new("/a/b"), true);
        assert_eq!(fs.open_read(Path::new("/a/b")).err().unwrap().kind(), io::ErrorKind::PermissionDenied);
        fs.deny(Path::new("/a"), false);
        assert_eq!(fs.read_dir(Path::new("/a")).unwrap().len(), 2);
        fs.make_special(Path::new("/a/fifo")).unwrap();
        assert_eq!(fs.symlink_metadata(Path::new("/a/fifo")).unwrap().kind, StatKind::Other);
        assert!(fs.open_read(Path::new("/a/fifo")).is_err());
        assert!(normalize(Path::new("relative")).is_err());
        assert!(normalize(Path::new("/a/../b")).is_err());
    }

    #[test]
    fn real_fs_stamp_refuses_a_fifo_without_waiting_for_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clock");
        let mode = rustix::fs::Mode::from_raw_mode(0o600);
        rustix::fs::mknodat(rustix::fs::CWD, &p, rustix::fs::FileType::Fifo, mode, 0).unwrap();
        assert!(RealFs.stamp(&p).is_err());
    }

    #[test]
    fn real_fs_sets_the_mtime_and_leaves_the_access_time() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let atime = |p: &Path| std::fs::symlink_metadata(p).map(|m| (m.atime(), m.atime_nsec())).unwrap();
        let t = 1_600_000_000_000_000_007;
        RealFs.set_mtime(&f, t - 1_000_000_000).unwrap();
        let before = atime(&f);
        RealFs.set_mtime(&f, t).unwrap();
        assert_eq!(atime(&f), before);
        assert_eq!(RealFs.symlink_metadata(&f).unwrap().mtime_ns, t);
    }

    #[test]
    fn real_fs_reports_other_kinds_and_clock_moves() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(RealFs.symlink_metadata(&sock).unwrap().kind, StatKind::Other);
        // Opening a FIFO must fail at once, not block waiting for a writer.
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        assert_eq!(RealFs.symlink_metadata(&fifo).unwrap().kind, StatKind::Other);
        assert_eq!(RealFs.open_read(&fifo).err().unwrap().kind(), io::ErrorKind::InvalidInput);
        let a = SystemClock.now_ns();
        assert!(a > 1_700_000_000_000_000_000);
    }

    /// A new real file that writes itself out early every 4 KiB from 8 KiB
    /// on, with `sync` counting (or failing) each write-out.
    fn early(dir: &Path, sync: impl FnMut() -> io::Result<()> + Send + 'static) -> RealWriteFile {
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(dir.join("big")).unwrap();
        RealWriteFile {
            start: 8 << 10,
            step: 4 << 10,
            sync: Some(Box::new(sync)),
            ..RealWriteFile::new(file)
        }
    }

    #[test]
    fn a_large_new_file_is_written_out_while_it_is_written() {
        use std::sync::atomic::AtomicUsize;
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let mut w = early(dir.path(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let data: Vec<u8> = (0..64 << 10).map(|i| (i % 251) as u8).collect();
        // Below the start nothing is written out early.
        w.write_all(&data[..6 << 10]).unwrap();
        assert!(w.writeback.is_none());
        for piece in data[6 << 10..].chunks(1000) {
            w.write_all(piece).unwrap();
        }
        w.flush().unwrap();
        assert!(w.writeback.is_none(), "flush waits for the helper and stops it");
        // At least the first request; more fold into one while it runs.
        let n = calls.load(Ordering::SeqCst);
        assert!((1..=14).contains(&n), "{n} write-outs");
        drop(w);
        assert_eq!(std::fs::read(dir.path().join("big")).unwrap(), data);

        // The real helper (fdatasync of a clone) on the real path.
        let path = dir.path().join("real");
        let mut w = RealFs.create_new(&path).unwrap();
        let block = vec![7u8; 1 << 20];
        w.write_all(&block).unwrap();
        assert!(!w.flush_waits(), "nothing written out early yet");
        for _ in 1..(WRITEBACK_START >> 20) + 2 {
            w.write_all(&block).unwrap();
        }
        assert!(w.flush_waits(), "the helper is writing out");
        w.flush().unwrap();
        w.sync_all().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), WRITEBACK_START + (2 << 20));
    }

    #[test]
    fn an_error_writing_out_early_is_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let failing = || Err(io::Error::other("disk on fire"));
        let mut w = early(dir.path(), failing);
        w.write_all(&[1u8; 32 << 10]).unwrap();
        let e = w.flush().unwrap_err();
        assert_eq!(e.to_string(), "disk on fire");

        // sync_all waits for it too.
        std::fs::remove_file(dir.path().join("big")).unwrap();
        let mut w = early(dir.path(), failing);
        w.write_all(&[1u8; 32 << 10]).unwrap();
        assert_eq!(w.sync_all().unwrap_err().to_string(), "disk on fire");
    }
}
