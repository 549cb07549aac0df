//! Coffer's desktop shell: the engine in-process, the web UI from `ui/`
//! through Tauri IPC (one `control` command, `control-event` events; no
//! port), a tray icon per sync state with its menu, native notifications,
//! single instance and start at login. It stays thin: the first run and
//! every decision live in [`core`], [`tray`] and [`notify`], which run and
//! are tested without a display; `shell` only moves data between them and
//! Tauri.
//!
//! Arguments: `--home DIR` (or `COFFER_HOME`) for Coffer's data folder,
//! `--hidden` to start in the tray (how "start at login" launches it).

pub mod core;
pub mod notify;
mod shell;
pub mod tray;

pub use shell::run;
