//! Sync through a fault-injecting proxy (`coffer_e2e::proxy`): connection
//! resets, truncated answers, 500s before and after the server applied a
//! request, stalls and duplicated requests, about one request in three,
//! from a seed. Two devices talk to the store only through it; a third
//! reads the store directly at the end.
//!
//! `COFFER_PROXY_SEED=N` replays another seed; a failure prints its seed
//! and the faults injected.

use std::collections::BTreeMap;
use std::io::Write;

use coffer_e2e::proxy::{Fault, FaultProxy, Faults};
use coffer_e2e::{random_bytes, Client, Server};

/// The seed CI runs: it fires every kind of fault (checked below).
const DEFAULT_SEED: u64 = 11;

/// A failed `sync --once` (the client's retries ran out) is what a daemon
/// would retry a moment later: so does this, up to this many times.
const TRIES: u32 = 12;

/// Runs `sync --once` until it succeeds; returns how many runs failed.
fn sync_until_ok(c: &Client, proxy: &FaultProxy) -> u32 {
    let mut last = None;
    for failed in 0..TRIES {
        let r = c.run(&["sync", c.root.to_str().expect("utf-8"), "--once", "--quiet"]);
        if r.code == 0 {
            return failed;
        }
        let _ = writeln!(std::io::stderr(), "sync gave up through the fault proxy: {}", r.stderr.trim());
        last = Some(r);
    }
    let r = last.expect("ran");
    panic!(
        "sync failed {TRIES} times through the proxy (seed {}); last stderr: {}\nfaults: {:#?}",
        proxy.seed,
        r.stderr,
        proxy.log()
    );
}

/// Every expected file is there with exactly these bytes, and nothing else.
fn holds_exactly(c: &Client, expected: &BTreeMap<String, Vec<u8>>, proxy: &FaultProxy) {
    let files: Vec<String> = c.tree().into_iter().filter(|(_, d)| d != "dir").map(|(p, _)| p).collect();
    assert_eq!(
        files,
        expected.keys().cloned().collect::<Vec<_>>(),
        "seed {}: the files differ; faults: {:#?}",
        proxy.seed,
        proxy.log()
    );
    for (rel, data) in expected {
        assert!(c.read(rel) == *data, "seed {}: {rel} is corrupted; faults: {:#?}", proxy.seed, proxy.log());
    }
}

#[test]
fn sync_through_a_faulty_network_converges_and_corrupts_nothing() {
    let seed =
        std::env::var("COFFER_PROXY_SEED").map_or(DEFAULT_SEED, |s| s.parse().expect("COFFER_PROXY_SEED"));
    let server = Server::start();
    let proxy = FaultProxy::start(&server.url, seed, Faults::mix());
    let a = Client::new();
    let b = Client::new();
    a.signup_at(&proxy.url, "proxy@example.org");
    b.login_at(&proxy.url, "proxy@example.org");
    proxy.set_enabled(true);

    // Small files (one chunk each, up to 20 KB) and multi-chunk ones.
    let mut expected = BTreeMap::new();
    for i in 0..24u64 {
        let data = random_bytes((i as usize * 877) % 20_000, seed * 1000 + i);
        expected.insert(format!("small/s{i:02}.txt"), data);
    }
    for (i, mib) in [2usize, 4, 6].into_iter().enumerate() {
        expected.insert(format!("big/b{i}.bin"), random_bytes(mib << 20, seed * 1000 + 100 + i as u64));
    }
    for (rel, data) in &expected {
        a.write(rel, data);
    }
    let mut failed = sync_until_ok(&a, &proxy);
    failed += sync_until_ok(&b, &proxy);
    holds_exactly(&b, &expected, &proxy);

    // B edits, deletes and adds; A catches up.
    for i in 0..6 {
        let rel = format!("small/s{i:02}.txt");
        let data = random_bytes(3000 + i, seed * 1000 + 200 + i as u64);
        b.write(&rel, &data);
        expected.insert(rel, data);
    }
    std::fs::remove_file(b.path("small/s06.txt")).unwrap();
    expected.remove("small/s06.txt");
    let mut big = expected["big/b1.bin"].clone();
    big[(1 << 20)..(1 << 20) + 10_000].copy_from_slice(&random_bytes(10_000, seed * 1000 + 300));
    b.write("big/b1.bin", &big);
    expected.insert("big/b1.bin".into(), big);
    let fresh = random_bytes(3 << 20, seed * 1000 + 301);
    b.write("new/fresh.bin", &fresh);
    expected.insert("new/fresh.bin".into(), fresh);
    failed += sync_until_ok(&b, &proxy);
    failed += sync_until_ok(&a, &proxy);
    holds_exactly(&a, &expected, &proxy);
    assert_eq!(a.tree(), b.tree());

    // The store itself, read without the proxy by a third device.
    let c = Client::new();
    c.login(&server, "proxy@example.org");
    c.sync();
    holds_exactly(&c, &expected, &proxy);

    let n = proxy.counts();
    // Past the harness's capture: the figures go into docs/reliability.md.
    let _ = writeln!(
        std::io::stderr(),
        "fault proxy, seed {seed}: {} requests, {} faults injected ({} resets, {} 500s before, {} 500s after \
         the server applied it, {} truncated answers, {} stalls, {} duplicated requests); {failed} sync runs \
         gave up and were run again",
        n.requests,
        n.injected(),
        n.resets,
        n.errors_before,
        n.errors_after,
        n.truncated,
        n.stalls,
        n.duplicated
    );
    assert_eq!(n.unsupported, 0, "requests the proxy could not handle: {:#?}", proxy.log());
    for (kind, count) in [
        ("reset", n.resets),
        ("500 before", n.errors_before),
        ("500 after", n.errors_after),
        ("truncated", n.truncated),
        ("stall", n.stalls),
        ("duplicate", n.duplicated),
    ] {
        // Other seeds replay what they replay; the default one must not
        // let a fault kind go untested.
        if seed == DEFAULT_SEED {
            assert!(count > 0, "seed {seed} injected no {kind}: pick a default that exercises every fault");
        } else if count == 0 {
            let _ = writeln!(std::io::stderr(), "note: seed {seed} injected no {kind}");
        }
    }
}

/// The store applies a commit but its answer is lost; the retry is refused
/// as a conflict (by that very revision); the run then stops (the store
/// unreachable). The user saves again; the next sync uploads that save
/// over the device's own previous one: no conflicted copy.
#[test]
fn a_lost_commit_answer_then_a_save_is_no_conflict_with_itself() {
    let server = Server::start();
    let proxy = FaultProxy::start(&server.url, 0, Faults::mix());
    let a = Client::new();
    let b = Client::new();
    a.signup_at(&proxy.url, "lost@example.org");
    b.login(&server, "lost@example.org");
    a.write("doc.txt", b"first");
    a.sync();
    a.write("doc.txt", b"second, whose commit answer is lost");
    proxy.script("POST /v1/commit", Fault::ErrorAfter, 1);
    proxy.script("GET /v1/journal", Fault::Reset, 4);
    let r = a.run(&["sync", a.root.to_str().unwrap(), "--once", "--quiet"]);
    assert_ne!(r.code, 0, "the scripted outage must stop this run: {}", r.stdout);
    assert_eq!(proxy.counts().errors_after, 1);
    assert_eq!(proxy.counts().resets, 4);
    a.write("doc.txt", b"third, saved before the next sync");
    a.sync();
    b.sync();
    let files: Vec<String> = a.tree().into_keys().collect();
    assert_eq!(files, ["doc.txt"], "a conflicted copy of the device's own save");
    assert_eq!(a.read("doc.txt"), b"third, saved before the next sync");
    assert_eq!(a.tree(), b.tree());
}
