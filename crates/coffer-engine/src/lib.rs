//! The sync daemon as a library. Every face of Coffer (the CLI, the desktop
//! shell, the web UI) drives this one engine.
//!
//! The path of a local edit (see `DESIGN.md`, "Data flow"): [`watch`] and
//! [`scan`] find it, [`chunker`] cuts the file into content-defined chunks
//! with the account's sizes ([`settings`]), [`ingest`] hashes and seals them
//! on every core, and [`sync`] plans against the [`index`] (the synced and
//! remote trees) and talks to the store through [`remote`]; [`control`] is
//! the local API the UI uses. The filesystem, clock, randomness and store
//! are injected traits, so the simulation (`coffer-sim`) runs this very
//! code. docs/architecture.md has the module map.

pub mod chunker;
pub mod chunklist;
pub mod control;
pub mod failpoints;
pub mod fs;
pub mod home;
pub mod ignore;
pub mod index;
pub mod ingest;
pub mod model;
pub mod plan;
pub mod remote;
pub mod scan;
pub mod settings;
pub mod sync;
pub mod watch;
