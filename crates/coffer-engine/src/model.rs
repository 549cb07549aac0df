//! The engine's vocabulary: paths inside a sync root, the nodes found at
//! them, and the plaintext metadata an entry carries to other devices.
//!
//! - A [`RelPath`] is a validated path relative to the sync root, `/`
//!   separated, as the bytes are named on disk. It is never empty, never
//!   absolute, and no component is `.`, `..`, empty, or contains NUL or `/`.
//!   The root's state folder `.coffer` is not a valid first component, in
//!   any letter case (on a case-insensitive disk `.COFFER/trash/x` would
//!   land in the state folder).
//! - A [`Node`] is what is at a path: a file (with its content identity), a
//!   directory, or a symlink (synced as a link, never followed).
//! - Two nodes are [`Node::same_content`] when a user would call them the same
//!   file: same kind, same bytes (by [`FileHash`]), same executable bit, same
//!   link target. Modification times alone do not make a change.

use std::fmt;

use coffer_crypto::ContentHash;
use coffer_proto::ChunkId;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// Name of the per-root state folder (index, temp files, trash).
pub const STATE_DIR: &str = ".coffer";

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused path {path:?}: {why}")]
pub struct PathError {
    /// The offending path, as received (lossy for display only).
    pub path: String,
    /// Why.
    pub why: &'static str,
}

/// A validated path relative to a sync root.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    /// Validates `s` (see the module doc for the rules).
    pub fn new(s: impl Into<String>) -> Result<Self, PathError> {
        let s = s.into();
        let err = |why| Err(PathError { path: s.escape_debug().to_string(), why });
        if s.is_empty() {
            return err("empty");
        }
        if s.starts_with('/') {
            return err("absolute");
        }
        if s.len() > 4096 {
            return err("longer than 4096 bytes");
        }
        for (i, c) in s.split('/').enumerate() {
            match c {
                "" => return err("empty component"),
                "." | ".." => return err("`.` or `..` component"),
                _ if c.contains('\0') => return err("NUL byte"),
                _ if c.len() > 255 => return err("component longer than 255 bytes"),
                _ if i == 0 && c.eq_ignore_ascii_case(STATE_DIR) => {
                    return err("inside Coffer's state folder")
                }
                _ => {}
            }
        }
        Ok(Self(s))
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The parent path, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rfind('/').map(|i| RelPath(self.0[..i].to_string()))
    }

    /// `self`, then its parent, and so on up to its top-level ancestor.
    pub fn self_and_ancestors(&self) -> impl Iterator<Item = RelPath> {
        std::iter::successors(Some(self.clone()), RelPath::parent)
    }

    /// `self/name`, validated.
    pub fn join(&self, name: &str) -> Result<RelPath, PathError> {
        RelPath::new(format!("{}/{name}", self.0))
    }

    /// Number of components.
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    /// True if `self` is `other` or lies under it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The key two names collide under on a case-insensitive,
    /// normalisation-insensitive filesystem (macOS, Windows): NFC, lowercased.
    pub fn collision_key(&self) -> String {
        self.0.nfc().collect::<String>().to_lowercase()
    }
}

impl TryFrom<String> for RelPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RelPath::new(s)
    }
}

impl From<RelPath> for String {
    fn from(p: RelPath) -> String {
        p.0
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identity of a file's bytes: BLAKE3 over its chunks' content hashes and
/// lengths. Equal hashes mean equal bytes (and equal chunking).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileHash(#[serde(with = "hex32")] pub [u8; 32]);

impl FileHash {
    /// The hash of a file made of `chunks` (in order). The empty file has a
    /// fixed hash too.
    pub fn of_chunks<'a>(chunks: impl IntoIterator<Item = (&'a ContentHash, u32)>) -> Self {
        let mut h = blake3::Hasher::new_derive_key("coffer 2026-11-26 file hash v1");
        for (c, len) in chunks {
            h.update(c.as_bytes());
            h.update(&len.to_le_bytes());
        }
        Self(*h.finalize().as_bytes())
    }
}

impl fmt::Debug for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileHash({})", &hex::encode(self.0)[..12])
    }
}

/// One chunk of a file, as listed in its metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The store's id (BLAKE3 of the sealed bytes).
    pub id: ChunkId,
    /// Keyed hash of the plaintext (needed to derive its key and to verify).
    #[serde(with = "content_hex")]
    pub content: ContentHash,
    /// Plaintext length.
    pub len: u32,
}

/// What kind of thing is at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (synced as a link, never followed).
    Symlink,
}

/// What is at a path, as far as sync cares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File, directory or symlink.
    pub kind: NodeKind,
    /// Size in bytes (files), 0 otherwise.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// The owner-executable bit (files).
    pub executable: bool,
    /// Content identity (files).
    pub hash: Option<FileHash>,
    /// Link target (symlinks), as stored in the link.
    pub target: Option<String>,
}

impl Node {
    /// A directory.
    pub fn dir() -> Self {
        Self { kind: NodeKind::Dir, size: 0, mtime_ns: 0, executable: false, hash: None, target: None }
    }

    /// True when a user would call the two the same (see the module doc).
    pub fn same_content(&self, other: &Node) -> bool {
        self.kind == other.kind
            && match self.kind {
                NodeKind::Dir => true,
                NodeKind::File => {
                    self.hash == other.hash && self.size == other.size && self.executable == other.executable
                }
                NodeKind::Symlink => self.target == other.target,
            }
    }
}

/// The plaintext metadata of an entry, sealed before it leaves the device.
/// JSON. Format 1 lists a file's chunks here; format 2, for a list longer
/// than [`crate::chunklist::INLINE_MAX`], lists the pieces of the chunk list
/// instead ([`crate::chunklist`]), which a device fetches (or rebuilds) and
/// checks before it believes the entry. Format 3 (what this version writes)
/// is either of the two with the list in binary, as in a piece, base64
/// (`c` for the chunks, `l` for the pieces) rather than as JSON objects with
/// hex fields: 91 bytes an entry instead of about 150, and the metadata goes
/// to the store and to every device with each revision. In memory the three
/// are the same: `chunks` or `list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// Format version of this structure.
    pub v: u8,
    /// Where the entry lives.
    pub path: RelPath,
    /// What it is.
    pub node: Node,
    /// Its chunks, in order (files; formats 1 and 3).
    pub chunks: Vec<ChunkRef>,
    /// The pieces of its chunk list, in order (files; formats 2 and 3).
    pub list: Vec<ChunkRef>,
    /// The name of the device that made this revision (for people: version
    /// lists, conflict dialogs).
    pub device_name: String,
}

/// [`EntryMeta`] as JSON, all formats.
#[derive(Deserialize)]
struct MetaWire {
    v: u8,
    path: RelPath,
    node: Node,
    #[serde(default)]
    chunks: Vec<ChunkRef>,
    #[serde(default)]
    list: Vec<ChunkRef>,
    #[serde(default)]
    c: String,
    #[serde(default)]
    l: String,
    #[serde(default)]
    device_name: String,
}

/// [`MetaWire`] as written, borrowed.
#[derive(Serialize)]
struct MetaWireOut<'a> {
    v: u8,
    path: &'a RelPath,
    node: &'a Node,
    #[serde(skip_serializing_if = "<[ChunkRef]>::is_empty")]
    chunks: &'a [ChunkRef],
    #[serde(skip_serializing_if = "<[ChunkRef]>::is_empty")]
    list: &'a [ChunkRef],
    #[serde(skip_serializing_if = "String::is_empty")]
    c: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    l: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    device_name: &'a str,
}

impl EntryMeta {
    /// Format with the chunk list inline.
    pub const VERSION: u8 = 1;
    /// Format with the chunk list in pieces.
    pub const VERSION_LISTED: u8 = 2;
    /// Format 1 or 2 with the list in binary.
    pub const VERSION_COMPACT: u8 = 3;

    /// Serialises for sealing, in format `v`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let compact = self.v == Self::VERSION_COMPACT;
        let binary =
            |refs: &[ChunkRef]| if compact { crate::chunklist::to_base64(refs) } else { String::new() };
        let wire = MetaWireOut {
            v: self.v,
            path: &self.path,
            node: &self.node,
            chunks: if compact { &[] } else { &self.chunks },
            list: if compact { &[] } else { &self.list },
            c: binary(&self.chunks),
            l: binary(&self.list),
            device_name: &self.device_name,
        };
        serde_json::to_vec(&wire).expect("metadata always serialises")
    }

    /// Parses opened metadata, checking what serde cannot: the version, and
    /// that a file's chunks add up to its size and hash. A file whose list
    /// is in pieces (format 2, or 3 with `l`) comes back with `list` set and
    /// `chunks` empty: [`EntryMeta::check_chunks`] checks the list once its
    /// pieces are read.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let w: MetaWire = serde_json::from_slice(bytes).map_err(|e| format!("unreadable metadata: {e}"))?;
        let malformed = || format!("metadata of format {} is malformed", w.v);
        let (chunks, list) = match w.v {
            Self::VERSION | Self::VERSION_LISTED if w.c.is_empty() && w.l.is_empty() => (w.chunks, w.list),
            Self::VERSION_COMPACT if w.chunks.is_empty() && w.list.is_empty() => {
                let binary = |text: &str| {
                    crate::chunklist::from_base64(text).map_err(|e| format!("{}: {e}", malformed()))
                };
                (binary(&w.c)?, binary(&w.l)?)
            }
            Self::VERSION | Self::VERSION_LISTED | Self::VERSION_COMPACT => return Err(malformed()),
            v => return Err(format!("metadata version {v} is not supported; update Coffer")),
        };
        let listed = !list.is_empty();
        let file = w.node.kind == NodeKind::File;
        let fits = match w.v {
            Self::VERSION => !listed,
            Self::VERSION_LISTED => file && chunks.is_empty() && listed,
            _ => !listed || (file && chunks.is_empty()),
        };
        if !fits {
            return Err(malformed());
        }
        let m = EntryMeta { v: w.v, path: w.path, node: w.node, chunks, list, device_name: w.device_name };
        if file {
            if !listed {
                Self::check_chunks(&m.node, &m.chunks)?;
            }
        } else if !m.chunks.is_empty() {
            return Err("metadata of a directory or link lists chunks".into());
        }
        Ok(m)
    }

    /// Checks that a file's chunks add up to its size and hash.
    pub fn check_chunks(node: &Node, chunks: &[ChunkRef]) -> Result<(), String> {
        // No chunk is empty (an empty file has none); the pieces' binary
        // form, which the index also keeps lists in, cannot say one.
        if chunks.iter().any(|c| c.len == 0) {
            return Err("metadata lists an empty chunk".into());
        }
        let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        if total != node.size {
            return Err("metadata chunk list does not add up to the file size".into());
        }
        if node.hash != Some(FileHash::of_chunks(chunks.iter().map(|c| (&c.content, c.len)))) {
            return Err("metadata file hash does not match its chunk list".into());
        }
        Ok(())
    }
}

mod hex32 {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    /// Decodes from the text as the deserializer holds it: the index
    /// parses tens of thousands of these per round, one allocation each
    /// saved.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = [u8; 32];
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("64 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<[u8; 32], E> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(E::custom)?;
                Ok(out)
            }
        }
        d.deserialize_str(Hex)
    }
}

mod content_hex {
    use coffer_crypto::ContentHash;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &ContentHash, s: S) -> Result<S::Ok, S::Error> {
        super::hex32::serialize(c.as_bytes(), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ContentHash, D::Error> {
        super::hex32::deserialize(d).map(ContentHash::from_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_64_hex_digits_in_json() {
        let h = FileHash([0xab; 32]);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<FileHash>(&json).unwrap(), h);
        // Escaped text is decoded too (serde_json hands it over unborrowed).
        let escaped = format!("\"\\u0061{}\"", "b".to_string() + &"ab".repeat(31));
        assert_eq!(serde_json::from_str::<FileHash>(&escaped).unwrap(), h);
        for bad in ["\"ab\"", "\"zz\"", "42", &format!("\"{}\"", "ab".repeat(33))] {
            assert!(serde_json::from_str::<FileHash>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rel_path_rules() {
        for ok in ["a", "a/b", "a b/c.txt", ".cofferignore", "x/.coffer", "caf\u{e9}"] {
            assert!(RelPath::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "./a",
            "a/..",
            "..",
            "a/\0b",
            ".coffer",
            ".coffer/x",
            ".Coffer",
            ".COFFER/trash/x",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?}");
        }
        assert!(RelPath::new("x".repeat(256)).is_err());
        assert!(serde_json::from_str::<RelPath>("\"../etc/passwd\"").is_err());
    }

    #[test]
    fn rel_path_helpers() {
        let p = RelPath::new("a/b/c.txt").unwrap();
        assert_eq!(p.file_name(), "c.txt");
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(RelPath::new("a").unwrap().parent(), None);
        let up: Vec<String> = p.self_and_ancestors().map(|a| a.as_str().to_string()).collect();
        assert_eq!(up, ["a/b/c.txt", "a/b", "a"]);
        assert!(p.starts_with(&RelPath::new("a/b").unwrap()));
        assert!(!RelPath::new("a/bc").unwrap().starts_with(&RelPath::new("a/b").unwrap()));
        assert_eq!(
            RelPath::new("Cafe\u{301}").unwrap().collision_key(),
            RelPath::new("caf\u{e9}").unwrap().collision_key()
        );
    }

    #[test]
    fn meta_round_trip_and_validation() {
        let c = ContentHash::from_bytes([1; 32]);
        let chunks = vec![ChunkRef { id: ChunkId::from_bytes([2; 32]), content: c, len: 10 }];
        let node = Node {
            kind: NodeKind::File,
            size: 10,
            mtime_ns: 5,
            executable: true,
            hash: Some(FileHash::of_chunks([(&c, 10)])),
            target: None,
        };
        let m = EntryMeta {
            v: 1,
            path: RelPath::new("a/b").unwrap(),
            node,
            chunks: chunks.clone(),
            list: vec![],
            device_name: "pc".into(),
        };
        assert_eq!(EntryMeta::from_bytes(&m.to_bytes()).unwrap(), m);
        let mut bad = m.clone();
        bad.node.size = 11;
        assert!(EntryMeta::from_bytes(&bad.to_bytes()).is_err());
        let mut bad = m.clone();
        bad.v = 2;
        assert!(EntryMeta::from_bytes(&bad.to_bytes()).is_err(), "format 2 without pieces");
        bad.v = 4;
        assert!(EntryMeta::from_bytes(&bad.to_bytes()).unwrap_err().contains("update Coffer"));
        // Format 2: pieces instead of chunks; their sum is checked later.
        let listed = EntryMeta { v: 2, chunks: vec![], list: chunks.clone(), ..m.clone() };
        assert_eq!(EntryMeta::from_bytes(&listed.to_bytes()).unwrap(), listed);
        let both = EntryMeta { chunks: chunks.clone(), ..listed.clone() };
        assert!(EntryMeta::from_bytes(&both.to_bytes()).is_err(), "chunks and pieces");
        let pieces_in_v1 = EntryMeta { v: 1, ..listed.clone() };
        assert!(EntryMeta::from_bytes(&pieces_in_v1.to_bytes()).is_err());
        let dir = EntryMeta { node: Node::dir(), ..listed };
        assert!(EntryMeta::from_bytes(&dir.to_bytes()).is_err(), "a folder with pieces");
        let raw = String::from_utf8(m.to_bytes()).unwrap().replace("a/b", "../b");
        assert!(EntryMeta::from_bytes(raw.as_bytes()).is_err());
    }

    /// Format 3: the lists of formats 1 and 2 in binary. Same checks, and
    /// much shorter.
    #[test]
    fn compact_meta_round_trip_and_validation() {
        let parts: Vec<(ContentHash, u32)> =
            (0..64u8).map(|i| (ContentHash::from_bytes([i; 32]), 1000 + u32::from(i))).collect();
        let chunks: Vec<ChunkRef> = parts
            .iter()
            .enumerate()
            .map(|(i, (c, len))| ChunkRef {
                id: ChunkId::from_bytes([i as u8 + 100; 32]),
                content: *c,
                len: *len,
            })
            .collect();
        let node = Node {
            kind: NodeKind::File,
            size: parts.iter().map(|(_, l)| u64::from(*l)).sum(),
            mtime_ns: 5,
            executable: false,
            hash: Some(FileHash::of_chunks(parts.iter().map(|(c, l)| (c, *l)))),
            target: None,
        };
        let m = EntryMeta {
            v: EntryMeta::VERSION_COMPACT,
            path: RelPath::new("big.bin").unwrap(),
            node,
            chunks: chunks.clone(),
            list: vec![],
            device_name: "pc".into(),
        };
        let compact = m.to_bytes();
        assert_eq!(EntryMeta::from_bytes(&compact).unwrap(), m);
        let json = EntryMeta { v: EntryMeta::VERSION, ..m.clone() }.to_bytes();
        assert!(
            compact.len() * 10 < json.len() * 7,
            "{} bytes against {} in format 1",
            compact.len(),
            json.len()
        );

        let listed = EntryMeta { chunks: vec![], list: chunks.clone(), ..m.clone() };
        assert_eq!(EntryMeta::from_bytes(&listed.to_bytes()).unwrap(), listed);
        let both = EntryMeta { chunks: chunks.clone(), ..listed.clone() };
        assert!(EntryMeta::from_bytes(&both.to_bytes()).is_err(), "chunks and pieces");
        let dir = EntryMeta { node: Node::dir(), ..listed.clone() };
        assert!(EntryMeta::from_bytes(&dir.to_bytes()).is_err(), "a folder with pieces");
        let mut short = m.clone();
        short.chunks.pop();
        assert!(EntryMeta::from_bytes(&short.to_bytes()).is_err(), "chunks that do not add up");
        // Format 1 (JSON) could name an empty chunk that still adds up and
        // hashes right; no format may (the index keeps lists in the binary
        // form, which refuses one).
        let mut empty = EntryMeta { v: EntryMeta::VERSION, ..m.clone() };
        empty.chunks.push(ChunkRef {
            id: ChunkId::from_bytes([9; 32]),
            content: ContentHash::from_bytes([9; 32]),
            len: 0,
        });
        empty.node.hash = Some(FileHash::of_chunks(empty.chunks.iter().map(|c| (&c.content, c.len))));
        let err = EntryMeta::from_bytes(&empty.to_bytes()).unwrap_err();
        assert!(err.contains("empty chunk"), "{err}");

        let text = String::from_utf8(compact).unwrap();
        let c = serde_json::from_str::<serde_json::Value>(&text).unwrap()["c"].as_str().unwrap().to_owned();
        for (what, bad) in [
            ("not base64", text.replace(&c, "!!!")),
            ("a torn entry", text.replace(&c, &data_encoding::BASE64.encode(&[1; 69]))),
            ("an empty chunk", text.replace(&c, &data_encoding::BASE64.encode(&[0; 68]))),
        ] {
            assert!(EntryMeta::from_bytes(bad.as_bytes()).unwrap_err().contains("malformed"), "{what}");
        }
        // Each format's list fields only.
        let v1: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let mut mixed: serde_json::Value = serde_json::from_str(&text).unwrap();
        mixed["chunks"] = v1["chunks"].clone();
        assert!(EntryMeta::from_bytes(mixed.to_string().as_bytes()).unwrap_err().contains("malformed"));
        mixed["v"] = EntryMeta::VERSION.into();
        assert!(EntryMeta::from_bytes(mixed.to_string().as_bytes()).unwrap_err().contains("malformed"));
    }
}
