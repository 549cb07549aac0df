//! Coffer's cloud store (axum): accounts with OPAQUE login, sessions, quota,
//! chunks, entries with revisions, the change journal and versions.
//!
//! It only ever sees ciphertext: sealed chunks named by the BLAKE3 hash of
//! their bytes, sealed metadata bound to an entry id and revision, and the
//! account's master key wrapped by the client. Its two seams are
//! [`MetaStore`] (SQLite embedded, PostgreSQL at scale) and [`BlobStore`] (a
//! folder embedded, S3 at scale). The service itself keeps no durable state
//! outside them.
//!
//! Layers, bottom up:
//! - [`store`]: the traits, SQLite / disk / memory implementations, and the
//!   commit rules shared by all of them ([`store::commit`]);
//!   [`conformance`] is the suite every implementation passes.
//! - [`service`]: the business logic, transport-free, with an injected
//!   [`Clock`] and random source (the simulation runs it in-process).
//! - [`http`]: the axum shell, one handler per file; [`server`] binds it
//!   (TLS via rustls) and runs maintenance.
//!
//! Words: an **entry** is a file or folder, named by its [`EntryId`]; each
//! accepted change makes a new **revision**; the **journal** orders every
//! accepted change of an account by a sequence number, the [`Cursor`];
//! **live** means the latest revision of an entry is not a deletion.
//!
//! [`EntryId`]: coffer_proto::EntryId
//! [`Cursor`]: coffer_proto::Cursor

pub mod clock;
pub mod conformance;
mod error;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod previews;
pub mod ratelimit;
pub mod server;
pub mod service;
pub mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::ServiceError;
pub use service::{Caller, Service, ServiceConfig};
pub use store::{BlobStore, MetaStore};
