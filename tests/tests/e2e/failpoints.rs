//! Crashes at every failpoint: a real `coffer sync` (the build with the
//! engine's failpoints, `coffer-failpoints`) kills itself with SIGKILL at
//! one named step between reading a file and marking it synced, or between
//! receiving a chunk and renaming a file into place. Then:
//!
//! - at rest, right after the kill: every file at a final path holds a
//!   version some user wrote there (no partial file), and nothing else is
//!   in the folder (no temp file outside `.coffer`);
//! - the device restarts and syncs, the other device syncs: both hold the
//!   latest versions, and so does a third device that starts from the store
//!   alone (convergence of both clients and the store);
//! - nothing is lost: every version written is restored from the store,
//!   byte for byte;
//! - no temp file is left behind, not even in `.coffer/tmp`.
//!
//! Every `fail_point!` in the engine has a test here:
//! `every_failpoint_in_the_engine_has_a_crash_test` reads the engine's
//! sources and fails on one without. One failpoint injects an error
//! instead of marking a crash point (`writeback-error`, a failed early
//! write-out of a large download); its test is
//! `a_failed_early_writeback_fails_the_download`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use coffer_e2e::{random_bytes, Client, Server};

/// Upload failpoints and the pass at which each kills (`name@N`): 2 for a
/// per-chunk step, so the kill lands in the middle of a multi-chunk file.
/// The index records a whole commit request in one transaction, so
/// `upload-after-index` kills after the first request.
const UPLOAD: &[&str] = &[
    "upload-read@2",
    "upload-sealed@2",
    "upload-chunks-sent",
    "upload-before-commit",
    "upload-after-commit",
    "upload-after-index",
];

/// Download failpoints, likewise.
const DOWNLOAD: &[&str] = &[
    "download-chunk-received@3",
    "download-temp-written",
    "download-temp-synced",
    "download-before-rename",
    "download-after-rename",
    "download-after-index@2",
];

/// Failpoints that inject an error instead of marking a crash point, each
/// with its own test below.
const ERRORS: &[&str] = &["writeback-error"];

/// Every version written at each path, oldest first.
#[derive(Default)]
struct Written(BTreeMap<String, Vec<Vec<u8>>>);

impl Written {
    fn put(&mut self, c: &Client, rel: &str, data: Vec<u8>) {
        c.write(rel, &data);
        self.0.entry(rel.to_string()).or_default().push(data);
    }

    fn latest(&self, rel: &str) -> &[u8] {
        self.0[rel].last().expect("written")
    }
}

/// A first version of each file, synced on both devices; then a second
/// version of each and a new file in a new folder, on `writer`. Files are
/// a small one and multi-chunk ones (chunks average 1 MiB).
fn history(a: &Client, b: &Client) -> (Written, Vec<(&'static str, Vec<u8>)>) {
    let mut w = Written::default();
    w.put(a, "small.txt", b"the first version of a small file".to_vec());
    w.put(a, "big.bin", random_bytes(5 << 20, 1));
    a.sync();
    b.sync();
    let mut edited = random_bytes(5 << 20, 1);
    edited[(2 << 20)..(2 << 20) + 4096].copy_from_slice(&random_bytes(4096, 2));
    let second = vec![
        ("small.txt", b"a second version, longer than the first one".to_vec()),
        ("big.bin", edited),
        ("new/fresh.bin", random_bytes(3 << 20, 3)),
    ];
    (w, second)
}

/// Right after the kill: each file at a final path is a version a user
/// wrote there; nothing else is in the folder.
fn check_at_rest(c: &Client, w: &Written) {
    for (rel, desc) in c.tree() {
        if desc == "dir" {
            continue;
        }
        let versions = w.0.get(&rel).unwrap_or_else(|| panic!("{rel} appeared in the folder ({desc})"));
        let data = c.read(&rel);
        assert!(versions.contains(&data), "{rel} holds bytes nobody wrote ({desc}): a partial file");
    }
}

/// No download temp file left in the state folder.
fn no_temp_files(c: &Client) {
    let tmp = c.path(".coffer/tmp");
    let left: Vec<String> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temp files left in {}: {left:?}", tmp.display());
}

/// Both devices and the store hold the latest version of everything, and
/// every version written can be restored from the store.
fn converged_and_nothing_lost(server: &Server, a: &Client, b: &Client, w: &Written) {
    assert_eq!(a.tree(), b.tree(), "the two devices differ");
    let files: BTreeSet<String> = a.tree().into_iter().filter(|(_, d)| d != "dir").map(|(p, _)| p).collect();
    assert_eq!(files, w.0.keys().cloned().collect(), "the files are not the ones written");
    for rel in w.0.keys() {
        assert!(a.read(rel) == w.latest(rel), "{rel} is not its latest version");
    }
    let c = Client::new();
    c.login(server, "crash@example.org");
    c.sync();
    assert_eq!(c.tree(), a.tree(), "the store's tree differs from the devices'");
    no_temp_files(a);
    no_temp_files(b);
    for (rel, versions) in &w.0 {
        let kept = restore_every_version(&c, rel);
        for (i, v) in versions.iter().enumerate() {
            assert!(kept.contains(v), "version {} of {rel} ({} bytes) is lost", i + 1, v.len());
        }
    }
}

/// Every live revision of `rel` on the store, restored and read on `c`.
fn restore_every_version(c: &Client, rel: &str) -> Vec<Vec<u8>> {
    let dir = c.root.to_str().expect("utf-8");
    let json = c.run(&["versions", rel, "--dir", dir, "--json"]).ok().stdout;
    let list: serde_json::Value = serde_json::from_str(&json).expect("versions --json");
    let revisions: Vec<u64> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter(|v| v["deleted"] == false)
        .map(|v| v["revision"].as_u64().expect("revision"))
        .collect();
    let mut kept = Vec::new();
    for r in revisions {
        c.run(&["restore", rel, "--version", &r.to_string(), "--dir", dir]).ok();
        c.sync();
        kept.push(c.read(rel));
    }
    kept
}

fn devices(server: &Server) -> (Client, Client) {
    let a = Client::new();
    let b = Client::new();
    a.signup(server, "crash@example.org");
    b.login(server, "crash@example.org");
    (a, b)
}

/// Device A is killed at `failpoint` while uploading second versions.
fn crash_uploading(failpoint: &str) {
    let server = Server::start();
    let (a, b) = devices(&server);
    let (mut w, second) = history(&a, &b);
    for (rel, data) in second {
        w.put(&a, rel, data);
    }
    a.sync_killed_at(failpoint);
    check_at_rest(&a, &w);
    a.sync();
    b.sync();
    converged_and_nothing_lost(&server, &a, &b, &w);
}

/// Device B is killed at `failpoint` while downloading second versions
/// (over its first ones) and a new file.
fn crash_downloading(failpoint: &str) {
    let server = Server::start();
    let (a, b) = devices(&server);
    let (mut w, second) = history(&a, &b);
    for (rel, data) in second {
        w.put(&a, rel, data);
    }
    a.sync();
    b.sync_killed_at(failpoint);
    check_at_rest(&b, &w);
    b.sync();
    a.sync();
    converged_and_nothing_lost(&server, &a, &b, &w);
}

macro_rules! crash_tests {
    ($run:ident, $list:ident: $($name:ident => $fp:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                assert!($list.contains(&$fp));
                $run($fp);
            }
        )*
    };
}

crash_tests!(crash_uploading, UPLOAD:
    kill_9_at_upload_read => "upload-read@2",
    kill_9_at_upload_sealed => "upload-sealed@2",
    kill_9_at_upload_chunks_sent => "upload-chunks-sent",
    kill_9_at_upload_before_commit => "upload-before-commit",
    kill_9_at_upload_after_commit => "upload-after-commit",
    kill_9_at_upload_after_index => "upload-after-index",
);

crash_tests!(crash_downloading, DOWNLOAD:
    kill_9_at_download_chunk_received => "download-chunk-received@3",
    kill_9_at_download_temp_written => "download-temp-written",
    kill_9_at_download_temp_synced => "download-temp-synced",
    kill_9_at_download_before_rename => "download-before-rename",
    kill_9_at_download_after_rename => "download-after-rename",
    kill_9_at_download_after_index => "download-after-index@2",
);

#[test]
fn every_failpoint_in_the_engine_has_a_crash_test() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/coffer-engine/src");
    let mut in_engine = BTreeSet::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("engine sources").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("read");
                for part in text.split("fail_point!(\"").skip(1) {
                    in_engine.insert(part.split('"').next().expect("name").to_string());
                }
            }
        }
    }
    let tested: BTreeSet<String> = UPLOAD
        .iter()
        .chain(DOWNLOAD)
        .chain(ERRORS)
        .map(|f| f.split('@').next().expect("name").to_string())
        .collect();
    assert_eq!(in_engine.len(), 13, "failpoints in the engine: {in_engine:?}");
    assert_eq!(in_engine, tested, "each failpoint in the engine needs a crash test here, and only those");
}

/// The disk fails to write out a large download while it is being written
/// (the early writeback, from 32 MiB on): the kernel reports such an error
/// once per open file, so the download must take it from the writeback
/// itself. B places nothing, keeps no temp file, and takes the file whole
/// on its next sync.
#[test]
fn a_failed_early_writeback_fails_the_download() {
    let server = Server::start();
    let (a, b) = devices(&server);
    let mut w = Written::default();
    w.put(&a, "large.bin", random_bytes(48 << 20, 7));
    a.sync();
    assert!(ERRORS.contains(&"writeback-error"));
    let out = b
        .command_of(&coffer_e2e::failpoints_bin())
        .args(["sync", b.root.to_str().expect("utf-8"), "--once"])
        .env("FAILPOINTS", "writeback-error=return")
        .output()
        .expect("run coffer-failpoints");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the sync succeeded: {said}");
    assert!(said.contains("large.bin"), "the failed file is not named: {said}");
    assert!(!b.root.join("large.bin").exists(), "a file whose write-out failed was placed");
    no_temp_files(&b);
    b.sync();
    converged_and_nothing_lost(&server, &a, &b, &w);
}

/// Killed after the store applied its commit, before recording it; the user
/// saves again before the next sync. That sync must upload the new save
/// over the device's own previous upload, not make a conflicted copy of
/// the newest save against it.
#[test]
fn an_edit_after_a_kill_9_after_commit_is_no_conflict_with_itself() {
    let server = Server::start();
    let (a, b) = devices(&server);
    let mut w = Written::default();
    w.put(&a, "doc.txt", b"first".to_vec());
    a.sync();
    b.sync();
    w.put(&a, "doc.txt", b"second, committed by a client killed right after".to_vec());
    a.sync_killed_at("upload-after-commit");
    w.put(&a, "doc.txt", b"third, saved before the next sync".to_vec());
    a.sync();
    b.sync();
    assert!(a.run(&["conflicts", "--dir", a.root.to_str().unwrap()]).ok().stdout.contains("No conflicts"));
    converged_and_nothing_lost(&server, &a, &b, &w);
}

/// Both devices edited; B is killed while placing A's version after moving
/// its own aside as a conflicted copy. After a restart both versions are
/// on both devices: A's at the name, B's in the conflicted copy.
#[test]
fn kill_9_while_placing_the_other_side_of_a_conflict() {
    let server = Server::start();
    let (a, b) = devices(&server);
    a.write("doc.txt", b"first");
    a.sync();
    b.sync();
    a.write("doc.txt", b"A's edit");
    a.sync();
    b.write("doc.txt", b"B's edit, made at the same time");
    b.sync_killed_at("download-before-rename");
    if b.path("doc.txt").exists() {
        assert_eq!(b.read("doc.txt"), b"B's edit, made at the same time", "a partial doc.txt");
    }
    b.sync();
    a.sync();
    b.sync();
    assert_eq!(a.tree(), b.tree());
    assert_eq!(a.read("doc.txt"), b"A's edit");
    let others: Vec<String> = a.tree().into_keys().filter(|p| p != "doc.txt").collect();
    assert_eq!(others.len(), 1, "one conflicted copy: {others:?}");
    assert!(others[0].contains("conflicted copy"), "{others:?}");
    assert_eq!(a.read(&others[0]), b"B's edit, made at the same time");
    no_temp_files(&a);
    no_temp_files(&b);
}

/// Downloads are placed a group of 256 at a time, and a group waits for
/// the disk (its sync, its folders' fsync) while the next group is
/// fetched. B is killed in the middle of that, at each step of the second
/// group's placing, with the third group's temp files being written: at
/// rest every file holds what A wrote, and after a restart B holds
/// exactly A's tree, with no temp file left.
#[test]
fn kill_9_while_a_group_is_placed_and_the_next_fetched() {
    // Per group: one `download-temp-synced` and one `download-after-index`
    // (which the 7 folders, made first, pass too); per file, one
    // `download-after-rename`.
    for failpoint in ["download-temp-synced@2", "download-after-rename@300", "download-after-index@9"] {
        let server = Server::start();
        let (a, b) = devices(&server);
        let mut w = Written::default();
        for i in 0..700u64 {
            w.put(
                &a,
                &format!("d{}/f{i:03}.bin", i % 7),
                random_bytes(1_000 + (i as usize * 53) % 12_000, i),
            );
        }
        a.sync();
        b.sync_killed_at(failpoint);
        check_at_rest(&b, &w);
        let placed = b.tree().values().filter(|d| *d != "dir").count();
        assert!(placed < 700, "{failpoint}: B was killed after placing every file");
        b.sync();
        assert_eq!(a.tree(), b.tree(), "{failpoint}: B differs from A after a restart");
        for rel in w.0.keys() {
            assert!(b.read(rel) == w.latest(rel), "{failpoint}: {rel} is not what A wrote");
        }
        no_temp_files(&b);
    }
}

/// A panic in the sync engine (a bug) used to leave the daemon running with
/// nothing syncing: the engine's task died, the process, its pid file and
/// its last status stayed, and only a restart brought sync back. Seen once
/// in a benchmark run whose disk had filled up, where the panic's message
/// was lost too (its log was on that disk). The daemon now exits, non-zero,
/// saying why.
#[test]
fn a_daemon_whose_engine_panics_exits_saying_so() {
    let server = Server::start();
    let (a, _b) = devices(&server);
    a.write("first.txt", b"synced before the bug");
    a.sync();
    let mut daemon = a
        .command_of(&coffer_e2e::failpoints_bin())
        .args(["sync", a.root.to_str().expect("utf-8"), "--quiet", "--rescan-secs", "5"])
        .env("FAILPOINTS", "upload-read=panic(a test's panic)")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the daemon");
    a.write("second.txt", b"its upload panics");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = daemon.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > end {
            let _ = daemon.kill();
            panic!("the daemon is still running after its engine panicked");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut daemon.stderr.take().expect("stderr"), &mut stderr).expect("read");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("the sync engine stopped unexpectedly") && stderr.contains("a test's panic"),
        "{stderr}"
    );
    assert!(!a.path(".coffer/daemon.pid").exists(), "the pid file is left: {stderr}");
    // The status it leaves says so too (the desktop app and `coffer
    // status` read it), instead of the state it was in.
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.path(".coffer/status.json")).expect("status.json"))
            .expect("json");
    assert_eq!(status["state"], "error", "{status}");
    let why = status["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("stopped unexpectedly") && why.contains("a test's panic"), "{status}");
}
