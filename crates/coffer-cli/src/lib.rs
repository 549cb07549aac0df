//! The `coffer` command's library: every subcommand (one file per command
//! under `cmd/`), and what the desktop shell (`src-tauri`) shares with them
//! rather than repeating: opening a sync root's engine, signing up and
//! logging in ([`cmd::account`]), the embedded local store of `coffer up`
//! ([`cmd::up::LocalStore`]), and the daemon's driving loop
//! ([`cmd::sync::drive`]).

pub mod cmd;
