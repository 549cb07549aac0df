//! The simulation's tests: many seeds (`COFFER_SIM_SEEDS`, default 2000),
//! determinism, scenarios for the bugs it found, and proof that its checks
//! do catch what they claim to; a hostile store (`integration/hostile.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use coffer_sim::{run, run_catching, SimConfig, World};

mod integration {
    pub mod hostile;
}

fn seeds() -> u64 {
    std::env::var("COFFER_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000)
}

fn world(devices: usize) -> (tokio::runtime::Runtime, SimConfig) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    (rt, SimConfig { seed: 7, steps: 0, devices, log_lines: 100 })
}

/// CI's run: every seed converges, loses nothing, writes nothing partial or
/// outside a root, and terminates. Prints the rate (for docs/reliability.md).
#[test]
fn many_seeds_keep_every_invariant() {
    let n = seeds();
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let jobs = std::thread::available_parallelism().map_or(2, |p| p.get()).min(4);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= n {
                    break;
                }
                if let Err(f) = run_catching(SimConfig::new(seed)) {
                    failures.lock().unwrap().push(f.to_string());
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "coffer-sim: {n} seeds in {secs:.1} s with {jobs} threads: {:.0} seeds/minute",
        n as f64 * 60.0 / secs.max(1e-9)
    );
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} seed(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// The same seed gives the same history and the same final state, also
/// when other runs happened in between in the same process.
#[test]
fn the_same_seed_gives_the_same_history() {
    for seed in [1, 2, 4, 1000, 123_456] {
        let config = SimConfig { seed, steps: 60, ..SimConfig::new(seed) };
        let a = run(config).unwrap();
        let _ = run(SimConfig::new(seed + 1));
        let b = run(config).unwrap();
        assert_eq!(a, b, "seed {seed}");
    }
    // Long runs with many concurrent downloads, crashes and mid-round
    // saves: where blocking-pool timing could leak into the history.
    for seed in [10_022, 10_023] {
        let config = SimConfig { steps: 200, devices: 4, ..SimConfig::new(seed) };
        assert_eq!(run(config).unwrap(), run(config).unwrap(), "seed {seed}");
    }
    let x = run(SimConfig { steps: 60, ..SimConfig::new(5) }).unwrap();
    let y = run(SimConfig { steps: 60, ..SimConfig::new(6) }).unwrap();
    assert_ne!(x.digest, y.digest, "different seeds, different histories");
}

/// A failure names the command that replays it.
#[test]
fn a_failure_prints_the_replay_command() {
    let config = SimConfig { steps: 17, devices: 2, ..SimConfig::new(42) };
    let f = coffer_sim::Failure { config, message: "x".into(), log_tail: vec![] };
    assert!(f.to_string().contains("cargo run -p coffer-sim -- --seed 42 --steps 17 --devices 2"), "{f}");
}

/// Found by the simulation: a device that joined after a path was deleted
/// never heard of that deletion (a snapshot lists live entries only), so a
/// file it then created there was committed on base 0, refused as a
/// conflict, and deferred forever.
#[test]
fn a_new_device_can_reuse_a_name_deleted_before_it_joined() {
    let (rt, config) = world(2);
    rt.block_on(async {
        let mut w = World::new(config).await.unwrap();
        w.write(0, "notes.md", b"first").unwrap();
        w.sync(0).await.unwrap();
        w.remove(0, "notes.md").unwrap();
        w.sync(0).await.unwrap();
        w.write(1, "notes.md", b"second, on a device that joined later").unwrap();
        w.sync(1).await.unwrap();
        w.sync(1).await.unwrap();
        w.converge_and_check().await.map_err(|e| format!("{e}\n{:#?}", w.log())).unwrap();
        let on_dev0 = coffer_engine::fs::Fs::open_read(w.disk(), &w.root(0).join("notes.md"));
        assert!(on_dev0.is_ok(), "{:#?}", w.log());
    });
}

/// Found by the simulation: a name deleted in NFC form and created again in
/// NFD form (the same entry) never synced.
#[test]
fn a_name_deleted_in_one_unicode_form_can_be_created_in_the_other() {
    let (rt, config) = world(2);
    rt.block_on(async {
        let mut w = World::new(config).await.unwrap();
        w.write(0, "caf\u{e9}.txt", b"nfc").unwrap();
        w.sync(0).await.unwrap();
        w.sync(1).await.unwrap();
        w.remove(0, "caf\u{e9}.txt").unwrap();
        w.sync(0).await.unwrap();
        w.write(0, "cafe\u{301}.txt", b"nfd").unwrap();
        w.sync(0).await.unwrap();
        w.converge_and_check().await.map_err(|e| format!("{e}\n{:#?}", w.log())).unwrap();
    });
}

/// Found by the simulation: a user saving a file just before sync moved a
/// downloaded version into place lost the save (the rename replaced it).
/// Every effect of the round is tried as the moment of the save.
#[test]
fn a_save_during_a_download_is_never_replaced() {
    for after in 0..40 {
        let (rt, config) = world(2);
        rt.block_on(async {
            let mut w = World::new(config).await.unwrap();
            w.write(0, "doc.txt", b"version 1").unwrap();
            w.sync(0).await.unwrap();
            w.sync(1).await.unwrap();
            w.write(0, "doc.txt", b"version 2, from dev0").unwrap();
            w.sync(0).await.unwrap();
            w.sync_while_user_writes(1, "doc.txt", b"saved on dev1 while sync ran", after).await.unwrap();
            w.converge_and_check()
                .await
                .map_err(|e| format!("save after {after} effects: {e}\n{:#?}", w.log()))
                .unwrap();
        });
    }
}

/// The same, when the round makes a conflicted copy first: every effect of
/// the round is tried as the moment of the save.
#[test]
fn a_save_during_a_conflict_is_never_replaced() {
    // The ignore file too: saving it changes the rules mid-round.
    for name in ["doc.txt", ".cofferignore"] {
        for after in 0..40 {
            let (rt, config) = world(2);
            rt.block_on(async {
                let mut w = World::new(config).await.unwrap();
                w.write(0, "a.bin", b"a file some rules ignore").unwrap();
                w.write(0, name, b"*.md\n").unwrap();
                w.sync(0).await.unwrap();
                w.sync(1).await.unwrap();
                w.write(0, name, b"*.bin\n").unwrap();
                w.sync(0).await.unwrap();
                w.write(1, name, b"*.txt\n").unwrap();
                w.sync_while_user_writes(1, name, b"*.bin\n*.txt\n", after).await.unwrap();
                w.converge_and_check()
                    .await
                    .map_err(|e| format!("{name} saved after {after} effects: {e}\n{:#?}", w.log()))
                    .unwrap();
            });
        }
    }
}

/// A small file saved again between the scan that read it and its upload
/// (which reads it again): the new version is not lost,
/// whether it has the old one's size or not, and wherever in the round
/// the save lands: with the old one's size and mtime (a save in the same
/// clock tick, which only reading the file again can tell), with a later
/// mtime, and with another size. Time passes after the round, beyond the
/// racily-clean window, so that the next scan trusts what the index says.
#[test]
fn a_save_between_the_scan_and_the_upload_is_not_lost() {
    let cases = [
        (&b"second!"[..], 0, "same size and time"),
        (&b"second!"[..], 1_000, "same size"),
        (&b"the second version"[..], 1_000, "another size"),
    ];
    for (second, ms_before, what) in cases {
        for after in 0..12 {
            let (rt, config) = world(2);
            rt.block_on(async {
                let mut w = World::new(config).await.unwrap();
                let files: Vec<(String, Vec<u8>)> =
                    (0..6).map(|i| (format!("f{i}.txt"), format!("first {i}").into_bytes())).collect();
                w.write_many(0, &files).unwrap();
                w.pass_time(ms_before);
                w.sync_while_user_writes(0, "f0.txt", second, after).await.unwrap();
                w.pass_time(10_000);
                w.converge_and_check()
                    .await
                    .map_err(|e| format!("{what}, saved after {after} effects: {e}\n{:#?}", w.log()))
                    .unwrap();
            });
        }
    }
}

/// A file saved on the receiving device right after sync placed it, with
/// the same size, in the clock tick that the sending device wrote it in
/// (no time passes here, as on a file system with 2 s timestamps): the
/// placed file's mtime is then the save's too, so the stat cache must not
/// vouch for what was placed. Every effect of the round is tried as the
/// moment of the save; time passes after the round, beyond any racy
/// window, so that the next scan trusts what the index says.
#[test]
fn a_save_in_the_tick_of_a_downloaded_version_is_not_lost() {
    for after in 0..24 {
        let (rt, config) = world(2);
        rt.block_on(async {
            let mut w = World::new(config).await.unwrap();
            w.write(0, "doc.txt", b"version 1").unwrap();
            w.sync(0).await.unwrap();
            w.sync_while_user_writes(1, "doc.txt", b"version 2", after).await.unwrap();
            w.pass_time(10_000);
            w.converge_and_check()
                .await
                .map_err(|e| format!("saved after {after} effects: {e}\n{:#?}", w.log()))
                .unwrap();
        });
    }
}

/// The per-step check catches a file at a final path that no user wrote
/// (what a partial download would look like).
#[test]
fn the_checks_catch_a_partial_file() {
    let (rt, config) = world(2);
    rt.block_on(async {
        let mut w = World::new(config).await.unwrap();
        w.write(0, "a.txt", b"whole content").unwrap();
        let root = w.root(0).to_path_buf();
        w.disk().write_file(&root.join("a.txt"), b"whole").unwrap();
        let err = w.sync(0).await.unwrap_err();
        assert!(err.contains("content no user wrote"), "{err}");
    });
}

/// The final check catches data that vanished without a user deleting it.
#[test]
fn the_checks_catch_lost_data() {
    let (rt, config) = world(2);
    rt.block_on(async {
        let mut w = World::new(config).await.unwrap();
        w.write(0, "keep.txt", b"never synced, then gone").unwrap();
        let root = w.root(0).to_path_buf();
        coffer_engine::fs::Fs::remove_file(w.disk(), &root.join("keep.txt")).unwrap();
        let err = w.converge_and_check().await.unwrap_err();
        assert!(err.contains("data lost"), "{err}");
    });
}

/// The final check catches devices that disagree: a file that cannot be
/// read is reported and never synced, so the other device lacks it.
#[test]
fn the_checks_catch_divergence() {
    let (rt, config) = world(2);
    rt.block_on(async {
        let mut w = World::new(config).await.unwrap();
        w.write(0, "locked.txt", b"unreadable here").unwrap();
        let path = w.root(0).join("locked.txt");
        w.disk().deny(&path, true);
        let err = w.converge_and_check().await.unwrap_err();
        assert!(err.contains("did not converge"), "{err}");
    });
}

/// Seed 3 (60 steps, 3 devices) ended in one of two histories in two CI
/// runs out of five (digests 336f1a2a... and aeda23c9...). Its step 50 is a
/// crash inside a multi-chunk download, where the race fixed for
/// `crashes_during_downloads_replay_identically` lies; the fork itself was
/// not reproduced on the 2-core development machine.
#[test]
fn seed_3_replays_identically() {
    let config = SimConfig { seed: 3, steps: 60, ..SimConfig::new(3) };
    for _ in 0..4 {
        assert_eq!(run(config).unwrap(), run(config).unwrap(), "seed 3");
    }
}

/// Seeds whose history forked at a crash in the middle of a multi-chunk
/// download: a chunk fetch that ran after the crash fired failed the whole
/// round, or the next write failed just that file, depending on when
/// blocking-pool threads finished opening the earlier chunks (7 of seeds
/// 0..1000 forked, each about one replay in two). Chunk fetches no longer
/// see the crash (`SimRemote::gate`).
#[test]
fn crashes_during_downloads_replay_identically() {
    for seed in [15, 119, 353, 640, 802, 885, 917] {
        let config = SimConfig::new(seed);
        let first = run(config).unwrap();
        for _ in 0..3 {
            assert_eq!(first, run(config).unwrap(), "seed {seed}");
        }
    }
}

/// A device does not pull its own commits back: when nothing else landed
/// between, the commit moves the cursor past them. A change from another
/// device in between still arrives, and with it the device's own.
#[test]
fn a_device_does_not_pull_its_own_commits_back() {
    let (rt, config) = world(2);
    rt.block_on(async {
        let mut w = World::new(config).await.unwrap();
        w.sync(0).await.unwrap();
        w.sync(1).await.unwrap();
        let sent = |w: &World, d: usize| w.hostile(d).lock().unwrap().sent_changes;
        w.write(0, "a.txt", b"from dev0").unwrap();
        w.write(0, "d/b.txt", b"also from dev0").unwrap();
        w.sync(0).await.unwrap();
        w.sync(0).await.unwrap();
        assert_eq!(sent(&w, 0), 0, "dev0 got its own changes back\n{:#?}", w.log());
        w.sync(1).await.unwrap();
        assert_eq!(sent(&w, 1), 3, "dev1 gets the folder and both files\n{:#?}", w.log());

        // dev1 commits, then dev0 commits before pulling: its commit is not
        // next in line, so its cursor stays and the pull brings both.
        w.write(1, "c.txt", b"from dev1").unwrap();
        w.sync(1).await.unwrap();
        assert_eq!(sent(&w, 1), 3, "{:#?}", w.log());
        w.write(0, "a.txt", b"edited on dev0").unwrap();
        w.sync(0).await.unwrap();
        w.converge_and_check().await.map_err(|e| format!("{e}\n{:#?}", w.log())).unwrap();
        assert!(sent(&w, 0) >= 1, "dev0 must still hear of dev1's change\n{:#?}", w.log());
        assert_eq!(w.files(0)["c.txt"].as_deref(), Some(&b"from dev1"[..]), "{:#?}", w.log());
    });
}

/// A pull of several journal pages asks for the next page while it
/// records the one before. When the connection drops at the second page,
/// the first stays recorded and the next round goes on from it: each
/// change is carried once, none is skipped.
#[test]
fn a_pull_broken_off_between_pages_goes_on_from_the_last_page_recorded() {
    let (rt, config) = world(2);
    rt.block_on(async {
        let mut w = World::new(config).await.unwrap();
        w.sync(0).await.unwrap();
        w.sync(1).await.unwrap();
        // 2,400 files in 3 folders: 2,403 changes, three pages of 1,000.
        let files: Vec<(String, Vec<u8>)> =
            (0..2_400).map(|i| (format!("d{}/f{i}.txt", i % 3), format!("file {i}").into_bytes())).collect();
        w.write_many(0, &files).unwrap();
        w.sync(0).await.unwrap();
        let sent = |w: &World| w.hostile(1).lock().unwrap().sent_changes;
        w.hostile(1).lock().unwrap().journal_fails_after = Some(1);
        let line = w.sync(1).await.unwrap();
        assert!(line.contains("connection dropped"), "{line}");
        assert_eq!(sent(&w), 1_000, "the first page only\n{:#?}", w.log());
        assert!(w.files(1).is_empty(), "nothing is written in a round that failed to pull");
        w.hostile(1).lock().unwrap().journal_fails_after = None;
        w.converge_and_check().await.map_err(|e| format!("{e}\n{:#?}", w.log())).unwrap();
        assert_eq!(sent(&w), 2_403, "each change carried once\n{:#?}", w.log());
        assert_eq!(w.files(1).len(), 2_403);
        assert_eq!(w.files(1)["d2/f2399.txt"].as_deref(), Some(&b"file 2399"[..]));
    });
}

/// Small files downloaded together have their chunks fetched in batches
/// ahead; a chunk several of them share is fetched once, not again for
/// each file after the first.
#[test]
fn a_chunk_shared_by_several_small_files_is_downloaded_once() {
    let (rt, config) = world(2);
    rt.block_on(async {
        let mut w = World::new(config).await.unwrap();
        for i in 0..4 {
            w.write(0, &format!("copy-{i}.txt"), b"the same small file").unwrap();
        }
        w.write(0, "one.txt", b"another small file").unwrap();
        w.write(0, "two.txt", b"and a third content").unwrap();
        w.sync(0).await.unwrap();
        w.sync(1).await.unwrap();
        let on_dev1 = w.files(1);
        assert_eq!(on_dev1.len(), 6, "{on_dev1:?}");
        assert_eq!(on_dev1["copy-3.txt"].as_deref(), Some(&b"the same small file"[..]));
        assert_eq!(w.hostile(1).lock().unwrap().downloaded_chunks, 3, "one fetch per distinct chunk");
    });
}

/// A file with more chunks than the store takes in one change is reported
/// before any of it is read again or sent, when the scan has just chunked
/// it (it used to be uploaded whole, then refused at the commit), and the
/// rest of the round goes on.
#[test]
fn a_file_over_the_chunk_limit_is_refused_before_it_is_uploaded() {
    let (rt, config) = world(2);
    rt.block_on(async {
        let mut w = World::new(config).await.unwrap();
        w.set_max_chunks_per_file(0, 4).unwrap();
        // Over 4 MiB, so the scan keeps its chunk list for the upload.
        let big: Vec<u8> = (0..(4u32 << 20) + 1000)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i >> 11) as u8)
            .collect();
        w.write(0, "big.bin", &big).unwrap();
        w.write(0, "small.txt", b"fits in one chunk").unwrap();
        let line = w.sync(0).await.unwrap();
        let said = format!("{line} {:?}", w.problems(0));
        assert!(said.contains("big.bin") && said.contains("too large to sync"), "{said}");
        assert_eq!(
            w.hostile(0).lock().unwrap().uploaded_chunks,
            1,
            "only small.txt's chunk was sent: {said}"
        );
        w.sync(1).await.unwrap();
        let on_dev1 = w.files(1);
        assert_eq!(on_dev1["small.txt"].as_deref(), Some(&b"fits in one chunk"[..]));
        assert!(!on_dev1.contains_key("big.bin"), "{on_dev1:?}");
    });
}
