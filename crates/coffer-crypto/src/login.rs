//! The OPAQUE cipher suite shared by client and store, and thin client-side
//! helpers for registration and login (two round trips each).
//!
//! The password never leaves the client and the store never learns anything
//! that would decrypt data: the client derives a [`WrapKey`] from OPAQUE's
//! export key (which only someone who knows the password can compute) and
//! wraps the master key under it. The helpers hand out that wrap key, never
//! the export key itself.
//!
//! Suite: ristretto255 for the OPRF and the key exchange, triple
//! Diffie-Hellman, and Argon2id as the key-stretching function. The Argon2
//! cost is a parameter ([`KsfParams`]) so tests can use cheap ones; a client
//! must use the same parameters at registration and login, or the login
//! fails as if the password were wrong.

use std::fmt;

use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration, ClientRegistrationFinishParameters,
    CredentialResponse, RegistrationResponse,
};
use rand_core::CryptoRngCore;

use crate::WrapKey;

/// Coffer's OPAQUE cipher suite.
#[derive(Debug, Clone, Copy)]
pub struct Suite;

impl opaque_ke::CipherSuite for Suite {
    type OprfCs = opaque_ke::Ristretto255;
    type KeGroup = opaque_ke::Ristretto255;
    type KeyExchange = opaque_ke::key_exchange::tripledh::TripleDh;
    type Ksf = argon2::Argon2<'static>;
}

/// Argon2id cost of the key-stretching step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KsfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KsfParams {
    /// What real clients use (OWASP's Argon2id minimum: 19 MiB, 2 passes).
    pub const INTERACTIVE: Self = Self { m_cost_kib: 19 * 1024, t_cost: 2, p_cost: 1 };
    /// Cheap parameters for tests and benchmarks. Never for real accounts.
    pub const INSECURE_FAST: Self = Self { m_cost_kib: 8, t_cost: 1, p_cost: 1 };

    fn argon2(&self) -> Result<argon2::Argon2<'static>, LoginError> {
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, None)
            .map_err(|_| LoginError::Protocol("invalid Argon2 parameters"))?;
        Ok(argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params))
    }
}

/// What went wrong on the client side of OPAQUE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The login did not authenticate: wrong password or unknown account
    /// (OPAQUE does not tell them apart).
    #[error("wrong account name or password")]
    WrongPassword,
    /// The server's message was malformed, or a local parameter was invalid.
    #[error("OPAQUE protocol error: {0}")]
    Protocol(&'static str),
}

impl LoginError {
    /// Never: the same messages fail the same way.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Client state between the two registration messages.
pub struct RegistrationState(ClientRegistration<Suite>);

impl fmt::Debug for RegistrationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegistrationState(****)")
    }
}

/// Client state between the two login messages.
pub struct LoginState(ClientLogin<Suite>);

impl fmt::Debug for LoginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginState(****)")
    }
}

/// Registration, first message: returns the state and the bytes to send.
pub fn register_start(
    rng: &mut impl CryptoRngCore,
    password: &[u8],
) -> Result<(RegistrationState, Vec<u8>), LoginError> {
    let start = ClientRegistration::<Suite>::start(rng, password)
        .map_err(|_| LoginError::Protocol("registration start"))?;
    Ok((RegistrationState(start.state), start.message.serialize().to_vec()))
}

/// Registration, second message: from the server's response, the upload to
/// send and the key that wraps the master key.
pub fn register_finish(
    state: RegistrationState,
    rng: &mut impl CryptoRngCore,
    password: &[u8],
    server_response: &[u8],
    ksf: &KsfParams,
) -> Result<(Vec<u8>, WrapKey), LoginError> {
    let response = RegistrationResponse::<Suite>::deserialize(server_response)
        .map_err(|_| LoginError::Protocol("malformed registration response"))?;
    let argon = ksf.argon2()?;
    let params = ClientRegistrationFinishParameters::new(Default::default(), Some(&argon));
    let finish = state
        .0
        .finish(rng, password, response, params)
        .map_err(|_| LoginError::Protocol("registration finish"))?;
    let wrap = WrapKey::from_export_key(&finish.export_key);
    Ok((finish.message.serialize().to_vec(), wrap))
}

/// Login, first message (KE1).
pub fn login_start(
    rng: &mut impl CryptoRngCore,
    password: &[u8],
) -> Result<(LoginState, Vec<u8>), LoginError> {
    let start =
        ClientLogin::<Suite>::start(rng, password).map_err(|_| LoginError::Protocol("login start"))?;
    Ok((LoginState(start.state), start.message.serialize().to_vec()))
}

/// Login, second message: from the server's KE2, the finalization (KE3) to
/// send and the key that unwraps the master key. Fails with
/// [`LoginError::WrongPassword`] when the server's answer does not
/// authenticate.
pub fn login_finish(
    state: LoginState,
    password: &[u8],
    server_response: &[u8],
    ksf: &KsfParams,
) -> Result<(Vec<u8>, WrapKey), LoginError> {
    let response = CredentialResponse::<Suite>::deserialize(server_response)
        .map_err(|_| LoginError::Protocol("malformed login response"))?;
    let argon = ksf.argon2()?;
    let params = ClientLoginFinishParameters::new(None, Default::default(), Some(&argon));
    let finish = state.0.finish(password, response, params).map_err(|e| match e {
        opaque_ke::errors::ProtocolError::InvalidLoginError => LoginError::WrongPassword,
        _ => LoginError::Protocol("login finish"),
    })?;
    let wrap = WrapKey::from_export_key(&finish.export_key);
    Ok((finish.message.serialize().to_vec(), wrap))
}
