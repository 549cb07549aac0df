//! Ignore rules: which local paths are never synced.
//!
//! Two sources, both in gitignore syntax, matched on [`RelPath`]s (relative
//! to the sync root, so a leading `/` anchors at the root):
//!
//! - [`BUILTIN_PATTERNS`]: Coffer's state folder and editor/OS temp files.
//!   They always apply; a `!pattern` in the user's file cannot re-include them.
//! - The root's [`IGNORE_FILE`] (`.cofferignore`). A line that does not parse
//!   is reported in [`IgnoreRules::warnings`] and skipped; the other lines
//!   still apply. The file itself is synced (so every device ignores the
//!   same things) and is never ignored, whatever it says.
//!
//! Git's rule holds: a path inside an ignored directory is ignored, and a
//! `!` pattern cannot re-include it (the scanner does not even list such a
//! directory). An ignored path is not synced in either direction; it is not a
//! deletion, so the planner must leave the remote copy alone.

use std::io::{self, Read};
use std::path::Path;

use ::ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::fs::{display_path, Fs, StatKind};
use crate::model::RelPath;

/// The per-root ignore file.
pub const IGNORE_FILE: &str = ".cofferignore";

/// Patterns that are never synced.
pub const BUILTIN_PATTERNS: &[&str] = &[
    "/.coffer/",
    "*.swp",
    "*.swx",
    "*~",
    ".~lock.*#",
    "~$*",
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    "*.tmp",
    ".#*",
    "*.part",
    "*.crdownload",
];

/// A line of the ignore file that was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoreWarning {
    /// 1-based line number.
    pub line: usize,
    /// Why it was skipped.
    pub message: String,
}

/// The ignore file exists but cannot be read. Scanning without it would
/// sync what the user asked to ignore, so this stops the scan.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the ignore file {path}: {source}; fix its permissions or remove it")]
pub struct IgnoreError {
    /// The ignore file's path.
    pub path: String,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl IgnoreError {
    /// Retrying helps only for transient I/O errors.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.source.kind(),
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )
    }
}

/// The compiled rules of one sync root.
#[derive(Clone, Debug)]
pub struct IgnoreRules {
    builtin: Gitignore,
    user: Gitignore,
    warnings: Vec<IgnoreWarning>,
}

fn compile(lines: impl IntoIterator<Item = (usize, String)>, warnings: &mut Vec<IgnoreWarning>) -> Gitignore {
    // Root "." makes the matcher take paths as given (already relative).
    let mut b = GitignoreBuilder::new(".");
    for (n, line) in lines {
        if let Err(e) = b.add_line(None, &line) {
            warnings.push(IgnoreWarning { line: n, message: format!("{line:?} skipped: {e}") });
        }
    }
    b.build().unwrap_or_else(|e| {
        warnings.push(IgnoreWarning { line: 0, message: format!("ignore rules not applied: {e}") });
        Gitignore::empty()
    })
}

impl IgnoreRules {
    /// The built-in rules plus the given ignore-file text.
    pub fn from_text(text: &str) -> Self {
        let mut warnings = Vec::new();
        let builtin = compile(BUILTIN_PATTERNS.iter().map(|p| (0, p.to_string())), &mut warnings);
        debug_assert!(warnings.is_empty(), "built-in ignore patterns must parse: {warnings:?}");
        warnings.clear();
        let user = compile(text.lines().enumerate().map(|(i, l)| (i + 1, l.to_string())), &mut warnings);
        Self { builtin, user, warnings }
    }

    /// Only the built-in rules.
    pub fn builtin() -> Self {
        Self::from_text("")
    }

    /// Loads the rules of the sync root at `root`: built-ins plus
    /// `root/.cofferignore` if it is a regular file. A missing file means no
    /// user rules; a file that exists but cannot be read is an error.
    pub fn load(fs: &dyn Fs, root: &Path) -> Result<Self, IgnoreError> {
        let path = root.join(IGNORE_FILE);
        let fail = |source| IgnoreError { path: display_path(&path), source };
        match fs.symlink_metadata(&path) {
            Ok(s) if s.kind == StatKind::File => {}
            Ok(_) => {
                let mut r = Self::builtin();
                r.warnings.push(IgnoreWarning {
                    line: 0,
                    message: format!("{IGNORE_FILE} is not a regular file; only built-in rules apply"),
                });
                return Ok(r);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::builtin()),
            Err(e) => return Err(fail(e)),
        }
        let mut bytes = Vec::new();
        fs.open_read(&path).and_then(|mut r| r.read_to_end(&mut bytes)).map_err(fail)?;
        let text = String::from_utf8_lossy(&bytes);
        let mut rules = Self::from_text(&text);
        if let std::borrow::Cow::Owned(_) = text {
            rules.warnings.push(IgnoreWarning {
                line: 0,
                message: format!("{IGNORE_FILE} is not valid UTF-8; bad bytes were replaced"),
            });
        }
        Ok(rules)
    }

    /// Lines of the ignore file that were skipped, for the user.
    pub fn warnings(&self) -> &[IgnoreWarning] {
        &self.warnings
    }

    /// Whether `path` (a directory if `is_dir`) is ignored, itself or
    /// through an ignored ancestor directory.
    pub fn is_ignored(&self, path: &RelPath, is_dir: bool) -> bool {
        if path.as_str() == IGNORE_FILE {
            return false;
        }
        let mut ancestors = Vec::new();
        let mut cur = path.parent();
        while let Some(p) = cur {
            cur = p.parent();
            ancestors.push(p);
        }
        ancestors.iter().rev().any(|a| self.matches(a, true)) || self.matches(path, is_dir)
    }

    /// [`IgnoreRules::is_ignored`] for many paths: each folder's own match
    /// is worked out once, not again for every path below it.
    pub fn filter(&self) -> IgnoreFilter<'_> {
        IgnoreFilter { rules: self, dirs: std::collections::HashMap::new() }
    }

    /// Whether `path` itself matches (ancestors not considered); the scanner
    /// uses this while walking, having already checked the ancestors.
    pub fn matches(&self, path: &RelPath, is_dir: bool) -> bool {
        if path.as_str() == IGNORE_FILE {
            return false;
        }
        self.builtin.matched(path.as_str(), is_dir).is_ignore()
            || self.user.matched(path.as_str(), is_dir).is_ignore()
    }
}

/// Ignore decisions for many paths, remembering each ancestor folder's.
#[derive(Debug)]
pub struct IgnoreFilter<'a> {
    rules: &'a IgnoreRules,
    /// Folder path -> whether it matches itself (ancestors not considered).
    dirs: std::collections::HashMap<RelPath, bool>,
}

impl IgnoreFilter<'_> {
    /// Same answer as [`IgnoreRules::is_ignored`].
    pub fn is_ignored(&mut self, path: &RelPath, is_dir: bool) -> bool {
        if path.as_str() == IGNORE_FILE {
            return false;
        }
        let mut ancestors = Vec::new();
        let mut cur = path.parent();
        while let Some(p) = cur {
            cur = p.parent();
            ancestors.push(p);
        }
        for a in ancestors.into_iter().rev() {
            let rules = self.rules;
            if *self.dirs.entry(a).or_insert_with_key(|a| rules.matches(a, true)) {
                return true;
            }
        }
        self.rules.matches(path, is_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{MemFs, RealFs};

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn builtins() {
        let r = IgnoreRules::builtin();
        for ignored in [
            "a/.notes.txt.swp",
            "x.swx",
            "notes.txt~",
            "docs/.~lock.report.odt#",
            "~$report.docx",
            ".DS_Store",
            "photos/Thumbs.db",
            "desktop.ini",
            "a/b/c.tmp",
            ".#main.rs",
            "big.iso.part",
            "d/movie.mkv.crdownload",
        ] {
            assert!(r.is_ignored(&p(ignored), false), "{ignored} should be ignored");
        }
        for synced in [".cofferignore", "report.docx", "a/b/c.txt", "x/.coffer", "tmp", "part/x", "a~b"] {
            assert!(!r.is_ignored(&p(synced), false), "{synced} should be synced");
        }
        // A nested `.coffer` is a user folder; only the root's is state.
        assert!(!r.is_ignored(&p("x/.coffer"), true));
    }

    #[test]
    fn user_rules_dirs_anchors_negation_and_bad_lines() {
        let r =
            IgnoreRules::from_text("# comment\nbuild/\n/top.log\n*.o\n!keep.o\nfoo/{bar\nnode_modules\n*\n");
        // `*` alone would ignore everything; check the rest without it.
        assert!(r.is_ignored(&p("anything"), false));
        assert!(!r.is_ignored(&p(".cofferignore"), false), "the ignore file is always synced");
        let r = IgnoreRules::from_text("# comment\nbuild/\n/top.log\n*.o\n!keep.o\nfoo/{bar\nnode_modules\n");
        assert_eq!(r.warnings().len(), 1, "{:?}", r.warnings());
        assert_eq!(r.warnings()[0].line, 6);
        assert!(r.is_ignored(&p("build"), true));
        assert!(!r.is_ignored(&p("build"), false), "`build/` matches directories only");
        assert!(r.is_ignored(&p("src/build/out.bin"), false), "inside an ignored dir");
        assert!(r.is_ignored(&p("top.log"), false));
        assert!(!r.is_ignored(&p("sub/top.log"), false), "anchored at the root");
        assert!(r.is_ignored(&p("a/x.o"), false));
        assert!(!r.is_ignored(&p("a/keep.o"), false), "negation re-includes");
        assert!(r.is_ignored(&p("build/keep.o"), false), "…but not inside an ignored dir");
        assert!(r.is_ignored(&p("web/node_modules/x/y.js"), false));
        assert!(!r.matches(&p("web/node_modules/x/y.js"), false), "matches() ignores ancestors");
        // Built-ins cannot be re-included.
        let r = IgnoreRules::from_text("!*.tmp\n");
        assert!(r.is_ignored(&p("x.tmp"), false));
    }

    #[test]
    fn the_filter_agrees_with_is_ignored() {
        let r = IgnoreRules::from_text("build/\n/top.log\n*.o\n!keep.o\nnode_modules\n");
        let mut f = r.filter();
        // Twice: the second pass answers from the remembered folders.
        for _ in 0..2 {
            for (path, is_dir) in [
                ("build", true),
                ("build", false),
                ("src/build/out.bin", false),
                ("build/keep.o", false),
                ("a/keep.o", false),
                ("a/x.o", false),
                ("top.log", false),
                ("sub/top.log", false),
                ("web/node_modules/x/y.js", false),
                ("web/app.js", false),
                (".cofferignore", false),
                ("a/b.tmp", false),
            ] {
                assert_eq!(f.is_ignored(&p(path), is_dir), r.is_ignored(&p(path), is_dir), "{path} {is_dir}");
            }
        }
    }

    fn load_on(fs: &dyn Fs, root: &Path, write: impl Fn(&Path, &[u8])) {
        assert!(IgnoreRules::load(fs, root).unwrap().warnings().is_empty());
        write(&root.join(IGNORE_FILE), b"*.log\nbad/{x\n\xff\n");
        let r = IgnoreRules::load(fs, root).unwrap();
        assert!(r.is_ignored(&p("a.log"), false));
        assert_eq!(r.warnings().len(), 2, "{:?}", r.warnings());
    }

    #[test]
    fn load_from_mem_and_real_fs() {
        let fs = MemFs::new();
        load_on(&fs, Path::new("/"), |path, data| fs.write_file(path, data).unwrap());
        fs.deny(Path::new("/.cofferignore"), true);
        let e = IgnoreRules::load(&fs, Path::new("/")).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::PermissionDenied);
        assert!(!e.is_retryable());

        let dir = tempfile::tempdir().unwrap();
        load_on(&RealFs, dir.path(), |path, data| std::fs::write(path, data).unwrap());
    }
}
