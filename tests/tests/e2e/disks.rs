//! Disks that fill up or go away, on real mounts: a small tmpfs as the sync
//! folder's disk, and a bind mount unmounted under a running daemon.
//!
//! Mounting needs root (CAP_SYS_ADMIN). Where it is refused, these tests do
//! not pass silently: with `CI=true` they fail (CI runs as root), otherwise
//! they print `SKIPPED: ...` past the harness's capture and return, as the
//! scale-out tests do for their services.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use coffer_e2e::{random_bytes, wait_until, Client, Server};

use super::scale_out::services;

/// A mount, lazily unmounted when dropped.
struct Mount {
    point: PathBuf,
    mounted: bool,
}

impl Mount {
    /// `mount ARGS POINT`, or `None` (after `services::unavailable`) when
    /// this machine does not let us mount.
    fn new(args: &[&str], point: &Path) -> Option<Self> {
        std::fs::create_dir_all(point).expect("mount point");
        let out = Command::new("mount").args(args).arg(point).output().expect("run mount");
        if !out.status.success() {
            return services::unavailable(&format!(
                "cannot mount ({}); the disk tests need root (CAP_SYS_ADMIN)",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Some(Self { point: point.to_path_buf(), mounted: true })
    }

    /// Detaches it now (`umount -l`: a busy disk pulled out all the same).
    fn unmount(&mut self) {
        let ok = Command::new("umount").arg("-l").arg(&self.point).status().expect("run umount");
        assert!(ok.success(), "umount {}", self.point.display());
        self.mounted = false;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
    }
}

#[test]
fn a_full_disk_gives_a_clear_error_no_partial_file_and_sync_resumes_once_freed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let Some(_mount) = Mount::new(&["-t", "tmpfs", "-o", "size=16m", "tmpfs"], &disk) else { return };
    let server = Server::start();
    let a = Client::new();
    let b = Client::with_root(disk.join("Coffer"));
    a.signup(&server, "full@example.org");
    b.login(&server, "full@example.org");
    for i in 0..5 {
        a.write(&format!("small{i}.txt"), format!("small file {i}").as_bytes());
    }
    let big = random_bytes(10 << 20, 11);
    a.write("big.bin", &big);
    a.sync();

    // 9 MiB of something else on B's disk leaves 7 MiB: the small files
    // fit, the big one does not.
    let filler = disk.join("filler");
    std::fs::write(&filler, vec![7u8; 9 << 20]).unwrap();
    let r = b.run(&["sync", b.root.to_str().unwrap(), "--once", "--quiet"]);
    assert_ne!(r.code, 0, "a sync that could not write big.bin must not report success");
    assert!(
        r.stderr.contains("big.bin") && r.stderr.contains("No space left on device"),
        "the error names the file and the cause: {}",
        r.stderr
    );
    assert!(!b.path("big.bin").exists(), "a partial big.bin at its final path");
    for i in 0..5 {
        assert_eq!(b.read(&format!("small{i}.txt")), format!("small file {i}").as_bytes());
    }
    let temps: Vec<_> = std::fs::read_dir(b.path(".coffer/tmp")).unwrap().flatten().collect();
    assert!(temps.is_empty(), "the failed download's temp file is still taking space: {temps:?}");

    // Space freed: the next sync finishes the job.
    std::fs::remove_file(&filler).unwrap();
    b.sync();
    assert!(b.read("big.bin") == big);
    assert_eq!(a.tree(), b.tree());

    // Not a byte left, so even the index cannot grow: SQLite's own error
    // (an I/O error of its shared-memory file) must come out as "full".
    a.write("later.txt", b"written while B's disk is full to the brim");
    a.sync();
    let mut fill = std::fs::File::create(&filler).unwrap();
    let block = vec![9u8; 64 << 10];
    while std::io::Write::write_all(&mut fill, &block).is_ok() {}
    while std::io::Write::write_all(&mut fill, &[9u8]).is_ok() {}
    drop(fill);
    let r = b.run(&["sync", b.root.to_str().unwrap(), "--once", "--quiet"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is full: free some space there"), "not a clear error: {}", r.stderr);
    assert!(!b.path("later.txt").exists(), "a partial later.txt at its final path");
    std::fs::remove_file(&filler).unwrap();
    b.sync();
    assert_eq!(b.read("later.txt"), b"written while B's disk is full to the brim");
    assert_eq!(a.tree(), b.tree());
}

#[test]
fn a_disk_unmounted_under_the_daemon_stops_sync_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    let disk = dir.path().join("disk");
    std::fs::create_dir_all(&real).unwrap();
    let Some(mut mount) = Mount::new(&["--bind", real.to_str().unwrap()], &disk) else { return };
    let server = Server::start();
    let a = Client::with_root(disk.join("Coffer"));
    let b = Client::new();
    a.signup(&server, "unmount@example.org");
    b.login(&server, "unmount@example.org");
    a.write("one.txt", b"1");
    a.write("two/three.txt", b"3");
    a.sync();
    b.sync();

    let log = dir.path().join("daemon.log");
    let _daemon = a.daemon_logging_to(std::fs::File::create(&log).unwrap());
    wait_until("the daemon to start", Duration::from_secs(30), || a.path(".coffer/daemon.pid").exists());
    mount.unmount();
    assert!(!a.root.exists());
    wait_until("the daemon to say the disk is gone", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("is the disk mounted"))
    });
    // Nothing deleted on the store, nothing written where the disk was.
    b.sync();
    assert_eq!(b.read("one.txt"), b"1");
    assert_eq!(b.read("two/three.txt"), b"3");
    assert_eq!(std::fs::read_dir(&disk).unwrap().count(), 0, "the daemon wrote to the empty mount point");

    // Mounted again: the daemon picks up where it was (its periodic rescan).
    let _again = Mount::new(&["--bind", real.to_str().unwrap()], &disk).expect("mount again");
    a.write("after.txt", b"written once the disk was back");
    wait_until("the daemon to sync after the disk came back", Duration::from_secs(60), || {
        b.sync();
        b.path("after.txt").exists()
    });
    assert_eq!(b.read("after.txt"), b"written once the disk was back");
    assert_eq!(b.read("one.txt"), b"1");
}

#[test]
fn a_sync_folder_removed_under_the_daemon_stops_sync_and_deletes_nothing() {
    let server = Server::start();
    let a = Client::new();
    let b = Client::new();
    a.signup(&server, "removed@example.org");
    b.login(&server, "removed@example.org");
    a.write("one.txt", b"1");
    a.write("two/three.txt", b"3");
    a.sync();
    b.sync();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let _daemon = a.daemon_logging_to(std::fs::File::create(&log).unwrap());
    wait_until("the daemon to start", Duration::from_secs(30), || a.path(".coffer/daemon.pid").exists());
    // Removed in one step (a recursive delete would be seen file by file,
    // as the user deleting files, which sync rightly propagates).
    std::fs::rename(&a.root, dir.path().join("gone")).unwrap();
    std::fs::remove_dir_all(dir.path().join("gone")).unwrap();
    wait_until("the daemon to say the folder is gone", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("is the disk mounted"))
    });
    assert!(!a.root.exists(), "the daemon made the sync folder again");
    b.sync();
    assert_eq!(b.read("one.txt"), b"1");
    assert_eq!(b.read("two/three.txt"), b"3");
    let r = a.run(&["sync", a.root.to_str().unwrap(), "--once", "--quiet"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is the disk mounted"), "{}", r.stderr);
}
