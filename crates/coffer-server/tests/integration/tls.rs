//! HTTPS with rustls, and the refusal of plain HTTP off loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coffer_crypto::login::KsfParams;
use coffer_crypto::MasterKey;
use coffer_engine::remote::{Accounts, Remote};
use coffer_proto::DeviceId;
use coffer_server::http::HttpConfig;
use coffer_server::server::{serve, ListenConfig, ServerError, TlsFiles};
use coffer_server::store::memory::{MemoryBlobStore, MemoryMetaStore};
use coffer_server::{Service, ServiceConfig, SystemClock};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::support::{entry, put};

async fn service() -> Service {
    Service::new(
        Arc::new(MemoryMetaStore::new()),
        Arc::new(MemoryBlobStore::new()),
        Arc::new(SystemClock),
        Box::new(ChaCha20Rng::seed_from_u64(3)),
        ServiceConfig::default(),
    )
    .await
    .unwrap()
}

fn listen(addr: SocketAddr, tls: Option<TlsFiles>) -> ListenConfig {
    ListenConfig { addr, tls, insecure_plain_http: false, maintenance_every: Duration::from_secs(3600) }
}

#[tokio::test]
async fn https_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.signing_key.serialize_pem()).unwrap();
    let tls = TlsFiles { cert: cert_path, key: key_path };
    let server = serve(service().await, HttpConfig::default(), listen(([127, 0, 0, 1], 0).into(), Some(tls)))
        .await
        .unwrap();
    assert!(server.base_url().starts_with("https://"));

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(key.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let accounts = Accounts::with_client(client, &server.base_url());
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let master = MasterKey::generate(&mut rng);
    let ksf = KsfParams::INSECURE_FAST;
    accounts
        .signup(
            &mut rng,
            "tls-user",
            "pw",
            &master,
            &coffer_engine::settings::AccountSettings::for_new_account(),
            &ksf,
        )
        .await
        .unwrap();
    let d = accounts.login(&mut rng, "tls-user", "pw", DeviceId::from_bytes([1; 16]), &ksf).await.unwrap();
    d.remote.commit(&[put(entry(1), 0, b"over tls", &[])]).await.unwrap();
    assert_eq!(d.remote.versions(entry(1)).await.unwrap().len(), 1);

    // A client that does not trust the certificate cannot talk to it.
    let untrusting = Accounts::new(&server.base_url()).unwrap();
    let err =
        untrusting.login(&mut rng, "tls-user", "pw", DeviceId::from_bytes([2; 16]), &ksf).await.unwrap_err();
    assert!(err.is_retryable(), "a transport error: {err:?}");
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_without_the_override() {
    let err = serve(service().await, HttpConfig::default(), listen(([0, 0, 0, 0], 0).into(), None))
        .await
        .unwrap_err();
    assert!(matches!(err, ServerError::PlainHttpRefused(_)), "{err}");
    assert!(err.to_string().contains("--insecure-plain-http"));
}
