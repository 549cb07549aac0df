//! The invariants (see the crate doc), and the digest that makes "same seed,
//! same history" checkable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use coffer_crypto::AccountKeys;
use coffer_engine::chunklist;
use coffer_engine::ignore::IgnoreRules;
use coffer_engine::model::{ChunkRef, EntryMeta, NodeKind, RelPath, STATE_DIR};
use coffer_proto::api::EntryVersion;
use coffer_proto::{Cursor, EntryId};

use crate::world::{walk, World, SIM_DIR};

type Tree = BTreeMap<String, Option<Vec<u8>>>;

fn short(content: &[u8]) -> String {
    let hex = blake3::hash(content).to_hex();
    format!("{} bytes {}", content.len(), &hex[..12])
}

/// After every round of device `d`: nothing written outside its root, and
/// every file at a final path holds bytes some user wrote (never a partial
/// download or a mangled file).
pub(crate) fn step_checks(world: &World, d: usize) -> Result<(), String> {
    let v = world.devices[d].fs.violations();
    if let Some(first) = v.first() {
        return Err(format!("dev{d} tried to write outside its sync root: {first}"));
    }
    for (path, content) in world.tree(d) {
        if let Some(content) = content {
            if !world.written.contains(blake3::hash(&content).as_bytes()) {
                return Err(format!(
                    "dev{d} holds {path:?} with content no user wrote ({}): a partial or corrupted file",
                    short(&content)
                ));
            }
        }
    }
    Ok(())
}

/// The tree a device shows once ignore rules are applied (ignored paths are
/// per-device by design).
fn visible(world: &World, d: usize) -> Tree {
    let rules = IgnoreRules::load(world.mem.as_ref(), &world.devices[d].root)
        .unwrap_or_else(|_| IgnoreRules::builtin());
    filter(world.tree(d), &rules)
}

fn filter(tree: Tree, rules: &IgnoreRules) -> Tree {
    tree.into_iter()
        .filter(|(p, v)| match RelPath::new(p.clone()) {
            Ok(rel) => !ancestors_or_self_ignored(rules, &rel, v.is_none()),
            Err(_) => true,
        })
        .collect()
}

fn ancestors_or_self_ignored(rules: &IgnoreRules, rel: &RelPath, is_dir: bool) -> bool {
    if rules.is_ignored(rel, is_dir) {
        return true;
    }
    let mut p = rel.parent();
    while let Some(a) = p {
        if rules.is_ignored(&a, true) {
            return true;
        }
        p = a.parent();
    }
    false
}

/// Every entry the store ever recorded (from the whole journal).
async fn all_entries(world: &World) -> Result<BTreeSet<EntryId>, String> {
    let caller = world.devices[0].caller;
    let mut after = Cursor(0);
    let mut out = BTreeSet::new();
    loop {
        let page = world.service.journal(caller, after, None).await.map_err(|e| format!("journal: {e}"))?;
        out.extend(page.changes.iter().map(|c| c.entry_id));
        after = page.cursor;
        if !page.more {
            return Ok(out);
        }
    }
}

/// Opens one revision: its path, and its content (`None` for a folder).
async fn open_version(world: &World, v: &EntryVersion) -> Result<Option<(String, Option<Vec<u8>>)>, String> {
    let Some(sealed) = &v.meta else { return Ok(None) };
    let keys = world.master.derive();
    let plain =
        keys.meta.open(&v.entry_id, v.revision, sealed).map_err(|e| format!("store metadata: {e}"))?;
    let mut meta = EntryMeta::from_bytes(&plain)?;
    // A long chunk list is in pieces of its own, stored like chunks.
    for piece in std::mem::take(&mut meta.list) {
        let plain = store_chunk(world, &keys, &piece, meta.path.as_str()).await?;
        meta.chunks.extend(chunklist::decode(&plain)?);
    }
    let content = match meta.node.kind {
        NodeKind::File => {
            EntryMeta::check_chunks(&meta.node, &meta.chunks)?;
            let mut out = Vec::new();
            for c in &meta.chunks {
                out.extend_from_slice(&store_chunk(world, &keys, c, meta.path.as_str()).await?);
            }
            Some(out)
        }
        _ => None,
    };
    Ok(Some((meta.path.as_str().to_owned(), content)))
}

/// One chunk from the store, opened.
async fn store_chunk(world: &World, keys: &AccountKeys, c: &ChunkRef, path: &str) -> Result<Vec<u8>, String> {
    let sealed = world
        .service
        .download_chunk(world.devices[0].caller, c.id)
        .await
        .map_err(|e| format!("store chunk of {path}: {e}"))?;
    keys.chunk
        .open(&keys.chunk_id, c.id, &c.content, sealed.as_bytes())
        .map_err(|e| format!("store chunk of {path}: {e}"))
}

/// The store's live tree.
async fn store_tree(world: &World) -> Result<Tree, String> {
    let caller = world.devices[0].caller;
    let mut out = Tree::new();
    let mut after = None;
    loop {
        let page = world.service.snapshot(caller, after, None).await.map_err(|e| format!("snapshot: {e}"))?;
        for v in &page.entries {
            if let Some((p, c)) = open_version(world, v).await? {
                out.insert(p, c);
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

fn describe_diff(a: &Tree, b: &Tree) -> String {
    let mut lines = Vec::new();
    for (p, v) in a {
        match b.get(p) {
            None => lines.push(format!("{p:?} only in the first")),
            Some(w) if w != v => lines.push(format!(
                "{p:?} differs: {} vs {}",
                v.as_deref().map_or("folder".into(), short),
                w.as_deref().map_or("folder".into(), short)
            )),
            _ => {}
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        lines.push(format!("{p:?} only in the second"));
    }
    lines.truncate(8);
    lines.join("; ")
}

/// After the final phase: convergence, the ledger, nothing outside roots.
pub(crate) async fn final_checks(world: &mut World) -> Result<(), String> {
    // Convergence: every device equals the first, and the store.
    let first = visible(world, 0);
    for d in 1..world.devices.len() {
        let other = visible(world, d);
        if other != first {
            return Err(format!("dev0 and dev{d} did not converge: {}", describe_diff(&first, &other)));
        }
    }
    let rules = IgnoreRules::load(world.mem.as_ref(), &world.devices[0].root)
        .unwrap_or_else(|_| IgnoreRules::builtin());
    let store = filter(store_tree(world).await?, &rules);
    if store != first {
        return Err(format!("dev0 and the store did not converge: {}", describe_diff(&first, &store)));
    }

    // Every content a completed round saw is still somewhere.
    let mut recoverable: BTreeSet<[u8; 32]> = BTreeSet::new();
    for d in 0..world.devices.len() {
        let mut all = Tree::new();
        walk(world.mem.as_ref(), &world.devices[d].root, "", &mut all, false);
        for (p, c) in all {
            if p.starts_with(&format!("{STATE_DIR}/tmp/")) {
                continue;
            }
            if let Some(c) = c {
                recoverable.insert(*blake3::hash(&c).as_bytes());
            }
        }
    }
    let caller = world.devices[0].caller;
    for entry in all_entries(world).await? {
        let versions = match world.service.versions(caller, entry).await {
            Ok(v) => v.versions,
            Err(e) => return Err(format!("versions of {entry}: {e}")),
        };
        for v in &versions {
            if let Some((_, Some(c))) = open_version(world, v).await? {
                recoverable.insert(*blake3::hash(&c).as_bytes());
            }
        }
    }
    let kept: Vec<(&[u8; 32], &String)> =
        world.ledger.iter().filter(|(h, _)| !world.destroyed.contains(*h)).collect();
    let lost: Vec<&String> =
        kept.iter().filter(|(h, _)| !recoverable.contains(*h)).map(|(_, w)| *w).collect();
    if let Some(first) = lost.first() {
        return Err(format!(
            "data lost: {} version(s) a user wrote and did not destroy are nowhere (not on a device, in a trash or on the store), e.g. {first}",
            lost.len()
        ));
    }
    world.summary.ledger = kept.len();

    // Nothing on the disk outside the roots.
    let mut everything = Tree::new();
    walk(world.mem.as_ref(), Path::new("/"), "", &mut everything, false);
    let sim = SIM_DIR.trim_start_matches('/');
    for p in everything.keys() {
        let inside = p == sim
            || (0..world.devices.len()).any(|d| {
                let root = format!("{sim}/dev{d}");
                p == &root || p.starts_with(&format!("{root}/"))
            });
        if !inside {
            return Err(format!("{p:?} exists outside every sync root"));
        }
    }
    Ok(())
}

/// A digest of the history (the log of steps and round reports) and of
/// every device's whole root, state folder included.
pub(crate) fn digest(world: &World) -> String {
    let mut hasher = blake3::Hasher::new();
    for l in &world.log {
        hasher.update(l.as_bytes());
        hasher.update(b"\n");
    }
    for d in 0..world.devices.len() {
        let mut all = Tree::new();
        walk(world.mem.as_ref(), &world.devices[d].root, "", &mut all, false);
        for (p, c) in all {
            hasher.update(p.as_bytes());
            hasher.update(&[0]);
            if let Some(c) = c {
                hasher.update(blake3::hash(&c).as_bytes());
            }
        }
    }
    hasher.finalize().to_hex().to_string()
}

/// The plan device `d` would make now (from a fresh scan), for failure
/// messages: which ops keep being deferred.
pub(crate) async fn explain(world: &World, d: usize) -> String {
    use coffer_engine::plan::{plan, PlanInput};
    use coffer_engine::scan::{NoCache, Scanner};
    let Some(engine) = &world.devices[d].engine else { return "no engine".into() };
    let keys = world.master.derive();
    let scanner =
        Scanner::new(world.mem.clone(), world.devices[d].root.clone(), &keys, engine.config().chunker)
            .with_clock(world.mem.clone());
    let (Ok(excluded), Ok(synced), Ok(remote)) =
        (engine.index().excluded(), engine.index().synced(), engine.index().remote())
    else {
        return "index unreadable".into();
    };
    let Ok(scan) = scanner.scan(&NoCache, &excluded) else { return "scan failed".into() };
    let local: BTreeMap<RelPath, coffer_engine::model::Node> =
        scan.entries.iter().map(|(p, e)| (p.clone(), e.node.clone())).collect();
    let mut frozen = excluded;
    frozen.extend(scan.ignored.iter().cloned());
    frozen.extend(scan.unstable.iter().cloned());
    for (a, b) in &scan.collisions {
        frozen.insert(a.clone());
        frozen.insert(b.clone());
    }
    let ops = plan(PlanInput { local: &local, synced: &synced, remote: &remote, frozen: &frozen });
    let mut out: Vec<String> = Vec::new();
    for o in &ops {
        let mut line = format!("{o:?}");
        if let coffer_engine::plan::Op::Upload { path, .. } = o {
            let id = keys.path.entry_id(path.as_str());
            let known = engine.index().remote_entry(&id);
            let store = world
                .service
                .versions(world.devices[d].caller, id)
                .await
                .map(|v| v.versions.iter().map(|v| (v.revision.0, v.meta.is_some())).collect::<Vec<_>>());
            let rehash = scanner.hash_file(&world.devices[d].root.join(path.as_str())).map(|h| h.node.hash);
            line.push_str(&format!(
                " [index knows {known:?}; store has {store:?}; scan hash {:?}; rehash {rehash:?}]",
                scan.entries.get(path).map(|e| e.node.hash)
            ));
        }
        out.push(line);
    }
    out.truncate(6);
    format!("dev{d} would plan: {}", out.join("; "))
}
