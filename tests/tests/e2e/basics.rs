//! Creating, editing, deleting, renaming and moving files and folders, with
//! links, empty folders and the executable bit, between two devices.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use coffer_e2e::{random_bytes, wait_until, Client, Server};

fn pair() -> (Server, Client, Client) {
    let server = Server::start();
    let a = Client::new();
    let b = Client::new();
    a.signup(&server, "ann@example.org");
    b.login(&server, "ann@example.org");
    (server, a, b)
}

#[test]
fn create_edit_delete_rename_and_move_between_two_devices() {
    let (_server, a, b) = pair();
    a.write("notes.txt", b"first");
    a.write("docs/report.md", b"# report");
    a.write("docs/deep/er/data.bin", &random_bytes(300_000, 1));
    a.write("script.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(a.path("script.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(a.path("empty/nested")).unwrap();
    std::os::unix::fs::symlink("notes.txt", a.path("link-to-notes")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", a.path("abs-link")).unwrap();
    a.sync();
    b.sync();
    assert_eq!(a.tree(), b.tree());
    assert!(b.tree()["script.sh"].ends_with(" x"), "executable bit travels");
    assert_eq!(b.tree()["link-to-notes"], "link -> notes.txt", "links are synced as links, not followed");

    // Edit, delete, rename and move on B.
    b.write("notes.txt", b"second version, longer");
    std::fs::remove_file(b.path("docs/report.md")).unwrap();
    std::fs::rename(b.path("docs/deep"), b.path("moved-deep")).unwrap();
    std::fs::rename(b.path("script.sh"), b.path("run.sh")).unwrap();
    std::fs::remove_dir(b.path("empty/nested")).unwrap();
    b.sync();
    a.sync();
    assert_eq!(a.tree(), b.tree());
    assert_eq!(a.read("notes.txt"), b"second version, longer");
    assert!(!a.path("docs/report.md").exists());
    assert_eq!(a.read("moved-deep/er/data.bin"), random_bytes(300_000, 1));
    assert!(a.tree()["run.sh"].ends_with(" x"));
    // What sync removed on A is in its trash, not gone.
    let trash = a.run(&["trash", "--dir", a.root.to_str().unwrap()]).ok().stdout;
    assert!(trash.contains("docs/report.md"), "{trash}");

    // A second round finds nothing to do.
    let out = a.sync().stdout;
    assert!(out.contains("0 uploaded, 0 downloaded, 0 deleted"), "{out}");
}

#[test]
fn five_thousand_small_files() {
    let (_server, a, b) = pair();
    for i in 0..5000 {
        a.write(&format!("d{:02}/f{i:04}.txt", i % 50), format!("file {i}\n").repeat(1 + i % 7).as_bytes());
    }
    // Ten commit batches, each sent while the next is read: every upload
    // is counted once.
    let out = a.sync().stdout;
    assert!(out.contains("5050 uploaded"), "{out}");
    b.sync();
    let tree = b.tree();
    assert_eq!(tree.len(), 5000 + 50);
    assert_eq!(a.tree(), tree);
}

#[test]
fn live_daemons_propagate_changes_quickly() {
    let (_server, a, b) = pair();
    std::fs::create_dir_all(&a.root).unwrap();
    std::fs::create_dir_all(&b.root).unwrap();
    let _da = a.daemon();
    let _db = b.daemon();
    wait_until("both daemons set up", Duration::from_secs(30), || {
        a.path(".coffer/status.json").exists() && b.path(".coffer/status.json").exists()
    });
    a.write("hello.txt", b"from A");
    wait_until("hello.txt on B", Duration::from_secs(20), || {
        std::fs::read(b.path("hello.txt")).is_ok_and(|d| d == b"from A")
    });
    b.write("sub/reply.txt", b"from B");
    wait_until("reply on A", Duration::from_secs(20), || {
        std::fs::read(a.path("sub/reply.txt")).is_ok_and(|d| d == b"from B")
    });
    std::fs::remove_file(a.path("hello.txt")).unwrap();
    wait_until("deletion on B", Duration::from_secs(20), || !b.path("hello.txt").exists());
}

/// A daemon hears of its own commit from the store's long-poll while its
/// round makes it. Once a round has found nothing left to do, that news
/// starts no further round: each would load and plan the whole tree again
/// (80 ms at 10,000 files, and more with the tree). A write makes two
/// rounds: the one that uploads it and the one that finds nothing left.
#[test]
fn a_daemon_does_not_plan_again_for_news_of_its_own_commit() {
    let server = Server::start();
    let a = Client::new();
    a.signup(&server, "ann@example.org");
    std::fs::create_dir_all(&a.root).unwrap();
    let log = a.home.join("daemon.log");
    let _daemon = coffer_e2e::Proc::from_child(
        a.command()
            .env("RUST_LOG", "coffer_engine::sync=debug")
            .args(["sync", a.root.to_str().unwrap(), "--quiet", "--rescan-secs", "600"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let rounds = || std::fs::read_to_string(&log).unwrap_or_default().matches("round planned").count();
    wait_until("the daemon set up", Duration::from_secs(30), || a.path(".coffer/status.json").exists());
    std::thread::sleep(Duration::from_millis(1500));
    let (before, commits) = (rounds(), server.metric("coffer_commits_total"));
    a.write("hello.txt", b"from A");
    wait_until("the commit", Duration::from_secs(20), || server.metric("coffer_commits_total") > commits);
    std::thread::sleep(Duration::from_secs(2));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(rounds() - before, 2, "rounds after the write; the daemon's log:\n{log_text}");
}
