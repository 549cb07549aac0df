//! Signup, login, sessions, rate limits, replay.

use coffer_crypto::login::{self, LoginError};
use coffer_crypto::MasterKey;
use coffer_engine::chunker::ChunkerParams;
use coffer_engine::remote::{Remote, RemoteError};
use coffer_engine::settings::AccountSettings;
use coffer_proto::api::{
    Base64Bytes, ErrorCode, LoginFinishRequest, LoginFinishResponse, LoginStartRequest, LoginStartResponse,
    RegisterFinishRequest, RegisterFinishResponse, RegisterStartRequest, RegisterStartResponse,
};
use coffer_proto::DeviceId;
use coffer_server::http::HttpConfig;
use coffer_server::ratelimit::RateLimit;
use coffer_server::ServiceConfig;

use super::support::{TestServer, KSF, PASSWORD};

#[tokio::test]
async fn full_account_flow() {
    let mut t = TestServer::start().await;
    let master = MasterKey::generate(&mut t.rng);
    let settings =
        AccountSettings { chunker: ChunkerParams { min: 16 << 10, avg: 64 << 10, max: 256 << 10 } };
    let reg =
        t.accounts.signup(&mut t.rng, "alice@example.com", PASSWORD, &master, &settings, &KSF).await.unwrap();
    assert_eq!(reg.quota_bytes, 50_000_000_000);

    let d1 = t.login("alice@example.com", 1).await;
    assert_eq!(d1.master.expose_secret(), master.expose_secret(), "the master key comes back unwrapped");
    let d2 = t.login("alice@example.com", 2).await;
    assert_ne!(d1.session.id, d2.session.id);
    assert_eq!((d1.settings, d2.settings), (settings, settings), "every device gets the account's settings");

    let sessions = d1.remote.sessions().await.unwrap();
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().any(|s| s.id == d1.session.id && s.current));
    assert!(sessions
        .iter()
        .any(|s| s.id == d2.session.id && !s.current && s.device_id == DeviceId::from_bytes([2; 16])));

    // Device 1 revokes device 2: device 2 is out at once, device 1 is not.
    d1.remote.revoke_session(d2.session.id).await.unwrap();
    let err = d2.remote.usage().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    assert_eq!(d1.remote.sessions().await.unwrap().len(), 1);
    let err = d1.remote.revoke_session(d2.session.id).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    assert_eq!(d1.remote.usage().await.unwrap().used_bytes, 0);
}

#[tokio::test]
async fn wrong_password_and_unknown_account_fail_alike() {
    let mut t = TestServer::start().await;
    t.user("bob").await;
    let dev = DeviceId::from_bytes([1; 16]);
    let err = t.accounts.login(&mut t.rng, "bob", "wrong", dev, &KSF).await.unwrap_err();
    assert!(matches!(err, RemoteError::Login(LoginError::WrongPassword)), "{err:?}");
    let err = t.accounts.login(&mut t.rng, "nobody", PASSWORD, dev, &KSF).await.unwrap_err();
    assert!(matches!(err, RemoteError::Login(LoginError::WrongPassword)), "{err:?}");
}

#[tokio::test]
async fn duplicate_signup_is_refused() {
    let mut t = TestServer::start().await;
    t.user("carol").await;
    let master = MasterKey::generate(&mut t.rng);
    let err = t
        .accounts
        .signup(&mut t.rng, "carol", "other", &master, &AccountSettings::for_new_account(), &KSF)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AlreadyExists));
    // The original password still works.
    t.login("carol", 3).await;
}

#[tokio::test]
async fn sessions_expire() {
    let mut t = TestServer::start().await;
    let d = t.user("dave").await;
    d.remote.usage().await.unwrap();
    let ttl = t.service().config().session_ttl;
    t.clock.advance_millis(ttl.as_millis() as u64 + 1);
    assert_eq!(d.remote.usage().await.unwrap_err().code(), Some(ErrorCode::Unauthorized));
}

#[tokio::test]
async fn replayed_login_message_is_refused() {
    let mut t = TestServer::start().await;
    t.user("erin").await;
    let msg = login_message(&mut t, "erin", true).await;
    let ok: LoginFinishResponse = t.accounts.post("/accounts/login/finish", &msg).await.unwrap();
    assert!(!ok.token.expose_secret().is_empty());
    let err = t.accounts.post::<_, LoginFinishResponse>("/accounts/login/finish", &msg).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));
    // The replay made no session: signup's login, the first finish, and this one.
    let d = t.login("erin", 6).await;
    assert_eq!(d.remote.sessions().await.unwrap().len(), 3);
}

/// A login's first round trip, by hand, and the finish message to send:
/// from a client that predates account settings, or one that says it
/// honours them.
async fn login_message(t: &mut TestServer, name: &str, honours_settings: bool) -> LoginFinishRequest {
    let (state, request) = login::login_start(&mut t.rng, PASSWORD.as_bytes()).unwrap();
    let start: LoginStartResponse = t
        .accounts
        .post(
            "/accounts/login/start",
            &LoginStartRequest { username: name.into(), request: Base64Bytes(request) },
        )
        .await
        .unwrap();
    let (fin, _) = login::login_finish(state, PASSWORD.as_bytes(), &start.response.0, &KSF).unwrap();
    LoginFinishRequest {
        login_id: start.login_id,
        finalization: Base64Bytes(fin),
        device_id: DeviceId::from_bytes([7; 16]),
        honours_settings,
    }
}

async fn raw_login(
    t: &mut TestServer,
    name: &str,
    honours_settings: bool,
) -> Result<LoginFinishResponse, RemoteError> {
    let msg = login_message(t, name, honours_settings).await;
    t.accounts.post("/accounts/login/finish", &msg).await
}

/// A client from before account settings cannot log in to an account that
/// has them (it would cut chunks with other sizes); to an account made
/// before settings existed it still can, and a current client reads that
/// account's sizes as the old ones.
#[tokio::test]
async fn a_client_that_cannot_honour_the_settings_is_refused() {
    let mut t = TestServer::start().await;
    let d = t.user("hank").await;
    let err = raw_login(&mut t, "hank", false).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
    assert!(err.to_string().contains("update Coffer"), "{err}");
    assert_eq!(d.remote.sessions().await.unwrap().len(), 1, "the refused login made no session");
    raw_login(&mut t, "hank", true).await.unwrap();

    // An account without settings, as signups made them before.
    let (state, request) = login::register_start(&mut t.rng, PASSWORD.as_bytes()).unwrap();
    let start: RegisterStartResponse = t
        .accounts
        .post(
            "/accounts/register/start",
            &RegisterStartRequest { username: "old".into(), request: Base64Bytes(request) },
        )
        .await
        .unwrap();
    let (upload, wrap) =
        login::register_finish(state, &mut t.rng, PASSWORD.as_bytes(), &start.response.0, &KSF).unwrap();
    let master = MasterKey::generate(&mut t.rng);
    let req = RegisterFinishRequest {
        username: "old".into(),
        upload: Base64Bytes(upload),
        wrapped_key: wrap.wrap(&mut t.rng, &master),
        settings: None,
    };
    let _: RegisterFinishResponse = t.accounts.post("/accounts/register/finish", &req).await.unwrap();
    assert!(raw_login(&mut t, "old", false).await.unwrap().settings.is_none());
    assert_eq!(t.login("old", 8).await.settings, AccountSettings::LEGACY);
}

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let config = ServiceConfig {
        login_limit_per_account: RateLimit { burst: 2, per_minute: 1 },
        ..ServiceConfig::default()
    };
    let mut t = TestServer::start_with(config, HttpConfig::default()).await;
    t.user("frank").await; // one attempt used
    let dev = DeviceId::from_bytes([1; 16]);
    t.accounts.login(&mut t.rng, "frank", PASSWORD, dev, &KSF).await.unwrap();
    let err = t.accounts.login(&mut t.rng, "frank", PASSWORD, dev, &KSF).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RateLimited));
    assert!(err.is_retryable());
    match err {
        RemoteError::Api { status, body } => {
            assert_eq!(status, 429);
            assert!(body.retry_after_ms.unwrap() > 0);
        }
        other => panic!("{other:?}"),
    }
    // Another account is not affected.
    t.user("grace").await;
    // Time refills the bucket.
    t.clock.advance_millis(60_000);
    t.accounts.login(&mut t.rng, "frank", PASSWORD, dev, &KSF).await.unwrap();
}

#[tokio::test]
async fn login_attempts_are_rate_limited_per_address() {
    let config = ServiceConfig {
        login_limit_per_address: RateLimit { burst: 3, per_minute: 1 },
        ..ServiceConfig::default()
    };
    let mut t = TestServer::start_with(config, HttpConfig::default()).await;
    t.user("u1").await;
    t.user("u2").await;
    t.user("u3").await;
    // Three attempts from 127.0.0.1 so far, each for another name: the address is out.
    let master = MasterKey::generate(&mut t.rng);
    t.accounts
        .signup(&mut t.rng, "u4", PASSWORD, &master, &AccountSettings::for_new_account(), &KSF)
        .await
        .unwrap();
    let dev = DeviceId::from_bytes([4; 16]);
    let err = t.accounts.login(&mut t.rng, "u4", PASSWORD, dev, &KSF).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RateLimited));
}
