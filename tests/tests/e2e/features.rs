//! Selective sync, ignore rules, version history and restore, the trash, and
//! delta uploads of a large file.

use coffer_e2e::{random_bytes, Client, Server};

fn pair(email: &str) -> (Server, Client, Client) {
    let server = Server::start();
    let a = Client::new();
    let b = Client::new();
    a.signup(&server, email);
    b.login(&server, email);
    (server, a, b)
}

fn dir(c: &Client) -> &str {
    c.root.to_str().unwrap()
}

#[test]
fn selective_sync_excludes_and_includes_a_folder() {
    let (_s, a, b) = pair("sel@example.org");
    a.write("photos/2025/a.jpg", &random_bytes(50_000, 2));
    a.write("photos/b.jpg", b"bbb");
    a.write("docs/keep.txt", b"keep");
    a.sync();
    b.sync();
    assert!(b.path("photos/b.jpg").exists());

    // Unchecking a synced folder removes its local copy only.
    b.run(&["exclude", "photos", "--dir", dir(&b)]).ok();
    assert!(!b.path("photos").exists(), "local copy removed");
    b.sync();
    a.sync();
    assert!(a.path("photos/b.jpg").exists(), "still on the store and on A");

    // New files in the excluded folder never reach B.
    a.write("photos/new.jpg", b"new");
    a.sync();
    b.sync();
    assert!(!b.path("photos").exists());

    // A folder holding unsynced work is not removed.
    b.write("docs/unsynced.txt", b"not yet synced");
    let refused = b.run(&["exclude", "docs", "--dir", dir(&b)]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("not synced"), "{}", refused.stderr);
    assert!(b.path("docs/unsynced.txt").exists());

    b.run(&["include", "photos", "--dir", dir(&b)]).ok();
    b.sync();
    assert_eq!(b.read("photos/new.jpg"), b"new");
    assert_eq!(b.read("photos/2025/a.jpg"), random_bytes(50_000, 2));
}

#[test]
fn cofferignore_and_temp_files_are_not_synced() {
    let (_s, a, b) = pair("ign@example.org");
    a.write(".cofferignore", b"*.log\nbuild/\n!important.log\n");
    a.write("app.log", b"noise");
    a.write("important.log", b"keep me");
    a.write("build/out.o", b"object");
    a.write("src/main.rs", b"fn main() {}");
    a.write("src/.main.rs.swp", b"vim swap");
    a.write("~$report.docx", b"office lock");
    a.sync();
    b.sync();
    let tree = b.tree();
    assert!(tree.contains_key(".cofferignore"), "the rules themselves are synced");
    assert!(tree.contains_key("important.log"));
    assert!(tree.contains_key("src/main.rs"));
    for ignored in ["app.log", "build", "build/out.o", "src/.main.rs.swp", "~$report.docx"] {
        assert!(!tree.contains_key(ignored), "{ignored} should be ignored: {tree:?}");
    }
}

#[test]
fn old_versions_can_be_listed_and_restored() {
    let (_s, a, b) = pair("ver@example.org");
    a.write("essay.txt", b"draft one");
    a.sync();
    a.write("essay.txt", b"draft two");
    a.sync();
    a.write("essay.txt", b"draft three, ruined");
    a.sync();
    b.sync();
    let listed = a.run(&["versions", "essay.txt", "--dir", dir(&a), "--json"]).ok().stdout;
    let versions: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 3, "{listed}");

    a.run(&["restore", "essay.txt", "--version", "1", "--dir", dir(&a)]).ok();
    a.sync();
    b.sync();
    assert_eq!(a.read("essay.txt"), b"draft one");
    assert_eq!(b.read("essay.txt"), b"draft one");

    // A deleted file comes back from the store's history too.
    std::fs::remove_file(a.path("essay.txt")).unwrap();
    a.sync();
    b.sync();
    assert!(!b.path("essay.txt").exists());
    b.run(&["restore", "essay.txt", "--dir", dir(&b)]).ok();
    b.sync();
    a.sync();
    assert_eq!(a.read("essay.txt"), b"draft one");
}

#[test]
fn a_deletion_can_be_undone_from_the_trash() {
    let (_s, a, b) = pair("trash@example.org");
    a.write("keep/me.txt", b"precious");
    a.sync();
    b.sync();
    std::fs::remove_file(a.path("keep/me.txt")).unwrap();
    a.sync();
    b.sync();
    assert!(!b.path("keep/me.txt").exists());
    let listed = b.run(&["trash", "--dir", dir(&b)]).ok().stdout;
    assert!(listed.contains("keep/me.txt"), "{listed}");
    b.run(&["trash", "--restore", "keep/me.txt", "--dir", dir(&b)]).ok();
    b.sync();
    a.sync();
    assert_eq!(a.read("keep/me.txt"), b"precious");
}

/// A 200 MiB file, then a one-byte edit in its middle: only about one chunk
/// (and the metadata) travels the second time.
#[test]
fn a_one_byte_edit_to_a_large_file_sends_one_chunk() {
    let (server, a, b) = pair("big@example.org");
    let mut data = random_bytes(200 << 20, 3);
    a.write("big.bin", &data);
    let first = a.sync().stdout;
    let sent_first = sent_bytes(&first);
    assert!(sent_first >= 200 << 20, "{first}");
    // In requests of up to 8 MiB (the engine's `BATCH_BYTES`), none of
    // them carrying a lone chunk.
    let uploads = server.metric("coffer_chunk_uploads_total");
    assert!(uploads <= sent_first.div_ceil(8 << 20) + 1, "{uploads} upload requests for {sent_first} bytes");
    b.sync();
    assert_eq!(b.read("big.bin").len(), data.len());

    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    a.write("big.bin", &data);
    let received_before = server.metric("coffer_chunk_bytes_received_total");
    let stored_before = server.metric("coffer_chunk_bytes_stored_total");
    let ids_before = server.metric("coffer_chunk_ids_named_total");
    let second = a.sync().stdout;
    let sent = sent_bytes(&second);
    // One chunk (at most 512 KiB) and one or two pieces of the chunk list.
    assert!(sent > 0 && sent <= 1 << 20, "a one-byte edit sent {sent} bytes: {second}");
    // Nor do the ids of the unchanged chunks travel: the upload skips the
    // base revision's chunks and the commit names only the difference.
    let ids = server.metric("coffer_chunk_ids_named_total") - ids_before;
    assert!(ids <= 8, "a one-byte edit named {ids} chunk ids (first sync: {ids_before})");
    assert!(ids_before >= 100, "the first sync named {ids_before} chunk ids");
    // The store's own counters agree.
    let received = server.metric("coffer_chunk_bytes_received_total") - received_before;
    let stored = server.metric("coffer_chunk_bytes_stored_total") - stored_before;
    assert!(received > 0 && received <= 1 << 20, "the store received {received} bytes");
    assert!(stored > 0 && stored <= received, "the store stored {stored} new bytes");
    let served_before = server.metric("coffer_chunk_bytes_served_total");
    b.sync();
    assert!(b.read("big.bin") == data, "B has the edited file");
    // B copies the unchanged chunks from its old version: one chunk comes down.
    let served = server.metric("coffer_chunk_bytes_served_total") - served_before;
    assert!(served > 0 && served <= 1 << 20, "B downloaded {served} bytes for a one-byte edit");
}

/// Many small files reach B in a few batched requests (`POST
/// /v1/chunks/get`), not one request each.
#[test]
fn small_files_download_in_batches() {
    let (server, a, b) = pair("batch@example.org");
    for i in 0..300 {
        a.write(&format!("d{}/f{i}.txt", i % 3), format!("file {i}").as_bytes());
    }
    a.sync();
    let before = server.metric("coffer_chunk_requests_total");
    b.sync();
    let requests = server.metric("coffer_chunk_requests_total") - before;
    assert_eq!(b.tree(), a.tree());
    assert_eq!(b.tree().len(), 300 + 3, "300 files in 3 folders");
    assert!(requests <= 6, "{requests} chunk requests for 300 small files");
}

fn sent_bytes(out: &str) -> u64 {
    out.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[1].starts_with("bytes"))
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {out:?}"))
}

/// The chunk sizes are the account's, fixed at signup: A makes the account
/// with 8/32/128 KiB (`COFFER_CHUNK_KIB` at signup), B logs in without the
/// variable and cuts a new file with the account's sizes, not its build's;
/// A, reading the same bytes again, finds the same chunks and sends none.
#[test]
fn every_device_cuts_with_the_accounts_chunk_sizes() {
    use std::io::Write;
    use std::process::Stdio;
    let server = Server::start();
    let (a, b) = (Client::new(), Client::new());
    let mut signup = a
        .command()
        .args(["signup", "--server", &server.url, "--email", "sizes@example.org", "--password-stdin"])
        .env("COFFER_CHUNK_KIB", "8,32,128")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(signup.stdin.take().unwrap(), "{}", coffer_e2e::PASSWORD).unwrap();
    assert!(signup.wait().unwrap().success());
    b.login(&server, "sizes@example.org");

    let data = random_bytes(8 << 20, 11);
    b.write("big.bin", &data);
    b.sync();
    // 8 MiB in chunks of about 36 KiB on average is about 230 chunks; with
    // this build's default sizes it would be about 95 (and 56 with the
    // sizes of accounts older than settings).
    let stored = server.metric("coffer_chunks_stored_total");
    assert!((170..=300).contains(&stored), "B stored {stored} chunks for 8 MiB at the account's 32 KiB");

    a.sync();
    assert!(a.read("big.bin") == data);
    // A new mtime makes A read the file again: same sizes, same chunks.
    let f = std::fs::File::options().write(true).open(a.path("big.bin")).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
    drop(f);
    a.sync();
    assert_eq!(server.metric("coffer_chunks_stored_total"), stored, "A cut the same bytes differently");
}

/// The staging files (`pv-*.part`) in a device's state folder, with sizes.
fn staging_files(c: &Client) -> Vec<(std::path::PathBuf, u64)> {
    let Ok(dir) = std::fs::read_dir(c.path(".coffer/tmp")) else { return Vec::new() };
    dir.flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("pv-") && n.ends_with(".part")))
        .map(|e| (e.path(), e.metadata().map_or(0, |m| m.len())))
        .collect()
}

/// Starts a `coffer sync --once` of `c` that holds each commit back for
/// `ms` milliseconds after its chunks are stored (the failpoints build).
fn sync_holding_commits(c: &Client, ms: u64) -> std::process::Child {
    c.command_of(&coffer_e2e::failpoints_bin())
        .args(["sync", dir(c), "--once", "--quiet"])
        .env("FAILPOINTS", format!("upload-before-commit=sleep({ms})"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start a sync holding its commits")
}

/// A store slow to serve the chunks of a preview does not hold the
/// download up: B's preview staging waits on a chunk request the network
/// holds for 45 s, and after A's commit B's download waits for that
/// staging at most 10 s, then downloads without it. B holds the right
/// bytes well before the held request ends, and the staging file is gone
/// once it does.
#[test]
fn a_download_does_not_wait_long_for_a_stalled_preview() {
    use std::time::{Duration, Instant};

    use coffer_e2e::proxy::{Fault, FaultProxy, Faults};

    const STALL: Duration = Duration::from_secs(45);
    let server = Server::start();
    let proxy = FaultProxy::start(&server.url, 1, Faults::scripted(STALL));
    let a = Client::new();
    let b = Client::new();
    a.signup(&server, "stalled-preview@example.org");
    b.login_at(&proxy.url, "stalled-preview@example.org");
    let mut daemon = b.daemon();
    coffer_e2e::wait_until("B's daemon to start", Duration::from_secs(30), || {
        b.path(".coffer/status.json").exists() && b.path(".coffer/daemon.pid").exists()
    });
    std::thread::sleep(Duration::from_secs(1));
    // B has nothing to download before A's commit: its first chunk
    // request is its staging of A's first preview.
    proxy.script("/chunks/get", Fault::Stall, 1);

    const SIZE: usize = 48 << 20;
    let data = random_bytes(SIZE, 73);
    a.write("big.bin", &data);
    let mut upload = sync_holding_commits(&a, 6000);
    coffer_e2e::wait_until("B's staging request to be held", Duration::from_secs(60), || {
        proxy.counts().stalls == 1
    });
    let held_at = Instant::now();
    assert!(upload.wait().expect("wait").success(), "A's sync failed");
    let committed = Instant::now();
    coffer_e2e::wait_until("B to have the file", Duration::from_secs(60), || {
        std::fs::metadata(b.path("big.bin")).is_ok_and(|m| m.len() == SIZE as u64)
    });
    let arrived = Instant::now();
    assert!(b.read("big.bin") == data, "B's copy differs");
    // Waiting for the held request would have taken until it ends.
    assert!(
        arrived < held_at + STALL - Duration::from_secs(5),
        "B waited for the stalled preview: the file came {:?} after A's commit, {:?} after the hold began",
        arrived - committed,
        arrived - held_at
    );
    coffer_e2e::wait_until("the staging file to go", STALL + Duration::from_secs(30), || {
        staging_files(&b).is_empty()
    });
    assert_eq!(proxy.counts().stalls, 1);
    daemon.terminate();
}

/// A large new file is fetched by the other device while it uploads: the
/// uploader posts previews of the chunks the store holds, the other
/// device's daemon stages those into a file before the commit, and the
/// download after the commit goes on from it (the staging file becomes the
/// file: same inode). A file in a folder that device excluded is not
/// staged, and no staging file is left behind.
#[test]
fn a_large_new_file_is_fetched_while_it_uploads() {
    use std::time::Duration;
    let (_s, a, b) = pair("preview@example.org");
    a.write("excluded/small.txt", b"x");
    a.sync();
    b.sync();
    b.run(&["exclude", "excluded", "--dir", dir(&b)]).ok();
    let mut daemon = b.daemon();
    coffer_e2e::wait_until("B's daemon to start", Duration::from_secs(30), || {
        b.path(".coffer/status.json").exists() && b.path(".coffer/daemon.pid").exists()
    });
    // Its preview long-poll starts from the position it finds at start.
    std::thread::sleep(Duration::from_secs(1));

    const SIZE: usize = 48 << 20;
    let data = random_bytes(SIZE, 71);
    a.write("big.bin", &data);
    a.write("excluded/big.bin", &random_bytes(SIZE, 72));
    let mut upload = sync_holding_commits(&a, 12000);
    // All but the last batch (up to 8 MiB, sent with the commit) is staged
    // on B before A commits.
    coffer_e2e::wait_until("B to stage the upload", Duration::from_secs(60), || {
        staging_files(&b).iter().any(|(_, len)| *len >= (SIZE - (16 << 20)) as u64)
    });
    assert!(upload.try_wait().expect("wait").is_none(), "A's sync ended before B staged its upload");
    assert!(!b.path("big.bin").exists());
    let staged = staging_files(&b);
    assert_eq!(staged.len(), 1, "only the file B will download is staged: {staged:?}");
    let inode = coffer_e2e::inode(&staged[0].0);
    assert!(upload.wait().expect("wait").success(), "A's sync failed");
    coffer_e2e::wait_until("B to have the file", Duration::from_secs(60), || {
        std::fs::metadata(b.path("big.bin")).is_ok_and(|m| m.len() == SIZE as u64)
    });
    assert!(b.read("big.bin") == data, "B's copy differs");
    assert_eq!(coffer_e2e::inode(&b.path("big.bin")), inode, "the staging file became the file");
    assert!(staging_files(&b).is_empty(), "a staging file is left: {:?}", staging_files(&b));
    assert!(!b.path("excluded").exists());
    daemon.terminate();
}
