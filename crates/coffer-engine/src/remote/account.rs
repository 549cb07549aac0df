//! Signup and login against the store, before any session exists: OPAQUE in
//! two round trips each (see `coffer_crypto::login`). Signup wraps the
//! master key under the key from the OPAQUE export key and stores only that;
//! login gets it back and unwraps it. The password never leaves the device.
//! Signup also seals the account's settings ([`AccountSettings`]) for the
//! store to keep; login opens them.

use coffer_crypto::login::{self, KsfParams};
use coffer_crypto::MasterKey;
use coffer_proto::api::{
    Base64Bytes, LoginFinishRequest, LoginFinishResponse, LoginStartRequest, LoginStartResponse,
    RegisterFinishRequest, RegisterFinishResponse, RegisterStartRequest, RegisterStartResponse, SessionInfo,
    API_PREFIX,
};
use coffer_proto::DeviceId;
use rand_core::CryptoRngCore;
use reqwest::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::http::{decode, default_client};
use super::{HttpRemote, RemoteError};
use crate::settings::AccountSettings;

/// Unauthenticated calls to one store: signup and login.
#[derive(Debug, Clone)]
pub struct Accounts {
    client: Client,
    base: String,
}

/// A successful login.
#[derive(Debug)]
pub struct LoggedIn {
    /// The new session's client.
    pub remote: HttpRemote,
    /// The session.
    pub session: SessionInfo,
    /// The account's master key, unwrapped.
    pub master: MasterKey,
    /// The account's settings, opened.
    pub settings: AccountSettings,
}

impl Accounts {
    /// Talks to the store at `base_url`.
    pub fn new(base_url: &str) -> Result<Self, RemoteError> {
        Ok(Self::with_client(default_client()?, base_url))
    }

    /// Same, sharing an existing client.
    pub fn with_client(client: Client, base_url: &str) -> Self {
        Self { client, base: base_url.trim_end_matches('/').to_owned() }
    }

    /// POSTs one JSON message to an account endpoint (`path` after `/v1`).
    /// Exposed for tests that need to send raw protocol messages.
    pub async fn post<Req: Serialize + Sync, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, RemoteError> {
        let url = format!("{}{API_PREFIX}{path}", self.base);
        decode(self.client.post(url).json(req).send().await?).await
    }

    /// Checks that a Coffer store answers at this address, before a person
    /// types a password for it: an unauthenticated request must come back
    /// refused with the store's own error body.
    pub async fn probe(&self) -> Result<(), RemoteError> {
        let url = format!("{}{API_PREFIX}/usage", self.base);
        let res = self.client.get(url).send().await?;
        match decode::<serde_json::Value>(res).await {
            Err(RemoteError::Api { status: 401, body })
                if body.code != coffer_proto::api::ErrorCode::Unknown =>
            {
                Ok(())
            }
            Err(e @ RemoteError::Transport(_)) => Err(e),
            _ => Err(RemoteError::Protocol("this address does not answer like a Coffer server".into())),
        }
    }

    /// Creates an account whose master key is `master`, with `settings`.
    pub async fn signup<R: CryptoRngCore + Send>(
        &self,
        rng: &mut R,
        username: &str,
        password: &str,
        master: &MasterKey,
        settings: &AccountSettings,
        ksf: &KsfParams,
    ) -> Result<RegisterFinishResponse, RemoteError> {
        let (state, request) = login::register_start(rng, password.as_bytes())?;
        let start: RegisterStartResponse = self
            .post(
                "/accounts/register/start",
                &RegisterStartRequest { username: username.into(), request: Base64Bytes(request) },
            )
            .await?;
        let (upload, wrap) = login::register_finish(state, rng, password.as_bytes(), &start.response.0, ksf)?;
        let sealed = settings.seal(rng, &master.derive().meta);
        let wrapped_key = wrap.wrap_with_settings(rng, master, &sealed);
        let settings = Some(sealed);
        self.post(
            "/accounts/register/finish",
            &RegisterFinishRequest {
                username: username.into(),
                upload: Base64Bytes(upload),
                wrapped_key,
                settings,
            },
        )
        .await
    }

    /// Logs a device in: a new session and the unwrapped master key.
    pub async fn login<R: CryptoRngCore + Send>(
        &self,
        rng: &mut R,
        username: &str,
        password: &str,
        device_id: DeviceId,
        ksf: &KsfParams,
    ) -> Result<LoggedIn, RemoteError> {
        let (state, request) = login::login_start(rng, password.as_bytes())?;
        let start: LoginStartResponse = self
            .post(
                "/accounts/login/start",
                &LoginStartRequest { username: username.into(), request: Base64Bytes(request) },
            )
            .await?;
        let (finalization, wrap) = login::login_finish(state, password.as_bytes(), &start.response.0, ksf)?;
        let done: LoginFinishResponse = self
            .post(
                "/accounts/login/finish",
                &LoginFinishRequest {
                    login_id: start.login_id,
                    finalization: Base64Bytes(finalization),
                    device_id,
                    honours_settings: true,
                },
            )
            .await?;
        let remote = HttpRemote::with_client(self.client.clone(), &self.base, done.token);
        let opened = wrap
            .unwrap_key_with(&done.wrapped_key, done.settings.as_ref())
            .map_err(|e| match e {
                coffer_crypto::CryptoError::Malformed { why, .. } => {
                    format!("the store's answer is not what this account was made with: its wrapped master key is malformed ({why})")
                }
                e @ coffer_crypto::CryptoError::UnsupportedVersion { .. } => e.to_string(),
                _ => "the wrapped master key does not open with this login (or with the settings the store \
                      returned beside it)"
                    .to_string(),
            })
            .and_then(|master| {
                let settings = AccountSettings::open(&master.derive().meta, done.settings.as_ref())?;
                Ok((master, settings))
            });
        match opened {
            Ok((master, settings)) => Ok(LoggedIn { remote, session: done.session, master, settings }),
            Err(why) => {
                // The login made a session this device cannot use: end it
                // rather than leave it in the account's list (best effort).
                let _ = super::Remote::revoke_session(&remote, done.session.id).await;
                Err(RemoteError::Protocol(why))
            }
        }
    }
}
