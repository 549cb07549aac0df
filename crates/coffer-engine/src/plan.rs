//! The planner: a pure function from the three trees to a list of
//! operations (`DESIGN.md`, "The sync model").
//!
//! - **local**: what the disk holds now (from the scanner);
//! - **synced**: what this device and the store last agreed on (the index);
//! - **remote**: what the store's journal says, including deletions.
//!
//! | local vs synced | remote vs synced | op |
//! |---|---|---|
//! | same | same | none |
//! | same | changed | [`Op::Download`] or [`Op::DeleteLocal`] (to the trash) |
//! | changed | same | [`Op::Upload`] or [`Op::DeleteRemote`] |
//! | changed | changed, same content | [`Op::Agree`] (record, move nothing) |
//! | changed | changed, different | [`Op::Conflict`]: remote keeps the name, local becomes a conflicted copy |
//! | deleted | changed | [`Op::Download`]: remote wins |
//! | changed | deleted | [`Op::Upload`]: local wins |
//!
//! Paths under a *frozen* prefix (unreadable, being written, excluded by
//! selective sync) get no op at all: what cannot be seen is never taken as
//! deleted. No I/O, clock or randomness here; the apply step re-checks the
//! disk before it touches anything, so a stale plan is harmless.
//!
//! Ops come out ordered so that they can run one after another: remote-side
//! and download work parents first, local deletions children first.

use std::collections::{BTreeMap, BTreeSet};

use coffer_proto::{DeviceId, EntryId, Revision};
use unicode_normalization::UnicodeNormalization;

use crate::model::{ChunkRef, Node, RelPath};

/// The last state this device and the store agreed on for a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncedEntry {
    /// The store's entry.
    pub entry_id: EntryId,
    /// The revision agreed on.
    pub revision: Revision,
    /// What it was.
    pub node: Node,
    /// Its chunks (files).
    pub chunks: Vec<ChunkRef>,
}

/// What the store says about a path: its latest revision, live or deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The store's entry.
    pub entry_id: EntryId,
    /// Its latest revision.
    pub revision: Revision,
    /// `None` when the latest revision is a deletion.
    pub live: Option<RemoteLive>,
}

/// A live remote revision's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteLive {
    /// What it is.
    pub node: Node,
    /// Its chunks (files).
    pub chunks: Vec<ChunkRef>,
    /// The device that made it.
    pub device: DeviceId,
    /// That device's name (from the sealed metadata; may be empty).
    pub device_name: String,
    /// Whether the metadata keeps the chunk list in pieces (format 2), so
    /// that the store holds those pieces too.
    pub listed: bool,
}

impl RemoteEntry {
    /// The synced entry this remote state would become once applied.
    pub fn to_synced(&self) -> Option<SyncedEntry> {
        self.live.as_ref().map(|l| SyncedEntry {
            entry_id: self.entry_id,
            revision: self.revision,
            node: l.node.clone(),
            chunks: l.chunks.clone(),
        })
    }
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Send the local node at `path` (content, directory or link), based on
    /// `base` (the store's latest revision of the entry, 0 if none).
    Upload {
        /// The path.
        path: RelPath,
        /// Revision the commit is based on.
        base: Revision,
    },
    /// Delete the entry on the store.
    DeleteRemote {
        /// The path.
        path: RelPath,
        /// The store's entry.
        entry_id: EntryId,
        /// Revision the deletion is based on.
        base: Revision,
    },
    /// Materialise the remote state at `path`. If something is there
    /// (`replace`), it is unchanged since sync last saw it and goes to the
    /// trash.
    Download {
        /// The path.
        path: RelPath,
        /// The remote state (live).
        entry: RemoteEntry,
        /// Whether a local node is replaced.
        replace: bool,
    },
    /// Move the local node to the trash: the store deleted it and the local
    /// copy has no unsynced change.
    DeleteLocal {
        /// The path.
        path: RelPath,
    },
    /// Both sides changed differently: the local node becomes a conflicted
    /// copy (uploaded as a new file later), then the remote one is
    /// materialised under the name.
    Conflict {
        /// The path.
        path: RelPath,
        /// The remote state (live).
        entry: RemoteEntry,
    },
    /// Both sides reached the same content: record it, move nothing.
    Agree {
        /// The path.
        path: RelPath,
        /// The agreed state.
        entry: SyncedEntry,
    },
    /// Both sides deleted it: forget the synced record.
    Forget {
        /// The path.
        path: RelPath,
    },
}

impl Op {
    /// The path the op acts on.
    pub fn path(&self) -> &RelPath {
        match self {
            Op::Upload { path, .. }
            | Op::DeleteRemote { path, .. }
            | Op::Download { path, .. }
            | Op::DeleteLocal { path }
            | Op::Conflict { path, .. }
            | Op::Agree { path, .. }
            | Op::Forget { path } => path,
        }
    }

    /// True for ops that remove data from the store or the disk (the
    /// mass-deletion guard counts these).
    pub fn is_deletion(&self) -> bool {
        matches!(self, Op::DeleteRemote { .. } | Op::DeleteLocal { .. })
    }

    fn rank(&self) -> (u8, isize) {
        let depth = isize::try_from(self.path().depth()).unwrap_or(isize::MAX);
        match self {
            // Local deletions run last, children before parents.
            Op::DeleteLocal { .. } => (2, -depth),
            Op::Conflict { .. } | Op::Download { .. } => (1, depth),
            _ => (0, depth),
        }
    }
}

/// The local tree as the planner reads it: paths and their nodes. A plain
/// map of nodes, or the scanner's entries as they are (the engine plans
/// over its scan without copying every node).
pub trait LocalTree: std::fmt::Debug {
    /// Every path, in any order.
    fn paths(&self) -> Box<dyn Iterator<Item = &RelPath> + '_>;
    /// The node at `path`.
    fn node(&self, path: &RelPath) -> Option<&Node>;
}

impl LocalTree for BTreeMap<RelPath, Node> {
    fn paths(&self) -> Box<dyn Iterator<Item = &RelPath> + '_> {
        Box::new(self.keys())
    }
    fn node(&self, path: &RelPath) -> Option<&Node> {
        self.get(path)
    }
}

impl LocalTree for BTreeMap<RelPath, crate::scan::LocalEntry> {
    fn paths(&self) -> Box<dyn Iterator<Item = &RelPath> + '_> {
        Box::new(self.keys())
    }
    fn node(&self, path: &RelPath) -> Option<&Node> {
        self.get(path).map(|e| &e.node)
    }
}

/// The three trees and what must not be touched.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// What is on disk.
    pub local: &'a dyn LocalTree,
    /// The last agreed state.
    pub synced: &'a BTreeMap<RelPath, SyncedEntry>,
    /// The store's latest state per path (deletions included).
    pub remote: &'a BTreeMap<RelPath, RemoteEntry>,
    /// Paths (and everything under them) that get no op.
    pub frozen: &'a BTreeSet<RelPath>,
}

fn is_frozen(frozen: &BTreeSet<RelPath>, path: &RelPath) -> bool {
    // Walk up the path's ancestors; each lookup is O(log n).
    path.self_and_ancestors().any(|a| frozen.contains(&a))
}

/// Plans the ops that bring the three trees into agreement.
pub fn plan(input: PlanInput<'_>) -> Vec<Op> {
    let paths: BTreeSet<&RelPath> =
        input.local.paths().chain(input.synced.keys()).chain(input.remote.keys()).collect();
    // An entry id is keyed on the NFC form of its path, so a deletion known
    // under the other Unicode form of a local path is that path's entry: an
    // upload there must build on the deletion's revision, or the store
    // refuses it (base 0) round after round and the file never syncs.
    let tombstones: BTreeMap<String, &RemoteEntry> = input
        .remote
        .iter()
        .filter(|(_, r)| r.live.is_none())
        .map(|(p, r)| (p.as_str().nfc().collect(), r))
        .collect();
    let mut ops = Vec::new();
    for path in paths {
        if is_frozen(input.frozen, path) {
            continue;
        }
        let remote = input.remote.get(path).or_else(|| {
            let nfc: String = path.as_str().nfc().collect();
            input.local.node(path).is_some().then(|| tombstones.get(&nfc).copied()).flatten()
        });
        if let Some(op) = plan_path(path, input.local.node(path), input.synced.get(path), remote) {
            ops.push(op);
        }
    }
    ops.sort_by(|a, b| a.rank().cmp(&b.rank()).then_with(|| a.path().cmp(b.path())));
    ops
}

fn plan_path(
    path: &RelPath,
    local: Option<&Node>,
    synced: Option<&SyncedEntry>,
    remote: Option<&RemoteEntry>,
) -> Option<Op> {
    let live = remote.and_then(|r| r.live.as_ref());
    let remote_rev = remote.map_or(Revision::ZERO, |r| r.revision);
    let local_changed = match (local, synced) {
        (None, None) => false,
        (Some(l), Some(s)) => !l.same_content(&s.node),
        _ => true,
    };
    let remote_changed = match (live, synced) {
        (None, None) => false,
        (Some(_), Some(s)) => remote_rev != s.revision,
        _ => true,
    };
    let path = path.clone();
    match (local_changed, remote_changed) {
        (false, false) => None,
        (false, true) => match (remote, live) {
            (Some(r), Some(_)) => Some(Op::Download { path, entry: r.clone(), replace: local.is_some() }),
            _ if local.is_some() => Some(Op::DeleteLocal { path }),
            _ => Some(Op::Forget { path }),
        },
        (true, false) => match (local, synced) {
            (Some(_), _) => Some(Op::Upload { path, base: remote_rev }),
            (None, Some(s)) => Some(Op::DeleteRemote { path, entry_id: s.entry_id, base: s.revision }),
            (None, None) => None,
        },
        (true, true) => match (local, remote, live) {
            (Some(l), Some(r), Some(rl)) if l.same_content(&rl.node) => {
                r.to_synced().map(|entry| Op::Agree { path, entry })
            }
            (Some(_), Some(r), Some(_)) => Some(Op::Conflict { path, entry: r.clone() }),
            (None, Some(r), Some(_)) => Some(Op::Download { path, entry: r.clone(), replace: false }),
            (Some(_), _, None) => Some(Op::Upload { path, base: remote_rev }),
            (None, _, None) => Some(Op::Forget { path }),
            (Some(_) | None, None, Some(_)) => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{FileHash, NodeKind};

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn file(n: u8) -> Node {
        Node {
            kind: NodeKind::File,
            size: u64::from(n),
            mtime_ns: 0,
            executable: false,
            hash: Some(FileHash([n; 32])),
            target: None,
        }
    }

    fn eid(s: &str) -> EntryId {
        EntryId::from_bytes(*blake3::hash(s.as_bytes()).as_bytes())
    }

    fn synced(path: &str, rev: u64, node: Node) -> SyncedEntry {
        SyncedEntry { entry_id: eid(path), revision: Revision(rev), node, chunks: vec![] }
    }

    fn remote(path: &str, rev: u64, node: Option<Node>) -> RemoteEntry {
        RemoteEntry {
            entry_id: eid(path),
            revision: Revision(rev),
            live: node.map(|node| RemoteLive {
                node,
                chunks: vec![],
                device: DeviceId::from_bytes([1; 16]),
                device_name: String::new(),
                listed: false,
            }),
        }
    }

    struct Trees {
        local: BTreeMap<RelPath, Node>,
        synced: BTreeMap<RelPath, SyncedEntry>,
        remote: BTreeMap<RelPath, RemoteEntry>,
        frozen: BTreeSet<RelPath>,
    }

    impl Trees {
        fn one(l: Option<Node>, s: Option<(u64, Node)>, r: Option<(u64, Option<Node>)>) -> Self {
            let mut t = Trees {
                local: BTreeMap::new(),
                synced: BTreeMap::new(),
                remote: BTreeMap::new(),
                frozen: BTreeSet::new(),
            };
            if let Some(l) = l {
                t.local.insert(p("f"), l);
            }
            if let Some((rev, n)) = s {
                t.synced.insert(p("f"), synced("f", rev, n));
            }
            if let Some((rev, n)) = r {
                t.remote.insert(p("f"), remote("f", rev, n));
            }
            t
        }

        fn plan(&self) -> Vec<Op> {
            plan(PlanInput {
                local: &self.local,
                synced: &self.synced,
                remote: &self.remote,
                frozen: &self.frozen,
            })
        }
    }

    #[test]
    fn the_table_of_design_md() {
        let same = Trees::one(Some(file(1)), Some((1, file(1))), Some((1, Some(file(1)))));
        assert!(same.plan().is_empty());

        let remote_changed = Trees::one(Some(file(1)), Some((1, file(1))), Some((2, Some(file(2)))));
        assert!(matches!(&remote_changed.plan()[..], [Op::Download { replace: true, .. }]));

        let remote_deleted = Trees::one(Some(file(1)), Some((1, file(1))), Some((2, None)));
        assert!(matches!(&remote_deleted.plan()[..], [Op::DeleteLocal { .. }]));

        let local_changed = Trees::one(Some(file(2)), Some((1, file(1))), Some((1, Some(file(1)))));
        assert_eq!(local_changed.plan(), vec![Op::Upload { path: p("f"), base: Revision(1) }]);

        let local_deleted = Trees::one(None, Some((1, file(1))), Some((1, Some(file(1)))));
        assert!(matches!(&local_deleted.plan()[..], [Op::DeleteRemote { base: Revision(1), .. }]));

        let both_same = Trees::one(Some(file(2)), Some((1, file(1))), Some((2, Some(file(2)))));
        assert!(matches!(&both_same.plan()[..], [Op::Agree { entry, .. }] if entry.revision == Revision(2)));

        let both_differ = Trees::one(Some(file(2)), Some((1, file(1))), Some((2, Some(file(3)))));
        assert!(matches!(&both_differ.plan()[..], [Op::Conflict { .. }]));

        let deleted_vs_changed = Trees::one(None, Some((1, file(1))), Some((2, Some(file(3)))));
        assert!(matches!(&deleted_vs_changed.plan()[..], [Op::Download { replace: false, .. }]));

        let changed_vs_deleted = Trees::one(Some(file(2)), Some((1, file(1))), Some((2, None)));
        assert_eq!(changed_vs_deleted.plan(), vec![Op::Upload { path: p("f"), base: Revision(2) }]);

        let both_deleted = Trees::one(None, Some((1, file(1))), Some((2, None)));
        assert!(matches!(&both_deleted.plan()[..], [Op::Forget { .. }]));

        let new_local = Trees::one(Some(file(1)), None, None);
        assert_eq!(new_local.plan(), vec![Op::Upload { path: p("f"), base: Revision(0) }]);

        let new_over_tombstone = Trees::one(Some(file(1)), None, Some((4, None)));
        assert_eq!(new_over_tombstone.plan(), vec![Op::Upload { path: p("f"), base: Revision(4) }]);

        let new_remote = Trees::one(None, None, Some((1, Some(file(1)))));
        assert!(matches!(&new_remote.plan()[..], [Op::Download { replace: false, .. }]));

        let both_new_same = Trees::one(Some(file(1)), None, Some((1, Some(file(1)))));
        assert!(matches!(&both_new_same.plan()[..], [Op::Agree { .. }]));

        let both_new_differ = Trees::one(Some(file(1)), None, Some((1, Some(file(2)))));
        assert!(matches!(&both_new_differ.plan()[..], [Op::Conflict { .. }]));
    }

    /// Found by the simulation (coffer-sim seed 8): a file created under
    /// the NFD form of a name whose entry was deleted under its NFC form
    /// was uploaded with base 0 and deferred forever.
    #[test]
    fn new_file_over_a_tombstone_of_its_other_unicode_form() {
        let (nfc, nfd) = ("caf\u{e9}.txt", "cafe\u{301}.txt");
        let mut t = Trees::one(None, None, None);
        t.local.insert(p(nfd), file(1));
        t.remote.insert(p(nfc), remote(nfc, 3, None));
        assert_eq!(t.plan(), vec![Op::Upload { path: p(nfd), base: Revision(3) }]);
        // A live entry under the other form is another matter (a twin the
        // scanner reports); its revision is not borrowed.
        t.remote.insert(p(nfc), remote(nfc, 3, Some(file(2))));
        assert!(t.plan().contains(&Op::Upload { path: p(nfd), base: Revision(0) }), "{:?}", t.plan());
    }

    #[test]
    fn mtime_alone_is_not_a_change() {
        let mut touched = file(1);
        touched.mtime_ns = 99;
        let t = Trees::one(Some(touched), Some((1, file(1))), Some((1, Some(file(1)))));
        assert!(t.plan().is_empty());
    }

    #[test]
    fn frozen_subtrees_are_left_alone() {
        let mut t = Trees::one(None, Some((1, file(1))), Some((1, Some(file(1)))));
        t.synced.insert(p("d/x"), synced("d/x", 1, file(1)));
        t.remote.insert(p("d/x"), remote("d/x", 1, Some(file(1))));
        t.frozen.insert(p("d"));
        t.frozen.insert(p("f"));
        assert!(t.plan().is_empty(), "an unreadable path is never taken as deleted");
    }

    #[test]
    fn order_parents_first_deletions_children_first() {
        let mut t = Trees::one(None, None, None);
        for (path, n) in [("a", Node::dir()), ("a/b", Node::dir()), ("a/b/c", file(1))] {
            t.remote.insert(p(path), remote(path, 1, Some(n)));
        }
        for (path, n) in [("z", Node::dir()), ("z/y", file(2))] {
            t.local.insert(p(path), n.clone());
            t.synced.insert(p(path), synced(path, 1, n));
            t.remote.insert(p(path), remote(path, 2, None));
        }
        let ops = t.plan();
        let order: Vec<&str> = ops.iter().map(|o| o.path().as_str()).collect();
        assert_eq!(order, vec!["a", "a/b", "a/b/c", "z/y", "z"]);
    }

    /// Applies a plan to the three trees the way the apply step would if
    /// every op succeeded (a model of apply, not apply itself).
    fn apply_model(t: &mut Trees, ops: &[Op], next_rev: &mut impl FnMut(Revision) -> Revision) {
        for op in ops {
            match op.clone() {
                Op::Upload { path, base } => {
                    let node = t.local[&path].clone();
                    let rev = next_rev(base);
                    let entry = RemoteEntry {
                        entry_id: eid(path.as_str()),
                        revision: rev,
                        live: Some(RemoteLive {
                            node,
                            chunks: vec![],
                            device: DeviceId::from_bytes([2; 16]),
                            device_name: String::new(),
                            listed: false,
                        }),
                    };
                    t.synced.insert(path.clone(), entry.to_synced().unwrap());
                    t.remote.insert(path, entry);
                }
                Op::DeleteRemote { path, entry_id, base } => {
                    t.synced.remove(&path);
                    t.remote.insert(path, RemoteEntry { entry_id, revision: next_rev(base), live: None });
                }
                Op::Download { path, entry, .. } => {
                    t.local.insert(path.clone(), entry.live.clone().unwrap().node);
                    t.synced.insert(path, entry.to_synced().unwrap());
                }
                Op::DeleteLocal { path } | Op::Forget { path } => {
                    t.local.remove(&path);
                    t.synced.remove(&path);
                }
                Op::Conflict { path, entry } => {
                    let mine = t.local.remove(&path).unwrap();
                    t.local.insert(p(&format!("{}.conflict", path.as_str())), mine);
                    t.local.insert(path.clone(), entry.live.clone().unwrap().node);
                    t.synced.insert(path, entry.to_synced().unwrap());
                }
                Op::Agree { path, entry } => {
                    t.synced.insert(path, entry);
                }
            }
        }
    }

    fn arb_node() -> impl Strategy<Value = Option<Node>> {
        prop_oneof![Just(None), (1u8..4).prop_map(|n| Some(file(n))), Just(Some(Node::dir()))]
    }

    proptest! {
        /// For any starting trees: planning then applying converges (within
        /// two rounds, the second only uploading conflicted copies), no local node with unsynced
        /// changes is ever deleted or replaced, and every local version
        /// survives (at its path, as a conflicted copy, or on the store).
        #[test]
        fn converges_and_never_loses_local_changes(
            l in arb_node(), s in arb_node(), r in arb_node(), srev in 1u64..4, rdelta in 0u64..2
        ) {
            let s = s.map(|n| (srev, n));
            let r = match (&s, r) {
                (Some((sr, _)), r) => Some((sr + rdelta, if rdelta == 0 { s.as_ref().map(|x| x.1.clone()) } else { r })),
                (None, Some(n)) => Some((1, Some(n))),
                (None, None) => None,
            };
            let mut t = Trees::one(l.clone(), s.clone(), r);
            let ops = t.plan();
            let local_changed = match (&l, &s) {
                (Some(a), Some((_, b))) => !a.same_content(b),
                (None, None) => false,
                _ => true,
            };
            for op in &ops {
                if local_changed {
                    prop_assert!(!matches!(op, Op::DeleteLocal { .. } | Op::Download { replace: true, .. }), "{:?}", op);
                }
            }
            apply_model(&mut t, &ops, &mut |b| b.next());
            // A conflicted copy is a new local file: the next round uploads
            // it. After that, nothing is left to do.
            let second = t.plan();
            prop_assert!(second.iter().all(|o| matches!(o, Op::Upload { base: Revision(0), .. })), "{:?}", second);
            apply_model(&mut t, &second, &mut |b| b.next());
            prop_assert!(t.plan().is_empty(), "not converged: {:?}", t.plan());
            if let (Some(mine), true) = (&l, local_changed) {
                let kept = t.local.values().any(|n| n == mine)
                    || t.remote.values().any(|e| e.live.as_ref().is_some_and(|x| &x.node == mine));
                prop_assert!(kept, "local version lost");
            }
        }
    }
}
