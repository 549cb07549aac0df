//! The control API: how every face (the web UI over loopback HTTP, the
//! desktop shell over Tauri IPC) drives an engine. See `DESIGN.md`, "The
//! control API and the UI", and `docs/ui.md`.
//!
//! - [`dto`]: every type that crosses the boundary (requests, responses,
//!   events, errors with stable codes), and nothing else;
//! - [`dispatch`]: one function from a [`dto::Request`] to a
//!   [`dto::Response`], free of any transport;
//! - [`events`]: the one event stream (status changes, activity);
//! - [`http`]: the loopback HTTP transport (token, Host and Origin checks,
//!   server-sent events, the built UI);
//! - [`auth`]: the per-install token and one-time login links.
//!
//! A [`Control`] is what a transport holds: the engine and, when there is
//! one, the home folder (account, device name, token).

pub mod auth;
pub mod dispatch;
pub mod dto;
pub mod events;
pub mod http;

use std::sync::Arc;

use crate::home::Home;
use crate::remote::Remote;
use crate::sync::Engine;

/// Index settings keys (per sync root).
pub(crate) const UPLOAD_LIMIT_KEY: &str = "settings.upload_limit_kib";
pub(crate) const DOWNLOAD_LIMIT_KEY: &str = "settings.download_limit_kib";
pub(crate) const START_AT_LOGIN_KEY: &str = "settings.start_at_login";
pub(crate) const SERVE_UI_KEY: &str = "settings.serve_ui";
/// The pause flag `coffer pause` sets too.
pub(crate) const PAUSED_KEY: &str = "paused";

/// Whether the person asked for the web UI whenever the daemon runs (the
/// "serve the web UI" setting), so `coffer sync` serves it without `--ui`.
pub fn ui_enabled<R: Remote>(engine: &Engine<R>) -> bool {
    engine.index().get_meta(SERVE_UI_KEY).ok().flatten().as_deref() == Some("1")
}

/// An engine as the control API drives it.
#[derive(Debug)]
pub struct Control<R: Remote> {
    engine: Arc<Engine<R>>,
    home: Option<Home>,
}

impl<R: Remote> Control<R> {
    /// Drives `engine`; `home` gives the account and device settings.
    /// Applies the stored bandwidth limits to the engine.
    pub fn new(engine: Arc<Engine<R>>, home: Option<Home>) -> Self {
        let kib = |key| engine.index().get_meta(key).ok().flatten().and_then(|v| v.parse::<u64>().ok());
        engine.limits().up.set_rate(kib(UPLOAD_LIMIT_KEY).unwrap_or(0) * 1024);
        engine.limits().down.set_rate(kib(DOWNLOAD_LIMIT_KEY).unwrap_or(0) * 1024);
        Self { engine, home }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine<R>> {
        &self.engine
    }

    /// The home folder, if this face has one.
    pub fn home(&self) -> Option<&Home> {
        self.home.as_ref()
    }
}
