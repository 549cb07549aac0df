//! Coffer's cloud store (axum): accounts with OPAQUE login, sessions, quota,
//! chunks, entries with revisions, the change journal and versions.
//!
//! It only ever sees ciphertext: sealed chunks named by the BLAKE3 hash of
//! their bytes, sealed metadata bound to an entry id and revision, and the
//! account's master key wrapped by the client. Its two seams are `MetaStore`
//! (SQLite embedded, PostgreSQL at scale) and `BlobStore` (a folder embedded,
//! S3 at scale). The service itself is stateless.
//!
//! The implementation lands with issue 3; this crate is its home.
