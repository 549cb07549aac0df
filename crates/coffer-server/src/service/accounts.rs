//! Accounts and sessions: OPAQUE registration and login (two round trips
//! each), bearer-token sessions per device, listing and revocation, quota.
//!
//! - The store keeps the OPAQUE registration record and the master key as
//!   wrapped by the client; neither reveals the password or opens any data.
//! - Login start answers the same way for unknown accounts (OPAQUE's dummy
//!   record), so it does not tell which names exist. Its state waits in
//!   memory for the finish message, at most [`LOGIN_TTL_MS`], and is taken
//!   out on first use: a replayed finish message finds nothing.
//!   (Several instances would need sticky routing for the two login round
//!   trips, or these states in the shared store.)
//! - Login attempts are limited per account name and per client address
//!   before any work is done.
//! - A session token is 256 random bits; the store keeps only its BLAKE3
//!   hash, so a leaked database does not leak live credentials.
//! - Every request authenticates, so resolved sessions are cached in memory
//!   for [`SESSION_CACHE_MS`]. A revocation clears this instance's cache at
//!   once; other instances (several behind a load balancer) would honour it
//!   within that bound.

use std::collections::HashMap;
use std::net::IpAddr;

use coffer_crypto::login::Suite;
use coffer_proto::api::{
    Base64Bytes, LoginFinishRequest, LoginFinishResponse, LoginId, LoginStartRequest, LoginStartResponse,
    RegisterFinishRequest, RegisterFinishResponse, RegisterStartRequest, RegisterStartResponse, SessionId,
    SessionInfo, SessionToken, Usage,
};
use opaque_ke::{
    CredentialFinalization, CredentialRequest, RegistrationRequest, RegistrationUpload, ServerLogin,
    ServerLoginStartParameters, ServerRegistration,
};

use super::{millis, Caller, PendingLogin, Service};
use crate::store::{NewAccount, SessionRecord, TokenHash};
use crate::ServiceError;

/// How long a login may wait between its two messages.
pub const LOGIN_TTL_MS: u64 = 60_000;
const MAX_PENDING_LOGINS: usize = 100_000;
/// How long a resolved session is trusted without asking the store again.
pub const SESSION_CACHE_MS: u64 = 5_000;
const MAX_CACHED_SESSIONS: usize = 200_000;

/// Resolved sessions, and sessions revoked recently (so that a lookup that
/// raced a revocation cannot put the session back into the cache).
#[derive(Debug, Default)]
pub(crate) struct SessionCache {
    live: HashMap<TokenHash, CachedSession>,
    revoked: HashMap<SessionId, coffer_proto::api::UnixMillis>,
}

#[derive(Clone, Copy, Debug)]
struct CachedSession {
    caller: Caller,
    expires_at: coffer_proto::api::UnixMillis,
    cached_at: coffer_proto::api::UnixMillis,
}
const MAX_USERNAME: usize = 256;

fn check_username(name: &str) -> Result<(), ServiceError> {
    if name.is_empty() || name.len() > MAX_USERNAME || name.chars().any(char::is_control) {
        return Err(ServiceError::BadRequest(format!(
            "account name must be 1 to {MAX_USERNAME} printable bytes"
        )));
    }
    Ok(())
}

fn bad(what: &str) -> ServiceError {
    ServiceError::BadRequest(format!("malformed OPAQUE {what}"))
}

/// Hash of a bearer token, as stored.
pub fn token_hash(token: &str) -> TokenHash {
    TokenHash(*blake3::hash(token.as_bytes()).as_bytes())
}

impl Service {
    /// Registration, first round trip.
    pub async fn register_start(
        &self,
        req: RegisterStartRequest,
    ) -> Result<RegisterStartResponse, ServiceError> {
        check_username(&req.username)?;
        let request =
            RegistrationRequest::<Suite>::deserialize(&req.request.0).map_err(|_| bad("request"))?;
        let start = ServerRegistration::<Suite>::start(&self.inner.setup, request, req.username.as_bytes())
            .map_err(|_| bad("request"))?;
        Ok(RegisterStartResponse { response: Base64Bytes(start.message.serialize().to_vec()) })
    }

    /// Registration, second round trip: creates the account.
    pub async fn register_finish(
        &self,
        req: RegisterFinishRequest,
    ) -> Result<RegisterFinishResponse, ServiceError> {
        check_username(&req.username)?;
        let upload = RegistrationUpload::<Suite>::deserialize(&req.upload.0).map_err(|_| bad("upload"))?;
        let record = ServerRegistration::<Suite>::finish(upload).serialize().to_vec();
        if req.wrapped_key.is_empty() || req.wrapped_key.len() > 1024 {
            return Err(ServiceError::BadRequest("wrapped key must be 1 to 1024 bytes".into()));
        }
        if req.settings.as_ref().is_some_and(|s| s.is_empty() || s.len() > 1024) {
            return Err(ServiceError::BadRequest("settings must be 1 to 1024 bytes".into()));
        }
        let quota_bytes = self.inner.config.default_quota_bytes;
        let new = NewAccount {
            username: req.username,
            opaque_record: record,
            wrapped_key: req.wrapped_key,
            settings: req.settings,
            quota_bytes,
            created_at: self.now(),
        };
        self.meta(move |m| m.create_account(new)).await?;
        Ok(RegisterFinishResponse { quota_bytes })
    }

    /// Login, first round trip. `client` is the caller's address, for rate
    /// limiting.
    pub async fn login_start(
        &self,
        req: LoginStartRequest,
        client: Option<IpAddr>,
    ) -> Result<LoginStartResponse, ServiceError> {
        check_username(&req.username)?;
        let now = self.now();
        self.inner
            .per_account
            .check(&req.username, now)
            .map_err(|retry_after_ms| ServiceError::RateLimited { retry_after_ms })?;
        if let Some(ip) = client {
            self.inner
                .per_address
                .check(&ip.to_string(), now)
                .map_err(|retry_after_ms| ServiceError::RateLimited { retry_after_ms })?;
        }
        let request = CredentialRequest::<Suite>::deserialize(&req.request.0).map_err(|_| bad("request"))?;
        let name = req.username.clone();
        let account = self.meta(move |m| m.account_by_name(&name)).await?;
        let record = match &account {
            Some(a) => Some(
                ServerRegistration::<Suite>::deserialize(&a.opaque_record)
                    .map_err(|_| ServiceError::Internal("stored OPAQUE record does not parse".into()))?,
            ),
            None => None,
        };
        let start = {
            let mut rng = self.inner.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ServerLogin::start(
                &mut *rng,
                &self.inner.setup,
                record,
                request,
                req.username.as_bytes(),
                ServerLoginStartParameters::default(),
            )
            .map_err(|_| bad("request"))?
        };
        let login_id = LoginId::from_bytes(self.random());
        {
            let mut logins = self.inner.logins.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if logins.len() >= MAX_PENDING_LOGINS {
                logins.retain(|_, p| p.expires > now);
                if logins.len() >= MAX_PENDING_LOGINS {
                    return Err(ServiceError::RateLimited { retry_after_ms: 1000 });
                }
            }
            logins.insert(
                login_id,
                PendingLogin {
                    account: account.map(|a| a.id),
                    state: start.state,
                    expires: now.plus_millis(LOGIN_TTL_MS),
                },
            );
        }
        Ok(LoginStartResponse { login_id, response: Base64Bytes(start.message.serialize().to_vec()) })
    }

    /// Login, second round trip: on success, a new session for the device.
    pub async fn login_finish(&self, req: LoginFinishRequest) -> Result<LoginFinishResponse, ServiceError> {
        let now = self.now();
        let pending = self
            .inner
            .logins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&req.login_id)
            .filter(|p| p.expires > now)
            .ok_or(ServiceError::Unauthorized)?;
        let finalization = CredentialFinalization::<Suite>::deserialize(&req.finalization.0)
            .map_err(|_| ServiceError::Unauthorized)?;
        pending.state.finish(finalization).map_err(|_| ServiceError::Unauthorized)?;
        let account_id = pending.account.ok_or(ServiceError::Unauthorized)?;
        let account = self.meta(move |m| m.account(account_id)).await?.ok_or(ServiceError::Unauthorized)?;
        if account.settings.is_some() && !req.honours_settings {
            return Err(ServiceError::BadRequest(
                "this account was made by a newer Coffer, whose settings (the chunk sizes all its devices \
                 must share) this one cannot honour: update Coffer to log in"
                    .into(),
            ));
        }

        let token = SessionToken::new(hex::encode(self.random::<32>()));
        let record = SessionRecord {
            id: SessionId::from_bytes(self.random()),
            account: account.id,
            device: req.device_id,
            token_hash: token_hash(token.expose_secret()),
            created_at: now,
            expires_at: now.plus_millis(millis(self.inner.config.session_ttl)),
        };
        let info = session_info(&record, true);
        self.meta(move |m| m.create_session(&record)).await?;
        tracing::info!(account = %account.id, session = %info.id, "login");
        Ok(LoginFinishResponse {
            token,
            session: info,
            wrapped_key: account.wrapped_key,
            settings: account.settings,
        })
    }

    /// Resolves a bearer token to its caller; `Unauthorized` if unknown,
    /// revoked or expired.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, ServiceError> {
        if token.len() != 64 {
            return Err(ServiceError::Unauthorized);
        }
        let hash = token_hash(token);
        let now = self.now();
        let cached = self
            .inner
            .session_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .live
            .get(&hash)
            .copied();
        if let Some(c) = cached {
            if now.0.saturating_sub(c.cached_at.0) < SESSION_CACHE_MS {
                return if c.expires_at > now { Ok(c.caller) } else { Err(ServiceError::Unauthorized) };
            }
        }
        let s = self.meta(move |m| m.session_by_token(&hash)).await?.ok_or(ServiceError::Unauthorized)?;
        if s.expires_at <= now {
            return Err(ServiceError::Unauthorized);
        }
        let caller = Caller { account: s.account, session: s.id, device: s.device };
        let mut cache = self.inner.session_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.revoked.contains_key(&caller.session) {
            return Err(ServiceError::Unauthorized);
        }
        if cache.live.len() >= MAX_CACHED_SESSIONS {
            cache.live.clear();
        }
        cache.live.insert(hash, CachedSession { caller, expires_at: s.expires_at, cached_at: now });
        Ok(caller)
    }

    /// The account's sessions.
    pub async fn sessions(&self, caller: Caller) -> Result<Vec<SessionInfo>, ServiceError> {
        let now = self.now();
        let all = self.meta(move |m| m.sessions(caller.account)).await?;
        Ok(all
            .iter()
            .filter(|s| s.expires_at > now)
            .map(|s| session_info(s, s.id == caller.session))
            .collect())
    }

    /// Revokes one of the account's sessions (the caller's own included).
    pub async fn revoke_session(&self, caller: Caller, id: SessionId) -> Result<(), ServiceError> {
        let revoked = self.meta(move |m| m.revoke_session(caller.account, id)).await?;
        if revoked {
            let now = self.now();
            let mut cache =
                self.inner.session_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            cache.live.retain(|_, c| c.caller.session != id);
            cache.revoked.retain(|_, at| now.0.saturating_sub(at.0) < 60 * SESSION_CACHE_MS);
            cache.revoked.insert(id, now);
            drop(cache);
            tracing::info!(account = %caller.account, session = %id, "session revoked");
            Ok(())
        } else {
            Err(ServiceError::NotFound("session"))
        }
    }

    /// Usage and quota.
    pub async fn usage(&self, caller: Caller) -> Result<Usage, ServiceError> {
        self.meta(move |m| m.usage(caller.account)).await
    }

    /// Sets an account's quota (administration).
    pub async fn set_quota(&self, username: &str, quota_bytes: u64) -> Result<(), ServiceError> {
        let name = username.to_owned();
        let account =
            self.meta(move |m| m.account_by_name(&name)).await?.ok_or(ServiceError::NotFound("account"))?;
        self.meta(move |m| m.set_quota(account.id, quota_bytes)).await
    }
}

fn session_info(s: &SessionRecord, current: bool) -> SessionInfo {
    SessionInfo { id: s.id, device_id: s.device, created_at: s.created_at, expires_at: s.expires_at, current }
}
