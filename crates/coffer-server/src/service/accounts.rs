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
        let quota_bytes = self.inner.config.default_quota_bytes;
        let new = NewAccount {
            username: req.username,
            opaque_record: record,
            wrapped_key: req.wrapped_key,
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
        Ok(LoginFinishResponse { token, session: info, wrapped_key: account.wrapped_key })
    }

    /// Resolves a bearer token to its caller; `Unauthorized` if unknown,
    /// revoked or expired.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, ServiceError> {
        if token.len() != 64 {
            return Err(ServiceError::Unauthorized);
        }
        let hash = token_hash(token);
        let now = self.now();
        let s = self.meta(move |m| m.session_by_token(&hash)).await?.ok_or(ServiceError::Unauthorized)?;
        if s.expires_at <= now {
            return Err(ServiceError::Unauthorized);
        }
        Ok(Caller { account: s.account, session: s.id, device: s.device })
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
        if self.meta(move |m| m.revoke_session(caller.account, id)).await? {
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
