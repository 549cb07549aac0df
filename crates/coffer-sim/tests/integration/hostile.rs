//! A hostile store: the real protocol (journal pages of `EntryVersion`s,
//! sealed chunks) carrying forged names, tampered ciphertext, replays, a
//! rollback. Each attack must be refused (and reported where it names an
//! entry), nothing may be written outside the root, nothing local may change
//! or be lost, and once the store behaves again everything converges.

use coffer_proto::api::{EntryVersion, UnixMillis};
use coffer_proto::{Cursor, DeviceId, EntryId, Revision, SealedMeta};
use coffer_sim::{SimConfig, World};
use rand_chacha::rand_core::SeedableRng;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Two devices sharing `keep.txt` and `d/inner.txt`.
async fn shared() -> World {
    let mut w = World::new(SimConfig { steps: 0, devices: 2, ..SimConfig::new(11) }).await.unwrap();
    w.write(0, "keep.txt", b"keep me").unwrap();
    w.write(0, "d/inner.txt", b"inner").unwrap();
    w.sync(0).await.unwrap();
    w.sync(1).await.unwrap();
    assert_eq!(w.files(1).len(), 3, "{:#?}", w.log());
    w
}

/// Metadata of a folder at `path`, sealed for `entry` at `revision`.
fn folder_meta(w: &World, path: &str, entry: EntryId, revision: u64) -> SealedMeta {
    let plain = serde_json::to_vec(&serde_json::json!({
        "v": 1,
        "path": path,
        "node": {"kind": "dir", "size": 0, "mtime_ns": 0, "executable": false, "hash": null, "target": null},
    }))
    .unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    w.keys().meta.seal(&mut rng, &entry, Revision(revision), &plain)
}

fn version(entry: EntryId, revision: u64, meta: Option<SealedMeta>) -> EntryVersion {
    EntryVersion {
        seq: Cursor(0),
        entry_id: entry,
        revision: Revision(revision),
        meta,
        chunks: vec![],
        device_id: DeviceId::from_bytes([9; 16]),
        time: UnixMillis(0),
    }
}

/// Runs one round of device 1 against what the hostile store sends, checks
/// that nothing changed locally and nothing escaped the root, then lets the
/// store behave and checks every invariant.
async fn attack(w: &mut World, sends: Vec<EntryVersion>, expect: &str) {
    let before = w.files(1);
    w.hostile(1).lock().unwrap().inject = sends;
    let line = w.sync(1).await.unwrap();
    assert!(w.hostile(1).lock().unwrap().inject.is_empty(), "the store never sent the attack");
    let said = format!("{line} {:?}", w.problems(1));
    assert!(said.contains(expect), "expected {expect:?} in: {said}\n{:#?}", w.log());
    assert_eq!(w.files(1), before, "a hostile store changed local files: {said}");
    assert!(w.violations(1).is_empty(), "{:?}", w.violations(1));
    for p in w.everything() {
        assert!(p == "sim" || p.starts_with("sim/dev"), "{p:?} outside the roots");
    }
    w.converge_and_check().await.map_err(|e| format!("{e}\n{:#?}", w.log())).unwrap();
}

#[test]
fn forged_names_are_refused_and_reported() {
    for bad in
        ["../escape", "/etc/coffer-escape", "a\0b", ".coffer/trash", "d/../../escape", "", "a//b", "d/."]
    {
        runtime().block_on(async {
            let mut w = shared().await;
            // The entry id matches the name, so only the name check stands
            // between the store and the disk.
            let entry = w.keys().path.entry_id(bad);
            let meta = folder_meta(&w, bad, entry, 1);
            attack(&mut w, vec![version(entry, 1, Some(meta))], "refused").await;
        });
    }
}

#[test]
fn tampered_metadata_is_refused_and_reported() {
    runtime().block_on(async {
        let mut w = shared().await;
        let entry = w.keys().path.entry_id("new folder");
        let mut bytes = folder_meta(&w, "new folder", entry, 1).as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        attack(&mut w, vec![version(entry, 1, Some(SealedMeta::from_sealed_bytes(bytes)))], "refused").await;
    });
}

#[test]
fn metadata_moved_from_another_entry_is_refused_and_reported() {
    runtime().block_on(async {
        let mut w = shared().await;
        // Valid metadata of "elsewhere", served under keep.txt's entry.
        let theirs = w.keys().path.entry_id("elsewhere");
        let meta = folder_meta(&w, "elsewhere", theirs, 2);
        let keep = w.keys().path.entry_id("keep.txt");
        attack(&mut w, vec![version(keep, 2, Some(meta))], "refused").await;
        // Sealed for the right entry but naming another path.
        let mut w = shared().await;
        let meta = folder_meta(&w, "elsewhere", keep, 2);
        attack(&mut w, vec![version(keep, 2, Some(meta))], "not this entry").await;
    });
}

#[test]
fn an_older_revision_replayed_is_ignored() {
    runtime().block_on(async {
        let mut w = shared().await;
        w.write(0, "keep.txt", b"keep me, version 2").unwrap();
        w.sync(0).await.unwrap();
        w.sync(1).await.unwrap();
        // Revision 1 again, validly sealed, turning the file into a folder.
        let keep = w.keys().path.entry_id("keep.txt");
        let meta = folder_meta(&w, "keep.txt", keep, 1);
        attack(&mut w, vec![version(keep, 1, Some(meta))], "pulled 0").await;
    });
}

#[test]
fn a_journal_going_backwards_is_refused() {
    runtime().block_on(async {
        let mut w = shared().await;
        let before = w.files(1);
        w.hostile(1).lock().unwrap().rollback_to = Some(Cursor(0));
        let line = w.sync(1).await.unwrap();
        assert!(line.contains("went backwards"), "{line}");
        assert_eq!(w.files(1), before);
        w.hostile(1).lock().unwrap().rollback_to = None;
        w.converge_and_check().await.unwrap();
    });
}

#[test]
fn tampered_chunks_are_refused_and_nothing_partial_is_written() {
    runtime().block_on(async {
        let mut w = shared().await;
        w.write(0, "keep.txt", b"keep me, version 2, which dev1 must fetch").unwrap();
        w.sync(0).await.unwrap();
        let before = w.files(1);
        w.hostile(1).lock().unwrap().tamper_chunks = true;
        let line = w.sync(1).await.unwrap();
        let said = format!("{line} {:?}", w.problems(1));
        assert!(said.contains("corrupt") || said.contains("verification"), "{said}");
        assert_eq!(w.files(1), before, "{said}");
        w.hostile(1).lock().unwrap().tamper_chunks = false;
        w.converge_and_check().await.unwrap();
    });
}

#[test]
fn a_mass_deletion_waits_for_confirmation() {
    runtime().block_on(async {
        let mut w = shared().await;
        w.set_mass_delete_threshold(1, 2).unwrap();
        // Deletions carry no metadata: any store can forge them. Above the
        // threshold they wait for the user; nothing is deleted meanwhile.
        let doomed: Vec<EntryVersion> = ["keep.txt", "d/inner.txt", "d"]
            .iter()
            .map(|p| version(w.keys().path.entry_id(p), 2, None))
            .collect();
        let before = w.files(1);
        w.hostile(1).lock().unwrap().inject = doomed;
        let line = w.sync(1).await.unwrap();
        assert!(line.contains("would delete 3"), "{line}");
        assert_eq!(w.files(1), before);
        let line = w.sync(1).await.unwrap();
        assert!(line.contains("would delete 3"), "asks again, deletes nothing: {line}");
        assert_eq!(w.files(1), before);
    });
}

/// Case twins sent by the store are written on a case-sensitive disk (both
/// entries are valid on their own) and then reported as a collision, frozen
/// until the user renames one; local files are untouched. (Refusing the
/// second twin before it is written is not done yet: see
/// docs/reliability.md.) Normalisation twins are one entry: only one lands.
#[test]
fn twins_from_the_store_are_reported_and_touch_nothing_else() {
    runtime().block_on(async {
        let mut w = shared().await;
        let sends: Vec<EntryVersion> = ["Twin", "twin", "caf\u{e9}", "cafe\u{301}"]
            .iter()
            .map(|p| {
                let e = w.keys().path.entry_id(p);
                version(e, 1, Some(folder_meta(&w, p, e, 1)))
            })
            .collect();
        let before = w.files(1);
        w.hostile(1).lock().unwrap().inject = sends;
        w.sync(1).await.unwrap();
        let line = w.sync(1).await.unwrap();
        assert!(line.contains("differ only by case or Unicode form"), "{line}");
        let after = w.files(1);
        for (p, v) in &before {
            assert_eq!(after.get(p), Some(v), "{p} changed");
        }
        let unicode: Vec<&String> = after.keys().filter(|p| p.starts_with("caf")).collect();
        assert_eq!(unicode.len(), 1, "{after:?}");
        assert!(w.violations(1).is_empty());
    });
}

/// A replay need not be older than what the device knew before the pull:
/// here it is older than a revision the same page brought just before it.
/// Revisions only move forward within a page too.
#[test]
fn an_older_revision_replayed_after_a_newer_one_in_the_same_page_is_ignored() {
    runtime().block_on(async {
        let mut w = shared().await;
        w.write(0, "keep.txt", b"keep me, version 2").unwrap();
        w.sync(0).await.unwrap();
        w.write(0, "keep.txt", b"keep me, version three").unwrap();
        w.sync(0).await.unwrap();
        // Revision 2, validly sealed, turning the file into a folder: sent
        // after revision 3, in the page that brings revision 3.
        let keep = w.keys().path.entry_id("keep.txt");
        let meta = folder_meta(&w, "keep.txt", keep, 2);
        w.hostile(1).lock().unwrap().inject = vec![version(keep, 2, Some(meta))];
        let line = w.sync(1).await.unwrap();
        assert!(w.hostile(1).lock().unwrap().inject.is_empty(), "the store never sent the replay");
        assert_eq!(
            w.files(1)["keep.txt"].as_deref(),
            Some(&b"keep me, version three"[..]),
            "{line}\n{:#?}",
            w.log()
        );
        assert!(w.violations(1).is_empty(), "{:?}", w.violations(1));
        w.converge_and_check().await.map_err(|e| format!("{e}\n{:#?}", w.log())).unwrap();
        assert_eq!(w.files(1)["keep.txt"].as_deref(), Some(&b"keep me, version three"[..]));
    });
}
