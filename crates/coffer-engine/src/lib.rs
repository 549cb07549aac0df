//! The sync daemon as a library. Every face of Coffer (the CLI, the desktop
//! shell, the web UI) drives this one engine.
//!
//! Today it holds the ingest path of a local edit (see `DESIGN.md`, "Data
//! flow"): [`chunker`] cuts a file into content-defined chunks with bounded
//! memory, and [`ingest`] hashes and seals them on every core, in order. The
//! scanner, watcher, local index, planner, transfers and control API join it
//! with issue 4; they will take the filesystem, clock, randomness and store as
//! injected traits so that the simulation of issue 5 can run this very code.

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
