//! What the engine believes from other devices: entry metadata (sealed by a
//! device of the same account, so validly sealed but possibly malicious),
//! the pieces of a long chunk list, the paths inside it, and
//! `.cofferignore` files synced from elsewhere.

use coffer_engine::chunklist;
use coffer_engine::ignore::IgnoreRules;
use coffer_engine::model::{ChunkRef, EntryMeta, FileHash, Node, NodeKind, RelPath, STATE_DIR};
use coffer_engine::sync::names::conflicted_copy;
use coffer_engine::sync::open_entry;
use coffer_proto::api::{EntryVersion, UnixMillis};
use coffer_proto::{ChunkId, Cursor, DeviceId, EntryId, Revision};

use crate::{keys, rng};

/// `data[1..]` is the plaintext of an entry's metadata, validly sealed (a
/// malicious device of the same account). Bit 0 of `data[0]` makes the
/// claimed entry id the one of the path inside (so the path rules are all
/// that stands), else a fixed one. Whatever is accepted must be a path that
/// stays inside the root, for this very entry, with a consistent chunk list.
pub fn entry_version(data: &[u8]) {
    let Some((&flags, plain)) = data.split_first() else { return };
    let k = keys();
    let named = serde_json::from_slice::<serde_json::Value>(plain)
        .ok()
        .and_then(|v| v.get("path").and_then(|p| p.as_str()).map(|p| k.path.entry_id(p)));
    let entry = match named {
        Some(id) if flags & 1 == 1 => id,
        _ => EntryId::from_bytes([flags; 32]),
    };
    let revision = Revision(u64::from(flags >> 1) + 1);
    let meta = k.meta.seal(&mut rng(u64::from(flags)), &entry, revision, plain);
    let v = EntryVersion {
        seq: Cursor(1),
        entry_id: entry,
        revision,
        meta: Some(meta),
        chunks: vec![],
        device_id: DeviceId::from_bytes([1; 16]),
        time: UnixMillis(0),
    };
    let Ok((path, e, list)) = open_entry(k, &v) else { return };
    let path = path.expect("live metadata has a path");
    assert_path_stays_inside(path.as_str());
    assert_eq!(k.path.entry_id(path.as_str()), entry, "accepted metadata of another entry");
    let live = e.live.expect("live metadata");
    if !list.is_empty() {
        // A chunk list in pieces: only a file has one, and its chunks are
        // checked once the pieces are read.
        assert_eq!(live.node.kind, NodeKind::File, "accepted chunk list pieces on a directory or link");
        assert!(live.chunks.is_empty(), "accepted both chunks and pieces");
    } else if live.node.kind == NodeKind::File {
        let total: u64 = live.chunks.iter().map(|c| u64::from(c.len)).sum();
        assert_eq!(total, live.node.size, "accepted a chunk list that does not add up");
        let hash = FileHash::of_chunks(live.chunks.iter().map(|c| (&c.content, c.len)));
        assert_eq!(live.node.hash, Some(hash), "accepted a file hash that does not match");
    } else {
        assert!(live.chunks.is_empty(), "accepted chunks on a directory or link");
    }
}

/// Panics unless `p` is a relative path whose every component names
/// something inside the root (and not the state folder).
fn assert_path_stays_inside(p: &str) {
    assert!(!p.is_empty() && !p.starts_with('/'), "accepted {p:?}");
    for (i, c) in p.split('/').enumerate() {
        assert!(!c.is_empty() && c != "." && c != "..", "accepted {p:?}");
        assert!(!c.contains('\0') && c.len() <= 255, "accepted {p:?}");
        assert!(!(i == 0 && c.eq_ignore_ascii_case(STATE_DIR)), "accepted {p:?} inside the state folder");
    }
}

/// Seeds: metadata a real device writes (file, folder, link), and escapes.
pub fn entry_version_seeds() -> Vec<Vec<u8>> {
    let file = r#"{"v":1,"path":"d/a.txt","node":{"kind":"file","size":0,"mtime_ns":5,"executable":false,"hash":"HASH","target":null},"device_name":"pc"}"#
        .replace("\"HASH\"", &serde_json::to_string(&FileHash::of_chunks(std::iter::empty())).expect("hash"));
    let dir = r#"{"v":1,"path":"d","node":{"kind":"dir","size":0,"mtime_ns":0,"executable":false,"hash":null,"target":null}}"#;
    let link = r#"{"v":1,"path":"l","node":{"kind":"symlink","size":0,"mtime_ns":0,"executable":false,"hash":null,"target":"../../etc"}}"#;
    let escape = dir.replace("\"d\"", "\"../x\"");
    // Format 3: a file of one chunk, its list in binary.
    let content = coffer_crypto::ContentHash::from_bytes([7; 32]);
    let compact = EntryMeta {
        v: EntryMeta::VERSION_COMPACT,
        path: RelPath::new("d/b.bin").expect("path"),
        node: Node {
            kind: NodeKind::File,
            size: 9,
            mtime_ns: 5,
            executable: false,
            hash: Some(FileHash::of_chunks([(&content, 9)])),
            target: None,
        },
        chunks: vec![ChunkRef { id: ChunkId::from_bytes([8; 32]), content, len: 9 }],
        list: vec![],
        device_name: "pc".into(),
    }
    .to_bytes();
    let compact = String::from_utf8(compact).expect("JSON");
    [file.as_str(), dir, link, escape.as_str(), compact.as_str()]
        .iter()
        .flat_map(|s| [[&[1u8][..], s.as_bytes()].concat(), [&[0u8][..], s.as_bytes()].concat()])
        .collect()
}

/// A piece of a long chunk list (metadata format 2), fetched from the store
/// and opened: whatever decodes names only non-empty chunks, re-encodes to
/// the same bytes, and cuts back into pieces that hold the same entries.
pub fn chunk_list(data: &[u8]) {
    let Ok(list) = chunklist::decode(data) else { return };
    assert!(!list.is_empty(), "accepted an empty piece");
    assert!(list.iter().all(|c| c.len > 0), "accepted an empty chunk");
    assert_eq!(chunklist::encode(&list), data, "decoding is not the inverse of encoding");
    let pieces = chunklist::pieces(keys(), &list);
    if list.len() > chunklist::INLINE_MAX {
        let back: Vec<_> =
            pieces.iter().flat_map(|p| chunklist::decode(&p.plain).expect("own piece")).collect();
        assert_eq!(back, list, "the pieces lost or moved an entry");
    } else {
        assert!(pieces.is_empty(), "a short list was cut");
    }
}

/// Seeds: encoded runs of a few entries, and malformed lengths.
pub fn chunk_list_seeds() -> Vec<Vec<u8>> {
    let entry = |n: u8| {
        let mut e = vec![n; 64];
        e.extend_from_slice(&(u32::from(n) + 1).to_le_bytes());
        e
    };
    let run = |n: u8| (0..n).flat_map(entry).collect::<Vec<u8>>();
    vec![run(1), run(3), run(70), entry(5)[..67].to_vec(), vec![0; 68]]
}

/// A path from anywhere (the store, the disk, the UI): the rules of
/// [`RelPath`] hold for whatever is accepted, its helpers stay valid, and a
/// conflicted copy of it is another valid path.
pub fn rel_path(data: &[u8]) {
    let (device, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&data[..i]), &data[i + 1..]),
        None => ("laptop".into(), data),
    };
    let Ok(s) = std::str::from_utf8(rest) else { return };
    let Ok(p) = RelPath::new(s) else { return };
    assert_path_stays_inside(p.as_str());
    let _ = p.collision_key();
    let name = p.file_name();
    let rebuilt = match p.parent() {
        Some(parent) => {
            assert!(p.starts_with(&parent) && parent.depth() + 1 == p.depth());
            parent.join(name).expect("a parent joined with the name is valid")
        }
        None => RelPath::new(name).expect("a top-level name is valid"),
    };
    assert_eq!(rebuilt, p);
    let mut now = [0u8; 8];
    for (i, b) in data.iter().take(8).enumerate() {
        now[i] = *b;
    }
    let copy = conflicted_copy(&p, &device, i64::from_le_bytes(now), u32::from(data.len() as u8));
    assert_eq!(copy.parent(), p.parent(), "a conflicted copy moved to another folder");
    // A tag is at most ~120 bytes: below that depth there is always room.
    if p.parent().map_or(0, |q| q.as_str().len()) + 160 <= 4096 {
        assert_ne!(copy, p, "a conflicted copy has the original's name");
    }
}

/// Seeds: ordinary paths and near misses.
pub fn rel_path_seeds() -> Vec<Vec<u8>> {
    ["a", "d/e/report.docx", "caf\u{e9}/x", ".cofferignore", "x/.coffer", "pc\nd/.hidden", "../x", "a//b"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

/// A `.cofferignore` synced from another device: any text compiles (bad
/// lines become warnings), and matching any valid path works.
pub fn ignore_rules(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let rules = IgnoreRules::from_text(&text);
    let _ = rules.warnings();
    for line in text.lines() {
        let candidate = line.trim_start_matches('!').trim_start_matches('/').trim_end_matches('/');
        if let Ok(p) = RelPath::new(candidate) {
            let _ = rules.is_ignored(&p, true);
            let _ = rules.is_ignored(&p, false);
            let _ = rules.matches(&p, false);
        }
    }
}

/// Seeds: typical rule files.
pub fn ignore_rules_seeds() -> Vec<Vec<u8>> {
    ["*.bin\nphotos/\n!keep.bin\n", "# comment\n/build\n**/node_modules/\n\\!x\n", "[a-\n"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
}
