//! Crashes, outages and missing disks: a client killed with SIGKILL in the
//! middle of a download never leaves a partial file at the final path and
//! converges when restarted; daemons ride out a store outage and catch up,
//! and a store killed with SIGKILL in the middle of uploads loses nothing; a
//! sync folder that disappears is never read as "all deleted"; a round that
//! would delete many files waits for confirmation.

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

#[test]
fn daemons_work_offline_and_catch_up_when_the_store_returns() {
    let mut server = Server::start();
    let a = Client::new();
    let b = Client::new();
    a.signup(&server, "offline@example.org");
    b.login(&server, "offline@example.org");
    a.write("before.txt", b"before the outage");
    a.sync();
    b.sync();
    let _da = a.daemon();
    let _db = b.daemon();

    server.stop();
    a.write("during/outage.txt", b"written while the store was down");
    wait_until("A to notice the store is down", Duration::from_secs(30), || {
        std::fs::read_to_string(a.path(".coffer/status.json")).is_ok_and(|s| s.contains("offline"))
    });
    server.restart();
    wait_until("the change to reach B after the outage", Duration::from_secs(90), || {
        std::fs::read(b.path("during/outage.txt")).is_ok_and(|d| d == b"written while the store was down")
    });
    assert_eq!(b.read("before.txt"), b"before the outage");
}

/// The store's process killed with SIGKILL three times while a daemon
/// uploads (small files and a large one, so pack appends and index commits
/// are cut at different points) and started again over the same data: every
/// chunk the store acknowledged is still there, the daemon finishes, and a
/// second device gets every byte.
#[test]
fn a_store_killed_mid_upload_loses_nothing() {
    let mut server = Server::start();
    let a = Client::new();
    let b = Client::new();
    a.signup(&server, "storecrash@example.org");
    b.login(&server, "storecrash@example.org");
    a.write("first.txt", b"synced before the crashes");
    a.sync();
    let packs = server.data.path().join("chunks/packs");
    let stored = || -> u64 {
        let Ok(accounts) = std::fs::read_dir(&packs) else { return 0 };
        accounts
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    let mut expected = vec![("first.txt".to_string(), b"synced before the crashes".to_vec())];
    for i in 0..400u64 {
        expected.push((format!("small/s{i:03}.bin"), random_bytes(2_000 + (i as usize * 37) % 9_000, i)));
    }
    expected.push(("large.bin".to_string(), random_bytes(64 << 20, 1000)));
    for (rel, data) in &expected[1..] {
        a.write(rel, data);
    }
    let _da = a.daemon();
    let mut kills = 0;
    for _ in 0..3 {
        // Kill once more chunks have landed; an upload that finished
        // before (a fast machine) just gets fewer kills.
        let before = stored();
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while stored() <= before + 500_000 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if stored() <= before + 500_000 {
            break;
        }
        server.kill9();
        server.restart();
        kills += 1;
    }
    assert!(kills >= 1, "the store was never killed mid-upload");
    wait_until("B to get every byte A wrote", Duration::from_secs(180), || {
        b.run(&["sync", b.root.to_str().unwrap(), "--once", "--quiet"]).code == 0
            && expected.iter().all(|(rel, data)| std::fs::read(b.path(rel)).is_ok_and(|d| d == *data))
    });
    assert_eq!(b.tree(), a.tree(), "B holds exactly A's files");
}

#[test]
fn a_mass_deletion_waits_for_confirmation() {
    let server = Server::start();
    let a = Client::new();
    let b = Client::new();
    a.signup(&server, "mass@example.org");
    b.login(&server, "mass@example.org");
    for i in 0..1001 {
        a.write(&format!("many/f{i:04}"), b"x");
    }
    a.sync();
    b.sync();
    std::fs::remove_dir_all(a.path("many")).unwrap();
    let r = a.run(&["sync", a.root.to_str().unwrap(), "--once", "--quiet"]);
    assert_ne!(r.code, 0, "a round deleting 1,002 entries must not just run");
    assert!(r.stderr.contains("confirm"), "{}", r.stderr);
    b.sync();
    assert_eq!(b.tree().len(), 1002, "nothing was deleted on the store");

    a.run(&["sync", a.root.to_str().unwrap(), "--once", "--quiet", "--confirm-deletions"]).ok();
    // Each device confirms a mass deletion it would carry out, whoever
    // started it: a store (or a device) gone wrong cannot empty them all.
    let r = b.run(&["sync", b.root.to_str().unwrap(), "--once", "--quiet"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("confirm"), "{}", r.stderr);
    assert_eq!(b.tree().len(), 1002);
    b.run(&["sync", b.root.to_str().unwrap(), "--once", "--quiet", "--confirm-deletions"]).ok();
    assert!(b.tree().is_empty(), "confirmed: deleted everywhere ({} left)", b.tree().len());
    let trash = b.run(&["trash", "--dir", b.root.to_str().unwrap()]).ok().stdout;
    assert!(trash.contains("many/f0000"), "B's copies are in its trash");
}
