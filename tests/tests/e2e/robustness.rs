//! Crashes and missing disks: a client killed with SIGKILL in the middle of
//! a download never leaves a partial file at the final path and converges
//! when restarted; a sync folder that disappears is never read as "all
//! deleted".

use std::time::Duration;

use coffer_e2e::{random_bytes, wait_until, Client, Server};

#[test]
fn kill_9_mid_download_then_restart_converges() {
    let server = Server::start();
    let a = Client::new();
    let b = Client::new();
    a.signup(&server, "crash@example.org");
    b.login(&server, "crash@example.org");
    let data = random_bytes(120 << 20, 9);
    a.write("large.bin", &data);
    a.sync();

    std::fs::create_dir_all(&b.root).unwrap();
    b.sync(); // sets the folder up; downloads everything once
    std::fs::remove_file(b.path("large.bin")).unwrap();
    // Make B download it again: delete on A, then restore it there, so the
    // store holds it at a newer revision that B must fetch.
    let mut daemon = {
        b.sync(); // propagates B's deletion
        a.sync();
        a.write("large.bin", &data);
        a.sync();
        b.daemon()
    };
    let tmp = b.path(".coffer/tmp");
    wait_until("a download in progress", Duration::from_secs(60), || {
        std::fs::read_dir(&tmp)
            .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".part")))
    });
    daemon.kill9();
    // Never a partial file at the final path.
    if let Ok(meta) = std::fs::metadata(b.path("large.bin")) {
        assert_eq!(meta.len(), data.len() as u64, "a partial file appeared at the final path");
    }
    b.sync();
    assert!(b.read("large.bin") == data);
    assert_eq!(a.tree(), b.tree());
}

#[test]
fn a_missing_sync_folder_is_not_read_as_everything_deleted() {
    let server = Server::start();
    let a = Client::new();
    let b = Client::new();
    a.signup(&server, "mount@example.org");
    b.login(&server, "mount@example.org");
    a.write("one.txt", b"1");
    a.write("two/three.txt", b"3");
    a.sync();

    // The disk is "unmounted": the folder is replaced by an empty one.
    let away = a.root.with_file_name("Coffer-unmounted");
    std::fs::rename(&a.root, &away).unwrap();
    std::fs::create_dir_all(&a.root).unwrap();
    let r = a.run(&["sync", a.root.to_str().unwrap(), "--once", "--quiet"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is the disk mounted"), "{}", r.stderr);

    // Nothing was deleted on the store.
    b.sync();
    assert_eq!(b.read("one.txt"), b"1");
    assert_eq!(b.read("two/three.txt"), b"3");

    // Mounted again: all is well.
    std::fs::remove_dir(&a.root).unwrap();
    std::fs::rename(&away, &a.root).unwrap();
    a.sync();
    assert_eq!(a.tree(), b.tree());
}
